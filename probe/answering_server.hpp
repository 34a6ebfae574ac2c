// The server side of a client-side target (probe run --target-side client): a client
// program the user did not write connects to this, and must be answered as a real server
// would, or it would give up for the wrong reason before the fault.
//
// What this module decides:
// - It answers each greeting's protocol just enough for a client to stay connected:
//   mqtt: CONNACK to CONNECT, SUBACK to SUBSCRIBE, PINGRESP to PINGREQ; redis: +PONG to
//   PING and +OK to anything else; http: 200 with a two-byte body to every request; raw
//   and send: read and say nothing.
// - One thread with poll() over the listener and its connections; the socket is opened in
//   the calling thread's network namespace (the lab's server side).
// - hang() stops reading and answering while the kernel keeps ACKing (a hung server);
//   reset() drops every connection and answers again, between trials; it waits for the
//   thread to have done so, or it would drop the next trial's client as it connects.
#pragma once

#include "greeting.hpp"

#include <boost/asio/ip/tcp.hpp>

#include <atomic>
#include <cstdint>
#include <thread>

namespace probe {

class answering_server {
 public:
  /// Listens on `at` (port 0: any); throws std::system_error when it cannot.
  answering_server(greeting g, const boost::asio::ip::tcp::endpoint& at);
  ~answering_server();
  answering_server(const answering_server&) = delete;
  answering_server& operator=(const answering_server&) = delete;

  unsigned short port() const { return port_; }
  /// Answers sent so far, over every connection.
  std::uint64_t answers() const { return answers_.load(); }
  void hang() { hung_ = true; }
  /// Returns once the connections are dropped (a client connecting afterwards is kept).
  void reset();

 private:
  void run();

  greeting greeting_;
  int listener_ = -1;
  unsigned short port_ = 0;
  std::atomic<std::uint64_t> answers_{0};
  std::atomic<bool> hung_{false};
  std::atomic<bool> reset_requested_{false};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace probe
