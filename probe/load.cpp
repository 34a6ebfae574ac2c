#include "load.hpp"

#include "mqtt.hpp"

#include <deadpeer/cause.hpp>
#include <deadpeer/clock.hpp>
#include <deadpeer/config_error.hpp>
#include <deadpeer/wire.hpp>

#include <boost/json.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <queue>
#include <random>
#include <sstream>
#include <system_error>

namespace probe::load {

namespace json = boost::json;
namespace wire = deadpeer::wire;

std::string_view to_string(protocol p) {
  return p == protocol::mqtt ? "mqtt" : "deadpeer";
}

bool is_loopback(const boost::asio::ip::address& address) {
  if (address.is_v4()) return address.to_v4().is_loopback();
  const auto v6 = address.to_v6();
  if (v6.is_v4_mapped())
    return boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, v6).is_loopback();
  return v6.is_loopback();
}

namespace {

std::uint32_t parse_loopback_ipv4(std::string_view word, std::string_view whole) {
  in_addr a{};
  const std::string text(word);
  if (::inet_pton(AF_INET, text.c_str(), &a) != 1)
    throw deadpeer::config_error("source address \"" + text + "\" in \"" + std::string(whole) +
                                 "\" is not an IPv4 address");
  const std::uint32_t host = ntohl(a.s_addr);
  if ((host >> 24) != 127)
    throw deadpeer::config_error(
        "source address " + text + " in \"" + std::string(whole) +
        "\" is outside 127.0.0.0/8: probe load only sends loopback traffic");
  return host;
}

}  // namespace

std::vector<std::uint32_t> parse_source_addresses(std::string_view text) {
  constexpr std::size_t max_addresses = 65536;
  std::vector<std::uint32_t> out;
  std::string_view rest = text;
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    const auto item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    const auto dash = item.find('-');
    const auto first = parse_loopback_ipv4(item.substr(0, dash), text);
    const auto last =
        dash == std::string_view::npos ? first : parse_loopback_ipv4(item.substr(dash + 1), text);
    if (last < first)
      throw deadpeer::config_error("source address range \"" + std::string(item) +
                                   "\" ends before it starts");
    if (out.size() + (last - first + 1) > max_addresses)
      throw deadpeer::config_error("source addresses \"" + std::string(text) +
                                   "\": more than 65536 addresses");
    for (std::uint32_t a = first; a <= last; ++a)
      out.push_back(a);
  }
  if (out.empty()) throw deadpeer::config_error("source addresses \"\" name no address");
  return out;
}

std::string format_ipv4(std::uint32_t host_order) {
  in_addr a{.s_addr = htonl(host_order)};
  char text[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &a, text, sizeof text);
  return text;
}

// ---- rtt_histogram ---------------------------------------------------------------------

namespace {
constexpr double bucket_growth = 1.02;
constexpr double first_bucket_ns = 1000.0;  // bucket 0 holds everything below 1 µs
}  // namespace

void rtt_histogram::add(std::int64_t rtt_ns) {
  rtt_ns = std::max<std::int64_t>(rtt_ns, 0);
  std::size_t index = 0;
  if (static_cast<double>(rtt_ns) >= first_bucket_ns)
    index = 1 + static_cast<std::size_t>(std::log(static_cast<double>(rtt_ns) / first_bucket_ns) /
                                         std::log(bucket_growth));
  ++buckets_[std::min(index, bucket_count - 1)];
  ++samples_;
  max_ns_ = std::max(max_ns_, rtt_ns);
}

void rtt_histogram::merge(const rtt_histogram& other) {
  for (std::size_t i = 0; i < bucket_count; ++i)
    buckets_[i] += other.buckets_[i];
  samples_ += other.samples_;
  max_ns_ = std::max(max_ns_, other.max_ns_);
}

double rtt_histogram::quantile_ms(double q) const {
  if (samples_ == 0) return 0;
  const auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(samples_)));
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < bucket_count; ++i) {
    seen += buckets_[i];
    if (seen >= std::max<std::uint64_t>(rank, 1)) {
      const double middle_ns =
          i == 0 ? first_bucket_ns / 2
                 : first_bucket_ns * std::pow(bucket_growth, static_cast<double>(i) - 0.5);
      return std::min(middle_ns, static_cast<double>(max_ns_)) / 1e6;
    }
  }
  return max_ms();
}

json::object rtt_histogram::to_json() const {
  json::array sparse;
  for (std::size_t i = 0; i < bucket_count; ++i)
    if (buckets_[i] != 0) sparse.push_back(json::array{i, buckets_[i]});
  return {{"samples", samples_}, {"max_ns", max_ns_}, {"buckets", std::move(sparse)}};
}

rtt_histogram rtt_histogram::from_json(const json::object& o) {
  rtt_histogram h;
  h.samples_ = json::value_to<std::uint64_t>(o.at("samples"));
  h.max_ns_ = json::value_to<std::int64_t>(o.at("max_ns"));
  for (const auto& pair : o.at("buckets").as_array()) {
    const auto index = json::value_to<std::size_t>(pair.as_array().at(0));
    if (index < bucket_count)
      h.buckets_[index] = json::value_to<std::uint64_t>(pair.as_array().at(1));
  }
  return h;
}

// ---- process_result --------------------------------------------------------------------

namespace {

std::uint64_t sum(const std::map<std::string, std::uint64_t>& m) {
  std::uint64_t total = 0;
  for (const auto& [key, n] : m)
    total += n;
  return total;
}

json::object counts_json(const std::map<std::string, std::uint64_t>& m) {
  json::object o;
  for (const auto& [key, n] : m)
    o[key] = n;
  return o;
}

std::map<std::string, std::uint64_t> counts_from_json(const json::value& v) {
  std::map<std::string, std::uint64_t> m;
  for (const auto& [key, n] : v.as_object())
    m[std::string(key)] = json::value_to<std::uint64_t>(n);
  return m;
}

}  // namespace

std::uint64_t process_result::handshake_failures_total() const {
  return sum(handshake_failures);
}
std::uint64_t process_result::verdicts_total() const {
  return sum(verdicts);
}

double process_result::burst_rate_per_s() const {
  if (burst_back == 0 || burst_last_back_ns <= burst_start_ns) return 0;
  return static_cast<double>(burst_back) * 1e9 /
         static_cast<double>(burst_last_back_ns - burst_start_ns);
}

double process_result::burst_all_back_ms() const {
  if (burst_dropped == 0 || burst_back < burst_dropped) return -1;
  return static_cast<double>(burst_last_back_ns - burst_start_ns) / 1e6;
}

double process_result::handshake_rate_per_s() const {
  const auto ramp_ns = ramp_end_ns - ramp_start_ns;
  if (ramp_ns <= 0) return 0;
  return static_cast<double>(established_in_ramp) * 1e9 / static_cast<double>(ramp_ns);
}

void process_result::merge(const process_result& o) {
  const bool first = requested == 0 && attempts == 0;
  requested += o.requested;
  attempts += o.attempts;
  established += o.established;
  established_in_ramp += o.established_in_ramp;
  ramp_start_ns = first ? o.ramp_start_ns : std::min(ramp_start_ns, o.ramp_start_ns);
  ramp_end_ns = std::max(ramp_end_ns, o.ramp_end_ns);
  storm_disconnects += o.storm_disconnects;
  reconnects += o.reconnects;
  // Several processes share the host's monotonic clock: the burst spans all of theirs.
  if (o.burst_dropped > 0) {
    burst_start_ns =
        burst_dropped == 0 ? o.burst_start_ns : std::min(burst_start_ns, o.burst_start_ns);
    burst_last_back_ns = std::max(burst_last_back_ns, o.burst_last_back_ns);
  }
  burst_dropped += o.burst_dropped;
  burst_back += o.burst_back;
  for (const auto& [key, n] : o.burst_failures)
    burst_failures[key] += n;
  held_at_end += o.held_at_end;
  closed_gracefully += o.closed_gracefully;
  close_timeouts += o.close_timeouts;
  pings_sent += o.pings_sent;
  pongs_received += o.pongs_received;
  server_pings_answered += o.server_pings_answered;
  for (const auto& [key, n] : o.handshake_failures)
    handshake_failures[key] += n;
  for (const auto& [key, n] : o.verdicts)
    verdicts[key] += n;
  rtt.merge(o.rtt);
  deadline_hit = deadline_hit || o.deadline_hit;
}

json::object process_result::to_json() const {
  return {{"requested", requested},
          {"attempts", attempts},
          {"established", established},
          {"established_in_ramp", established_in_ramp},
          {"ramp_start_ns", ramp_start_ns},
          {"ramp_end_ns", ramp_end_ns},
          {"storm_disconnects", storm_disconnects},
          {"reconnects", reconnects},
          {"burst_dropped", burst_dropped},
          {"burst_back", burst_back},
          {"burst_start_ns", burst_start_ns},
          {"burst_last_back_ns", burst_last_back_ns},
          {"burst_failures", counts_json(burst_failures)},
          {"held_at_end", held_at_end},
          {"closed_gracefully", closed_gracefully},
          {"close_timeouts", close_timeouts},
          {"pings_sent", pings_sent},
          {"pongs_received", pongs_received},
          {"server_pings_answered", server_pings_answered},
          {"handshake_failures", counts_json(handshake_failures)},
          {"verdicts", counts_json(verdicts)},
          {"rtt", rtt.to_json()},
          {"deadline_hit", deadline_hit}};
}

process_result process_result::from_json(const json::object& o) {
  const auto u64 = [&](std::string_view key) { return json::value_to<std::uint64_t>(o.at(key)); };
  const auto i64 = [&](std::string_view key) { return json::value_to<std::int64_t>(o.at(key)); };
  process_result r;
  r.requested = u64("requested");
  r.attempts = u64("attempts");
  r.established = u64("established");
  r.established_in_ramp = u64("established_in_ramp");
  r.ramp_start_ns = i64("ramp_start_ns");
  r.ramp_end_ns = i64("ramp_end_ns");
  r.storm_disconnects = u64("storm_disconnects");
  r.reconnects = u64("reconnects");
  r.burst_dropped = u64("burst_dropped");
  r.burst_back = u64("burst_back");
  r.burst_start_ns = i64("burst_start_ns");
  r.burst_last_back_ns = i64("burst_last_back_ns");
  r.burst_failures = counts_from_json(o.at("burst_failures"));
  r.held_at_end = u64("held_at_end");
  r.closed_gracefully = u64("closed_gracefully");
  r.close_timeouts = u64("close_timeouts");
  r.pings_sent = u64("pings_sent");
  r.pongs_received = u64("pongs_received");
  r.server_pings_answered = u64("server_pings_answered");
  r.handshake_failures = counts_from_json(o.at("handshake_failures"));
  r.verdicts = counts_from_json(o.at("verdicts"));
  r.rtt = rtt_histogram::from_json(o.at("rtt").as_object());
  r.deadline_hit = o.at("deadline_hit").as_bool();
  return r;
}

// ---- engine ----------------------------------------------------------------------------

namespace {

enum class conn_state : std::uint8_t {
  unopened,
  connecting,   // non-blocking connect in progress
  handshaking,  // HELLO / CONNECT sent, waiting for WELCOME / CONNACK
  established,
  closing,   // our BYE / DISCONNECT sent and write side shut: waiting for the server's FIN
  draining,  // the server said ERROR or BYE: write side shut, reading to its FIN
  done,
  burst_wait,  // dropped by the storm burst: its timer says when it connects again
};

// One client. Kept small: at 19.5k per process it is the generator's whole footprint.
struct connection {
  std::int64_t deadline_ns = 0;   // the one timer that matters in the current state
  std::int64_t ping_due_ns = 0;   // last frame sent + the jittered wait drawn then
  std::int64_t ping_sent_ns = 0;  // outstanding PING's send time; 0: none outstanding
  std::int64_t last_pong_ns = 0;
  std::uint64_t next_sequence = 1;
  std::string partial;  // a frame cut by a read; empty nearly always
  int fd = -1;
  std::uint32_t generation = 0;  // bumped on every close: stale timers and events are skipped
  std::uint32_t interval_ms = 0;
  std::uint32_t max_frame = wire::handshake_max_frame;
  conn_state state = conn_state::unopened;
  bool reconnect = false;  // opened again by the storm
  bool burst = false;      // dropped by the storm burst, not yet back or failed
};

struct timer_entry {
  std::int64_t due_ns;
  std::uint32_t index;
  std::uint32_t generation;
  bool operator>(const timer_entry& o) const { return due_ns > o.due_ns; }
};

constexpr std::uint64_t watch_tag = std::uint64_t{1} << 63;
constexpr std::uint32_t generation_mask = 0x7FFF'FFFF;
constexpr std::int64_t tick_ns = 100'000'000;
constexpr std::size_t read_buffer_size = 64 * 1024;
constexpr std::size_t storm_batch_limit = 256;

std::string errno_label(int error) {
  const auto name = deadpeer::linux_errno_name(error);
  return name.empty() ? "errno " + std::to_string(error) : std::string(name);
}

// A failed connect by its classified cause and errno: "connection_refused (ECONNREFUSED)".
std::string connect_failure_label(int error) {
  const auto k = deadpeer::classify(std::error_code(error, std::system_category()),
                                    {.op = deadpeer::connection_context::operation::connecting});
  return std::string(deadpeer::to_string(k.cause)) + " (" + errno_label(error) + ")";
}

std::uint32_t load_be32(std::span<const std::byte> p) {
  return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) |
         std::uint32_t(p[3]);
}

}  // namespace

struct engine::impl {
  engine_config cfg;
  std::vector<connection> conns;
  std::priority_queue<timer_entry, std::vector<timer_entry>, std::greater<>> timers;
  int epoll_fd = -1;
  std::vector<std::pair<int, std::function<void()>>> watches;
  std::function<void(const progress&, std::int64_t)> ramp_finished_callback;
  std::function<void(const progress&, std::int64_t)> tick_callback;
  process_result result;
  progress prog;
  std::mt19937_64 rng{std::random_device{}() ^ static_cast<std::uint64_t>(::getpid())};
  std::uniform_real_distribution<double> jitter{0.9, 1.1};
  wire::decoder decoder{std::numeric_limits<std::uint32_t>::max()};  // fed whole frames only
  std::vector<std::byte> out;
  std::vector<std::byte> in = std::vector<std::byte>(read_buffer_size);

  std::size_t next_to_open = 0;
  std::size_t initial_pending = 0;  // initial connections neither established nor failed
  std::size_t in_flight = 0;        // connecting or handshaking
  std::size_t closing_now = 0;      // closing or draining
  std::size_t source_cursor = 0;

  bool storm_requested = false;
  bool storm_active = false;
  std::int64_t storm_start_ns = 0;
  std::uint64_t storm_done = 0;
  std::size_t storm_cursor = 0;
  bool burst_done = false;

  bool stop_requested = false;
  bool stopping = false;

  explicit impl(engine_config c) : cfg(std::move(c)) {
    conns.resize(cfg.connections);
    initial_pending = cfg.connections;
    result.requested = cfg.connections;
    epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1");
  }

  ~impl() {
    for (auto& c : conns)
      if (c.fd >= 0) ::close(c.fd);
    ::close(epoll_fd);
  }

  std::int64_t interval_ns(const connection& c) const {
    return static_cast<std::int64_t>(c.interval_ms) * 1'000'000;
  }

  void set_state(connection& c, conn_state next) {
    const auto counts_in_flight = [](conn_state s) {
      return s == conn_state::connecting || s == conn_state::handshaking;
    };
    const auto counts_closing = [](conn_state s) {
      return s == conn_state::closing || s == conn_state::draining;
    };
    in_flight += counts_in_flight(next) ? 1 : 0;
    in_flight -= counts_in_flight(c.state) ? 1 : 0;
    closing_now += counts_closing(next) ? 1 : 0;
    closing_now -= counts_closing(c.state) ? 1 : 0;
    prog.held += next == conn_state::established ? 1 : 0;
    prog.held -= c.state == conn_state::established ? 1 : 0;
    c.state = next;
  }

  void schedule(std::uint32_t index, std::int64_t due_ns) {
    auto& c = conns[index];
    c.deadline_ns = due_ns;
    timers.push({due_ns, index, c.generation});
  }

  void epoll_set(std::uint32_t index, std::uint32_t events, int op) {
    auto& c = conns[index];
    epoll_event e{};
    e.events = events;
    e.data.u64 = (std::uint64_t{c.generation} << 32) | index;
    if (::epoll_ctl(epoll_fd, op, c.fd, &e) != 0)
      throw std::system_error(errno, std::generic_category(), "epoll_ctl");
  }

  // Closes the socket; `reset` sends RST (SO_LINGER 0) instead of FIN.
  void close_socket(connection& c, bool reset) {
    if (c.fd >= 0) {
      if (reset) {
        const linger l{.l_onoff = 1, .l_linger = 0};
        ::setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
      }
      ::close(c.fd);
      c.fd = -1;
    }
    c.generation = (c.generation + 1) & generation_mask;
    std::string().swap(c.partial);
    c.ping_sent_ns = 0;
  }

  void initial_resolved(const connection& c) {
    if (!c.reconnect && initial_pending > 0) --initial_pending;
  }

  // The connection ended before the hold did: a handshake failure or a verdict, by state.
  // `graceful`: the server said why (ERROR, BYE), so read to its FIN as protocol §8.1 asks.
  void lost(std::uint32_t index, const std::string& reason, bool graceful, std::int64_t now) {
    auto& c = conns[index];
    switch (c.state) {
      case conn_state::connecting:
      case conn_state::handshaking:
        ++result.handshake_failures[reason];
        ++prog.failed;
        initial_resolved(c);
        if (c.burst) ++result.burst_failures[reason];
        c.burst = false;
        break;
      case conn_state::established:
        ++result.verdicts[reason];
        ++prog.verdicts;
        break;
      default:
        break;
    }
    if (graceful && c.fd >= 0) {
      ::shutdown(c.fd, SHUT_WR);
      set_state(c, conn_state::draining);
      schedule(index, now + cfg.close_timeout.count() * 1'000'000);
      return;
    }
    close_socket(c, true);
    set_state(c, conn_state::done);
  }

  bool send_bytes(std::uint32_t index, std::span<const std::byte> bytes, std::int64_t now) {
    auto& c = conns[index];
    const auto n = ::send(c.fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n == static_cast<ssize_t>(bytes.size())) {
      c.ping_due_ns =
          now + static_cast<std::int64_t>(jitter(rng) * static_cast<double>(interval_ns(c)));
      return true;
    }
    // A server that leaves a few hundred bytes of heartbeats unread has stopped reading.
    lost(index, n >= 0 || errno == EAGAIN ? "EAGAIN (send buffer full)" : errno_label(errno), false,
         now);
    return false;
  }

  bool send_frame(std::uint32_t index, const wire::frame& f, std::int64_t now) {
    out.clear();
    wire::encode(f, out);
    return send_bytes(index, out, now);
  }

  void schedule_ping(std::uint32_t index) {
    auto& c = conns[index];
    const auto after_pong = c.last_pong_ns + interval_ns(c) * 55 / 100;
    schedule(index, std::max(c.ping_due_ns, after_pong));
  }

  std::string client_id(std::uint32_t index) const {
    return cfg.id_prefix + std::to_string(cfg.first_index + index);
  }

  void open(std::uint32_t index, std::int64_t now) {
    auto& c = conns[index];
    ++result.attempts;
    const bool v6 = cfg.server.address().is_v6();
    c.fd = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    set_state(c, conn_state::connecting);
    if (c.fd < 0) {
      lost(index, errno_label(errno), false, now);
      return;
    }
    if (!cfg.source_addresses.empty()) {
      const int on = 1;
      ::setsockopt(c.fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &on, sizeof on);
      sockaddr_in source{};
      source.sin_family = AF_INET;
      source.sin_addr.s_addr =
          htonl(cfg.source_addresses[source_cursor++ % cfg.source_addresses.size()]);
      if (::bind(c.fd, reinterpret_cast<const sockaddr*>(&source), sizeof source) != 0) {
        lost(index, errno_label(errno), false, now);
        return;
      }
    }
    if (::connect(c.fd, cfg.server.data(), static_cast<socklen_t>(cfg.server.size())) == 0) {
      epoll_set(index, EPOLLIN, EPOLL_CTL_ADD);
      connected(index, now);
      return;
    }
    if (errno != EINPROGRESS) {
      lost(index, connect_failure_label(errno), false, now);
      return;
    }
    epoll_set(index, EPOLLOUT, EPOLL_CTL_ADD);
    schedule(index, now + cfg.connect_timeout.count() * 1'000'000);
  }

  void connected(std::uint32_t index, std::int64_t now) {
    auto& c = conns[index];
    set_state(c, conn_state::handshaking);
    c.interval_ms = static_cast<std::uint32_t>(cfg.interval.count());
    c.max_frame = wire::handshake_max_frame;
    c.last_pong_ns = 0;
    if (cfg.proto == protocol::deadpeer) {
      if (!send_frame(index,
                      wire::hello{.version = wire::protocol_version,
                                  .client_id = client_id(index),
                                  .requested_interval_ms = c.interval_ms,
                                  .auth_token = {}},
                      now))
        return;
    } else {
      out.clear();
      const auto keep_alive_s =
          std::clamp<std::int64_t>((cfg.interval.count() + 999) / 1000, 1, 65535);
      mqtt::encode_connect(client_id(index), static_cast<std::uint16_t>(keep_alive_s), out);
      if (!send_bytes(index, out, now)) return;
    }
    schedule(index, now + cfg.handshake_timeout.count() * 1'000'000);
  }

  void established(std::uint32_t index, std::uint32_t interval_ms, std::int64_t now) {
    auto& c = conns[index];
    set_state(c, conn_state::established);
    c.interval_ms = std::max<std::uint32_t>(interval_ms, 1);
    // The wait starts when the handshake completes for the client (protocol §6).
    c.ping_due_ns =
        now + static_cast<std::int64_t>(jitter(rng) * static_cast<double>(interval_ns(c)));
    if (c.burst) {
      ++result.burst_back;
      result.burst_last_back_ns = now;
      c.burst = false;
    }
    if (c.reconnect) {
      ++result.reconnects;
    } else {
      ++result.established;
      ++prog.established;
      if (!prog.ramp_finished) ++result.established_in_ramp;
      initial_resolved(c);
    }
    schedule_ping(index);
  }

  void send_ping(std::uint32_t index, std::int64_t now) {
    auto& c = conns[index];
    bool sent = false;
    if (cfg.proto == protocol::deadpeer)
      sent = send_frame(index, wire::ping{c.next_sequence++, static_cast<std::uint64_t>(now)}, now);
    else
      sent = send_bytes(index, mqtt::pingreq, now);
    if (!sent) return;
    ++result.pings_sent;
    c.ping_sent_ns = now;  // the PONG schedules the next PING
  }

  void pong_arrived(std::uint32_t index, std::int64_t rtt_ns, std::int64_t now) {
    auto& c = conns[index];
    if (c.ping_sent_ns == 0) return;  // not an answer to a PING of ours: proof of life only
    ++result.pongs_received;
    ++prog.pongs;
    result.rtt.add(rtt_ns);
    c.ping_sent_ns = 0;
    c.last_pong_ns = now;
    schedule_ping(index);
  }

  void on_timer(std::uint32_t index, std::int64_t now) {
    auto& c = conns[index];
    switch (c.state) {
      case conn_state::connecting:
        lost(index, "connect_timeout (no answer within the connect timeout)", false, now);
        break;
      case conn_state::handshaking:
        lost(index, "handshake timeout", false, now);
        break;
      case conn_state::established:
        if (c.ping_sent_ns == 0) send_ping(index, now);
        break;
      case conn_state::closing:
        ++result.close_timeouts;
        close_socket(c, true);
        set_state(c, conn_state::done);
        break;
      case conn_state::draining:
        close_socket(c, true);
        set_state(c, conn_state::done);
        break;
      case conn_state::burst_wait:
        open(index, now);
        break;
      default:
        break;
    }
  }

  void on_connect_ready(std::uint32_t index, std::int64_t now) {
    auto& c = conns[index];
    int error = 0;
    socklen_t length = sizeof error;
    if (::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) error = errno;
    if (error != 0) {
      lost(index, connect_failure_label(error), false, now);
      return;
    }
    epoll_set(index, EPOLLIN, EPOLL_CTL_MOD);
    connected(index, now);
  }

  void on_deadpeer_frame(std::uint32_t index, std::span<const std::byte> bytes, std::int64_t now) {
    auto& c = conns[index];
    decoder.feed(bytes);
    auto next = decoder.next();
    if (auto* bad = std::get_if<wire::decode_error>(&next)) {
      const std::string reason = "malformed: " + std::string(wire::to_string(bad->code));
      decoder = wire::decoder{std::numeric_limits<std::uint32_t>::max()};
      lost(index, reason, false, now);
      return;
    }
    auto* f = std::get_if<wire::frame>(&next);
    if (f == nullptr) {  // cannot happen for a whole frame; never leave bytes behind
      decoder = wire::decoder{std::numeric_limits<std::uint32_t>::max()};
      lost(index, "malformed: incomplete frame", false, now);
      return;
    }
    if (const auto* e = std::get_if<wire::error>(f)) {
      lost(index, "ERROR " + std::string(wire::to_string(e->code)), true, now);
      return;
    }
    if (const auto* b = std::get_if<wire::bye>(f)) {
      lost(index, "BYE " + std::string(wire::to_string(b->reason)), true, now);
      return;
    }
    if (c.state == conn_state::handshaking) {
      if (const auto* w = std::get_if<wire::welcome>(f)) {
        c.max_frame = w->max_frame;
        established(index, w->interval_ms, now);
      } else {
        lost(index, "unexpected " + std::string(wire::to_string(wire::type_of(*f))), false, now);
      }
      return;
    }
    if (const auto* p = std::get_if<wire::ping>(f)) {
      if (send_frame(index, wire::pong{p->sequence, p->timestamp_ns}, now)) {
        ++result.server_pings_answered;
        if (c.ping_sent_ns == 0) schedule_ping(index);
      }
    } else if (const auto* answer = std::get_if<wire::pong>(f)) {
      // The timestamp is the server's bytes: only one from our own clock's past is an RTT.
      if (answer->sequence < c.next_sequence && now >= 0 &&
          answer->timestamp_ns <= static_cast<std::uint64_t>(now))
        pong_arrived(index, now - static_cast<std::int64_t>(answer->timestamp_ns), now);
    } else if (!std::holds_alternative<wire::data>(*f)) {
      lost(index, "unexpected " + std::string(wire::to_string(wire::type_of(*f))), false, now);
    }
  }

  // Returns the bytes of the first whole frame or packet in `view`, empty if more are
  // needed; a bad header ends the connection (`index`'s state changes).
  std::size_t frame_size(std::uint32_t index, std::span<const std::byte> view, std::int64_t now) {
    auto& c = conns[index];
    if (cfg.proto == protocol::deadpeer) {
      if (view.size() < 4) return 0;
      const auto length = load_be32(view);
      if (length == 0 || length > c.max_frame) {
        lost(index, length == 0 ? "malformed: malformed_frame" : "malformed: frame_too_large",
             false, now);
        return 0;
      }
      return view.size() >= 4 + std::size_t{length} ? 4 + std::size_t{length} : 0;
    }
    mqtt::packet_header header;
    switch (mqtt::parse_header(view, header)) {
      case mqtt::parse_status::need_more:
        return 0;
      case mqtt::parse_status::malformed:
        lost(index, "malformed MQTT packet", false, now);
        return 0;
      case mqtt::parse_status::complete:
        break;
    }
    return header.header_size + header.remaining_length;
  }

  void on_mqtt_packet(std::uint32_t index, std::span<const std::byte> packet, std::int64_t now) {
    auto& c = conns[index];
    const auto type = packet[0] & std::byte{0xF0};
    if (c.state == conn_state::handshaking) {
      if (type == mqtt::connack_type && packet.size() == 4) {
        const auto code = static_cast<int>(packet[3]);
        if (code == 0)
          established(index, static_cast<std::uint32_t>(cfg.interval.count()), now);
        else
          lost(index, "CONNACK return code " + std::to_string(code), false, now);
        return;
      }
    } else if (type == mqtt::pingresp_type) {
      pong_arrived(index, now - c.ping_sent_ns, now);
      return;
    }
    std::ostringstream reason;
    reason << "unexpected MQTT packet 0x" << std::hex << static_cast<int>(packet[0]);
    lost(index, reason.str(), false, now);
  }

  void on_bytes(std::uint32_t index, std::span<const std::byte> data, std::int64_t now) {
    auto& c = conns[index];
    if (c.state != conn_state::handshaking && c.state != conn_state::established) return;
    const auto generation = c.generation;
    std::span<const std::byte> view = data;
    if (!c.partial.empty()) {
      c.partial.append(reinterpret_cast<const char*>(data.data()), data.size());
      view = std::as_bytes(std::span(c.partial));
    }
    std::size_t used = 0;
    for (;;) {
      const auto size = frame_size(index, view.subspan(used), now);
      if (c.generation != generation || c.state == conn_state::draining) return;
      if (size == 0) break;
      const auto one = view.subspan(used, size);
      if (cfg.proto == protocol::deadpeer)
        on_deadpeer_frame(index, one, now);
      else
        on_mqtt_packet(index, one, now);
      used += size;
      if (c.generation != generation || c.state == conn_state::draining) return;
    }
    if (!c.partial.empty()) {
      c.partial.erase(0, used);
    } else if (used < data.size()) {
      c.partial.assign(reinterpret_cast<const char*>(data.data() + used), data.size() - used);
    }
  }

  void on_readable(std::uint32_t index, std::int64_t now) {
    auto& c = conns[index];
    const auto n = ::recv(c.fd, in.data(), in.size(), MSG_DONTWAIT);
    if (n > 0) {
      on_bytes(index, std::span(in).first(static_cast<std::size_t>(n)), now);
      return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    const int error = n < 0 ? errno : 0;
    switch (c.state) {
      case conn_state::closing:
        if (error == 0)
          ++result.closed_gracefully;
        else
          ++result.verdicts[errno_label(error) + " while closing"];
        close_socket(c, error != 0);
        set_state(c, conn_state::done);
        break;
      case conn_state::draining:
        close_socket(c, error != 0);
        set_state(c, conn_state::done);
        break;
      default:
        lost(index, error == 0 ? "EOF" : errno_label(error), false, now);
        break;
    }
  }

  void open_due(std::int64_t now) {
    if (next_to_open >= conns.size()) return;
    const auto elapsed_ns = now - result.ramp_start_ns;
    const auto allowed =
        static_cast<std::size_t>(static_cast<double>(elapsed_ns) * cfg.ramp_per_s / 1e9) + 1;
    while (next_to_open < conns.size() && next_to_open < allowed &&
           in_flight < cfg.max_handshakes_in_flight) {
      open(static_cast<std::uint32_t>(next_to_open++), now);
      ++prog.opened;
    }
  }

  std::int64_t next_open_ns() const {
    if (next_to_open >= conns.size() || in_flight >= cfg.max_handshakes_in_flight)
      return std::numeric_limits<std::int64_t>::max();
    return result.ramp_start_ns +
           static_cast<std::int64_t>(static_cast<double>(next_to_open) * 1e9 / cfg.ramp_per_s);
  }

  void storm_due(std::int64_t now) {
    if (!storm_active || conns.empty()) return;
    const auto allowed = static_cast<std::uint64_t>(static_cast<double>(now - storm_start_ns) *
                                                    cfg.storm_per_s / 1e9);
    std::size_t batch = 0;
    while (storm_done < allowed && batch++ < storm_batch_limit) {
      ++storm_done;
      for (std::size_t scanned = 0; scanned < conns.size(); ++scanned) {
        const auto index = static_cast<std::uint32_t>(storm_cursor++ % conns.size());
        auto& c = conns[index];
        if (c.state != conn_state::established) continue;
        ++result.storm_disconnects;
        close_socket(c, true);  // the blip: no BYE, and no TIME_WAIT left on our side
        set_state(c, conn_state::done);
        c.reconnect = true;
        open(index, now);
        break;
      }
    }
  }

  // The storm burst: every chosen client drops at this instant; each connects again at its
  // own instant within the window (at once, in this loop turn, when the window is 0).
  void burst_now(std::int64_t now) {
    burst_done = true;
    result.burst_start_ns = now;
    const auto window_ns = cfg.burst_window.count() * 1'000'000;
    std::uniform_int_distribution<std::int64_t> spread(0, std::max<std::int64_t>(window_ns, 0));
    std::vector<std::uint32_t> at_once;
    for (std::uint32_t index = 0; index < conns.size() && result.burst_dropped < cfg.burst;
         ++index) {
      auto& c = conns[index];
      if (c.state != conn_state::established) continue;
      ++result.burst_dropped;
      close_socket(c, true);  // no BYE: the clients all lost their connection together
      c.reconnect = true;
      c.burst = true;
      set_state(c, conn_state::burst_wait);
      if (window_ns <= 0)
        at_once.push_back(index);
      else
        schedule(index, now + spread(rng));
    }
    for (const auto index : at_once)
      open(index, now);
  }

  std::int64_t next_storm_ns() const {
    if (!storm_active || cfg.storm_per_s <= 0) return std::numeric_limits<std::int64_t>::max();
    return storm_start_ns +
           static_cast<std::int64_t>(static_cast<double>(storm_done + 1) * 1e9 / cfg.storm_per_s);
  }

  void begin_stop(std::int64_t now) {
    stopping = true;
    storm_active = false;
    result.held_at_end = prog.held;
    // The BYEs go out in one pass that takes a while at scale (about 8 us each: 150 ms for
    // 19,500): the connections whose next PING is due soonest say BYE first, so none falls
    // silent past its promise while it waits its turn (a server would rightly call it dead).
    std::vector<std::uint32_t> order(conns.size());
    std::iota(order.begin(), order.end(), 0u);
    std::sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
      return conns[a].ping_due_ns < conns[b].ping_due_ns;
    });
    for (const auto index : order) {
      auto& c = conns[index];
      if (c.state == conn_state::burst_wait) {
        ++result.burst_failures["hold ended before it connected again"];
        c.burst = false;
        set_state(c, conn_state::done);
      } else if (c.state == conn_state::connecting || c.state == conn_state::handshaking) {
        lost(index, "hold ended during the handshake", false, now);
      } else if (c.state == conn_state::established) {
        const bool sent = cfg.proto == protocol::deadpeer
                              ? send_frame(index, wire::bye{wire::bye_reason::normal}, now)
                              : send_bytes(index, mqtt::disconnect, now);
        if (!sent) continue;
        ::shutdown(c.fd, SHUT_WR);
        set_state(c, conn_state::closing);
        schedule(index, now + cfg.close_timeout.count() * 1'000'000);
      }
    }
  }

  void reset_everything() {
    for (auto& c : conns)
      if (c.fd >= 0) {
        close_socket(c, true);
        set_state(c, conn_state::done);
      }
  }

  process_result run() {
    const auto start = deadpeer::monotonic_ns();
    result.ramp_start_ns = start;
    auto next_tick_ns = start + tick_ns;
    std::vector<epoll_event> events(1024);
    for (std::size_t w = 0; w < watches.size(); ++w) {
      epoll_event e{};
      e.events = EPOLLIN;
      e.data.u64 = watch_tag | w;
      if (::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, watches[w].first, &e) != 0)
        throw std::system_error(errno, std::generic_category(), "epoll_ctl");
    }
    for (;;) {
      auto now = deadpeer::monotonic_ns();
      if (cfg.hard_deadline_ns > 0 && now >= cfg.hard_deadline_ns) {
        result.deadline_hit = true;
        if (!stopping) result.held_at_end = prog.held;
        reset_everything();
        break;
      }
      if (stop_requested && !stopping) begin_stop(now);
      if (storm_requested && !burst_done && !stopping && cfg.burst > 0) burst_now(now);
      if (storm_requested && !storm_active && !stopping && cfg.storm_per_s > 0) {
        storm_active = true;
        storm_start_ns = now;
      }
      if (!stopping) {
        open_due(now);
        storm_due(now);
      }
      while (!timers.empty() && timers.top().due_ns <= now) {
        const auto t = timers.top();
        timers.pop();
        const auto& c = conns[t.index];
        if (c.generation == t.generation && c.deadline_ns == t.due_ns) on_timer(t.index, now);
      }
      if (!prog.ramp_finished && next_to_open >= conns.size() && initial_pending == 0) {
        prog.ramp_finished = true;
        result.ramp_end_ns = now;
        if (ramp_finished_callback) ramp_finished_callback(prog, now);
      }
      if (now >= next_tick_ns) {
        next_tick_ns = now + tick_ns;
        if (tick_callback) tick_callback(prog, now);
      }
      if (stopping && closing_now == 0) break;

      auto wake_ns = std::min({next_tick_ns, next_open_ns(), next_storm_ns()});
      if (!timers.empty()) wake_ns = std::min(wake_ns, timers.top().due_ns);
      if (cfg.hard_deadline_ns > 0) wake_ns = std::min(wake_ns, cfg.hard_deadline_ns);
      if (stop_requested && !stopping) wake_ns = now;
      const auto wait_ms = std::clamp<std::int64_t>((wake_ns - now + 999'999) / 1'000'000, 0, 100);
      const int ready = ::epoll_wait(epoll_fd, events.data(), static_cast<int>(events.size()),
                                     static_cast<int>(wait_ms));
      if (ready < 0) {
        if (errno == EINTR) continue;
        throw std::system_error(errno, std::generic_category(), "epoll_wait");
      }
      now = deadpeer::monotonic_ns();
      for (int i = 0; i < ready; ++i) {
        const auto tag = events[static_cast<std::size_t>(i)].data.u64;
        if ((tag & watch_tag) != 0) {
          watches[tag & ~watch_tag].second();
          continue;
        }
        const auto index = static_cast<std::uint32_t>(tag & 0xFFFF'FFFF);
        const auto generation = static_cast<std::uint32_t>(tag >> 32);
        auto& c = conns[index];
        if (c.generation != generation || c.fd < 0) continue;  // closed earlier in this batch
        if (c.state == conn_state::connecting)
          on_connect_ready(index, now);
        else
          on_readable(index, now);
      }
    }
    for (const auto& [fd, callback] : watches)
      ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, nullptr);
    return result;
  }
};

engine::engine(engine_config config) : impl_(std::make_unique<impl>(std::move(config))) {}
engine::~engine() = default;

void engine::watch(int fd, std::function<void()> on_readable) {
  impl_->watches.emplace_back(fd, std::move(on_readable));
}
void engine::on_ramp_finished(std::function<void(const progress&, std::int64_t)> f) {
  impl_->ramp_finished_callback = std::move(f);
}
void engine::on_tick(std::function<void(const progress&, std::int64_t)> f) {
  impl_->tick_callback = std::move(f);
}
void engine::start_storm() {
  impl_->storm_requested = true;
}
void engine::stop() {
  impl_->stop_requested = true;
}
process_result engine::run() {
  return impl_->run();
}

// ---- server samples --------------------------------------------------------------------

namespace {

std::int64_t field_kb(const std::string& path, std::string_view key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with(key)) return std::stoll(line.substr(key.size()));
  return -1;
}

}  // namespace

server_sample sample_server(int pid) {
  server_sample s;
  const std::string dir = "/proc/" + std::to_string(pid);
  s.mono_ns = deadpeer::monotonic_ns();
  try {
    s.rss_kb = field_kb(dir + "/status", "VmRSS:");
    s.private_dirty_kb = field_kb(dir + "/smaps_rollup", "Private_Dirty:");
    std::ifstream stat(dir + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    const auto paren = text.rfind(')');
    if (paren == std::string::npos || s.rss_kb < 0 || s.private_dirty_kb < 0) return s;
    std::istringstream fields(text.substr(paren + 2));
    std::string field;
    std::int64_t utime = 0;
    std::int64_t stime = 0;
    // After "(comm) ": state is field 3; utime and stime are fields 14 and 15.
    for (int number = 3; number <= 15 && fields >> field; ++number) {
      if (number == 14) utime = std::stoll(field);
      if (number == 15) stime = std::stoll(field);
    }
    s.cpu_ticks = utime + stime;
    std::error_code ec;
    for (std::filesystem::directory_iterator it(dir + "/fd", ec), end; !ec && it != end;
         it.increment(ec))
      ++s.fds;
    s.valid = !ec;
  } catch (const std::exception&) {
    s.valid = false;
  }
  return s;
}

double cpu_percent(const server_sample& from, const server_sample& to) {
  const auto wall_ns = to.mono_ns - from.mono_ns;
  if (!from.valid || !to.valid || wall_ns <= 0) return -1;
  const double cpu_s = static_cast<double>(to.cpu_ticks - from.cpu_ticks) /
                       static_cast<double>(::sysconf(_SC_CLK_TCK));
  return 100.0 * cpu_s * 1e9 / static_cast<double>(wall_ns);
}

json::object server_sample::to_json() const {
  return {{"valid", valid},
          {"rss_kb", rss_kb},
          {"private_dirty_kb", private_dirty_kb},
          {"cpu_ticks", cpu_ticks},
          {"fds", fds}};
}

}  // namespace probe::load
