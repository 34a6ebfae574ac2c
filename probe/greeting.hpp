// What a well-behaved client of a server we did not write says, so that the server holds
// the connection as it would a real one until the fault: the greeting of target mode.
//
// What this module decides:
// - A handful of protocols cover the servers people ask about: raw (connect only),
//   send:TEXT (some bytes, then silence), mqtt:keepalive=D (CONNECT with that keep alive,
//   PINGREQ every D, as MQTT 3.1.1 clients do), http[:interval=D] (a keep-alive GET every
//   D), redis[:interval=D] (PING every D). The default interval is 5s.
// - An "exchange" is one answer from the server (CONNACK, PINGRESP, an HTTP response,
//   +PONG). Faults are injected right after one, so the measured time is the whole time
//   the server takes to notice.
// - Pure: bytes out and bytes in, no I/O (probe speak drives it).
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace probe {

struct greeting {
  enum class protocol { raw, send, mqtt, http, redis };
  protocol kind = protocol::raw;
  std::string text;                       ///< send: the bytes (escapes \r \n \t \\ decoded)
  std::chrono::milliseconds interval{0};  ///< mqtt keep alive; http/redis request period
  std::string spec;                       ///< as the user wrote it

  /// Parses raw, send:TEXT, mqtt:keepalive=D, http[:interval=D], redis[:interval=D];
  /// throws usage_error naming what is wrong.
  static greeting parse(std::string_view spec);
  /// True when the client sends something every `interval` and the server answers it.
  bool periodic() const {
    return kind == protocol::mqtt || kind == protocol::http || kind == protocol::redis;
  }
  /// Bytes sent once after connecting (MQTT CONNECT, send's text); empty for the others.
  std::vector<std::byte> opening(std::string_view client_id) const;
  /// Bytes sent every interval (PINGREQ, a GET, a Redis PING); empty when not periodic.
  std::vector<std::byte> request(std::string_view host) const;
};

/// Splits a server's answers out of the bytes received so far.
class answer_reader {
 public:
  explicit answer_reader(greeting g) : greeting_(std::move(g)) {}
  /// Appends `bytes` and returns how many complete answers they finish. A malformed
  /// answer sets error() and stops counting.
  int feed(std::string_view bytes);
  const std::string& error() const { return error_; }

 private:
  std::optional<std::size_t> complete_answer();  // its size, when whole

  greeting greeting_;  // a copy: a reader may outlive the greeting it was made from
  std::string buffer_;
  std::string error_;
  bool connected_ = false;  // mqtt: CONNACK seen
};

}  // namespace probe
