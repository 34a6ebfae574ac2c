// Server wiring: accept, admit (limits, auth, takeover), record, reap, report. The
// decisions of each piece are in server.hpp; this file keeps them in one place so the
// registry's invariants are visible: a connection is in `connections` from accept until
// its session's on_end, in `by_client` while it is the live session for its id, and in
// the deadline ring for exactly as long as it is in `connections`.
#include <deadpeer/server.hpp>

#include <deadpeer/clock.hpp>
#include <deadpeer/config_error.hpp>
#include <deadpeer/deadline_ring.hpp>
#include <deadpeer/duration.hpp>
#include <deadpeer/session.hpp>
#include <deadpeer/store.hpp>
#include <deadpeer/tcp_info.hpp>

#include "metrics.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include <algorithm>
#include <deque>
#include <iostream>
#include <map>
#include <unordered_map>

namespace deadpeer {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

std::int64_t unix_ms_now() {
  return std::chrono::duration_cast<milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string to_string(const tcp::endpoint& e) {
  return e.address().is_v6() ? "[" + e.address().to_string() + "]:" + std::to_string(e.port())
                             : e.address().to_string() + ":" + std::to_string(e.port());
}

// Constant-time comparison: the time to reject a token must not reveal its prefix.
bool same_secret(std::string_view a, std::string_view b) {
  unsigned char difference = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < a.size(); ++i)
    difference |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return difference == 0;
}

// Only operating-system errors have an errno; asio's eof (a FIN) is not an error number.
bool is_errno(const std::error_code& ec) {
  return ec &&
         (ec.category() == std::system_category() || ec.category() == std::generic_category());
}

std::string errno_name(const std::error_code& ec) {
  if (!is_errno(ec)) return {};
  const auto name = linux_errno_name(ec.value());
  return name.empty() ? ec.message() : std::string(name);
}

double ms(std::int64_t ns) {
  return static_cast<double>(ns) / 1e6;
}

}  // namespace

void validate(const server_options& o) {
  if (o.keepalive) validate(*o.keepalive);
  if (o.min_interval <= milliseconds(0) || o.min_interval > o.max_interval)
    throw config_error("heartbeat interval range " + format_duration(o.min_interval) + ".." +
                       format_duration(o.max_interval) + " is empty or not positive");
  if (o.default_interval < o.min_interval || o.default_interval > o.max_interval)
    throw config_error("default heartbeat interval " + format_duration(o.default_interval) +
                       " is outside the accepted range " + format_duration(o.min_interval) + ".." +
                       format_duration(o.max_interval));
  if (o.handshake_timeout <= milliseconds(0))
    throw config_error("handshake timeout must be positive");
  if (o.reap_interval < milliseconds(10))
    throw config_error("reap interval " + format_duration(o.reap_interval) +
                       " is below the minimum of 10ms");
  if (o.max_connections == 0) throw config_error("max connections must be at least 1");
  if (o.max_per_ip == 0) throw config_error("max connections per IP must be at least 1");
  if (o.auth_token.size() > wire::max_auth_token)
    throw config_error("auth token is longer than 255 bytes");
  (void)make_detector(o.detector, steady_clock::now());  // throws config_error if invalid
  // WELCOME promises dead_after > interval (protocol.md): a shorter silence would declare
  // a client dead between two of its own heartbeats.
  if (const auto* fixed = std::get_if<fixed_detector_config>(&o.detector)) {
    if (fixed->timeout.count() > 0 && fixed->timeout <= o.max_interval)
      throw config_error("dead-after " + format_duration(fixed->timeout) +
                         " must be longer than the largest heartbeat interval granted (" +
                         format_duration(o.max_interval) + "); lower the interval maximum");
    if (fixed->timeout.count() == 0 && fixed->multiplier <= 1.0)
      throw config_error(
          "dead-after multiplier must be above 1 (dead after more than one "
          "interval of silence)");
  }
}

struct server::impl : control_source, std::enable_shared_from_this<server::impl> {
  struct connection {
    std::shared_ptr<session> s;
    int fd = -1;
    tcp::endpoint peer;
    std::string client_id;
    bool established = false;
    bool handshake_expired = false;  // the reaper has rejected it; a late HELLO is refused
    std::int64_t opened_ns = 0;
    std::int64_t opened_unix_ms = 0;
    std::int64_t last_heard_ns = 0;
    milliseconds interval{0};
    milliseconds dead_after{0};
    std::uint64_t rtt_samples = 0;
    double rtt_min_ms = 0, rtt_max_ms = 0, rtt_sum_ms = 0, rtt_last_ms = 0;
  };

  asio::io_context& io;
  server_options options;
  tcp::acceptor acceptor;
  std::unique_ptr<event_store> store;
  std::unique_ptr<control_api> api;
  asio::steady_timer reap_timer;
  deadline_ring ring;
  std::string keepalive_spec;
  std::string detector_description;
  std::string listen_text;  // cached: the acceptor is closed while stopping

  std::uint64_t next_id = 1;
  std::unordered_map<std::uint64_t, connection> connections;
  std::unordered_map<std::string, std::uint64_t> by_client;
  std::unordered_map<asio::ip::address, std::size_t> per_ip;
  bool stopping = false;

  // Counters and histograms for /status and /metrics.
  std::uint64_t accepted = 0;
  std::map<std::string, std::uint64_t> rejected;                      // reason -> count
  std::map<std::string, std::uint64_t> reaped;                        // reason -> count
  std::map<std::pair<std::string, std::string>, std::uint64_t> ends;  // (cause, detected_by)
  std::uint64_t superseded = 0;
  metrics::histogram detection_latency{
      {0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900}};
  metrics::histogram rtt_histogram{
      {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}};
  std::int64_t started_ns = monotonic_ns();

  std::deque<control_event> events;
  std::uint64_t next_event_id = 1;
  std::vector<std::function<void()>> event_waiters;

  impl(asio::io_context& context, server_options o)
      : io(context),
        options(std::move(o)),
        acceptor(context, options.listen),
        reap_timer(context),
        ring(options.reap_interval, 4096, steady_clock::now()) {
    listen_text = to_string(acceptor.local_endpoint());
    const auto defaults = read_kernel_defaults();
    keepalive_spec = options.keepalive
                         ? deadpeer::to_string(to_options(resolve(*options.keepalive, defaults)))
                         : "system default";
    detector_description = options.heartbeat
                               ? make_detector(options.detector, steady_clock::now())->describe()
                               : "off";
    if (!options.db_path.empty())
      store = std::make_unique<event_store>(event_store::options{.path = options.db_path});
    if (options.control)
      api = std::make_unique<control_api>(context.get_executor(), *options.control, *this);
  }

  void start() {
    if (api) api->start();
    asio::co_spawn(io, accept_loop(shared_from_this()), report_exception);
    asio::co_spawn(io, reap_loop(shared_from_this()), report_exception);
  }

  static void report_exception(const std::exception_ptr& e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      std::cerr << "deadpeer server: unexpected exception: " << x.what() << std::endl;
    }
  }

  // `self` keeps the server state alive while the loop runs.
  asio::awaitable<void> accept_loop([[maybe_unused]] std::shared_ptr<impl> self) {
    while (!stopping) {
      tcp::endpoint peer;
      auto [ec, socket] = co_await acceptor.async_accept(peer, asio::as_tuple(asio::use_awaitable));
      if (stopping || ec == asio::error::operation_aborted) co_return;
      if (ec) {
        // EMFILE and friends: the connections we hold keep being served; try again
        // after a pause instead of spinning on a full descriptor table.
        std::cerr << "deadpeer server: accept: " << ec.message() << std::endl;
        asio::steady_timer pause(io, milliseconds(100));
        co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
        continue;
      }
      admit_socket(std::move(socket), peer);
    }
  }

  session_config session_settings(std::uint64_t id) const {
    session_config c;
    c.role = session_role::server;
    c.keepalive = options.keepalive;
    c.heartbeat = options.heartbeat;
    c.detector = options.detector;
    c.handshake_timeout = std::chrono::milliseconds(0);  // the reaper owns this deadline
    c.end_on_eof = options.end_on_eof;
    c.min_interval = options.min_interval;
    c.max_interval = options.max_interval;
    c.default_interval = options.default_interval;
    c.session_id = id;
    return c;
  }

  void admit_socket(tcp::socket socket, const tcp::endpoint& peer) {
    ++accepted;
    const std::uint64_t id = next_id++;
    std::string refusal;
    if (connections.size() >= options.max_connections)
      refusal = "server_full";
    else if (per_ip[peer.address()] >= options.max_per_ip)
      refusal = "per_ip_limit";
    if (!refusal.empty()) {
      // Not a silent drop: the newcomer reads ERROR server_full, then EOF.
      ++rejected[refusal];
      auto s = session::start(std::move(socket), session_settings(id), {});
      s->reject(wire::error_code::server_full,
                refusal == "server_full" ? "connection limit reached"
                                         : "too many connections from your address",
                cause::local_close);
      return;
    }
    ++per_ip[peer.address()];
    connection c;
    c.fd = socket.native_handle();
    c.peer = peer;
    c.opened_ns = monotonic_ns();
    c.opened_unix_ms = unix_ms_now();
    c.last_heard_ns = c.opened_ns;
    ring.schedule(id, steady_clock::now() + options.handshake_timeout);
    connections.emplace(id, std::move(c));
    // start() may run the session to its end at once (and erase the entry) before it
    // returns, so look the entry up again instead of holding a reference across it.
    auto s = session::start(std::move(socket), session_settings(id), handlers(id));
    if (const auto it = connections.find(id); it != connections.end()) it->second.s = std::move(s);
  }

  session_handlers handlers(std::uint64_t id) {
    std::weak_ptr<impl> weak = shared_from_this();
    session_handlers h;
    h.admit = [weak, id](const wire::hello& hello) -> std::optional<wire::error> {
      if (auto self = weak.lock()) return self->on_hello(id, hello);
      return wire::error{wire::error_code::internal_error, "server stopped"};
    };
    h.on_established = [weak, id](const session_established& e) {
      if (auto self = weak.lock()) self->on_established(id, e);
    };
    h.on_heard = [weak, id](std::int64_t heard_ns) {
      if (auto self = weak.lock()) self->on_heard(id, heard_ns);
    };
    h.on_peer_finished = [weak, id] {
      // A half-closed peer: let the next sweep look at it.
      if (auto self = weak.lock()) self->ring.schedule(id, steady_clock::now());
    };
    h.on_rtt = [weak, id](std::chrono::nanoseconds rtt) {
      if (auto self = weak.lock()) self->on_rtt(id, rtt);
    };
    h.on_end = [weak, id](const session_end& end) {
      if (auto self = weak.lock()) self->on_end(id, end);
    };
    return h;
  }

  std::optional<wire::error> on_hello(std::uint64_t id, const wire::hello& hello) {
    if (stopping) return wire::error{wire::error_code::server_full, "server is shutting down"};
    if (connections.at(id).handshake_expired)
      return wire::error{wire::error_code::handshake_timeout, "no HELLO in time"};
    if (!options.auth_token.empty() && !same_secret(hello.auth_token, options.auth_token)) {
      ++rejected["auth_failed"];
      return wire::error{wire::error_code::auth_failed, "wrong or missing auth token"};
    }
    const auto live = by_client.find(hello.client_id);
    if (live != by_client.end() && live->second != id) {
      const auto old = connections.find(live->second);
      if (old != connections.end()) {
        ++superseded;
        old->second.s->close(wire::bye_reason::superseded, cause::superseded);
      }
    }
    by_client[hello.client_id] = id;
    connections.at(id).client_id = hello.client_id;
    return std::nullopt;
  }

  milliseconds silence_allowance(const connection& c) const {
    return options.heartbeat ? c.dead_after + options.reap_interval : options.reap_interval;
  }

  void on_established(std::uint64_t id, const session_established& e) {
    auto& c = connections.at(id);
    c.established = true;
    c.interval = e.interval;
    c.dead_after = e.dead_after;
    ring.schedule(id, steady_clock::now() + silence_allowance(c));
  }

  void on_heard(std::uint64_t id, std::int64_t heard_ns) {
    auto& c = connections.at(id);
    c.last_heard_ns = heard_ns;
    if (c.established) ring.schedule(id, steady_clock::now() + silence_allowance(c));
  }

  void on_rtt(std::uint64_t id, std::chrono::nanoseconds rtt) {
    auto& c = connections.at(id);
    const double value = static_cast<double>(rtt.count()) / 1e6;
    c.rtt_min_ms = c.rtt_samples == 0 ? value : std::min(c.rtt_min_ms, value);
    c.rtt_max_ms = std::max(c.rtt_max_ms, value);
    c.rtt_sum_ms += value;
    c.rtt_last_ms = value;
    ++c.rtt_samples;
    rtt_histogram.observe(value / 1000.0);
  }

  void on_end(std::uint64_t id, const session_end& end) {
    const auto found = connections.find(id);
    if (found == connections.end()) return;
    const connection c = std::move(found->second);
    connections.erase(found);
    ring.cancel(id);
    if (!c.client_id.empty()) {
      const auto live = by_client.find(c.client_id);
      if (live != by_client.end() && live->second == id) by_client.erase(live);
    }
    if (--per_ip[c.peer.address()] == 0) per_ip.erase(c.peer.address());

    connection_record r;
    r.session_id = id;
    r.client_id = c.client_id;
    r.peer_address = to_string(c.peer);
    r.opened_mono_ns = end.opened_ns;
    r.ended_mono_ns = end.decided_ns;
    r.last_heard_mono_ns = end.last_heard_ns;
    r.opened_unix_ms = c.opened_unix_ms;
    r.ended_unix_ms = c.opened_unix_ms + (end.decided_ns - end.opened_ns) / 1'000'000;
    r.cause = std::string(deadpeer::to_string(end.cause));
    r.detected_by = std::string(deadpeer::to_string(end.detected_by));
    r.error_number = is_errno(end.error) ? end.error.value() : 0;
    r.error_name = errno_name(end.error);
    r.protocol_error = end.protocol_error ? std::string(wire::to_string(*end.protocol_error)) : "";
    r.close_mode = end.graceful ? "graceful" : end.abortive ? "abortive" : "plain";
    r.rtt = {c.rtt_samples, c.rtt_min_ms,
             c.rtt_samples ? c.rtt_sum_ms / static_cast<double>(c.rtt_samples) : 0.0, c.rtt_max_ms};
    r.keepalive = keepalive_spec;
    r.heartbeat_interval_ms = options.heartbeat ? c.interval.count() : 0;
    r.dead_after_ms = c.dead_after.count();
    r.detector = detector_description;
    r.frames_received = end.frames_received;
    r.frames_sent = end.frames_sent;

    ++ends[{r.cause, r.detected_by}];
    detection_latency.observe(static_cast<double>(end.decided_ns - end.last_heard_ns) / 1e9);
    append_event(r, end);
    if (store) store->record(std::move(r));
  }

  void append_event(const connection_record& r, const session_end& end) {
    json::object e;
    e["id"] = next_event_id;
    e["session_id"] = r.session_id;
    e["client_id"] = r.client_id;
    e["peer"] = r.peer_address;
    e["cause"] = r.cause;
    e["detected_by"] = r.detected_by;
    e["errno"] = r.error_number;
    e["error"] = r.error_name;
    e["protocol_error"] = r.protocol_error;
    e["close_mode"] = r.close_mode;
    e["opened_mono_ns"] = r.opened_mono_ns;
    e["decided_mono_ns"] = end.decided_ns;
    e["last_heard_mono_ns"] = end.last_heard_ns;
    e["silence_ms"] = ms(end.decided_ns - end.last_heard_ns);
    e["ended_unix_ms"] = r.ended_unix_ms;
    events.push_back({next_event_id++, json::serialize(e)});
    if (options.on_event) options.on_event(events.back().json);
    while (events.size() > options.event_history)
      events.pop_front();
    auto waiters = std::move(event_waiters);
    event_waiters.clear();
    for (auto& notify : waiters)
      notify();
  }

  asio::awaitable<void> reap_loop([[maybe_unused]] std::shared_ptr<impl> self) {
    while (!stopping) {
      reap_timer.expires_after(options.reap_interval);
      (void)co_await reap_timer.async_wait(asio::as_tuple(asio::use_awaitable));
      if (stopping) co_return;
      sweep();
    }
  }

  void sweep() {
    const auto now = steady_clock::now();
    for (const auto id : ring.expire(now)) {
      const auto found = connections.find(id);
      if (found == connections.end()) continue;
      auto& c = found->second;
      if (!c.established) {
        ++reaped["handshake"];
        c.handshake_expired = true;
        c.s->reject(wire::error_code::handshake_timeout, "no HELLO in time",
                    cause::handshake_timeout, detected_by::reaper);
        continue;
      }
      std::error_code ec;
      const auto kernel = read_tcp_info(c.fd, ec);
      if (kernel && kernel->state == "CLOSE_WAIT") {
        ++reaped["close_wait"];
        c.s->abort(cause::reaped, detected_by::reaper);
        continue;
      }
      const auto silence = milliseconds((monotonic_ns() - c.last_heard_ns) / 1'000'000);
      if (options.heartbeat && silence >= c.dead_after + options.reap_interval) {
        ++reaped["silent"];
        c.s->abort(cause::reaped, detected_by::reaper);
        continue;
      }
      // Quiet but legitimate (heartbeats off, or data still arriving): check again later.
      ring.schedule(id, now + options.reap_interval);
    }
  }

  // control_source
  std::string status_json() override {
    json::object o;
    o["listen"] = listen_text;
    o["uptime_ms"] = ms(monotonic_ns() - started_ns);
    o["live"] = connections.size();
    std::size_t established = 0;
    for (const auto& [id, c] : connections)
      established += c.established ? 1 : 0;
    o["established"] = established;
    o["accepted"] = accepted;
    o["superseded"] = superseded;
    json::object by_cause, by_detector, reaped_json, rejected_json;
    for (const auto& [key, n] : ends) {
      by_cause[key.first] = by_cause[key.first].is_null() ? n : by_cause[key.first].as_uint64() + n;
      by_detector[key.second] =
          by_detector[key.second].is_null() ? n : by_detector[key.second].as_uint64() + n;
    }
    for (const auto& [reason, n] : reaped)
      reaped_json[reason] = n;
    for (const auto& [reason, n] : rejected)
      rejected_json[reason] = n;
    o["ended_by_cause"] = std::move(by_cause);
    o["ended_by_detected_by"] = std::move(by_detector);
    o["reaped"] = std::move(reaped_json);
    o["rejected"] = std::move(rejected_json);
    o["keepalive"] = keepalive_spec;
    o["detector"] = detector_description;
    if (store) {
      json::object s;
      s["path"] = store->path();
      s["written"] = store->written();
      s["queued"] = store->queued();
      if (const auto error = store->last_error()) s["error"] = *error;
      o["store"] = std::move(s);
    }
    return json::serialize(o);
  }

  std::string connections_json() override {
    json::array list;
    const auto now = monotonic_ns();
    for (const auto& [id, c] : connections) {
      json::object o;
      o["session_id"] = id;
      o["client_id"] = c.client_id;
      o["peer"] = to_string(c.peer);
      o["state"] = c.established ? "established" : "handshaking";
      o["age_ms"] = ms(now - c.opened_ns);
      o["last_heard_ms_ago"] = ms(now - c.last_heard_ns);
      o["interval_ms"] = c.interval.count();
      o["dead_after_ms"] = c.dead_after.count();
      json::object rtt;
      rtt["samples"] = c.rtt_samples;
      rtt["min_ms"] = c.rtt_min_ms;
      rtt["mean_ms"] = c.rtt_samples ? c.rtt_sum_ms / static_cast<double>(c.rtt_samples) : 0.0;
      rtt["max_ms"] = c.rtt_max_ms;
      rtt["last_ms"] = c.rtt_last_ms;
      o["rtt"] = std::move(rtt);
      std::error_code ec;
      if (const auto k = read_tcp_info(c.fd, ec)) {
        json::object kernel;
        kernel["state"] = k->state;
        kernel["rtt_us"] = k->rtt_us;
        kernel["rto_us"] = k->rto_us;
        kernel["unacked"] = k->unacked;
        kernel["retransmits"] = k->retransmits;
        kernel["probes"] = k->probes;
        kernel["backoff"] = k->backoff;
        kernel["last_data_recv_ms"] = k->last_data_recv_ms;
        o["kernel"] = std::move(kernel);
      }
      list.push_back(std::move(o));
    }
    return json::serialize(list);
  }

  std::string metrics_text() override {
    std::string out;
    metrics::write_header(out, "deadpeer_live_connections", "gauge",
                          "Connections currently held, handshaking or established.");
    metrics::write_sample(out, "deadpeer_live_connections", "",
                          static_cast<double>(connections.size()));
    metrics::write_header(out, "deadpeer_accepted_connections_total", "counter",
                          "Connections accepted.");
    metrics::write_sample(out, "deadpeer_accepted_connections_total", "",
                          static_cast<double>(accepted));
    metrics::write_header(out, "deadpeer_detections_total", "counter",
                          "Connection ends by cause and by the mechanism that noticed.");
    for (const auto& [key, n] : ends)
      metrics::write_sample(out, "deadpeer_detections_total",
                            "cause=\"" + metrics::escape_label(key.first) + "\",detected_by=\"" +
                                metrics::escape_label(key.second) + "\"",
                            static_cast<double>(n));
    metrics::write_header(out, "deadpeer_reaped_total", "counter",
                          "Connections ended by the reaper, by reason.");
    for (const auto& [reason, n] : reaped)
      metrics::write_sample(out, "deadpeer_reaped_total",
                            "reason=\"" + metrics::escape_label(reason) + "\"",
                            static_cast<double>(n));
    metrics::write_header(out, "deadpeer_rejected_total", "counter",
                          "Connections refused, by reason.");
    for (const auto& [reason, n] : rejected)
      metrics::write_sample(out, "deadpeer_rejected_total",
                            "reason=\"" + metrics::escape_label(reason) + "\"",
                            static_cast<double>(n));
    detection_latency.write(out, "deadpeer_detection_latency_seconds",
                            "Silence before a connection's end was decided (last byte heard "
                            "to decision).");
    rtt_histogram.write(out, "deadpeer_heartbeat_rtt_seconds",
                        "Heartbeat round-trip times (PING to PONG).");
    return out;
  }

  std::vector<control_event> events_since(std::uint64_t since, std::size_t limit) override {
    std::vector<control_event> out;
    for (const auto& e : events) {
      if (e.id <= since) continue;
      out.push_back(e);
      if (out.size() >= limit) break;
    }
    return out;
  }

  void on_next_event(std::function<void()> notify) override {
    event_waiters.push_back(std::move(notify));
  }
};

server::server(asio::io_context& io, server_options options) {
  validate(options);
  impl_ = std::make_shared<impl>(io, std::move(options));
}

// Destroy the server only after its io_context has stopped running (after stop()'s
// callback, or io.stop()): the teardown below touches objects the io thread uses.
server::~server() {
  if (impl_) {
    impl_->stopping = true;
    boost::system::error_code ignored;
    impl_->acceptor.close(ignored);
    impl_->reap_timer.cancel();
    if (impl_->api) impl_->api->stop();
  }
}

void server::start() {
  impl_->start();
}

void server::stop(std::function<void()> done) {
  auto self = impl_;
  asio::post(self->io, [self, done = std::move(done)]() mutable {
    self->stopping = true;
    boost::system::error_code ignored;
    self->acceptor.close(ignored);
    self->reap_timer.cancel();
    for (auto& [id, c] : self->connections)
      c.s->close(wire::bye_reason::going_away);
    // Sessions end within their graceful-close budget; wait for them, bounded.
    asio::co_spawn(
        self->io,
        [self]() -> asio::awaitable<void> {
          asio::steady_timer wait(self->io);
          const auto deadline = steady_clock::now() + std::chrono::seconds(3);
          while (!self->connections.empty() && steady_clock::now() < deadline) {
            wait.expires_after(milliseconds(10));
            co_await wait.async_wait(asio::as_tuple(asio::use_awaitable));
          }
          if (self->api) self->api->stop();
          if (self->store) self->store->flush();
        },
        [self, done = std::move(done)](const std::exception_ptr& e) {
          impl::report_exception(e);
          if (done) done();
        });
  });
}

tcp::endpoint server::local_endpoint() const {
  return impl_->acceptor.local_endpoint();
}

std::optional<tcp::endpoint> server::control_endpoint() const {
  if (!impl_->api) return std::nullopt;
  return impl_->api->local_endpoint();
}

std::size_t server::live_connections() const {
  return impl_->connections.size();
}

void server::flush_store() {
  if (impl_->store) impl_->store->flush();
}

}  // namespace deadpeer
