// The trial loop of the connect faults. What it decides:
// - The victim is a socket this process creates inside the lab's victim namespace, not a
//   child process: the instant connect() starts and the instant it fails are then read on
//   one thread without a pipe in between, and TCP_INFO on the connecting socket (polled
//   every millisecond) shows each SYN retransmission as it leaves (tcpi_total_retrans).
// - tcp_syn_retries is set in the victim namespace only (per-namespace sysctl), so a trial
//   takes seconds rather than the two minutes the host's default would; the namespace's
//   tcp_syn_linear_timeouts and the server's tcp_synack_retries are read, not assumed, and
//   both go into the bound and the trial's details.
// - A fresh listener per trial in the server namespace; syn-drop and synack-drop add their
//   nft rule before the connect, backlog-full fills the listener's accept queue first and
//   checks through TCP_INFO on the listener that the kernel sees it full.
// - latency = connect() start to the failure; bound = the connect bound (connect_bound.hpp).
#include "connect_faults.hpp"

#include "cli.hpp"
#include "lab.hpp"

#include <deadpeer/json_text.hpp>
#include <deadpeer/cause.hpp>
#include <deadpeer/clock.hpp>
#include <deadpeer/duration.hpp>
#include <deadpeer/keepalive.hpp>
#include <deadpeer/store.hpp>

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

namespace probe {
namespace {

namespace json = boost::json;
using std::chrono::milliseconds;

// An owned descriptor.
struct socket_fd {
  int fd = -1;
  socket_fd() = default;
  explicit socket_fd(int f) : fd(f) {}
  socket_fd(socket_fd&& o) noexcept : fd(o.fd) { o.fd = -1; }
  socket_fd& operator=(socket_fd&& o) noexcept {
    std::swap(fd, o.fd);
    return *this;
  }
  socket_fd(const socket_fd&) = delete;
  socket_fd& operator=(const socket_fd&) = delete;
  ~socket_fd() {
    if (fd >= 0) ::close(fd);
  }
};

sockaddr_in ipv4(const std::string& address, unsigned short port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  if (::inet_pton(AF_INET, address.c_str(), &a.sin_addr) != 1)
    throw std::runtime_error("not an IPv4 address: " + address);
  return a;
}

std::string errno_words(int e) {
  return std::string(deadpeer::linux_errno_name(e)) + " (" + std::system_category().message(e) +
         ")";
}

// A listener in the server namespace on an ephemeral port that never accepts.
socket_fd open_listener(const lab::network& network, int backlog, unsigned short& port) {
  socket_fd s;
  int error = 0;
  network.in_server_ns([&] {
    s = socket_fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (s.fd < 0) error = errno;
  });
  if (s.fd < 0) throw std::runtime_error("socket in the server namespace: " + errno_words(error));
  const auto at = ipv4(network.topo().server_addr, 0);
  if (::bind(s.fd, reinterpret_cast<const sockaddr*>(&at), sizeof at) != 0 ||
      ::listen(s.fd, backlog) != 0)
    throw std::runtime_error("listen on " + network.topo().server_addr + ": " + errno_words(errno));
  sockaddr_in bound{};
  socklen_t length = sizeof bound;
  ::getsockname(s.fd, reinterpret_cast<sockaddr*>(&bound), &length);
  port = ntohs(bound.sin_port);
  return s;
}

// A non-blocking socket in the victim namespace whose connect() to `to` has started.
socket_fd start_connect(const lab::network& network, const sockaddr_in& to) {
  socket_fd s;
  int error = 0;
  network.in_victim_ns([&] {
    s = socket_fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (s.fd < 0) error = errno;
  });
  if (s.fd < 0) throw std::runtime_error("socket in the victim namespace: " + errno_words(error));
  if (::connect(s.fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0 &&
      errno != EINPROGRESS)
    throw std::runtime_error("connect: " + errno_words(errno));
  return s;
}

std::optional<tcp_info> info_of(int fd) {
  tcp_info info{};
  socklen_t length = sizeof info;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &length) != 0) return std::nullopt;
  return info;
}

// Fills the listener's accept queue from the victim namespace: connections whose handshake
// completed and that nobody accepts, until TCP_INFO on the listener (queued in
// tcpi_unacked, the backlog in tcpi_sacked) says the kernel will drop the next SYN.
std::vector<socket_fd> fill_accept_queue(const lab::network& network, int listener,
                                         const sockaddr_in& to, int& queued) {
  std::vector<socket_fd> fillers;
  const auto full = [&] {
    const auto info = info_of(listener);
    queued = info ? static_cast<int>(info->tcpi_unacked) : 0;
    return info && info->tcpi_unacked > info->tcpi_sacked;
  };
  for (int i = 0; i < connect_fault_backlog + 4 && !full(); ++i) {
    auto s = start_connect(network, to);
    pollfd p{s.fd, POLLOUT, 0};
    int error = 0;
    socklen_t length = sizeof error;
    if (::poll(&p, 1, 2000) != 1 ||
        ::getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0 || error != 0)
      throw std::runtime_error("filling the listener's queue: connection " + std::to_string(i + 1) +
                               " did not complete" + (error ? ": " + errno_words(error) : ""));
    fillers.push_back(std::move(s));
    // The server takes the final ACK on its own time: wait for it to be queued (bounded).
    const auto until = deadpeer::monotonic_ns() + 2'000'000'000;
    while (deadpeer::monotonic_ns() < until) {
      const auto info = info_of(listener);
      if (info && static_cast<int>(info->tcpi_unacked) >= static_cast<int>(fillers.size())) break;
      ::poll(nullptr, 0, 1);
    }
  }
  if (!full())
    throw std::runtime_error("the listener's accept queue did not fill (" + std::to_string(queued) +
                             " queued, backlog " + std::to_string(connect_fault_backlog) + ")");
  return fillers;
}

int read_int(const std::optional<std::string>& text, const std::string& what) {
  if (!text) throw std::runtime_error(what + " cannot be read in the lab");
  try {
    return std::stoi(*text);
  } catch (const std::exception&) {
    throw std::runtime_error(what + " reads \"" + *text + "\", not a number");
  }
}

}  // namespace

std::string describe_connect_failure(int error_number) {
  const auto k = deadpeer::classify(std::error_code(error_number, std::system_category()),
                                    {.op = deadpeer::connection_context::operation::connecting});
  const auto name = deadpeer::linux_errno_name(error_number);
  return std::string(deadpeer::to_string(k.cause)) + " (" +
         (name.empty() ? std::string("errno") : std::string(name) + ", errno") + " " +
         std::to_string(error_number) + "): " +
         std::string(deadpeer::explain(k.cause).on_the_wire);
}

bool is_connect_fault(std::string_view fault) {
  return fault == "syn-drop" || fault == "synack-drop" || fault == "backlog-full";
}

deadpeer::syn_retry_settings connect_settings_of(const experiment_config& config) {
  if (config.syn_settings) return *config.syn_settings;
  auto s = deadpeer::read_syn_retry_settings();
  s.syn_retries = config.syn_retries;
  return s;
}

deadpeer::connect_bound connect_bound_of(const experiment_config& config) {
  return deadpeer::compute_connect_bound(connect_settings_of(config),
                                         deadpeer::read_kernel_defaults().hz);
}

std::string connect_config_key(const experiment_config& config) {
  return "connect syn_retries=" + std::to_string(config.syn_retries);
}

std::vector<trial_result> run_connect_experiment(const experiment_config& config,
                                                 std::int64_t run_id, int first_trial,
                                                 const trial_callback& progress) {
  if (config.syn_retries < 1 || config.syn_retries > 127)
    throw usage_error("--syn-retries " + std::to_string(config.syn_retries) +
                      " is outside 1..127");
  if (const auto why = lab::unavailable_reason())
    throw std::runtime_error("--fault " + config.fault + " needs the network lab: " + *why);
  lab::network network;
  network.set_victim_sysctl("net.ipv4.tcp_syn_retries", std::to_string(config.syn_retries));

  // What the victim's kernel will do, read back from the namespaces.
  experiment_config c = config;
  deadpeer::syn_retry_settings settings;
  settings.syn_retries =
      read_int(network.read_victim_sysctl("net.ipv4.tcp_syn_retries"), "tcp_syn_retries");
  if (const auto linear = network.read_victim_sysctl("net.ipv4.tcp_syn_linear_timeouts"))
    settings.linear_timeouts = read_int(linear, "tcp_syn_linear_timeouts");
  settings.synack_retries =
      read_int(network.read_server_sysctl("net.ipv4.tcp_synack_retries"), "tcp_synack_retries");
  settings.from_system = true;
  c.syn_settings = settings;
  c.heartbeat.reset();  // no session: the handshake itself is what fails
  const int hz = deadpeer::read_kernel_defaults().hz;
  const auto bound = deadpeer::compute_connect_bound(settings, hz);
  (config.json ? std::cerr : std::cout) << "connect bound " << deadpeer::format_duration(bound.latest)
                                        << ": " << bound.arithmetic << std::endl;

  deadpeer::event_store store({.path = c.db});
  const auto limit = c.hard_limit();
  std::vector<trial_result> results;
  for (int i = 0; i < c.trials && !interrupted(); ++i) {
    trial_result r;
    r.trial = first_trial + i;
    unsigned short port = 0;
    const int backlog = c.fault == "backlog-full" ? connect_fault_backlog : 16;
    const socket_fd listener = open_listener(network, backlog, port);
    const auto to = ipv4(network.topo().server_addr, port);
    std::vector<socket_fd> fillers;
    int queued = 0;
    if (c.fault == "syn-drop") network.drop_syns();
    if (c.fault == "synack-drop") network.drop_synacks();
    if (c.fault == "backlog-full") fillers = fill_accept_queue(network, listener.fd, to, queued);

    const auto t0 = deadpeer::monotonic_ns();
    const auto victim = start_connect(network, to);
    const auto deadline = t0 + limit.count() * 1'000'000;
    json::array retries_ms;
    std::uint32_t retransmitted = 0;
    std::int64_t ended_ns = 0;
    int error = 0;
    bool connected = false;
    // Bounded by the deadline; each turn waits at most 1 ms for the outcome.
    while (!interrupted()) {
      pollfd p{victim.fd, POLLOUT, 0};
      const int ready = ::poll(&p, 1, 1);
      const auto now = deadpeer::monotonic_ns();
      if (const auto info = info_of(victim.fd); info && info->tcpi_total_retrans > retransmitted) {
        for (auto k = retransmitted; k < info->tcpi_total_retrans; ++k)
          retries_ms.push_back(static_cast<double>((now - t0) / 10'000) / 100.0);
        retransmitted = info->tcpi_total_retrans;
      }
      if (ready == 1) {
        socklen_t length = sizeof error;
        ::getsockopt(victim.fd, SOL_SOCKET, SO_ERROR, &error, &length);
        ended_ns = now;
        connected = error == 0;
        break;
      }
      if (now >= deadline) break;
    }
    if (error != 0) {
      const auto k = deadpeer::classify(std::error_code(error, std::system_category()),
                                        {.op = deadpeer::connection_context::operation::connecting});
      r.outcome = "detected";
      r.latency_ms = static_cast<double>(ended_ns - t0) / 1e6;
      r.cause = std::string(deadpeer::to_string(k.cause));
      r.detected_by = std::string(deadpeer::to_string(k.detected_by));
      r.error_number = error;
      r.error_name = std::string(deadpeer::linux_errno_name(error));
      r.add_note("connect() failed: " + r.cause + ", " + errno_words(error) + " after " +
                 std::to_string(retransmitted) + " SYN retransmissions (" +
                 std::to_string(bound.retransmissions) + " expected)");
    } else if (connected) {
      r.outcome = "missed";
      r.add_note("the handshake completed: the fault did not hold");
    } else {
      r.outcome = interrupted() ? "interrupted" : "missed";
      if (!interrupted()) r.add_note("connect() still pending after " + deadpeer::format_duration(limit));
    }

    json::object d;
    d["syn_retries"] = settings.syn_retries;
    d["syn_linear_timeouts"] =
        settings.linear_timeouts ? json::value(*settings.linear_timeouts) : json::value(nullptr);
    d["synack_retries"] = settings.synack_retries;
    d["hz"] = hz;
    d["retransmissions_expected"] = bound.retransmissions;
    d["retransmissions_seen"] = retransmitted;
    d["retries_left_ms"] = retries_ms;  // connect() start to each retransmission seen (1 ms poll)
    json::array expected;
    std::int64_t at = 0;
    for (std::size_t k = 0; k + 1 < bound.timeouts.size(); ++k)
      expected.push_back(at += bound.timeouts[k].count());
    d["retries_nominal_ms"] = expected;
    d["nominal_ms"] = bound.nominal.count();
    d["bound_ms"] = bound.latest.count();
    d["stop_rule"] = bound.stop_rule;
    d["errno"] = error;
    d["error"] = std::string(deadpeer::linux_errno_name(error));
    if (c.fault == "backlog-full") {
      d["backlog"] = connect_fault_backlog;
      d["queued"] = queued;
    }
    if (c.fault == "synack-drop")
      d["server_half_open_ms"] = deadpeer::synack_give_up_time(settings.synack_retries).count();
    r.details = deadpeer::json_text(d);

    network.heal_connect_faults();
    store_trial(store, c, run_id, r, t0, ended_ns, "");
    if (progress) progress(c, r);
    results.push_back(std::move(r));
  }
  store.flush();
  return results;
}

}  // namespace probe
