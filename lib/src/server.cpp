// Server wiring: the state the event loops share (registry of client ids, limits,
// counters, connection-end events, the store), the loops' threads, and the control API's
// view of them. server.hpp says what is decided; server_loop.hpp how a loop runs. The
// registry's invariant: a client id maps to the connection that was admitted last with
// it, for as long as that connection lives; `admitted` and `per_ip` count exactly the
// admitted connections that have not been released.
#include <deadpeer/endpoint.hpp>
#include <deadpeer/json_text.hpp>
#include <deadpeer/log.hpp>
#include <deadpeer/server.hpp>

#include <deadpeer/clock.hpp>
#include <deadpeer/config_error.hpp>
#include <deadpeer/duration.hpp>
#include <deadpeer/store.hpp>

#include "constant_time.hpp"
#include "metrics.hpp"
#include "server_loop.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <boost/version.hpp>

#include <sqlite3.h>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <future>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

namespace deadpeer {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using detail::connection_ref;
using detail::server_loop;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

double ms(std::int64_t ns) {
  return static_cast<double>(ns) / 1e6;
}

// An end is a detection when a mechanism watching for a dead or broken peer noticed it; an
// end the two sides agreed on (BYE, ERROR, takeover, our close) is decided by the
// application layer (or by nothing, for transient errors).
bool is_detection(detected_by d) {
  return d != detected_by::application && d != detected_by::none;
}

constexpr detected_by detection_mechanisms[] = {
    detected_by::eof,          detected_by::reset,          detected_by::keepalive,
    detected_by::user_timeout, detected_by::retransmission, detected_by::icmp,
    detected_by::heartbeat,    detected_by::reaper};

// The cause each mechanism usually reports: the series /metrics writes from the start.
constexpr std::pair<detected_by, cause> usual_detections[] = {
    {detected_by::eof, cause::peer_closed},
    {detected_by::reset, cause::peer_reset},
    {detected_by::keepalive, cause::keepalive_timeout},
    {detected_by::user_timeout, cause::user_timeout},
    {detected_by::retransmission, cause::retransmission_timeout},
    {detected_by::heartbeat, cause::heartbeat_timeout},
    {detected_by::reaper, cause::reaped}};

metrics::histogram detection_latency_template() {
  return metrics::histogram(
      {0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900});
}

std::string sqlite_version() {
  return sqlite3_libversion();
}

// A non-blocking listening socket; the loops of one server share the port (SO_REUSEPORT).
int open_listener(const tcp::endpoint& at, bool reuse_port) {
  const int fd = ::socket(at.protocol().family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  auto fail = [&](const char* what) {
    const auto error = errno;
    if (fd >= 0) ::close(fd);
    throw boost::system::system_error(
        boost::system::error_code(error, boost::system::system_category()),
        std::string(what) + " " + format_endpoint(at));
  };
  if (fd < 0) fail("cannot open a socket for");
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuse_port && ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
    fail("cannot share the port (SO_REUSEPORT) of");
  if (::bind(fd, at.data(), static_cast<socklen_t>(at.size())) != 0) fail("cannot listen on");
  if (::listen(fd, SOMAXCONN) != 0) fail("cannot listen on");
  return fd;
}

tcp::endpoint bound_endpoint(int fd) {
  tcp::endpoint e;
  socklen_t length = static_cast<socklen_t>(e.capacity());
  ::getsockname(fd, e.data(), &length);
  e.resize(length);
  return e;
}

// Descriptors kept back from the loops for the control API, the store, logs and the
// process's own files.
constexpr std::size_t descriptor_reserve = 64;

std::size_t descriptor_budget(unsigned loops) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return 1'000'000;
  const auto reserve = descriptor_reserve + 4 * static_cast<std::size_t>(loops);
  return limit.rlim_cur > reserve ? static_cast<std::size_t>(limit.rlim_cur) - reserve : 1;
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
  if (o.threads > 1024) throw config_error("threads must be at most 1024");
  if (o.close_drain_time < milliseconds(0))
    throw config_error("close drain time must not be negative");
  if (o.record_arrivals > max_record_arrivals)
    throw config_error("record arrivals " + std::to_string(o.record_arrivals) +
                       " is above the maximum of " + std::to_string(max_record_arrivals) +
                       " per connection");
  if (o.record_sample == 0)
    throw config_error("record sample must be at least 1 (1 records every connection)");
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

struct server::impl : control_source,
                      detail::loop_host,
                      std::enable_shared_from_this<server::impl> {
  asio::io_context& io;
  server_options options;
  // What connections are accepted with: the first from the options, one more per reload.
  // A deque: the loops and engines point into it, and adding keeps those pointers valid.
  std::deque<detail::connection_settings> generations;
  detail::loop_settings settings;
  std::unique_ptr<event_store> store;
  std::unique_ptr<control_api> api;
  std::string listen_text;
  tcp::endpoint listen_endpoint;
  std::vector<std::unique_ptr<server_loop>> loops;
  std::vector<std::thread> threads;
  std::atomic<std::size_t> held{0};
  std::atomic<std::size_t> loops_running{0};
  std::atomic<std::uint64_t> session_ids{1};
  std::atomic<std::uint64_t> record_candidates{0};
  std::atomic<bool> stopping{false};

  // Admission: the registry of client ids and the limits.
  std::mutex registry_mutex;
  std::unordered_map<std::string, connection_ref> by_client;
  std::unordered_map<asio::ip::address, std::size_t> per_ip;
  std::size_t admitted = 0;

  // Counters, events and histograms for /status, /events and /metrics.
  std::mutex stats_mutex;
  std::map<std::string, std::uint64_t, std::less<>> counters;  // "accepted", "rejected:x", ...
  std::map<std::pair<std::string, std::string>, std::uint64_t> ends;  // (cause, detected_by)
  // Silence before a detection, per mechanism; ends agreed by both sides (BYE, ERROR,
  // takeover, our own close) are not detections and are counted apart.
  std::map<std::string, metrics::histogram, std::less<>> detection_latency = [] {
    std::map<std::string, metrics::histogram, std::less<>> by;
    for (const auto d : detection_mechanisms)
      by.emplace(std::string(to_string(d)), detection_latency_template());
    return by;
  }();
  // Connection ends for /events, each with its number in the store (0: no store), so that
  // each can be served with whether its row is in the database yet.
  struct stored_event {
    control_event event;
    std::uint64_t store_sequence = 0;
  };
  std::deque<stored_event> events;
  std::uint64_t next_event_id = 1;
  std::vector<std::function<void()>> event_waiters;
  std::int64_t started_ns = monotonic_ns();

  // The settings of new connections under `o`; throws config_error for bad values.
  static detail::connection_settings connection_settings_for(const server_options& o) {
    detail::connection_settings s;
    auto& engine = s.engine;
    engine.role = session_role::server;
    engine.heartbeat = o.heartbeat;
    engine.detector = o.detector;
    engine.handshake_timeout = o.handshake_timeout;
    engine.end_on_eof = o.end_on_eof;
    engine.min_interval = o.min_interval;
    engine.max_interval = o.max_interval;
    // PINGs due within 16 ms of each other share one wake-up of their loop (the ±10%
    // jitter already spreads them; this only stops the timer firing once per PING).
    engine.ping_coalesce = milliseconds(16);
    engine.default_interval = o.default_interval;
    validate(engine);
    s.keepalive = o.keepalive;
    s.keepalive_spec =
        o.keepalive ? deadpeer::to_string(to_options(resolve(*o.keepalive, read_kernel_defaults())))
                    : "system default";
    s.detector_description =
        o.heartbeat ? make_detector(o.detector, steady_clock::now())->describe() : "off";
    return s;
  }

  impl(asio::io_context& context, server_options o) : io(context), options(std::move(o)) {
    generations.push_back(connection_settings_for(options));
    const unsigned count =
        options.threads != 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());
    settings.options = &options;
    settings.first = &generations.front();
    settings.descriptor_budget = descriptor_budget(count);
    settings.held = &held;
    settings.record_candidates = &record_candidates;

    // The first listener picks the port (it may be 0); the others join it.
    auto at = options.listen;
    const bool share = count > 1 || options.reuse_port;
    for (unsigned i = 0; i < count; ++i) {
      const int fd = open_listener(at, share);
      if (i == 0) {
        listen_endpoint = bound_endpoint(fd);
        at = listen_endpoint;
      }
      loops.push_back(std::make_unique<server_loop>(*this, settings, i, fd));
    }
    listen_text = format_endpoint(listen_endpoint);
    if (!options.db_path.empty())
      store = std::make_unique<event_store>(event_store::options{.path = options.db_path});
    if (options.control)
      api = std::make_unique<control_api>(context.get_executor(), *options.control, *this,
                                          options.control_api_access);
  }

  void start() {
    if (api) api->start();
    loops_running = loops.size();
    for (auto& loop : loops)
      threads.emplace_back([this, l = loop.get()] {
        try {
          l->run();
        } catch (const std::exception& e) {
          log_line(log_level::error) << "deadpeer server: event loop failed: " << e.what();
        }
        --loops_running;
      });
  }

  void join() {
    for (auto& t : threads)
      if (t.joinable()) t.join();
    threads.clear();
  }

  // Runs `fn` on every loop and collects the answers; a loop that has finished answers
  // nothing. Called from the control API's thread, never from a loop.
  template <typename T, typename F>
  std::vector<T> gather(F fn) {
    std::vector<std::future<T>> answers;
    for (auto& loop : loops) {
      auto promise = std::make_shared<std::promise<T>>();
      answers.push_back(promise->get_future());
      if (!loop->post([promise, fn](server_loop& l) { promise->set_value(fn(l)); }))
        answers.pop_back();
    }
    std::vector<T> out;
    for (auto& answer : answers) {
      if (answer.wait_for(std::chrono::seconds(5)) != std::future_status::ready) continue;
      try {
        out.push_back(answer.get());
      } catch (const std::exception&) {
        // The loop finished before it ran the task (broken promise): it holds nothing.
      }
    }
    return out;
  }

  // loop_host
  std::optional<wire::error> admit(const wire::hello& hello, const tcp::endpoint& peer,
                                   connection_ref self,
                                   std::optional<connection_ref>& superseded) override {
    if (stopping) return wire::error{wire::error_code::server_full, "server is shutting down"};
    {
      std::lock_guard lock(registry_mutex);  // the token and the limits may be reloaded
      if (!options.auth_token.empty() &&
          !detail::same_secret(hello.auth_token, options.auth_token)) {
        count("rejected:auth_failed");
        return wire::error{wire::error_code::auth_failed, "wrong or missing auth token"};
      }
      const auto live = by_client.find(hello.client_id);
      // A takeover replaces a connection rather than adding one.
      const bool replaces = live != by_client.end();
      if (!replaces && admitted >= options.max_connections) {
        count("rejected:server_full");
        return wire::error{wire::error_code::server_full, "connection limit reached"};
      }
      auto& from_address = per_ip[peer.address()];
      if (from_address >= options.max_per_ip) {
        if (from_address == 0) per_ip.erase(peer.address());
        count("rejected:per_ip_limit");
        return wire::error{wire::error_code::server_full, "too many connections from your address"};
      }
      ++from_address;
      ++admitted;
      if (replaces) {
        superseded = live->second;
        count("superseded");
      }
      by_client[hello.client_id] = self;
    }
    return std::nullopt;
  }

  void supersede(connection_ref old) override {
    loops[old.loop]->post([old](server_loop& l) { l.supersede(old); });
  }

  void release(const std::string& client_id, const tcp::endpoint& peer,
               connection_ref self) override {
    std::lock_guard lock(registry_mutex);
    --admitted;
    if (const auto it = per_ip.find(peer.address()); it != per_ip.end() && --it->second == 0)
      per_ip.erase(it);
    if (const auto it = by_client.find(client_id); it != by_client.end() && it->second == self)
      by_client.erase(it);
  }

  void count(std::string_view what) override {
    std::lock_guard lock(stats_mutex);
    const auto it = counters.find(what);
    if (it != counters.end())
      ++it->second;
    else
      counters.emplace(std::string(what), 1);
  }

  std::uint64_t counter(std::string_view what) {
    const auto it = counters.find(what);
    return it == counters.end() ? 0 : it->second;
  }

  std::uint64_t next_session_id() override { return session_ids.fetch_add(1); }

  void data(const std::string& client_id, std::span<const std::byte> payload) override {
    if (options.on_data) options.on_data(client_id, payload);
  }

  void ended(connection_record r, const connection_end& end) override {
    if (options.on_end) {
      try {
        options.on_end(end);
      } catch (const std::exception& e) {
        log_line(log_level::error) << "deadpeer server: on_end callback failed: " << e.what();
      }
    }
    json::object e;
    std::vector<std::function<void()>> waiters;
    {
      std::lock_guard lock(stats_mutex);
      ++ends[{r.cause, r.detected_by}];
      if (is_detection(end.end.detected_by)) {
        auto it = detection_latency.find(r.detected_by);
        if (it == detection_latency.end())
          it = detection_latency.emplace(r.detected_by, detection_latency_template()).first;
        it->second.observe(static_cast<double>(end.end.decided_ns - end.end.last_heard_ns) / 1e9);
      }
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
      e["decided_mono_ns"] = end.end.decided_ns;
      e["last_heard_mono_ns"] = end.end.last_heard_ns;
      e["silence_ms"] = ms(end.end.decided_ns - end.end.last_heard_ns);
      e["ended_unix_ms"] = r.ended_unix_ms;
      // Queued under the same lock as the event, so events and store numbers agree.
      const std::uint64_t sequence = store ? store->record(std::move(r)) : 0;
      events.push_back({{next_event_id++, deadpeer::json_text(e)}, sequence});
      if (options.on_event)
        asio::post(io, [self = shared_from_this(), text = events.back().event.json] {
          self->options.on_event(text);
        });
      while (events.size() > options.event_history)
        events.pop_front();
      waiters.swap(event_waiters);
    }
    for (auto& notify : waiters)
      asio::post(io, std::move(notify));
  }

  // On the io_context's thread. Applies what can change while connections live and says
  // what changed; the rest is listed as needing a restart.
  std::vector<std::string> reconfigure(const server_options& next) {
    validate(next);
    auto live = next;
    live.heartbeat = options.heartbeat;  // on/off is fixed for the server's life
    auto made = connection_settings_for(live);
    std::vector<std::string> said;
    const auto changed = [&](const std::string& what, const std::string& from,
                             const std::string& to) {
      if (from == to) return false;
      said.push_back(what + " " + from + " -> " + to);
      return true;
    };
    // Each comparison runs (every change is said); any one makes a new generation.
    bool new_connections_change = false;
    const auto changed_for_new = [&](const std::string& what, const std::string& from,
                                     const std::string& to) {
      new_connections_change |= changed(what + " (new connections)", from, to);
    };
    const auto& now = generations.back();
    const auto& e = now.engine;
    changed_for_new("keepalive", now.keepalive_spec, made.keepalive_spec);
    changed_for_new("detector", now.detector_description, made.detector_description);
    changed_for_new("heartbeat interval range",
                    format_duration(e.min_interval) + ".." + format_duration(e.max_interval),
                    format_duration(made.engine.min_interval) + ".." +
                        format_duration(made.engine.max_interval));
    changed_for_new("default interval", format_duration(e.default_interval),
                    format_duration(made.engine.default_interval));
    changed_for_new("handshake timeout", format_duration(e.handshake_timeout),
                    format_duration(made.engine.handshake_timeout));
    changed_for_new("on eof", e.end_on_eof ? "end" : "reap",
                    made.engine.end_on_eof ? "end" : "reap");
    {
      std::lock_guard lock(registry_mutex);
      changed("max connections", std::to_string(options.max_connections),
              std::to_string(next.max_connections));
      changed("max per ip", std::to_string(options.max_per_ip), std::to_string(next.max_per_ip));
      if (options.auth_token != next.auth_token) said.push_back("auth token replaced");
      options.max_connections = next.max_connections;
      options.max_per_ip = next.max_per_ip;
      options.auth_token = next.auth_token;
    }
    if (new_connections_change) {
      generations.push_back(std::move(made));
      const auto* latest = &generations.back();
      (void)gather<bool>([latest](server_loop& l) {
        l.accept_with(*latest);
        return true;
      });
    }
    // Read once at start; a change waits for a restart.
    const auto restart = [&](const std::string& what, bool differs) {
      if (differs) said.push_back(what + " changes only on restart (kept)");
    };
    restart("listen", next.listen != options.listen);
    restart("control", next.control != options.control);
    restart("db", next.db_path != options.db_path);
    restart("threads", next.threads != options.threads);
    restart("reuse port", next.reuse_port != options.reuse_port);
    restart("heartbeat on/off", next.heartbeat != options.heartbeat);
    restart("reap interval", next.reap_interval != options.reap_interval);
    restart("record arrivals", next.record_arrivals != options.record_arrivals ||
                                   next.record_sample != options.record_sample);
    restart("close drain", next.close_drain_time != options.close_drain_time ||
                               next.close_drain_bytes != options.close_drain_bytes);
    return said;
  }

  // control_source (on the io_context's thread)
  std::string status_json() override {
    json::object o;
    o["listen"] = listen_text;
    o["threads"] = loops.size();
    o["uptime_ms"] = ms(monotonic_ns() - started_ns);
    o["live"] = held.load();
    std::size_t established = 0;
    for (const auto n : gather<std::size_t>([](server_loop& l) { return l.established(); }))
      established += n;
    o["established"] = established;
    o["descriptor_budget"] = settings.descriptor_budget;
    {
      std::lock_guard lock(stats_mutex);
      o["accepted"] = counter("accepted");
      o["superseded"] = counter("superseded");
      json::object by_cause, by_detector, reaped_json, rejected_json;
      for (const auto& [key, n] : ends) {
        by_cause[key.first] =
            by_cause[key.first].is_null() ? n : by_cause[key.first].as_uint64() + n;
        by_detector[key.second] =
            by_detector[key.second].is_null() ? n : by_detector[key.second].as_uint64() + n;
      }
      for (const auto& [name, n] : counters) {
        if (name.starts_with("reaped:")) reaped_json[name.substr(7)] = n;
        if (name.starts_with("rejected:")) rejected_json[name.substr(9)] = n;
      }
      o["ended_by_cause"] = std::move(by_cause);
      o["ended_by_detected_by"] = std::move(by_detector);
      o["reaped"] = std::move(reaped_json);
      o["rejected"] = std::move(rejected_json);
    }
    o["keepalive"] = generations.back().keepalive_spec;
    o["detector"] = generations.back().detector_description;
    if (store) {
      json::object s;
      s["path"] = store->path();
      s["written"] = store->written();
      s["queued"] = store->queued();
      s["arrivals_dropped"] = store->arrivals_dropped();
      s["not_written"] = store->not_written();
      // "error" while writes fail now (cleared when they succeed again); "first_error" is
      // the first problem seen since start, kept as history.
      if (const auto error = store->failing()) s["error"] = *error;
      if (const auto error = store->last_error()) s["first_error"] = *error;
      o["store"] = std::move(s);
    }
    return deadpeer::json_text(o);
  }

  std::string connections_json() override {
    json::array all;
    for (auto& part : gather<json::array>([](server_loop& l) { return l.connections_json(); }))
      for (auto& c : part)
        all.push_back(std::move(c));
    return deadpeer::json_text(all);
  }

  std::string arrivals_json() override {
    json::array all;
    for (auto& part : gather<json::array>([](server_loop& l) { return l.arrivals_json(); }))
      for (auto& c : part)
        all.push_back(std::move(c));
    std::sort(all.begin(), all.end(), [](const json::value& a, const json::value& b) {
      return a.at("session_id").to_number<std::uint64_t>() <
             b.at("session_id").to_number<std::uint64_t>();
    });
    json::object o;
    o["record_arrivals"] = options.record_arrivals;
    o["record_sample"] = options.record_sample;
    o["connections"] = std::move(all);
    return deadpeer::json_text(o);
  }

  // Times in ms from the connection's first arrival, written as exact microseconds
  // ("100.012") rather than as doubles: compact, and no binary rounding.
  std::optional<std::string> arrival_times_json(std::uint64_t session_id, std::uint64_t since,
                                                std::size_t limit) override {
    std::optional<detail::arrival_snapshot> found;
    for (auto& part : gather<std::optional<detail::arrival_snapshot>>(
             [=](server_loop& l) { return l.arrivals_of(session_id, since, limit); }))
      if (part) found = std::move(part);
    if (!found) return std::nullopt;
    const auto& a = *found;
    json::object o;
    o["session_id"] = a.session_id;
    o["client_id"] = a.client_id;
    o["peer"] = a.peer;
    o["interval_ms"] = a.interval_ms;
    o["seen"] = a.seen;
    o["count"] = a.count;
    o["origin_mono_ns"] = a.origin_ns;
    o["first"] = a.first;
    o["next"] = a.mono_ns.empty() ? since : a.first + a.mono_ns.size() - 1;
    std::string body = deadpeer::json_text(o);
    body.pop_back();  // the closing brace: times_ms goes last
    body += ",\"times_ms\":[";
    char number[32];
    for (std::size_t i = 0; i < a.mono_ns.size(); ++i) {
      const std::int64_t offset_us = (a.mono_ns[i] - a.origin_ns + 500) / 1000;
      const int n = std::snprintf(number, sizeof number, "%s%lld.%03lld", i == 0 ? "" : ",",
                                  static_cast<long long>(offset_us / 1000),
                                  static_cast<long long>(offset_us % 1000));
      body.append(number, static_cast<std::size_t>(n));
    }
    body += "]}";
    return body;
  }

  // Prometheus text. Families with known label values (mechanisms, the usual causes, the
  // refusal and reaping reasons) are written from the start with 0, so rate() and alerts
  // work before the first event; other values appear when they first happen.
  std::string metrics_text() override {
    std::string out;
    // A family of one sample without labels.
    const auto single = [&out](const char* name, const char* type, const char* help, double value) {
      metrics::write_header(out, name, type, help);
      metrics::write_sample(out, name, "", value);
    };
    const auto label = [](std::string_view key, std::string_view value) {
      return std::string(key) + "=\"" + metrics::escape_label(value) + "\"";
    };
    metrics::write_header(out, "deadpeer_build_info", "gauge",
                          "Always 1; the labels say what is running.");
    metrics::write_sample(
        out, "deadpeer_build_info",
        label("version", DEADPEER_VERSION) + "," + label("commit", DEADPEER_GIT_COMMIT) + "," +
            label("boost", BOOST_LIB_VERSION) + "," + label("sqlite", sqlite_version()),
        1);
    single("deadpeer_live_connections", "gauge",
           "Connections currently held, handshaking, established or closing.",
           static_cast<double>(held.load()));
    std::size_t established = 0;
    for (const auto n : gather<std::size_t>([](server_loop& l) { return l.established(); }))
      established += n;
    single("deadpeer_established_connections", "gauge", "Connections past the handshake.",
           static_cast<double>(established));
    auto rtt = gather<metrics::histogram>([](server_loop& l) { return l.rtt_histogram(); });
    {
      std::lock_guard lock(stats_mutex);
      single("deadpeer_accepted_connections_total", "counter", "Connections accepted.",
             static_cast<double>(counter("accepted")));
      single("deadpeer_superseded_total", "counter",
             "Sessions replaced because their client id connected again.",
             static_cast<double>(counter("superseded")));
      // Detections (a mechanism found the peer gone) and agreed ends, apart.
      std::map<std::pair<std::string, std::string>, std::uint64_t> detections;
      std::map<std::string, std::uint64_t> agreed;
      for (const auto& [mechanism, usual_cause] : usual_detections)
        detections[{std::string(to_string(usual_cause)), std::string(to_string(mechanism))}] = 0;
      for (const auto c : {cause::peer_closed, cause::superseded, cause::local_close})
        agreed[std::string(to_string(c))] = 0;
      for (const auto& [key, n] : ends) {
        const auto mechanism = detected_by_from_string(key.second);
        if (mechanism && is_detection(*mechanism))
          detections[key] += n;
        else
          agreed[key.first] += n;
      }
      metrics::write_header(out, "deadpeer_detections_total", "counter",
                            "Connections whose end a mechanism detected (the peer went away or "
                            "broke), by cause and by the mechanism that noticed.");
      for (const auto& [key, n] : detections)
        metrics::write_sample(out, "deadpeer_detections_total",
                              label("cause", key.first) + "," + label("detected_by", key.second),
                              static_cast<double>(n));
      metrics::write_header(out, "deadpeer_agreed_ends_total", "counter",
                            "Connections ended by agreement rather than detection (BYE, ERROR, "
                            "takeover, the server's own close), by cause.");
      for (const auto& [c, n] : agreed)
        metrics::write_sample(out, "deadpeer_agreed_ends_total", label("cause", c),
                              static_cast<double>(n));
      for (const auto& [family, prefix, help, known] :
           {std::tuple{"deadpeer_reaped_total",
                       "reaped:", "Connections ended by the reaper, by reason.",
                       std::vector<std::string_view>{"close_wait", "half_closed", "handshake"}},
            std::tuple{
                "deadpeer_rejected_total", "rejected:", "Connections refused, by reason.",
                std::vector<std::string_view>{"auth_failed", "server_full", "per_ip_limit"}}}) {
        std::map<std::string, std::uint64_t> by_reason;
        for (const auto reason : known)
          by_reason[std::string(reason)] = 0;
        for (const auto& [name, n] : counters)
          if (name.starts_with(prefix))
            by_reason[name.substr(std::string_view(prefix).size())] += n;
        metrics::write_header(out, family, "counter", help);
        for (const auto& [reason, n] : by_reason)
          metrics::write_sample(out, family, label("reason", reason), static_cast<double>(n));
      }
      metrics::write_header(out, "deadpeer_detection_latency_seconds", "histogram",
                            "Silence before a detection was decided (last byte heard to "
                            "decision), by the mechanism that noticed.");
      for (const auto& [mechanism, h] : detection_latency)
        h.write_samples(out, "deadpeer_detection_latency_seconds", label("detected_by", mechanism));
    }
    metrics::histogram merged = rtt.empty() ? server_loop_rtt_template() : rtt.front();
    for (std::size_t i = 1; i < rtt.size(); ++i)
      merged.merge(rtt[i]);
    merged.write(out, "deadpeer_heartbeat_rtt_seconds",
                 "Heartbeat round-trip times (PING to PONG).");
    if (store) {
      single("deadpeer_store_queue_depth", "gauge",
             "Connection ends waiting to be written to the database.",
             static_cast<double>(store->queued()));
      single("deadpeer_store_written_total", "counter", "Connection ends written to the database.",
             static_cast<double>(store->written()));
      single("deadpeer_store_failing", "gauge",
             "1 while the database cannot be written (see /status for the error), else 0.",
             store->failing() ? 1 : 0);
    }
    metrics::write_process_metrics(out);
    return out;
  }

  static metrics::histogram server_loop_rtt_template() {
    return metrics::histogram(
        {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1});
  }

  std::vector<control_event> events_since(std::uint64_t since, std::size_t limit) override {
    std::lock_guard lock(stats_mutex);
    std::vector<control_event> out;
    const std::uint64_t settled = store ? store->settled_through() : 0;
    for (const auto& e : events) {
      if (e.event.id <= since) continue;
      out.push_back(e.event);
      if (store) {
        // "durable": the end's row is committed to the database (kill -9 now would keep
        // it). An end served with false may still be lost by a crash before its commit.
        auto& text = out.back().json;
        text.pop_back();  // the closing brace
        text += e.store_sequence <= settled ? ",\"durable\":true}" : ",\"durable\":false}";
      }
      if (out.size() >= limit) break;
    }
    return out;
  }

  void on_next_event(std::function<void()> notify) override {
    std::lock_guard lock(stats_mutex);
    event_waiters.push_back(std::move(notify));
  }
};

server::server(asio::io_context& io, server_options options) {
  validate(options);
  impl_ = std::make_shared<impl>(io, std::move(options));
}

// Destroy the server after stop()'s callback, or after its io_context has stopped: a
// server destroyed while running stops its loops at once (connections closed, ends
// recorded) before returning.
server::~server() {
  if (!impl_) return;
  impl_->stopping = true;
  for (auto& loop : impl_->loops)
    loop->post([](server_loop& l) { l.begin_stop(milliseconds(0)); });
  impl_->join();
  if (impl_->api) impl_->api->stop();
  impl_->loops.clear();
}

void server::start() {
  impl_->start();
}

std::vector<std::string> server::reconfigure(const server_options& next) {
  return impl_->reconfigure(next);
}

void server::hurry_stop() {
  auto self = impl_;
  asio::post(self->io, [self] {
    if (!self->stopping) return;
    for (auto& loop : self->loops)
      loop->post([](server_loop& l) { l.begin_stop(milliseconds(0)); });
  });
}

std::uint64_t server::records_not_written() const {
  return impl_->store ? impl_->store->not_written() : 0;
}

void server::stop(std::function<void()> done) {
  auto self = impl_;
  asio::post(self->io, [self, done = std::move(done)]() mutable {
    self->stopping = true;
    // Every loop sends BYE going_away and closes gracefully, within a bounded time.
    const auto grace =
        std::max(self->options.close_drain_time, milliseconds(100)) + milliseconds(500);
    for (auto& loop : self->loops)
      loop->post([grace](server_loop& l) { l.begin_stop(grace); });
    asio::co_spawn(
        self->io,
        [self]() -> asio::awaitable<void> {
          asio::steady_timer wait(self->io);
          const auto deadline = steady_clock::now() + std::chrono::seconds(10);
          while (self->loops_running > 0 && steady_clock::now() < deadline) {
            wait.expires_after(milliseconds(5));
            co_await wait.async_wait(asio::as_tuple(asio::use_awaitable));
          }
          if (self->api) self->api->stop();
          if (self->store) self->store->flush();
        },
        [self, done = std::move(done)](const std::exception_ptr& e) {
          if (e) {
            try {
              std::rethrow_exception(e);
            } catch (const std::exception& x) {
              log_line(log_level::warning) << "deadpeer server: stop: " << x.what();
            }
          }
          if (done) done();
        });
  });
}

tcp::endpoint server::local_endpoint() const {
  return impl_->listen_endpoint;
}

std::optional<tcp::endpoint> server::control_endpoint() const {
  if (!impl_->api) return std::nullopt;
  return impl_->api->local_endpoint();
}

std::size_t server::live_connections() const {
  return impl_->held.load();
}

unsigned server::threads() const {
  return static_cast<unsigned>(impl_->loops.size());
}

bool server::send(const std::string& client_id, std::vector<std::byte> payload) {
  if (payload.size() + 1 > wire::default_max_frame)
    throw std::length_error("server::send: payload of " + std::to_string(payload.size()) +
                            " bytes exceeds the frame limit");
  connection_ref ref;
  {
    std::lock_guard lock(impl_->registry_mutex);
    const auto it = impl_->by_client.find(client_id);
    if (it == impl_->by_client.end()) return false;
    ref = it->second;
  }
  return impl_->loops[ref.loop]->post(
      [ref, payload = std::move(payload)](server_loop& l) { l.send_data(ref, payload); });
}

void server::flush_store() {
  if (impl_->store) impl_->store->flush();
}

}  // namespace deadpeer
