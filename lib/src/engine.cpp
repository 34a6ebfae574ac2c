// The protocol engine's rules (engine.hpp says what it decides). Each rule is written once
// here and cites its section of docs/protocol.md; drivers only move bytes and time.
#include <deadpeer/engine.hpp>

#include <deadpeer/clock.hpp>
#include <deadpeer/config_error.hpp>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace deadpeer {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using time_point = protocol_engine::time_point;

// The cause recorded when an ERROR frame ends the session (sent or received). Codes for
// bytes that break the protocol are protocol_error; refusals and local conditions (§7.1,
// codes 3 and 6-11) name themselves, so an operator sees `server_full`, not a bad frame.
deadpeer::cause cause_for(wire::error_code code) {
  switch (code) {
    case wire::error_code::unsupported_version:
      return cause::unsupported_version;
    case wire::error_code::invalid_client_id:
      return cause::invalid_client_id;
    case wire::error_code::auth_failed:
      return cause::auth_failed;
    case wire::error_code::too_many_pings:
      return cause::too_many_pings;
    case wire::error_code::server_full:
      return cause::server_full;
    case wire::error_code::handshake_timeout:
      return cause::handshake_timeout;
    case wire::error_code::internal_error:
      return cause::internal_error;
    case wire::error_code::malformed_frame:
    case wire::error_code::frame_too_large:
    case wire::error_code::unknown_frame_type:
    case wire::error_code::unexpected_frame:
      break;
  }
  return cause::protocol_error;
}

// ERROR text is limited to 255 bytes of UTF-8 (§4.7): cut at a character boundary.
std::string clip_error_text(std::string text) {
  if (text.size() <= wire::max_error_text) return text;
  std::size_t cut = wire::max_error_text;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80)
    --cut;
  text.resize(cut);
  return text;
}

std::string_view frame_name(const wire::frame& f) {
  return wire::to_string(wire::type_of(f));
}

std::uint32_t to_u32_ms(milliseconds d) {
  return static_cast<std::uint32_t>(std::clamp<milliseconds::rep>(d.count(), 0, UINT32_MAX));
}

}  // namespace

void validate(const engine_config& c) {
  if (c.role == session_role::client &&
      (c.client_id.empty() || c.client_id.size() > wire::max_client_id ||
       c.auth_token.size() > wire::max_auth_token))
    throw std::invalid_argument("session: client id must be 1..64 bytes, auth token at most 255");
  if (!(c.ping_jitter >= 0.0 && c.ping_jitter < 1.0))
    throw std::invalid_argument("session: ping_jitter must be in [0, 1)");
  if (c.min_interval <= milliseconds(0) || c.min_interval > c.max_interval)
    throw std::invalid_argument("session: need 0 < min_interval <= max_interval");
  if (c.ping_coalesce < milliseconds(0))
    throw std::invalid_argument("session: ping_coalesce must be >= 0");
  if (c.handshake_timeout < milliseconds(0))
    throw std::invalid_argument("session: handshake_timeout must be >= 0");
  if (c.ping_strike_limit < 1 || c.ping_strike_limit > 255)
    throw std::invalid_argument("session: ping_strike_limit must be in 1..255");
  if (c.max_frame < wire::handshake_max_frame)
    throw std::invalid_argument("session: max_frame must be at least 1024");
  (void)dead_after_for(c.detector, c.role == session_role::server
                                       ? c.default_interval
                                       : std::max(c.requested_interval, milliseconds(1)));
}

milliseconds dead_after_for(const detector_config& detector, milliseconds interval) {
  const auto config = with_interval(detector, interval);
  if (const auto* fixed = std::get_if<fixed_detector_config>(&config)) return fixed_timeout(*fixed);
  if (const auto* adaptive = std::get_if<adaptive_detector_config>(&config)) {
    (void)make_detector(config, time_point{});  // throws config_error for bad parameters
    // The adaptive detector never waits longer than its cap: the promise WELCOME makes.
    return milliseconds(static_cast<milliseconds::rep>(
        std::ceil(adaptive->max_multiplier * static_cast<double>(interval.count()))));
  }
  const time_point start{};
  return std::chrono::ceil<milliseconds>(make_detector(config, start)->dead_at() - start);
}

protocol_engine::protocol_engine(const engine_config& config, time_point now,
                                 std::uint64_t session_id, std::uint32_t jitter_seed,
                                 engine_output& out)
    : config_(&config),
      opened_(now),
      last_sent_(now),
      last_heard_(now),
      last_ping_received_(time_point::min()),
      session_id_(session_id),
      rng_(jitter_seed == 0 ? 0x9E3779B9u : jitter_seed),
      state_(config.role == session_role::server ? state::awaiting_hello
                                                 : state::awaiting_welcome) {
  // §5.1: the client speaks first.
  if (config.role == session_role::client)
    emit(wire::hello{.version = wire::protocol_version,
                     .client_id = config.client_id,
                     .requested_interval_ms = to_u32_ms(config.requested_interval),
                     .auth_token = config.auth_token},
         now, out.ordered);
}

protocol_engine::~protocol_engine() = default;
protocol_engine::protocol_engine(protocol_engine&&) noexcept = default;
protocol_engine& protocol_engine::operator=(protocol_engine&&) noexcept = default;

std::size_t protocol_engine::buffered() const {
  return partial_ ? partial_->bytes.size() : 0;
}

void protocol_engine::receive(std::span<const std::byte> bytes, time_point now, engine_output& out,
                              engine_observer& observer) {
  if (end_ || peer_finished_ || bytes.empty()) return;
  // §6 proof of life: any byte, even part of a frame.
  if (adaptive_on_ && now > last_heard_)
    adaptive_.learn(std::get<adaptive_detector_config>(config_->detector),
                    std::chrono::duration<double, std::milli>(now - last_heard_).count());
  last_heard_ = std::max(last_heard_, now);
  if (phi_) phi_->record_arrival(now);
  if (!partial_) {
    const std::size_t used = [&] {
      std::size_t at = 0;
      while (!end_) {
        const std::size_t n = consume(bytes.subspan(at), now, out, observer);
        if (n == 0) break;
        at += n;
      }
      return at;
    }();
    // Only the tail of a frame still arriving is kept, per connection.
    if (!end_ && used < bytes.size())
      partial_ = std::make_unique<partial_frame>(partial_frame{
          {bytes.begin() + static_cast<std::ptrdiff_t>(used), bytes.end()}, now});
    return;
  }
  auto& held = partial_->bytes;
  held.insert(held.end(), bytes.begin(), bytes.end());
  std::size_t at = 0;
  while (!end_) {
    const std::size_t n = consume(std::span(held).subspan(at), now, out, observer);
    if (n == 0) break;
    at += n;
  }
  if (end_ || at == held.size()) {
    partial_.reset();
  } else if (at != 0) {
    // The frame that was arriving is complete; the bytes left start another, now.
    held.erase(held.begin(), held.begin() + static_cast<std::ptrdiff_t>(at));
    partial_->since = now;
  }
}

// Decodes and handles the first frame of `bytes`; returns the bytes it took (0: needs more,
// or the connection ended).
std::size_t protocol_engine::consume(std::span<const std::byte> bytes, time_point now,
                                     engine_output& out, engine_observer& observer) {
  auto one = wire::decode_one(bytes, max_frame_);
  if (auto* bad = std::get_if<wire::decode_error>(&one.result)) {
    end_by_protocol(bad->code, std::move(bad->detail), now, out);
    return 0;
  }
  auto* frame = std::get_if<wire::frame>(&one.result);
  if (!frame) return 0;
  ++frames_received_;
  try {
    handle(*frame, now, out, observer);
  } catch (const std::exception& e) {
    // A throwing observer or an unencodable reply must not leave a connection nobody
    // reads: end it, saying why.
    end_by_protocol(wire::error_code::internal_error, std::string("internal error: ") + e.what(),
                    now, out);
  }
  return one.consumed;
}

void protocol_engine::receive_eof(time_point now, engine_observer& observer) {
  if (end_ || peer_finished_) return;
  if (config_->end_on_eof) {
    decide(cause::peer_closed, detected_by::eof, close_mode::plain, now);
    return;
  }
  peer_finished_ = true;
  observer.on_peer_finished();
}

void protocol_engine::on_timeout(time_point now, engine_output& out) {
  if (end_) return;
  if (state_ != state::established) {
    // §5 handshake timeout. On the server this is the reaper's rule for a stuck handshake.
    if (config_->handshake_timeout.count() > 0 && now >= opened_ + config_->handshake_timeout) {
      const bool server = config_->role == session_role::server;
      end_by_protocol(wire::error_code::handshake_timeout,
                      server ? "no HELLO in time" : "no WELCOME in time", now, out,
                      server ? detected_by::reaper : detected_by::application);
    }
    return;
  }
  if (!config_->heartbeat) return;
  // §6: a frame must be complete within dead_after of its first bytes, however slowly
  // they trickle in (each byte is life, so the detector alone would wait forever).
  if (partial_ && now >= frame_due()) {
    end_by_protocol(wire::error_code::malformed_frame,
                    "frame not complete within " + std::to_string(dead_after_ms_) +
                        " ms of its first byte",
                    now, out);
    return;
  }
  // §6 declaring the peer dead: abortive, nothing more is sent.
  if (now >= dead_at()) {
    decide(cause::heartbeat_timeout, detected_by::heartbeat, close_mode::abortive, now);
    return;
  }
  // §6 sending: a PING after a jittered wait of sending nothing.
  if (!send_closed_ && now >= ping_due())
    emit(wire::ping{.sequence = next_sequence_++,
                    .timestamp_ns = static_cast<std::uint64_t>(to_monotonic_ns(now))},
         now, out.ordered);
}

time_point protocol_engine::next_timeout() const {
  if (end_) return time_point::max();
  if (state_ != state::established)
    return config_->handshake_timeout.count() > 0 ? opened_ + config_->handshake_timeout
                                                  : time_point::max();
  if (!config_->heartbeat) return time_point::max();
  const auto due = partial_ ? std::min(dead_at(), frame_due()) : dead_at();
  if (send_closed_) return due;
  return std::min(due, ping_due());
}

time_point protocol_engine::frame_due() const {
  return partial_->since + milliseconds(dead_after_ms_);
}

// The jittered wait, then rounded up to the coalescing grid (absolute time, so every
// connection of a driver shares the same instants) but never past the longest wait
// §6 allows: PINGs that fall due close together go out on one wake-up of the driver.
time_point protocol_engine::ping_due() const {
  const auto due = last_sent_ + std::chrono::microseconds(ping_delay_us_);
  const auto grid = std::chrono::duration_cast<time_point::duration>(config_->ping_coalesce);
  if (grid.count() <= 0) return due;
  const auto since_epoch = due.time_since_epoch();
  const auto rounded = time_point((since_epoch + grid - time_point::duration(1)) / grid * grid);
  const auto latest = last_sent_ + std::chrono::duration_cast<time_point::duration>(
                                      std::chrono::duration<double, std::milli>(
                                          static_cast<double>(interval_ms_) * ping_wait_factor(1.0)));
  return std::max(due, std::min(rounded, latest));
}

std::optional<detector_estimate> protocol_engine::learned() const {
  if (phi_) return phi_->estimate();
  if (adaptive_on_)
    return adaptive_.estimate(std::get<adaptive_detector_config>(config_->detector), milliseconds(interval_ms_));
  return std::nullopt;
}

time_point protocol_engine::dead_at() const {
  if (phi_) return phi_->dead_at();
  if (adaptive_on_)
    return last_heard_ + std::chrono::duration_cast<time_point::duration>(std::chrono::duration<double, std::milli>(
                             adaptive_.timeout_ms(std::get<adaptive_detector_config>(config_->detector),
                                                  milliseconds(interval_ms_))));
  return last_heard_ + milliseconds(dead_after_ms_);
}

void protocol_engine::send_data(std::span<const std::byte> payload, time_point now,
                                engine_output& out) {
  if (payload.size() + 1 > std::max(max_frame_, wire::default_max_frame))
    throw std::length_error("DATA payload of " + std::to_string(payload.size()) +
                            " bytes exceeds the frame limit");
  if (end_ || send_closed_) return;
  wire::data d;
  d.payload.assign(payload.begin(), payload.end());
  if (state_ != state::established) {
    // §5.1: nothing but HELLO before WELCOME; it goes out right after the handshake.
    if (!held_data_) held_data_ = std::make_unique<std::vector<std::byte>>();
    wire::encode(d, *held_data_);
    ++frames_sent_;
    return;
  }
  emit(d, now, out.ordered);
}

void protocol_engine::close(wire::bye_reason reason, deadpeer::cause why, time_point now,
                            engine_output& out) {
  if (end_) return;
  emit(wire::bye{reason}, now, out.ordered);
  decide(why, detected_by::application, send_closed_ ? close_mode::plain : close_mode::graceful,
         now);
  end_->bye = reason;
}

void protocol_engine::reject(wire::error_code code, std::string text, deadpeer::cause why,
                             deadpeer::detected_by by, time_point now, engine_output& out) {
  if (end_) return;
  emit(wire::error{code, clip_error_text(std::move(text))}, now, out.ordered);
  // A caller that passed the generic protocol_error for a refusal gets the specific cause.
  if (why == cause::protocol_error) why = cause_for(code);
  decide(why, by, send_closed_ ? close_mode::plain : close_mode::graceful, now);
  end_->protocol_error = code;
}

void protocol_engine::abort(deadpeer::cause why, deadpeer::detected_by by, time_point now) {
  decide(why, by, close_mode::abortive, now);
}

void protocol_engine::fail(deadpeer::cause why, deadpeer::detected_by by, std::error_code error,
                           time_point now) {
  if (end_) return;
  decide(why, by, close_mode::plain, now);
  end_->error = error;
}

void protocol_engine::end_by_protocol(wire::error_code code, std::string text, time_point now,
                                      engine_output& out, deadpeer::detected_by by) {
  reject(code, std::move(text), cause_for(code), by, now, out);
}

void protocol_engine::decide(deadpeer::cause why, deadpeer::detected_by by, close_mode mode,
                             time_point now) {
  if (end_) return;  // the first mechanism to notice wins
  end_ = std::make_unique<session_end>();
  end_->cause = why;
  end_->detected_by = by;
  end_->graceful = mode == close_mode::graceful;
  end_->abortive = mode == close_mode::abortive;
  end_->opened_ns = to_monotonic_ns(opened_);
  end_->decided_ns = to_monotonic_ns(now);
  end_->last_heard_ns = to_monotonic_ns(last_heard_);
  end_->frames_received = frames_received_;
  end_->frames_sent = frames_sent_;
  if (last_rtt_ns_ >= 0) end_->last_rtt = nanoseconds(last_rtt_ns_);
  end_mode_ = mode;
  partial_.reset();
  held_data_.reset();
}

void protocol_engine::handle(wire::frame& frame, time_point now, engine_output& out,
                             engine_observer& observer) {
  // §5 frame order.
  if (state_ == state::awaiting_hello) {
    if (auto* hello = std::get_if<wire::hello>(&frame))
      handle_hello(*hello, now, out, observer);
    else
      end_by_protocol(wire::error_code::unexpected_frame,
                      "expected HELLO, got " + std::string(frame_name(frame)), now, out);
    return;
  }
  if (state_ == state::awaiting_welcome) {
    if (const auto* welcome = std::get_if<wire::welcome>(&frame)) {
      handle_welcome(*welcome, now, out, observer);
      return;
    }
    if (!std::holds_alternative<wire::error>(frame) && !std::holds_alternative<wire::bye>(frame)) {
      end_by_protocol(wire::error_code::unexpected_frame,
                      "expected WELCOME, got " + std::string(frame_name(frame)), now, out);
      return;
    }
  }

  if (auto* ping = std::get_if<wire::ping>(&frame)) {
    if (config_->role == session_role::server) {
      // §6 ping strikes: the first PING is never one; closer than I/2 to the previous is.
      const bool too_soon = last_ping_received_ != time_point::min() &&
                            now - last_ping_received_ < milliseconds(interval_ms_) / 2;
      ping_strikes_ = too_soon ? static_cast<std::uint8_t>(ping_strikes_ + 1) : 0;
      last_ping_received_ = now;
      if (ping_strikes_ >= config_->ping_strike_limit) {
        end_by_protocol(wire::error_code::too_many_pings,
                        "PINGs faster than half the accepted interval " +
                            std::to_string(interval_ms_) + "ms",
                        now, out);
        return;
      }
    }
    // §6 answering: at once, ahead of queued DATA.
    emit(wire::pong{.sequence = ping->sequence, .timestamp_ns = ping->timestamp_ns}, now,
         out.urgent);
  } else if (const auto* pong = std::get_if<wire::pong>(&frame)) {
    // Only our own PINGs carry our clock; anything else is ignored, not trusted. The
    // timestamp is the peer's bytes: compared unsigned, so that no value can overflow the
    // subtraction (found by fuzz_engine: a timestamp near 2^63).
    const auto now_ns = static_cast<std::uint64_t>(std::max<std::int64_t>(to_monotonic_ns(now), 0));
    if (pong->sequence < next_sequence_ && pong->timestamp_ns <= now_ns) {
      const auto rtt = static_cast<std::int64_t>(now_ns - pong->timestamp_ns);
      last_rtt_ns_ = rtt;
      observer.on_rtt(nanoseconds(rtt));
    }
  } else if (const auto* d = std::get_if<wire::data>(&frame)) {
    observer.on_data(d->payload);
  } else if (const auto* bye = std::get_if<wire::bye>(&frame)) {
    // §8.1: the peer closes gracefully; we answer nothing and close after its FIN.
    decide(bye->reason == wire::bye_reason::superseded ? cause::superseded : cause::peer_closed,
           detected_by::application, close_mode::graceful, now);
    end_->bye = bye->reason;
  } else if (const auto* error = std::get_if<wire::error>(&frame)) {
    decide(cause_for(error->code), detected_by::application, close_mode::graceful, now);
    end_->protocol_error = error->code;
  } else {
    end_by_protocol(wire::error_code::unexpected_frame,
                    std::string(frame_name(frame)) + " after the handshake", now, out);
  }
}

void protocol_engine::handle_hello(wire::hello& hello, time_point now, engine_output& out,
                                   engine_observer& observer) {
  // §5.2: magic, version and id were checked by the decoder; token and capacity are the
  // owner's, in that order.
  if (auto refusal = observer.admit(hello)) {
    const auto code = refusal->code;
    reject(code, std::move(refusal->text), cause_for(code), detected_by::application, now, out);
    return;
  }
  // §5 choosing the interval.
  const engine_config& c = *config_;
  const auto requested = milliseconds(hello.requested_interval_ms);
  const auto interval =
      requested.count() == 0 ? std::clamp(c.default_interval, c.min_interval, c.max_interval)
                             : std::clamp(requested, c.min_interval, c.max_interval);
  const auto dead_after = dead_after_for(c.detector, interval);
  emit(wire::welcome{.version = wire::protocol_version,
                     .interval_ms = to_u32_ms(interval),
                     .dead_after_ms = to_u32_ms(dead_after),
                     .session_id = session_id_,
                     .max_frame = c.max_frame,
                     .min_interval_ms = to_u32_ms(c.min_interval),
                     .max_interval_ms = to_u32_ms(c.max_interval)},
       now, out.ordered);
  max_frame_ = c.max_frame;  // §3.1: WELCOME's maximum from now on
  become_established(interval, dead_after, session_id_, std::move(hello.client_id), now, out,
                     observer);
}

void protocol_engine::handle_welcome(const wire::welcome& welcome, time_point now,
                                     engine_output& out, engine_observer& observer) {
  if (welcome.interval_ms == 0) {
    end_by_protocol(wire::error_code::malformed_frame, "WELCOME with a heartbeat interval of 0",
                    now, out);
    return;
  }
  max_frame_ = std::max(welcome.max_frame, wire::handshake_max_frame);
  session_id_ = welcome.session_id;
  become_established(milliseconds(welcome.interval_ms), milliseconds(welcome.dead_after_ms),
                     welcome.session_id, config_->client_id, now, out, observer);
}

void protocol_engine::become_established(milliseconds interval, milliseconds dead_after,
                                         std::uint64_t session_id, std::string client_id,
                                         time_point now, engine_output& out,
                                         engine_observer& observer) {
  state_ = state::established;
  interval_ms_ = to_u32_ms(interval);
  // §6: the sending clock starts when the handshake completes for this side.
  last_sent_ = now;
  roll_ping_delay();
  const auto detector = with_interval(config_->detector, interval);
  dead_after_ms_ = to_u32_ms(dead_after);
  if (std::holds_alternative<fixed_detector_config>(detector)) {
    dead_after_ms_ = to_u32_ms(fixed_timeout(std::get<fixed_detector_config>(detector)));
  } else if (std::holds_alternative<adaptive_detector_config>(detector)) {
    // Learned inline from every arrival (receive): no object per connection.
    adaptive_ = adaptive_state(interval);
    adaptive_on_ = true;
  } else {
    phi_ = make_detector(detector, last_heard_);
  }
  if (held_data_) {
    out.ordered.insert(out.ordered.end(), held_data_->begin(), held_data_->end());
    held_data_.reset();
    roll_ping_delay();
  }
  observer.on_established(session_established{.client_id = std::move(client_id),
                                              .interval = interval,
                                              .dead_after = dead_after,
                                              .session_id = session_id});
}

void protocol_engine::emit(const wire::frame& frame, time_point now, std::vector<std::byte>& to) {
  if (send_closed_) return;
  wire::encode(frame, to);
  ++frames_sent_;
  last_sent_ = now;
  last_sent_answered_ =
      std::holds_alternative<wire::pong>(frame) || std::holds_alternative<wire::welcome>(frame);
  roll_ping_delay();
}

// §6: a new wait after every frame sent, uniform in [(1 - j) I, (1 + j) I]; after an
// answer (PONG, WELCOME) in [(1 + j) I, (1 + 2j) I], which leaves the pinging to a peer
// that pings: one exchange per interval instead of up to two.
double protocol_engine::ping_wait_factor(double u) const {
  const double j = config_->ping_jitter;
  return last_sent_answered_ ? 1.0 + j + j * u : 1.0 - j + 2.0 * j * u;
}

void protocol_engine::roll_ping_delay() {
  const double u = static_cast<double>(next_random()) / 4294967296.0;
  ping_delay_us_ = static_cast<std::uint32_t>(
      std::min(static_cast<double>(interval_ms_) * 1000.0 * ping_wait_factor(u), 4.0e9));
}

std::uint32_t protocol_engine::next_random() {
  // xorshift32: four bytes of state per connection are enough for jitter.
  rng_ ^= rng_ << 13;
  rng_ ^= rng_ >> 17;
  rng_ ^= rng_ << 5;
  return rng_;
}

}  // namespace deadpeer
