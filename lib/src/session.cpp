// The session as an Asio driver of protocol_engine (session.hpp says why it is shaped
// this way). Decided here, and only here: when to read, write and wake, how a socket
// error is classified for the engine, and how the socket is closed once the engine has
// decided the end. Every protocol rule is the engine's.
//
// After every engine call, proceed() brings the I/O in line with the engine: start the
// close once it has ended, hand its output to the socket, keep the timer at its next
// timeout, keep one read in flight. The timer is only ever moved earlier: when the
// engine's next timeout moves later (every frame sent or heard), the wait fires early,
// re-checks and re-arms, which is cheaper than cancelling a wait on every frame.
#include <deadpeer/log.hpp>
#include <deadpeer/session.hpp>

#include <deadpeer/clock.hpp>
#include <deadpeer/tcp_info.hpp>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include <iostream>
#include <random>
#include <stdexcept>
#include <utility>

namespace deadpeer {
namespace {

namespace asio = boost::asio;
using std::chrono::steady_clock;

// Validated here so that a bad configuration throws from session::start, in the caller.
engine_config engine_config_for(const session_config& c) {
  engine_config e = c;  // the protocol's part of the settings
  validate(e);
  return e;
}

steady_clock::time_point from_monotonic_ns(std::int64_t ns) {
  return steady_clock::time_point(
      std::chrono::duration_cast<steady_clock::duration>(std::chrono::nanoseconds(ns)));
}

void log_unexpected(const char* what) {
  log_line(log_level::error) << "deadpeer session: unexpected exception: " << what;
}

}  // namespace

// An exception from a handler or from a bug must not unwind through the owner's
// io_context::run(): it is logged and ends the session.
template <typename Step>
void session::guarded(Step&& step) {
  try {
    step();
  } catch (const std::exception& e) {
    end_by_exception(e.what());
  } catch (...) {
    end_by_exception("unknown exception");
  }
}

// A completion handler that runs `handler` on the strand and keeps the session alive
// until it has run.
template <typename... Args>
auto session::on_strand(void (session::*handler)(Args...)) {
  return asio::bind_executor(strand_, [self = shared_from_this(), handler](Args... args) {
    self->guarded([&] { (self.get()->*handler)(args...); });
  });
}

session::session(socket_type socket, session_config config, session_handlers handlers)
    : socket_(std::move(socket)),
      strand_(asio::make_strand(socket_.get_executor())),
      timer_(strand_),
      config_(std::move(config)),
      engine_config_(engine_config_for(config_)),
      handlers_(std::move(handlers)),
      opened_ns_(monotonic_ns()),
      engine_(engine_config_, from_monotonic_ns(opened_ns_), config_.session_id,
              std::random_device{}(), output_) {}

session::~session() = default;

std::shared_ptr<session> session::start(socket_type socket, session_config config,
                                        session_handlers handlers) {
  if (config.keepalive) validate(*config.keepalive);
  auto self = std::make_shared<session>(std::move(socket), std::move(config), std::move(handlers));
  asio::post(self->strand_, [self] { self->guarded([&] { self->begin(); }); });
  return self;
}

void session::send(std::vector<std::byte> payload) {
  // Checked here so that the caller gets the exception, not the strand.
  if (payload.size() >= wire::default_max_frame)
    throw std::length_error("session::send: payload of " + std::to_string(payload.size()) +
                            " bytes exceeds the frame limit");
  asio::post(strand_, [self = shared_from_this(), payload = std::move(payload)] {
    self->guarded([&] {
      self->engine_.send_data(payload, steady_clock::now(), self->output_);
      self->proceed();
    });
  });
}

void session::close(wire::bye_reason reason, deadpeer::cause why) {
  asio::post(strand_, [self = shared_from_this(), reason, why] {
    self->guarded([&] {
      self->engine_.close(reason, why, steady_clock::now(), self->output_);
      self->proceed();
    });
  });
}

void session::reject(wire::error_code code, std::string text, deadpeer::cause why,
                     deadpeer::detected_by by) {
  asio::post(strand_, [self = shared_from_this(), code, text = std::move(text), why, by]() mutable {
    self->guarded([&] {
      self->engine_.reject(code, std::move(text), why, by, steady_clock::now(), self->output_);
      self->proceed();
    });
  });
}

void session::abort(deadpeer::cause why, deadpeer::detected_by by) {
  asio::post(strand_, [self = shared_from_this(), why, by] {
    self->guarded([&] {
      self->engine_.abort(why, by, steady_clock::now());
      self->proceed();
    });
  });
}

void session::half_close() {
  asio::post(strand_, [self = shared_from_this()] {
    self->guarded([&] {
      if (self->engine_.ended() || self->engine_.sending_stopped()) return;
      self->engine_.stop_sending();
      self->output_.clear();
      error_code ignored;
      self->socket_.shutdown(socket_type::shutdown_send, ignored);
    });
  });
}

void session::begin() {
  if (config_.keepalive)
    if (const auto ec = apply_keepalive(socket_.native_handle(), *config_.keepalive))
      end_by_socket_error(ec, connection_context::operation::other);
  std::error_code read_back;
  keepalive_in_force_ = read_keepalive(socket_.native_handle(), read_back);
  proceed();  // sends a client's HELLO
}

void session::proceed() {
  if (phase_ == phase::running && engine_.ended()) begin_close();
  if (phase_ == phase::closed) return;
  flush();
  if (phase_ == phase::closing && !write_in_flight_ && !fin_sent_) {
    error_code ignored;
    socket_.shutdown(socket_type::shutdown_send, ignored);
    fin_sent_ = true;
  }
  if (phase_ == phase::closing && fin_sent_ && peer_finished_) {
    finish();
    return;
  }
  if (phase_ == phase::running) arm_timer();
  if (!read_in_flight_ && !peer_finished_) read();
}

void session::read() {
  read_in_flight_ = true;
  socket_.async_read_some(asio::buffer(read_buffer_), on_strand(&session::on_read));
}

void session::on_read(error_code ec, std::size_t bytes) {
  read_in_flight_ = false;
  if (phase_ == phase::closed) return;
  if (phase_ == phase::closing) {
    // Draining: the bytes are discarded; FIN or an error ends the wait for the peer.
    if (ec) {
      peer_finished_ = true;
    } else if ((drained_bytes_ += bytes) > config_.close_drain_bytes) {
      finish();
      return;
    }
    proceed();
    return;
  }
  const auto now = steady_clock::now();
  if (ec == asio::error::eof) {
    peer_finished_ = true;  // with end_on_eof = false the reader stays parked from here
    engine_.receive_eof(now, *this);
  } else if (ec) {
    end_by_socket_error(ec, connection_context::operation::reading);
  } else {
    if (handlers_.on_heard) handlers_.on_heard(to_monotonic_ns(now));
    engine_.receive(std::span<const std::byte>(read_buffer_.data(), bytes), now, output_, *this);
  }
  proceed();
}

void session::flush() {
  if (write_in_flight_ || output_.empty()) return;
  // PONGs go ahead of the frames queued behind them; the write in flight is not reordered.
  writing_.clear();
  std::swap(writing_, output_);
  write_in_flight_ = true;
  const std::array buffers{asio::buffer(writing_.urgent), asio::buffer(writing_.ordered)};
  asio::async_write(socket_, buffers, on_strand(&session::on_written));
}

void session::on_written(error_code ec, std::size_t) {
  write_in_flight_ = false;
  if (phase_ == phase::closed) return;
  if (ec && phase_ == phase::closing) {
    finish();  // the peer is gone: there is nothing left to deliver or wait for
    return;
  }
  // After half_close() our own shutdown fails the write: expected, not an end.
  if (ec && !engine_.sending_stopped())
    end_by_socket_error(ec, connection_context::operation::writing);
  proceed();
}

void session::arm_timer() {
  const auto due = engine_.next_timeout();
  if (due == steady_clock::time_point::max()) return;
  if (timer_waiting_ && timer_.expiry() <= due) return;  // fires early and re-arms
  timer_.expires_at(due);  // a wait for a later instant completes as operation_aborted
  wait_timer();
}

void session::wait_timer() {
  timer_waiting_ = true;
  timer_.async_wait(on_strand(&session::on_timer));
}

void session::on_timer(error_code ec) {
  if (ec == asio::error::operation_aborted || phase_ == phase::closed) return;
  // Fired just as expires_at replaced it: the replacing wait is still pending.
  if (steady_clock::now() < timer_.expiry()) return;
  timer_waiting_ = false;
  if (phase_ == phase::closing) {
    finish();  // the drain's time is up
    return;
  }
  const auto now = steady_clock::now();
  if (now >= engine_.next_timeout()) engine_.on_timeout(now, output_);
  proceed();
}

void session::begin_close() {
  phase_ = phase::closing;
  if (engine_.end_mode() != close_mode::graceful) {
    finish();
    return;
  }
  // One budget for the whole graceful close: the last frames, FIN, and the peer's FIN.
  timer_.expires_after(config_.close_drain_time);
  wait_timer();
}

void session::finish() {
  phase_ = phase::closed;
  error_code ignored;
  if (engine_.end_mode() == close_mode::abortive)
    socket_.set_option(asio::socket_base::linger(true, 0), ignored);
  socket_.close(ignored);  // what is in flight completes as operation_aborted
  timer_.cancel();
  session_end& end = engine_.end();
  end.closed_ns = monotonic_ns();
  // The handlers may hold pointers back to whoever holds this session: drop them.
  const session_handlers handlers = std::exchange(handlers_, {});
  if (!handlers.on_end) return;
  try {
    handlers.on_end(end);
  } catch (const std::exception& e) {
    log_unexpected(e.what());
  } catch (...) {
    log_unexpected("unknown exception");
  }
}

void session::end_by_exception(const char* what) {
  log_unexpected(what);
  if (phase_ == phase::closed) return;
  if (phase_ == phase::running) {
    try {
      engine_.reject(wire::error_code::internal_error, std::string("internal error: ") + what,
                     cause::internal_error, detected_by::application, steady_clock::now(), output_);
      proceed();
      return;
    } catch (...) {
      // Failing again while ending: close at once rather than leave it half done.
    }
  }
  finish();
}

void session::end_by_socket_error(std::error_code ec, connection_context::operation op) {
  const auto verdict =
      classify_socket_end(socket_.native_handle(), ec, op,
                          engine_.established() && engine_.sent_since_heard(), keepalive_in_force_);
  engine_.fail(verdict.cause, verdict.detected_by, ec, steady_clock::now());
}

void session::on_established(const session_established& established) {
  if (handlers_.on_established) handlers_.on_established(established);
}

void session::on_data(std::span<const std::byte> payload) {
  if (handlers_.on_data) handlers_.on_data(payload);
}

void session::on_rtt(std::chrono::nanoseconds rtt) {
  if (handlers_.on_rtt) handlers_.on_rtt(rtt);
}

void session::on_peer_finished() {
  if (handlers_.on_peer_finished) handlers_.on_peer_finished();
}

std::optional<wire::error> session::admit(const wire::hello& hello) {
  if (!handlers_.admit) return std::nullopt;
  return handlers_.admit(hello);
}

}  // namespace deadpeer
