// The heartbeat protocol's frames and their byte encoding (docs/protocol.md is the
// normative description). Pure: bytes in, frames or a protocol error out, no I/O and no
// clock, so every malformed input can be tested without a socket. The decoder is
// incremental: feed it whatever a read returned, then take frames until it needs more.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace deadpeer::wire {

/// The protocol version this code speaks.
inline constexpr std::uint8_t protocol_version = 1;
/// First four bytes of a HELLO body: identifies the protocol to a server that gets garbage.
inline constexpr std::string_view hello_magic = "DPHB";
/// Largest frame accepted before WELCOME negotiates a maximum. Like every max_frame, it
/// bounds the length prefix's value: type byte + body, the 4 length bytes excluded.
inline constexpr std::uint32_t handshake_max_frame = 1024;
/// Default negotiated maximum frame length.
inline constexpr std::uint32_t default_max_frame = 64 * 1024;
/// Largest client id, in bytes of UTF-8.
inline constexpr std::size_t max_client_id = 64;
/// Largest auth token, in bytes.
inline constexpr std::size_t max_auth_token = 255;
/// Largest ERROR text, in bytes of UTF-8.
inline constexpr std::size_t max_error_text = 255;

enum class frame_type : std::uint8_t {
  hello = 0x01,
  welcome = 0x02,
  ping = 0x03,
  pong = 0x04,
  data = 0x05,
  bye = 0x06,
  error = 0x07,
};

/// Codes carried by ERROR frames, and returned by the decoder for bad input.
enum class error_code : std::uint16_t {
  malformed_frame = 1,      ///< a field is truncated, too long, or not valid (e.g. bad UTF-8)
  frame_too_large = 2,      ///< the length prefix exceeds the negotiated maximum
  unsupported_version = 3,  ///< HELLO with a version (or magic) this side does not speak
  unknown_frame_type = 4,   ///< type byte not in frame_type
  unexpected_frame = 5,     ///< valid frame in the wrong state (before HELLO, HELLO twice...)
  invalid_client_id = 6,    ///< empty, longer than 64 bytes, or not UTF-8
  auth_failed = 7,          ///< token missing or wrong
  too_many_pings = 8,       ///< pings faster than the accepted interval, past the strike limit
  server_full = 9,          ///< connection limit reached
  handshake_timeout = 10,   ///< HELLO/WELCOME not completed in time
  internal_error = 11,      ///< the sender failed; not the receiver's fault
};

/// Codes carried by BYE frames: why a healthy connection is being closed.
enum class bye_reason : std::uint16_t {
  normal = 0,      ///< the application is done
  going_away = 1,  ///< the process is shutting down
  superseded = 2,  ///< a newer connection with the same client id replaced this one
  idle = 3,        ///< closed for inactivity by policy
};

struct hello {
  std::uint8_t version = protocol_version;
  std::string client_id;                    ///< 1..64 bytes UTF-8
  std::uint32_t requested_interval_ms = 0;  ///< heartbeat interval the client would like
  std::string auth_token;                   ///< empty: none; up to 255 bytes, opaque
  friend bool operator==(const hello&, const hello&) = default;
};

/// encode() throws and the decoder reports malformed_frame unless 1 <= min_interval_ms <=
/// interval_ms <= max_interval_ms, dead_after_ms > interval_ms and max_frame >=
/// handshake_max_frame (protocol.md §4.2): fill every field.
struct welcome {
  std::uint8_t version = protocol_version;
  std::uint32_t interval_ms = 0;    ///< accepted heartbeat interval (after clamping)
  std::uint32_t dead_after_ms = 0;  ///< silence after which the server declares the client dead
  std::uint64_t session_id = 0;
  std::uint32_t max_frame = default_max_frame;  ///< largest frame either side may send
  std::uint32_t min_interval_ms = 0;            ///< server's accepted range, for information
  std::uint32_t max_interval_ms = 0;
  friend bool operator==(const welcome&, const welcome&) = default;
};

struct ping {
  std::uint64_t sequence = 0;
  std::uint64_t timestamp_ns = 0;  ///< sender's clock, opaque to the receiver
  friend bool operator==(const ping&, const ping&) = default;
};

struct pong {
  std::uint64_t sequence = 0;      ///< echoed from the PING
  std::uint64_t timestamp_ns = 0;  ///< echoed from the PING
  friend bool operator==(const pong&, const pong&) = default;
};

struct data {
  std::vector<std::byte> payload;
  friend bool operator==(const data&, const data&) = default;
};

struct bye {
  bye_reason reason = bye_reason::normal;
  friend bool operator==(const bye&, const bye&) = default;
};

struct error {
  error_code code = error_code::malformed_frame;
  std::string text;  ///< up to 255 bytes UTF-8, for humans
  friend bool operator==(const error&, const error&) = default;
};

using frame = std::variant<hello, welcome, ping, pong, data, bye, error>;

/// Appends the encoding of `f` to `out`. Throws std::invalid_argument, appending nothing,
/// for a frame the protocol forbids (client id empty, over 64 bytes or not UTF-8, token or
/// text too long, unknown code or reason, WELCOME values out of order). Any version byte
/// is encodable, so tests can send a version the peer refuses.
void encode(const frame& f, std::vector<std::byte>& out);
std::vector<std::byte> encode(const frame& f);

/// A protocol violation found while decoding.
struct decode_error {
  error_code code;
  std::string detail;  ///< what exactly was wrong: ASCII, at most max_error_text bytes, so it
                       ///< can be sent as the ERROR text as is
};

/// One frame decoded from the front of a buffer: `result` is std::monostate when more
/// bytes are needed (consumed 0), the frame, or the violation. `consumed` is the bytes the
/// frame took (also for a frame whose body was invalid; 0 for a bad header).
struct decoded {
  std::variant<std::monostate, frame, decode_error> result;
  std::size_t consumed = 0;
};

/// Stateless decoding of the first frame in `bytes` (no copy, no buffer kept), for a
/// driver that reads into one shared buffer and keeps only a partial frame's leftover.
/// Checks in the order of protocol.md §9: length 0, length > max_frame (reported as soon
/// as the 4-byte header is there), unknown type, then the body.
decoded decode_one(std::span<const std::byte> bytes, std::uint32_t max_frame);

/// Bytes a complete frame starting at `bytes` needs (4 while the length is incomplete).
std::size_t frame_size_needed(std::span<const std::byte> bytes);

/// Incremental decoder. After an error it stays failed: a byte stream that lost framing
/// cannot be resynchronised.
class decoder {
 public:
  explicit decoder(std::uint32_t max_frame = handshake_max_frame) : max_frame_(max_frame) {}

  /// Appends bytes received from the peer (ignored once the decoder has failed).
  void feed(std::span<const std::byte> bytes);

  /// The next complete frame, std::monostate if more bytes are needed, or a decode_error.
  /// An oversized length is reported as soon as the header is seen, before the body.
  std::variant<std::monostate, frame, decode_error> next();

  /// Changes the largest accepted frame (after WELCOME); applies from the next call to next().
  void set_max_frame(std::uint32_t max_frame) { max_frame_ = max_frame; }
  std::uint32_t max_frame() const { return max_frame_; }

  /// Bytes received but not yet consumed as frames.
  std::size_t buffered() const { return buffer_.size() - consumed_; }

 private:
  std::vector<std::byte> buffer_;
  std::size_t consumed_ = 0;
  std::uint32_t max_frame_;
  std::optional<decode_error> failed_;
};

std::string_view to_string(frame_type t);
std::string_view to_string(error_code c);
std::string_view to_string(bye_reason r);
/// The type of a frame value.
frame_type type_of(const frame& f);

}  // namespace deadpeer::wire
