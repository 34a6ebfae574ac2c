// The protocol engine: every rule of docs/protocol.md for one connection, either role,
// and nothing else. It owns no socket, no timer and no clock (sans-I/O, as h11 and quiche
// are): the driver feeds it the bytes it read and the current time, and it answers with
// bytes to send (appended to an engine_output), the next instant it wants to be woken
// (next_timeout) and events (through an engine_observer). So every rule is tested with a
// fake clock in microseconds, and the same rules serve the Asio client session and the
// epoll server.
//
// What it decides: the handshake and its timeout (counted from construction), interval
// clamping, the max_frame switch, PING scheduling with ±jitter and suppression by any
// frame sent, PONG echo (ahead of queued DATA: PONGs go to output.urgent), RTT from our
// own PINGs, ping strikes, the detector's verdict, BYE and ERROR, and how the connection
// must be closed (graceful, abortive, plain). The first end decided wins; after it the
// engine ignores input and produces nothing, and the driver closes as end().mode says.
//
// What it leaves to the driver: reading and writing, applying keepalive, classifying a
// socket error (the driver reads TCP_INFO and calls fail()), the graceful close's drain.
//
// Size: a server holds one engine per connection, so the state is kept flat (~130 bytes):
// the configuration is shared by pointer, the fixed detector is one inline deadline, a
// phi detector is allocated only when configured, a partial frame is kept only while one
// is pending, and the end record is allocated once, when the end is decided.
#pragma once

#include <deadpeer/cause.hpp>
#include <deadpeer/detector.hpp>
#include <deadpeer/wire.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <vector>

namespace deadpeer {

enum class session_role { client, server };

/// How a connection is closed once its end is decided (docs/protocol.md §8):
/// graceful: the last frame (BYE or ERROR) is already in the output; send everything,
///   shutdown(SHUT_WR), read and discard until the peer's FIN (bounded), close;
/// abortive: SO_LINGER {1, 0} and close (RST) for a peer judged dead;
/// plain: close; the kernel already ended the connection.
enum class close_mode : std::uint8_t { graceful, abortive, plain };

/// Protocol settings, shared by every engine of a server (engines keep a pointer: it must
/// outlive them). The defaults suit a loopback or LAN peer.
struct engine_config {
  session_role role = session_role::client;
  /// Send PINGs and run the detector. Off: still answer PINGs; only the kernel notices.
  bool heartbeat = true;
  /// Detector; its interval is replaced by the negotiated heartbeat interval.
  detector_config detector = fixed_detector_config{};
  /// Each PING is sent after interval × (1 ± jitter) of sending nothing.
  double ping_jitter = 0.1;
  /// PINGs fall due on a grid of this step (0: exactly when the jittered wait ends), never
  /// later than the longest wait allowed: a server with thousands of connections then
  /// sends the PINGs that fall due close together on one wake-up instead of one each.
  std::chrono::milliseconds ping_coalesce{0};
  /// HELLO (server) or WELCOME (client) must arrive within this, counted from
  /// construction; 0 disables the check.
  std::chrono::milliseconds handshake_timeout{5000};
  /// The peer's FIN without BYE: true ends the connection (peer_closed, eof); false reports
  /// on_peer_finished and keeps it (a half-close; the owner decides).
  bool end_on_eof = true;

  // Client role.
  std::string client_id = "deadpeer";
  std::chrono::milliseconds requested_interval{1000};  ///< 0 lets the server choose
  std::string auth_token;

  // Server role.
  std::chrono::milliseconds min_interval{100};  ///< requests are clamped into [min, max]
  std::chrono::milliseconds max_interval{60000};
  std::chrono::milliseconds default_interval{1000};  ///< for a request of 0
  std::uint32_t max_frame = wire::default_max_frame;
  /// PINGs closer than half the interval are strikes; this many in a row end the session.
  int ping_strike_limit = 5;
};

/// Throws config_error (or std::invalid_argument for a bad client identity) for settings
/// the engine cannot run with.
void validate(const engine_config& config);

/// The silence a fresh detector with this configuration and interval allows before its
/// verdict: what WELCOME announces as dead_after.
std::chrono::milliseconds dead_after_for(const detector_config& detector,
                                         std::chrono::milliseconds interval);

/// What was agreed in the handshake.
struct session_established {
  std::string client_id;
  std::chrono::milliseconds interval{0};
  std::chrono::milliseconds dead_after{0};
  std::uint64_t session_id = 0;
};

/// How and why a connection ended. Times are CLOCK_MONOTONIC nanoseconds (clock.hpp).
struct session_end {
  deadpeer::cause cause = deadpeer::cause::unknown;
  deadpeer::detected_by detected_by = deadpeer::detected_by::application;
  std::error_code error;                           ///< the socket error, if one ended it
  std::optional<wire::error_code> protocol_error;  ///< ERROR sent or received
  std::optional<wire::bye_reason> bye;             ///< BYE sent or received
  bool graceful = false;                           ///< we closed with FIN after a drain
  bool abortive = false;                           ///< we closed with RST (SO_LINGER 0)
  std::int64_t opened_ns = 0;
  std::int64_t decided_ns = 0;     ///< when the end was decided (detection time)
  std::int64_t last_heard_ns = 0;  ///< last bytes received from the peer
  std::int64_t closed_ns = 0;      ///< when the socket was closed (set by the driver)
  std::uint64_t frames_received = 0;
  std::uint64_t frames_sent = 0;
  std::optional<std::chrono::nanoseconds> last_rtt;
};

/// Bytes the engine wants sent. The driver sends `urgent` (PONGs) before anything it has
/// queued, and `ordered` after it; both only grow until the driver clears them, so a
/// driver can reuse one engine_output for every connection of a loop (no allocation).
struct engine_output {
  std::vector<std::byte> urgent;
  std::vector<std::byte> ordered;
  bool empty() const { return urgent.empty() && ordered.empty(); }
  void clear() {
    urgent.clear();
    ordered.clear();
  }
};

/// Events for the driver. Every method has a default that does nothing (admit admits).
class engine_observer {
 public:
  virtual ~engine_observer() = default;
  virtual void on_established(const session_established&) {}
  virtual void on_data(std::span<const std::byte>) {}
  virtual void on_rtt(std::chrono::nanoseconds) {}
  /// The peer half-closed (only with end_on_eof = false).
  virtual void on_peer_finished() {}
  /// Server role, after the HELLO itself was found valid (version, id): return an ERROR to
  /// refuse it (auth, capacity...), nullopt to admit.
  virtual std::optional<wire::error> admit(const wire::hello&) { return std::nullopt; }
};

class protocol_engine {
 public:
  using time_point = std::chrono::steady_clock::time_point;

  /// `config` must outlive the engine. `now` is when the connection was opened (accepted
  /// or connected): the handshake timeout counts from it. `jitter_seed` seeds the PING
  /// jitter (any value; tests fix it). A client queues its HELLO into `out` here.
  protocol_engine(const engine_config& config, time_point now, std::uint64_t session_id,
                  std::uint32_t jitter_seed, engine_output& out);
  ~protocol_engine();
  protocol_engine(protocol_engine&&) noexcept;
  protocol_engine& operator=(protocol_engine&&) noexcept;

  /// Bytes read from the peer at `now` (any byte is proof of life).
  void receive(std::span<const std::byte> bytes, time_point now, engine_output& out,
               engine_observer& observer);
  /// The peer's FIN (read returned 0).
  void receive_eof(time_point now, engine_observer& observer);
  /// The driver's timer fired: acts on whatever is due at `now` (handshake timeout, a
  /// PING, the detector's verdict). Calling it early or late is harmless.
  void on_timeout(time_point now, engine_output& out);
  /// The next instant on_timeout has something to do; time_point::max() for never.
  time_point next_timeout() const;

  /// Queues application DATA (held until the handshake completes).
  void send_data(std::span<const std::byte> payload, time_point now, engine_output& out);
  /// Graceful close with BYE.
  void close(wire::bye_reason reason, deadpeer::cause why, time_point now, engine_output& out);
  /// Graceful close with ERROR.
  void reject(wire::error_code code, std::string text, deadpeer::cause why,
              deadpeer::detected_by by, time_point now, engine_output& out);
  /// Abortive close (RST) for a peer judged dead by someone else.
  void abort(deadpeer::cause why, deadpeer::detected_by by, time_point now);
  /// The kernel ended the connection (already classified by the driver): plain close.
  void fail(deadpeer::cause why, deadpeer::detected_by by, std::error_code error, time_point now);
  /// Our sending side is shut (fault lab): nothing more is produced, not even PONGs.
  void stop_sending() { send_closed_ = true; }

  bool established() const { return state_ == state::established; }
  bool ended() const { return end_ != nullptr; }
  /// Valid once ended(): the end so far (the driver fills closed_ns).
  session_end& end() { return *end_; }
  close_mode end_mode() const { return end_mode_; }
  /// True when something we sent has not been answered by anything since: the driver's
  /// hint for "data in flight" when TCP_INFO cannot say.
  bool sent_since_heard() const { return last_sent_ > last_heard_; }
  bool sending_stopped() const { return send_closed_; }
  time_point last_heard() const { return last_heard_; }
  time_point opened() const { return opened_; }
  std::chrono::milliseconds interval() const { return std::chrono::milliseconds(interval_ms_); }
  std::uint64_t session_id() const { return session_id_; }
  /// The configuration it was made with (the same object, not a copy).
  const engine_config& config() const { return *config_; }
  /// What the detector has learned of the peer's link (adaptive and phi, once established).
  std::optional<detector_estimate> learned() const;
  /// Bytes of a partial frame held until the rest arrives.
  std::size_t buffered() const;

 private:
  enum class state : std::uint8_t { awaiting_hello, awaiting_welcome, established };

  void handle(wire::frame& frame, time_point now, engine_output& out, engine_observer& observer);
  void handle_hello(wire::hello& hello, time_point now, engine_output& out,
                    engine_observer& observer);
  void handle_welcome(const wire::welcome& welcome, time_point now, engine_output& out,
                      engine_observer& observer);
  void become_established(std::chrono::milliseconds interval, std::chrono::milliseconds dead_after,
                          std::uint64_t session_id, std::string client_id, time_point now,
                          engine_output& out, engine_observer& observer);
  void emit(const wire::frame& frame, time_point now, std::vector<std::byte>& to);
  void roll_ping_delay();
  double ping_wait_factor(double uniform) const;
  void decide(deadpeer::cause why, deadpeer::detected_by by, close_mode mode, time_point now);
  void end_by_protocol(wire::error_code code, std::string text, time_point now,
                       engine_output& out,
                       deadpeer::detected_by by = deadpeer::detected_by::application);
  std::size_t consume(std::span<const std::byte> bytes, time_point now, engine_output& out,
               engine_observer& observer);
  time_point dead_at() const;
  time_point frame_due() const;  ///< with partial_: when the frame must be complete
  time_point ping_due() const;
  std::uint32_t next_random();

  const engine_config* config_;
  std::unique_ptr<failure_detector> phi_;    ///< only for a phi detector
  adaptive_state adaptive_;                  ///< the adaptive detector's learning (adaptive_on_)
  // A frame still arriving, and when its first bytes came: a frame must be complete within
  // dead_after of that (§6), so that trickled bytes cannot hold a connection forever. On
  // the heap, like the bytes: nothing per connection while no frame is partial.
  struct partial_frame {
    std::vector<std::byte> bytes;
    time_point since;
  };
  std::unique_ptr<partial_frame> partial_;
  std::unique_ptr<std::vector<std::byte>> held_data_;  ///< DATA queued before the handshake
  std::unique_ptr<session_end> end_;
  time_point opened_;
  time_point last_sent_;
  time_point last_heard_;
  time_point last_ping_received_;
  std::uint64_t session_id_;
  std::uint64_t next_sequence_ = 1;
  std::int64_t last_rtt_ns_ = -1;
  std::uint32_t frames_received_ = 0;
  std::uint32_t frames_sent_ = 0;
  std::uint32_t interval_ms_ = 0;
  std::uint32_t dead_after_ms_ = 0;  ///< WELCOME's dead_after (the fixed detector's limit)
  std::uint32_t ping_delay_us_ = 0;  ///< jittered wait before the next PING
  std::uint32_t max_frame_ = wire::handshake_max_frame;
  std::uint32_t rng_;
  std::uint8_t ping_strikes_ = 0;
  state state_;
  close_mode end_mode_ = close_mode::plain;
  bool send_closed_ = false;
  bool peer_finished_ = false;
  bool last_sent_answered_ = false;  ///< the last frame sent was a PONG or WELCOME
  bool adaptive_on_ = false;         ///< the detector is adaptive_ (established)
};

}  // namespace deadpeer
