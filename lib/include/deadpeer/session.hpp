// One heartbeating connection, either role, on Boost.Asio with C++20 coroutines.
//
// A session owns its socket and its timers. Three loops run on the session's strand: a
// reader (bytes -> frames -> handling), a watchdog that sleeps on a single timer until
// the earliest of {handshake deadline, next ping due, detector's dead_at} and re-checks
// before acting, and a writer that drains a queue of encoded frames. When any of them
// decides the session is over, the others are cancelled, the socket is closed the way
// the end requires, and on_end fires exactly once. Nothing outlives that: no timer holds
// the session once it has ended.
//
// How a session closes (docs/protocol.md, "Closing"):
// - graceful: queued frames, then BYE or ERROR, then shutdown(SHUT_WR), then read and
//   discard until the peer's FIN (bounded in time and bytes), then close. The peer gets
//   our last frame and an EOF, never an RST. Used for protocol errors, rejections,
//   takeover, local close, and after the peer said BYE or ERROR.
// - abortive: SO_LINGER {1, 0} and close: an RST, no FIN_WAIT or TIME_WAIT left for a
//   peer already judged dead (heartbeat timeout).
// - plain close after the kernel already ended the connection (EOF, RST, timeouts).
#pragma once

#include <deadpeer/cause.hpp>
#include <deadpeer/engine.hpp>
#include <deadpeer/detector.hpp>
#include <deadpeer/keepalive.hpp>
#include <deadpeer/wire.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <system_error>
#include <vector>

namespace deadpeer {

/// Everything a session needs to know; the defaults suit a loopback or LAN peer.
struct session_config {
  session_role role = session_role::client;

  /// Kernel keepalive to apply to the socket; nullopt leaves the socket as it is.
  std::optional<keepalive_options> keepalive;

  /// Send PINGs and run the detector. Off: the session still answers PINGs and reports
  /// kernel-detected ends, which is how keepalive alone is measured.
  bool heartbeat = true;
  /// Detector; its interval is replaced by the negotiated heartbeat interval.
  detector_config detector = fixed_detector_config{};
  /// Each PING is sent after interval × (1 ± jitter) of sending nothing.
  double ping_jitter = 0.1;
  /// HELLO (server) or WELCOME (client) must arrive within this; 0 disables the session's
  /// own check (deadpeer::server enforces it from its reaper instead).
  std::chrono::milliseconds handshake_timeout{5000};
  /// What the peer's FIN (EOF without BYE) means. true: the peer is gone, end now
  /// (cause peer_closed, detected by eof) -- a crashed process looks exactly like this.
  /// false: the peer only half-closed; keep the connection, stop reading, report it
  /// through on_peer_finished and let the owner decide (the server's reaper ends it as a
  /// CLOSE_WAIT ghost at its next sweep).
  bool end_on_eof = true;

  // Client role.
  std::string client_id = "deadpeer";
  /// Interval asked for in HELLO; 0 lets the server choose.
  std::chrono::milliseconds requested_interval{1000};
  std::string auth_token;

  // Server role.
  std::chrono::milliseconds min_interval{100};  ///< requests are clamped into [min, max]
  std::chrono::milliseconds max_interval{60000};
  std::chrono::milliseconds default_interval{1000};  ///< for a request of 0
  std::uint32_t max_frame = wire::default_max_frame;
  /// PINGs closer than half the interval are strikes; this many in a row end the session.
  int ping_strike_limit = 5;
  std::uint64_t session_id = 0;

  // Graceful close budget: how long and how much we read and discard waiting for FIN.
  std::chrono::milliseconds close_drain_time{2000};
  std::size_t close_drain_bytes = 16 * 1024 * 1024;
};

// session_role, session_established and session_end are the engine's (engine.hpp).

/// Callbacks, all invoked on the session's strand. Any may be empty.
struct session_handlers {
  std::function<void(const session_established&)> on_established;
  std::function<void(std::span<const std::byte>)> on_data;
  std::function<void(std::chrono::nanoseconds)> on_rtt;
  /// Bytes arrived from the peer at this CLOCK_MONOTONIC time (any byte is life).
  std::function<void(std::int64_t heard_ns)> on_heard;
  /// The peer half-closed (only with end_on_eof = false).
  std::function<void()> on_peer_finished;
  std::function<void(const session_end&)> on_end;
  /// Server role: decide on a HELLO. Return an ERROR to refuse it (sent, then a
  /// graceful close), nullopt to admit.
  std::function<std::optional<wire::error>(const wire::hello&)> admit;
};

class session : public std::enable_shared_from_this<session> {
 public:
  using socket_type = boost::asio::ip::tcp::socket;

  /// Starts a session on a connected socket. The returned pointer may be dropped: the
  /// session keeps itself alive until it has ended and on_end has run.
  static std::shared_ptr<session> start(socket_type socket, session_config config,
                                        session_handlers handlers);

  /// Queues application data (a DATA frame). Safe from any thread. Data queued before the
  /// handshake completes is sent right after it.
  void send(std::vector<std::byte> payload);
  /// Graceful close with BYE. Safe from any thread; no effect once the session has ended.
  void close(wire::bye_reason reason = wire::bye_reason::normal,
             deadpeer::cause why = deadpeer::cause::local_close);
  /// Graceful close with ERROR (e.g. server_full).
  void reject(wire::error_code code, std::string text,
              deadpeer::cause why = deadpeer::cause::protocol_error,
              deadpeer::detected_by by = deadpeer::detected_by::application);
  /// Abortive close (RST) for a peer judged dead by someone else (e.g. the reaper).
  void abort(deadpeer::cause why, deadpeer::detected_by by);
  /// Shuts down our sending side (FIN) and sends nothing more, not even PONGs: the peer
  /// sees a half-closed, quiet connection. Reading goes on. Used by the fault lab.
  void half_close();

  const session_config& config() const { return config_; }
  std::int64_t opened_ns() const { return opened_ns_; }

  session(socket_type socket, session_config config, session_handlers handlers);
  ~session();
  session(const session&) = delete;
  session& operator=(const session&) = delete;

 private:
  enum class state { awaiting_hello, awaiting_welcome, established };
  enum class close_mode { graceful, abortive, plain };
  struct pending_end {
    session_end end;
    close_mode mode = close_mode::plain;
    std::optional<wire::frame> last_frame;  ///< BYE or ERROR to send on a graceful close
  };

  static pending_end make_end(deadpeer::cause why, deadpeer::detected_by by, close_mode mode,
                              std::optional<wire::frame> last_frame = std::nullopt);

  boost::asio::awaitable<void> run();
  boost::asio::awaitable<void> reader();
  boost::asio::awaitable<void> watchdog();
  boost::asio::awaitable<void> writer();
  boost::asio::awaitable<void> finish();

  void handle(wire::frame frame);
  void handle_hello(wire::hello hello);
  void handle_welcome(const wire::welcome& welcome);
  void established(std::chrono::milliseconds interval, std::chrono::milliseconds dead_after,
                   std::uint64_t session_id, std::string client_id);
  void enqueue(const wire::frame& frame, bool ahead_of_data = false);
  void end_with(pending_end end);
  void end_by_socket_error(std::error_code ec, connection_context::operation op);
  void end_by_protocol(wire::error_code code, std::string text);
  std::chrono::steady_clock::time_point next_ping_at();
  void roll_ping_delay();
  void wake_watchdog();

  socket_type socket_;
  boost::asio::strand<boost::asio::any_io_executor> strand_;
  session_config config_;
  session_handlers handlers_;
  boost::asio::steady_timer watchdog_timer_;
  boost::asio::steady_timer writer_signal_;
  boost::asio::steady_timer parked_reader_;  ///< reader waits here after a half-close

  state state_;
  wire::decoder decoder_;
  std::unique_ptr<failure_detector> detector_;
  std::optional<pending_end> end_;
  bool send_closed_ = false;  ///< half_close() was called: nothing more goes out
  keepalive_settings keepalive_in_force_;

  std::deque<std::vector<std::byte>> outgoing_;
  std::vector<std::byte> partial_write_;  ///< rest of a frame whose write was cancelled
  std::vector<std::vector<std::byte>> before_handshake_;  ///< DATA queued too early

  std::chrono::steady_clock::time_point handshake_deadline_;
  std::chrono::steady_clock::time_point last_sent_;
  std::chrono::steady_clock::time_point last_heard_;
  std::chrono::steady_clock::time_point last_ping_received_;
  std::chrono::milliseconds interval_{0};
  std::chrono::nanoseconds ping_delay_{0};  ///< jittered interval for the next PING
  std::uint64_t next_sequence_ = 1;
  int ping_strikes_ = 0;
  std::minstd_rand jitter_rng_;

  std::int64_t opened_ns_ = 0;
  std::uint64_t frames_received_ = 0;
  std::uint64_t frames_sent_ = 0;
  std::optional<std::chrono::nanoseconds> last_rtt_;
};

}  // namespace deadpeer
