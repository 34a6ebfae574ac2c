// The trial loop of the teardown faults. What it decides:
// - The closing side is the server: a socket accepted in the lab's server namespace from a
//   victim socket this process opens in the victim namespace (no child process), so the
//   instant of close() and every sock_diag answer are read on one thread.
// - The socket is orphaned at close(): no descriptor is left to ask, so sock_diag looks it
//   up by its 4-tuple every millisecond (bounded by the trial's limit) and records each
//   state it passes through and each retransmission of its FIN, until the lookup finds
//   nothing. latency = close() to that first empty answer.
// - The sysctls that end the states are set in the server namespace only
//   (tcp_orphan_retries for fin-drop, tcp_fin_timeout for fin-wait2, so a trial takes
//   seconds instead of the 105 s or 60 s of the defaults) and read back with
//   tcp_early_retrans and tcp_sack; the connection's RTO comes from TCP_INFO just before
//   the close. All of them go into the bound and the trial's details.
// - fin-wait2 and time-wait need the victim to close after acknowledging the server's FIN:
//   it closes once the server's socket is seen in FIN_WAIT2, so its ACK is never merged
//   into its FIN (which fin-wait2 drops).
// - Classification with the existing causes: fin-drop ends on exhausted retransmissions
//   (retransmission_timeout, by retransmission); fin-wait2 and time-wait are our own
//   close running out its timer (local_close; nothing detected anything: none).
#include "teardown_faults.hpp"

#include "cli.hpp"
#include "lab.hpp"

#include <deadpeer/json_text.hpp>
#include <deadpeer/cause.hpp>
#include <deadpeer/clock.hpp>
#include <deadpeer/duration.hpp>
#include <deadpeer/keepalive.hpp>
#include <deadpeer/sock_diag.hpp>
#include <deadpeer/store.hpp>

#include <boost/asio/ip/address_v4.hpp>
#include <boost/json.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <iostream>
#include <stdexcept>
#include <utility>

namespace probe {
namespace {

namespace json = boost::json;
using std::chrono::milliseconds;
using tcp = boost::asio::ip::tcp;

// An owned descriptor.
struct socket_fd {
  int fd = -1;
  socket_fd() = default;
  explicit socket_fd(int f) : fd(f) {}
  socket_fd(socket_fd&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
  socket_fd& operator=(socket_fd&& o) noexcept {
    std::swap(fd, o.fd);
    return *this;
  }
  socket_fd(const socket_fd&) = delete;
  socket_fd& operator=(const socket_fd&) = delete;
  ~socket_fd() { reset(); }
  void reset() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

std::string errno_words(int e) {
  return std::string(deadpeer::linux_errno_name(e)) + " (" + std::system_category().message(e) +
         ")";
}

sockaddr_in ipv4(const std::string& address, unsigned short port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  if (::inet_pton(AF_INET, address.c_str(), &a.sin_addr) != 1)
    throw std::runtime_error("not an IPv4 address: " + address);
  return a;
}

unsigned short port_of(int fd) {
  sockaddr_in a{};
  socklen_t length = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &length);
  return ntohs(a.sin_port);
}

int read_int(const std::optional<std::string>& text, const std::string& what) {
  if (!text) throw std::runtime_error(what + " cannot be read in the lab");
  try {
    return std::stoi(*text);
  } catch (const std::exception&) {
    throw std::runtime_error(what + " reads \"" + *text + "\", not a number");
  }
}

// One established connection: `ours` accepted in the server namespace, `peer` opened from
// the victim namespace. Bounded: each step waits at most 2 s.
struct connection {
  socket_fd ours, peer;
  unsigned short server_port = 0, victim_port = 0;
};

connection connect_pair(const lab::network& network) {
  connection c;
  socket_fd listener;
  int error = 0;
  network.in_server_ns([&] {
    listener = socket_fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (listener.fd < 0) error = errno;
  });
  if (listener.fd < 0)
    throw std::runtime_error("socket in the server namespace: " + errno_words(error));
  const auto at = ipv4(network.topo().server_addr, 0);
  if (::bind(listener.fd, reinterpret_cast<const sockaddr*>(&at), sizeof at) != 0 ||
      ::listen(listener.fd, 4) != 0)
    throw std::runtime_error("listen on " + network.topo().server_addr + ": " + errno_words(errno));
  c.server_port = port_of(listener.fd);
  network.in_victim_ns([&] {
    c.peer = socket_fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (c.peer.fd < 0) error = errno;
  });
  if (c.peer.fd < 0)
    throw std::runtime_error("socket in the victim namespace: " + errno_words(error));
  const auto to = ipv4(network.topo().server_addr, c.server_port);
  if (::connect(c.peer.fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0 &&
      errno != EINPROGRESS)
    throw std::runtime_error("connect: " + errno_words(errno));
  pollfd p{listener.fd, POLLIN, 0};
  if (::poll(&p, 1, 2000) != 1)
    throw std::runtime_error("the lab's connection was not accepted within 2s");
  c.ours = socket_fd(::accept4(listener.fd, nullptr, nullptr, SOCK_CLOEXEC));
  if (c.ours.fd < 0) throw std::runtime_error("accept: " + errno_words(errno));
  pollfd q{c.peer.fd, POLLOUT, 0};
  socklen_t length = sizeof error;
  if (::poll(&q, 1, 2000) != 1 ||
      ::getsockopt(c.peer.fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0 || error != 0)
    throw std::runtime_error("the victim's connect did not complete" +
                             (error ? ": " + errno_words(error) : std::string()));
  c.victim_port = port_of(c.peer.fd);
  return c;
}

double ms_since(std::int64_t t0, std::int64_t t) {
  return static_cast<double>((t - t0) / 10'000) / 100.0;  // 0.01 ms resolution
}

}  // namespace

bool is_teardown_fault(std::string_view fault) {
  return fault == "fin-drop" || fault == "fin-wait2" || fault == "time-wait";
}

deadpeer::teardown_state teardown_state_of(std::string_view fault) {
  if (fault == "fin-drop") return deadpeer::teardown_state::fin_wait1;
  if (fault == "fin-wait2") return deadpeer::teardown_state::fin_wait2;
  if (fault == "time-wait") return deadpeer::teardown_state::time_wait;
  throw std::invalid_argument("not a teardown fault: " + std::string(fault));
}

deadpeer::teardown_settings teardown_settings_of(const experiment_config& config) {
  if (config.teardown) return *config.teardown;
  auto s = deadpeer::read_teardown_settings();
  s.orphan_retries = config.orphan_retries;
  s.fin_timeout = config.fin_timeout;
  const int hz = deadpeer::read_kernel_defaults().hz;
  s.rto = milliseconds(200) + milliseconds(hz > 0 ? (1000 + hz - 1) / hz : 0);
  s.round_trip = kernel_notice_bound;
  return s;
}

deadpeer::teardown_bound teardown_bound_of(const experiment_config& config) {
  return deadpeer::compute_teardown_bound(teardown_state_of(config.fault),
                                          teardown_settings_of(config),
                                          deadpeer::read_kernel_defaults().hz);
}

std::string teardown_config_key(const experiment_config& config) {
  const auto state = teardown_state_of(config.fault);
  std::string key = "teardown " + std::string(deadpeer::to_string(state));
  if (state == deadpeer::teardown_state::fin_wait1)
    key += " orphan_retries=" + std::to_string(config.orphan_retries);
  if (state == deadpeer::teardown_state::fin_wait2)
    key += " fin_timeout=" + deadpeer::format_duration(config.fin_timeout);
  return key;
}

std::vector<trial_result> run_teardown_experiment(const experiment_config& config,
                                                  std::int64_t run_id, int first_trial,
                                                  const trial_callback& progress) {
  const auto state = teardown_state_of(config.fault);
  if (config.orphan_retries < 0 || config.orphan_retries > 8)
    throw usage_error("--orphan-retries " + std::to_string(config.orphan_retries) +
                      " is outside 0..8 (0 is the kernel's 8: 105 s a trial)");
  if (config.fin_timeout < milliseconds(1000) || config.fin_timeout > milliseconds(120'000) ||
      config.fin_timeout.count() % 1000 != 0)
    throw usage_error("--fin-timeout " + deadpeer::format_duration(config.fin_timeout) +
                      " must be whole seconds within 1s..120s (the sysctl counts seconds)");
  if (const auto why = lab::unavailable_reason())
    throw std::runtime_error("--fault " + config.fault + " needs the network lab: " + *why);
  lab::network network;
  network.set_server_sysctl("net.ipv4.tcp_orphan_retries", std::to_string(config.orphan_retries));
  network.set_server_sysctl("net.ipv4.tcp_fin_timeout",
                            std::to_string(config.fin_timeout.count() / 1000));

  // What the server's kernel will do, read back from its namespace.
  experiment_config c = config;
  c.heartbeat.reset();  // no session: the close itself is what is measured
  deadpeer::teardown_settings settings;
  settings.orphan_retries =
      read_int(network.read_server_sysctl("net.ipv4.tcp_orphan_retries"), "tcp_orphan_retries");
  settings.fin_timeout = std::chrono::seconds(
      read_int(network.read_server_sysctl("net.ipv4.tcp_fin_timeout"), "tcp_fin_timeout"));
  const int early =
      read_int(network.read_server_sysctl("net.ipv4.tcp_early_retrans"), "tcp_early_retrans");
  const int sack = read_int(network.read_server_sysctl("net.ipv4.tcp_sack"), "tcp_sack");
  settings.loss_probe = (early == 3 || early == 4) && sack != 0;
  settings.round_trip = kernel_notice_bound;
  settings.from_system = true;
  const int hz = deadpeer::read_kernel_defaults().hz;

  std::unique_ptr<deadpeer::sock_diag> diag;
  network.in_server_ns([&] { diag = std::make_unique<deadpeer::sock_diag>(); });
  const auto server_ip = boost::asio::ip::make_address_v4(network.topo().server_addr);
  const auto victim_ip = boost::asio::ip::make_address_v4(network.topo().victim_addr);

  deadpeer::event_store store({.path = c.db});
  std::vector<trial_result> results;
  bool printed = false;
  for (int i = 0; i < c.trials && !interrupted(); ++i) {
    trial_result r;
    r.trial = first_trial + i;
    auto conn = connect_pair(network);
    tcp_info info{};
    socklen_t length = sizeof info;
    if (::getsockopt(conn.ours.fd, IPPROTO_TCP, TCP_INFO, &info, &length) != 0)
      throw std::runtime_error("TCP_INFO on the server's socket: " + errno_words(errno));
    settings.rto = milliseconds((info.tcpi_rto + 999) / 1000);
    c.teardown = settings;
    const auto bound = deadpeer::compute_teardown_bound(state, settings, hz);
    if (!printed) {
      (config.json ? std::cerr : std::cout)
          << to_string(state) << " bound " << deadpeer::format_duration(bound.latest) << ": "
          << bound.arithmetic << std::endl;
      printed = true;
    }
    const tcp::endpoint local(server_ip, conn.server_port), remote(victim_ip, conn.victim_port);

    if (c.fault == "fin-drop") network.drop_victim_output();
    if (c.fault == "fin-wait2") network.drop_victim_fins();

    const auto t0 = deadpeer::monotonic_ns();
    conn.ours.reset();  // close(): the socket is an orphan from here on
    const auto deadline = t0 + c.hard_limit().count() * 1'000'000;
    json::array sequence, retransmissions_ms;
    std::optional<deadpeer::tcp_state> last;
    std::uint8_t retransmits = 0;
    std::int64_t gone_ns = 0, entered_ns = 0;
    bool peer_closed = false;
    int polls = 0;
    // Bounded by the deadline; each turn sleeps 1 ms.
    while (!interrupted()) {
      const auto entry = diag->find(local, remote);
      const auto now = deadpeer::monotonic_ns();
      ++polls;
      if (!entry) {
        gone_ns = now;
        sequence.push_back(json::object{{"state", "gone"}, {"at_ms", ms_since(t0, now)}});
        break;
      }
      if (!last || *last != entry->state) {
        sequence.push_back(json::object{{"state", std::string(deadpeer::to_string(entry->state))},
                                        {"at_ms", ms_since(t0, now)},
                                        {"timer", std::string(deadpeer::to_string(entry->timer))}});
        last = entry->state;
        if (std::string_view(deadpeer::to_string(entry->state)) == to_string(state))
          entered_ns = now;
      }
      if (entry->state == deadpeer::tcp_state::fin_wait1 &&
          entry->timer == deadpeer::socket_timer::retransmit && entry->retransmits > retransmits) {
        for (auto k = retransmits; k < entry->retransmits; ++k)
          retransmissions_ms.push_back(ms_since(t0, now));
        retransmits = entry->retransmits;
      }
      if (state != deadpeer::teardown_state::fin_wait1 && !peer_closed &&
          entry->state == deadpeer::tcp_state::fin_wait2) {
        conn.peer.reset();  // our FIN is acknowledged: now the victim closes too
        peer_closed = true;
      }
      if (now >= deadline) break;
      ::poll(nullptr, 0, 1);
    }

    // The state under test must have been the last one before the socket went.
    std::string seen;
    for (const auto& s : sequence)
      seen += (seen.empty() ? "" : " -> ") + std::string(s.as_object().at("state").as_string());
    const bool ended_in_state =
        gone_ns != 0 && sequence.size() >= 2 &&
        sequence[sequence.size() - 2].as_object().at("state").as_string() == to_string(state);
    if (ended_in_state) {
      r.outcome = "detected";
      r.latency_ms = static_cast<double>(gone_ns - t0) / 1e6;
      const bool retransmission = state == deadpeer::teardown_state::fin_wait1;
      r.cause = std::string(deadpeer::to_string(
          retransmission ? deadpeer::cause::retransmission_timeout : deadpeer::cause::local_close));
      r.detected_by = std::string(deadpeer::to_string(
          retransmission ? deadpeer::detected_by::retransmission : deadpeer::detected_by::none));
      r.add_note(seen + "; ended by " + bound.ended_by +
                 (retransmission
                      ? " after " + std::to_string(retransmits) + " retransmissions of the FIN (" +
                            std::to_string(bound.retransmissions) + " expected)"
                      : std::string()));
    } else {
      r.outcome = interrupted() ? "interrupted" : "missed";
      if (!interrupted())
        r.add_note(
            gone_ns == 0
                ? "still held after " + deadpeer::format_duration(c.hard_limit()) + ": " + seen
                : "the socket did not end in " + std::string(to_string(state)) + ": " + seen);
    }

    json::object d;
    d["state"] = std::string(to_string(state));
    d["sequence"] = sequence;  // each state seen, from close() (sock_diag every 1 ms)
    d["state_ms"] = entered_ns != 0 && gone_ns != 0 ? json::value(ms_since(entered_ns, gone_ns))
                                                    : json::value(nullptr);
    d["orphan_retries"] = settings.orphan_retries;
    d["orphan_retries_effective"] = deadpeer::effective_orphan_retries(settings.orphan_retries);
    d["fin_timeout_ms"] = settings.fin_timeout.count();
    d["loss_probe"] = settings.loss_probe;
    d["rto_ms"] = settings.rto.count();
    d["round_trip_ms"] = settings.round_trip.count();
    d["hz"] = hz;
    if (state == deadpeer::teardown_state::fin_wait1) {
      d["retransmissions_expected"] = bound.retransmissions;
      d["retransmissions_seen"] = retransmits;
      d["retransmissions_ms"] = retransmissions_ms;  // close() to each RTO retransmission seen
    }
    json::array timeouts;
    for (const auto t : bound.timeouts)
      timeouts.push_back(t.count());
    d["timeouts_ms"] = timeouts;
    d["nominal_ms"] = bound.nominal.count();
    d["bound_ms"] = bound.latest.count();
    d["ended_by"] = bound.ended_by;
    d["polls"] = polls;
    r.details = deadpeer::json_text(d);

    network.heal_teardown_faults();
    conn.peer.reset();
    store_trial(store, c, run_id, r, t0, gone_ns, "");
    if (progress) progress(c, r);
    results.push_back(std::move(r));
  }
  store.flush();
  return results;
}

}  // namespace probe
