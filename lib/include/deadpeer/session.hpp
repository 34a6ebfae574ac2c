// One heartbeating connection, either role, on Boost.Asio: a thin driver of
// protocol_engine (engine.hpp), which holds every rule of docs/protocol.md. The session
// only moves bytes and time: it reads into one buffer and feeds the engine, writes what
// the engine produced (PONGs ahead of queued frames), keeps one timer at the engine's
// next_timeout, classifies socket errors for it (cause.hpp, TCP_INFO), and closes the
// socket the way the engine's end says. on_end fires exactly once, after the close, and
// nothing outlives it: no pending operation holds the session once it has ended.
//
// Why completion handlers on a strand rather than coroutines: a session has at most one
// read, one write and one timer wait in flight, which three small handlers express
// without a coroutine frame per loop or a timer per wake-up signal. Every handler
// runs on the session's strand (public methods post to it), so members need no locks,
// and every handler catches what escapes it, logs it and ends the session with
// internal_error instead of letting it unwind through the caller's io_context::run().
//
// How a session closes (docs/protocol.md, "Closing"), as protocol_engine::end_mode says:
// - graceful: what is queued, then the engine's BYE or ERROR, then shutdown(SHUT_WR),
//   while reading and discarding until the peer's FIN, all bounded by close_drain_time
//   and close_drain_bytes; then close. The peer gets our last frame and an EOF, never an
//   RST caused by data we left unread.
// - abortive: SO_LINGER {1, 0} and close: an RST, no FIN_WAIT or TIME_WAIT left for a
//   peer already judged dead (heartbeat timeout, abort()).
// - plain: close; the kernel already ended the connection (EOF, RST, timeouts).
#pragma once

#include <deadpeer/cause.hpp>
#include <deadpeer/detector.hpp>
#include <deadpeer/engine.hpp>
#include <deadpeer/keepalive.hpp>
#include <deadpeer/wire.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <vector>

namespace deadpeer {

/// Everything a session needs to know; the defaults suit a loopback or LAN peer:
/// the protocol's settings (engine_config: role, heartbeat, detector, handshake, client
/// identity, the server's interval range, ...) and what only a socket-owning session adds.
struct session_config : engine_config {
  /// Kernel keepalive to apply to the socket; nullopt leaves the socket as it is.
  std::optional<keepalive_options> keepalive;
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

class session : public std::enable_shared_from_this<session>, private engine_observer {
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
  /// running: the engine decides; closing: its end is decided and the graceful close is
  /// under way; closed: the socket is closed and on_end has run.
  enum class phase : std::uint8_t { running, closing, closed };
  using error_code = boost::system::error_code;

  void begin();
  void on_read(error_code ec, std::size_t bytes);
  void on_written(error_code ec, std::size_t bytes);
  void on_timer(error_code ec);
  void proceed();
  void read();
  void flush();
  void arm_timer();
  void wait_timer();
  void begin_close();
  void finish();
  void end_by_socket_error(std::error_code ec, connection_context::operation op);
  void end_by_exception(const char* what);
  template <typename Step>
  void guarded(Step&& step);
  template <typename... Args>
  auto on_strand(void (session::*handler)(Args...));

  // engine_observer: the engine's events, passed on to the handlers.
  void on_established(const session_established& established) override;
  void on_data(std::span<const std::byte> payload) override;
  void on_rtt(std::chrono::nanoseconds rtt) override;
  void on_peer_finished() override;
  std::optional<wire::error> admit(const wire::hello& hello) override;

  socket_type socket_;
  boost::asio::strand<boost::asio::any_io_executor> strand_;
  /// The engine's next_timeout while running, the drain deadline while closing.
  boost::asio::steady_timer timer_;
  session_config config_;
  engine_config engine_config_;  ///< the engine keeps a pointer to it
  session_handlers handlers_;
  engine_output output_;    ///< produced by the engine, not yet handed to the socket
  engine_output writing_;   ///< what the write in flight is sending
  std::int64_t opened_ns_;  ///< when the engine was created: its handshake clock starts here
  protocol_engine engine_;
  keepalive_settings keepalive_in_force_;
  std::size_t drained_bytes_ = 0;
  phase phase_ = phase::running;
  bool read_in_flight_ = false;
  bool write_in_flight_ = false;
  bool timer_waiting_ = false;
  bool peer_finished_ = false;  ///< EOF was read: nothing more to read
  bool fin_sent_ = false;       ///< shutdown(SHUT_WR) done while closing
  std::array<std::byte, 8 * 1024> read_buffer_;
};

}  // namespace deadpeer
