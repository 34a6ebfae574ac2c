// The session's decisions: which loop ends it, what it records, and how the socket is
// closed. Everything runs on one strand, so the members need no locks; public methods
// post onto it. The end is decided exactly once (end_with ignores later attempts): the
// first mechanism to notice wins, and that is what detected_by reports.
#include <deadpeer/session.hpp>

#include <deadpeer/clock.hpp>
#include <deadpeer/tcp_info.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <array>
#include <iostream>
#include <stdexcept>

namespace deadpeer {
namespace {

namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::steady_clock;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// The cause recorded when an ERROR frame ends the session (sent or received).
deadpeer::cause cause_for(wire::error_code code) {
  return code == wire::error_code::handshake_timeout ? cause::handshake_timeout
                                                     : cause::protocol_error;
}

// ERROR text is limited to 255 bytes of UTF-8: cut at a character boundary.
std::string clip_error_text(std::string text) {
  if (text.size() <= wire::max_error_text) return text;
  std::size_t cut = wire::max_error_text;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80)
    --cut;
  text.resize(cut);
  return text;
}

detector_config with_interval(detector_config config, milliseconds interval) {
  std::visit([&](auto& c) { c.interval = interval; }, config);
  return config;
}

std::string_view frame_name(const wire::frame& f) {
  return wire::to_string(wire::type_of(f));
}

}  // namespace

session::session(socket_type socket, session_config config, session_handlers handlers)
    : socket_(std::move(socket)),
      strand_(asio::make_strand(socket_.get_executor())),
      config_(std::move(config)),
      handlers_(std::move(handlers)),
      watchdog_timer_(strand_),
      writer_signal_(strand_),
      parked_reader_(strand_),
      state_(config_.role == session_role::server ? state::awaiting_hello
                                                  : state::awaiting_welcome),
      decoder_(wire::handshake_max_frame),
      jitter_rng_(std::random_device{}()),
      opened_ns_(monotonic_ns()) {}

session::~session() = default;

std::shared_ptr<session> session::start(socket_type socket, session_config config,
                                        session_handlers handlers) {
  // Configuration errors surface here, synchronously, not inside the coroutine.
  if (config.keepalive) validate(*config.keepalive);
  (void)dead_after_for(config.detector, config.role == session_role::server
                                            ? config.default_interval
                                            : std::max(config.requested_interval, milliseconds(1)));
  if (config.role == session_role::client &&
      (config.client_id.empty() || config.client_id.size() > wire::max_client_id ||
       config.auth_token.size() > wire::max_auth_token))
    throw std::invalid_argument("session: client id must be 1..64 bytes, auth token at most 255");
  if (config.ping_jitter < 0.0 || config.ping_jitter >= 1.0)
    throw std::invalid_argument("session: ping_jitter must be in [0, 1)");
  if (config.min_interval <= milliseconds(0) || config.min_interval > config.max_interval)
    throw std::invalid_argument("session: need 0 < min_interval <= max_interval");

  auto self = std::make_shared<session>(std::move(socket), std::move(config), std::move(handlers));
  asio::co_spawn(self->strand_, self->run(), [self](const std::exception_ptr& e) {
    // A bug, not a network event: say so loudly rather than losing the session silently.
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      std::cerr << "deadpeer session: unexpected exception: " << x.what() << std::endl;
    }
  });
  return self;
}

void session::send(std::vector<std::byte> payload) {
  if (payload.size() >= wire::default_max_frame)
    throw std::length_error("session::send: payload of " + std::to_string(payload.size()) +
                            " bytes exceeds the frame limit");
  asio::post(strand_, [self = shared_from_this(), payload = std::move(payload)]() mutable {
    if (self->end_) return;
    const wire::frame frame = wire::data{std::move(payload)};
    if (self->state_ == state::established)
      self->enqueue(frame);
    else
      self->before_handshake_.push_back(wire::encode(frame));
  });
}

void session::close(wire::bye_reason reason, deadpeer::cause why) {
  asio::post(strand_, [self = shared_from_this(), reason, why] {
    auto e = make_end(why, detected_by::application, close_mode::graceful, wire::bye{reason});
    e.end.bye = reason;
    self->end_with(std::move(e));
  });
}

void session::reject(wire::error_code code, std::string text, deadpeer::cause why,
                     deadpeer::detected_by by) {
  asio::post(strand_, [self = shared_from_this(), code, text = std::move(text), why, by]() mutable {
    auto e = make_end(why, by, close_mode::graceful,
                      wire::error{code, clip_error_text(std::move(text))});
    e.end.protocol_error = code;
    self->end_with(std::move(e));
  });
}

void session::abort(deadpeer::cause why, deadpeer::detected_by by) {
  asio::post(strand_, [self = shared_from_this(), why, by] {
    self->end_with(make_end(why, by, close_mode::abortive));
  });
}

void session::half_close() {
  asio::post(strand_, [self = shared_from_this()] {
    if (self->end_ || self->send_closed_) return;
    self->send_closed_ = true;
    self->outgoing_.clear();
    boost::system::error_code ignored;
    self->socket_.shutdown(socket_type::shutdown_send, ignored);
  });
}

asio::awaitable<void> session::run() {
  // Holds the session alive for as long as it runs (start() may drop its pointer).
  const auto self = shared_from_this();
  const auto now = steady_clock::now();
  last_heard_ = last_sent_ = now;
  handshake_deadline_ = now + config_.handshake_timeout;

  if (config_.keepalive)
    if (const auto ec = apply_keepalive(socket_.native_handle(), *config_.keepalive))
      end_by_socket_error(ec, connection_context::operation::other);
  std::error_code read_back;
  keepalive_in_force_ = read_keepalive(socket_.native_handle(), read_back);

  if (config_.role == session_role::client && !end_)
    enqueue(wire::hello{
        .version = wire::protocol_version,
        .client_id = config_.client_id,
        .requested_interval_ms = static_cast<std::uint32_t>(config_.requested_interval.count()),
        .auth_token = config_.auth_token});
  if (!end_) co_await (reader() || watchdog() || writer());
  co_await finish();
}

asio::awaitable<void> session::reader() {
  std::array<std::byte, 16 * 1024> buffer{};
  while (!end_) {
    const auto [ec, n] = co_await socket_.async_read_some(asio::buffer(buffer), use_tuple);
    if (end_) co_return;
    if (ec == asio::error::eof && !config_.end_on_eof) {
      // Half-close: nothing more will arrive, but the peer may still read. Park until
      // the session ends for another reason.
      if (handlers_.on_peer_finished) handlers_.on_peer_finished();
      parked_reader_.expires_at(steady_clock::time_point::max());
      co_await parked_reader_.async_wait(use_tuple);
      co_return;
    }
    if (ec) {
      end_by_socket_error(ec, connection_context::operation::reading);
      co_return;
    }
    // Any byte is proof of life, even the first bytes of a frame still arriving.
    last_heard_ = steady_clock::now();
    if (detector_) detector_->record_arrival(last_heard_);
    if (handlers_.on_heard) handlers_.on_heard(to_monotonic_ns(last_heard_));
    decoder_.feed(std::span<const std::byte>(buffer.data(), n));
    while (!end_) {
      auto next = decoder_.next();
      if (std::holds_alternative<std::monostate>(next)) break;
      if (auto* bad = std::get_if<wire::decode_error>(&next)) {
        end_by_protocol(bad->code, bad->detail);
        break;
      }
      ++frames_received_;
      try {
        handle(std::move(std::get<wire::frame>(next)));
      } catch (const std::exception& e) {
        // A throwing callback or an unencodable reply must not leave a session that
        // nobody reads: end it, saying why.
        end_by_protocol(wire::error_code::internal_error,
                        std::string("internal error: ") + e.what());
      }
    }
  }
}

asio::awaitable<void> session::watchdog() {
  while (!end_) {
    const auto now = steady_clock::now();
    auto wake = steady_clock::time_point::max();
    if (state_ != state::established) {
      if (config_.handshake_timeout.count() <= 0) {
        // The owner enforces the handshake deadline; nothing to wake for.
      } else if (now >= handshake_deadline_) {
        end_by_protocol(wire::error_code::handshake_timeout, config_.role == session_role::server
                                                                 ? "no HELLO in time"
                                                                 : "no WELCOME in time");
        co_return;
      } else {
        wake = handshake_deadline_;
      }
    } else if (config_.heartbeat) {
      if (detector_->is_dead(now)) {
        end_with(make_end(cause::heartbeat_timeout, detected_by::heartbeat, close_mode::abortive));
        co_return;
      }
      if (now >= next_ping_at() && !send_closed_)
        enqueue(wire::ping{.sequence = next_sequence_++,
                           .timestamp_ns = static_cast<std::uint64_t>(monotonic_ns())});
      wake = send_closed_ ? detector_->dead_at() : std::min(detector_->dead_at(), next_ping_at());
    }
    watchdog_timer_.expires_at(wake);
    co_await watchdog_timer_.async_wait(use_tuple);  // woken early by wake_watchdog()
  }
}

asio::awaitable<void> session::writer() {
  std::vector<std::byte> batch;
  while (!end_) {
    if (outgoing_.empty()) {
      writer_signal_.expires_at(steady_clock::time_point::max());
      co_await writer_signal_.async_wait(use_tuple);
      continue;
    }
    // Everything queued goes out in one write.
    batch.clear();
    for (auto& frame : outgoing_)
      batch.insert(batch.end(), frame.begin(), frame.end());
    outgoing_.clear();
    const auto [ec, n] = co_await asio::async_write(socket_, asio::buffer(batch), use_tuple);
    if (ec) {
      // Cancelled mid-write as the session ends: keep the rest so a graceful close can
      // complete the frame before its last one, instead of corrupting the stream.
      partial_write_.assign(batch.begin() + static_cast<std::ptrdiff_t>(n), batch.end());
      // After half_close() our own shutdown fails the write: expected, not an end.
      if (!end_ && !send_closed_) end_by_socket_error(ec, connection_context::operation::writing);
      co_return;
    }
  }
}

asio::awaitable<void> session::finish() {
  pending_end& e = *end_;
  boost::system::error_code ignored;
  if (e.mode == close_mode::graceful && socket_.is_open() && send_closed_) {
    e.mode = close_mode::plain;  // our FIN is already out; nothing more may be sent
  } else if (e.mode == close_mode::graceful && socket_.is_open()) {
    const auto deadline = steady_clock::now() + config_.close_drain_time;
    std::vector<std::byte> tail = std::move(partial_write_);
    for (auto& frame : outgoing_)
      tail.insert(tail.end(), frame.begin(), frame.end());
    outgoing_.clear();
    if (e.last_frame) {
      wire::encode(*e.last_frame, tail);
      ++frames_sent_;
    }
    watchdog_timer_.expires_at(deadline);
    if (!tail.empty())
      co_await (asio::async_write(socket_, asio::buffer(tail), use_tuple) ||
                watchdog_timer_.async_wait(use_tuple));
    socket_.shutdown(socket_type::shutdown_send, ignored);
    // Read and discard until the peer's FIN: closing with unread data would send RST
    // and could destroy our last frame before the peer reads it.
    std::array<std::byte, 16 * 1024> sink{};
    std::size_t drained = 0;
    while (drained <= config_.close_drain_bytes && steady_clock::now() < deadline) {
      const auto result = co_await (socket_.async_read_some(asio::buffer(sink), use_tuple) ||
                                    watchdog_timer_.async_wait(use_tuple));
      if (result.index() != 0) break;  // drain time is up
      const auto [ec, n] = std::get<0>(result);
      if (ec) break;  // FIN (eof) or the connection is gone
      drained += n;
    }
  } else if (e.mode == close_mode::abortive) {
    socket_.set_option(asio::socket_base::linger(true, 0), ignored);
  }
  socket_.close(ignored);
  watchdog_timer_.cancel();
  writer_signal_.cancel();
  parked_reader_.cancel();

  e.end.opened_ns = opened_ns_;
  e.end.last_heard_ns = to_monotonic_ns(last_heard_);
  e.end.closed_ns = monotonic_ns();
  e.end.graceful = e.mode == close_mode::graceful;
  e.end.abortive = e.mode == close_mode::abortive;
  e.end.frames_received = frames_received_;
  e.end.frames_sent = frames_sent_;
  e.end.last_rtt = last_rtt_;
  if (handlers_.on_end) handlers_.on_end(e.end);
  // Drop the callbacks: they may hold pointers back to whoever holds this session.
  handlers_ = {};
}

void session::handle(wire::frame frame) {
  if (state_ == state::awaiting_hello) {
    if (auto* hello = std::get_if<wire::hello>(&frame))
      handle_hello(std::move(*hello));
    else
      end_by_protocol(wire::error_code::unexpected_frame,
                      "expected HELLO, got " + std::string(frame_name(frame)));
    return;
  }
  if (state_ == state::awaiting_welcome) {
    if (const auto* welcome = std::get_if<wire::welcome>(&frame)) {
      handle_welcome(*welcome);
      return;
    }
    if (!std::holds_alternative<wire::error>(frame) && !std::holds_alternative<wire::bye>(frame)) {
      end_by_protocol(wire::error_code::unexpected_frame,
                      "expected WELCOME, got " + std::string(frame_name(frame)));
      return;
    }
  }

  const auto now = steady_clock::now();
  std::visit(
      [&](auto& f) {
        using T = std::decay_t<decltype(f)>;
        if constexpr (std::is_same_v<T, wire::ping>) {
          if (config_.role == session_role::server) {
            const bool too_soon = last_ping_received_ != steady_clock::time_point{} &&
                                  now - last_ping_received_ < interval_ / 2;
            ping_strikes_ = too_soon ? ping_strikes_ + 1 : 0;
            last_ping_received_ = now;
            if (ping_strikes_ >= config_.ping_strike_limit) {
              end_by_protocol(wire::error_code::too_many_pings,
                              "PINGs faster than half the accepted interval " +
                                  std::to_string(interval_.count()) + "ms");
              return;
            }
          }
          enqueue(wire::pong{.sequence = f.sequence, .timestamp_ns = f.timestamp_ns},
                  /*ahead_of_data=*/true);
        } else if constexpr (std::is_same_v<T, wire::pong>) {
          const auto rtt = nanoseconds(monotonic_ns() - static_cast<std::int64_t>(f.timestamp_ns));
          // Only our own PINGs carry our clock; anything else is ignored, not trusted.
          if (f.sequence < next_sequence_ && rtt >= nanoseconds(0)) {
            last_rtt_ = rtt;
            if (handlers_.on_rtt) handlers_.on_rtt(rtt);
          }
        } else if constexpr (std::is_same_v<T, wire::data>) {
          if (handlers_.on_data) handlers_.on_data(f.payload);
        } else if constexpr (std::is_same_v<T, wire::bye>) {
          auto e = make_end(
              f.reason == wire::bye_reason::superseded ? cause::superseded : cause::peer_closed,
              detected_by::application, close_mode::graceful);
          e.end.bye = f.reason;
          end_with(std::move(e));
        } else if constexpr (std::is_same_v<T, wire::error>) {
          auto e = make_end(cause_for(f.code), detected_by::application, close_mode::graceful);
          e.end.protocol_error = f.code;
          end_with(std::move(e));
        } else {
          end_by_protocol(wire::error_code::unexpected_frame,
                          std::string(frame_name(frame)) + " after the handshake");
        }
      },
      frame);
}

void session::handle_hello(wire::hello hello) {
  if (handlers_.admit) {
    if (auto refusal = handlers_.admit(hello)) {
      const auto code = refusal->code;
      refusal->text = clip_error_text(std::move(refusal->text));
      auto e = make_end(cause_for(code), detected_by::application, close_mode::graceful,
                        std::move(*refusal));
      e.end.protocol_error = code;
      end_with(std::move(e));
      return;
    }
  }
  const auto requested = milliseconds(hello.requested_interval_ms);
  const auto interval =
      requested.count() == 0
          ? std::clamp(config_.default_interval, config_.min_interval, config_.max_interval)
          : std::clamp(requested, config_.min_interval, config_.max_interval);
  const auto dead_after = dead_after_for(config_.detector, interval);
  enqueue(
      wire::welcome{.version = wire::protocol_version,
                    .interval_ms = static_cast<std::uint32_t>(interval.count()),
                    .dead_after_ms = static_cast<std::uint32_t>(dead_after.count()),
                    .session_id = config_.session_id,
                    .max_frame = config_.max_frame,
                    .min_interval_ms = static_cast<std::uint32_t>(config_.min_interval.count()),
                    .max_interval_ms = static_cast<std::uint32_t>(config_.max_interval.count())});
  decoder_.set_max_frame(config_.max_frame);
  established(interval, dead_after, config_.session_id, std::move(hello.client_id));
}

void session::handle_welcome(const wire::welcome& welcome) {
  if (welcome.interval_ms == 0) {
    end_by_protocol(wire::error_code::malformed_frame, "WELCOME with a heartbeat interval of 0");
    return;
  }
  decoder_.set_max_frame(std::max(welcome.max_frame, wire::handshake_max_frame));
  established(milliseconds(welcome.interval_ms), milliseconds(welcome.dead_after_ms),
              welcome.session_id, config_.client_id);
}

void session::established(milliseconds interval, milliseconds dead_after, std::uint64_t session_id,
                          std::string client_id) {
  state_ = state::established;
  interval_ = interval;
  roll_ping_delay();  // counted from the handshake's last frame, not due at once
  detector_ = make_detector(with_interval(config_.detector, interval), last_heard_);
  for (auto& frame : before_handshake_)
    outgoing_.push_back(std::move(frame));
  before_handshake_.clear();
  writer_signal_.cancel();
  if (handlers_.on_established)
    handlers_.on_established(session_established{.client_id = std::move(client_id),
                                                 .interval = interval,
                                                 .dead_after = dead_after,
                                                 .session_id = session_id});
  wake_watchdog();
}

void session::enqueue(const wire::frame& frame, bool ahead_of_data) {
  if (send_closed_) return;
  // A PONG overtakes queued DATA so a large send does not inflate the peer's RTT.
  if (ahead_of_data)
    outgoing_.push_front(wire::encode(frame));
  else
    outgoing_.push_back(wire::encode(frame));
  ++frames_sent_;
  last_sent_ = steady_clock::now();
  roll_ping_delay();
  writer_signal_.cancel();
}

void session::roll_ping_delay() {
  // The next PING is due one jittered interval after the last thing we sent.
  std::uniform_real_distribution<double> factor(1.0 - config_.ping_jitter,
                                                1.0 + config_.ping_jitter);
  ping_delay_ = std::chrono::duration_cast<nanoseconds>(std::chrono::duration<double, std::milli>(
      static_cast<double>(interval_.count()) * factor(jitter_rng_)));
}

steady_clock::time_point session::next_ping_at() {
  return last_sent_ + ping_delay_;
}

void session::wake_watchdog() {
  watchdog_timer_.cancel();
}

void session::end_with(pending_end end) {
  if (end_) return;  // the first mechanism to notice wins
  end.end.decided_ns = monotonic_ns();
  end_ = std::move(end);
  wake_watchdog();
  writer_signal_.cancel();
  parked_reader_.cancel();
  // The reader may be parked in a read that nothing else would end.
  boost::system::error_code ignored;
  socket_.cancel(ignored);
}

void session::end_by_socket_error(std::error_code ec, connection_context::operation op) {
  // Was data unacknowledged when the kernel gave up? That decides between keepalive and
  // retransmission (or user timeout). The kernel purges its queues on abort but keeps its
  // counters: retransmissions mean data was in flight, keepalive probes mean it was idle.
  // Without TCP_INFO: sent after the last thing heard from a peer that answers everything.
  bool in_flight = state_ == state::established && last_sent_ > last_heard_;
  std::error_code info_error;
  if (const auto kernel = read_tcp_info(socket_.native_handle(), info_error)) {
    if (kernel->retransmits > 0 || kernel->backoff > 0)
      in_flight = true;
    else if (kernel->probes > 0)
      in_flight = false;
  }
  const connection_context context{
      .op = op,
      .data_in_flight = in_flight,
      .keepalive_armed = keepalive_in_force_.enabled,
      .user_timeout_armed = keepalive_in_force_.user_timeout.count() != 0};
  const auto verdict = classify(ec, context);
  auto e = make_end(verdict.cause, verdict.detected_by, close_mode::plain);
  e.end.error = ec;
  end_with(std::move(e));
}

void session::end_by_protocol(wire::error_code code, std::string text) {
  auto e = make_end(cause_for(code), detected_by::application, close_mode::graceful,
                    wire::error{code, clip_error_text(std::move(text))});
  e.end.protocol_error = code;
  end_with(std::move(e));
}

session::pending_end session::make_end(deadpeer::cause why, deadpeer::detected_by by,
                                       close_mode mode, std::optional<wire::frame> last_frame) {
  pending_end e{.end = {}, .mode = mode, .last_frame = std::move(last_frame)};
  e.end.cause = why;
  e.end.detected_by = by;
  return e;
}

}  // namespace deadpeer
