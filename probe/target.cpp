#include "target.hpp"

#include "answering_server.hpp"
#include "child_process.hpp"
#include "cli.hpp"
#include "greeting.hpp"
#include "lab.hpp"
#include "wire_observer.hpp"

#include <deadpeer/clock.hpp>
#include <deadpeer/duration.hpp>
#include <deadpeer/endpoint.hpp>
#include <deadpeer/sock_diag.hpp>
#include <deadpeer/store.hpp>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

namespace probe {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using tcp = boost::asio::ip::tcp;

constexpr milliseconds poll_period{1};
constexpr milliseconds start_timeout{10'000};

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string tail_of(const fs::path& log, std::size_t max_chars = 600) {
  std::ifstream in(log);
  std::stringstream text;
  text << in.rdbuf();
  auto s = text.str();
  if (s.size() > max_chars) s = "..." + s.substr(s.size() - max_chars);
  return s.empty() ? "(nothing)" : s;
}

// The target's process: started in the server namespace, its output in a log file (a
// pipe nobody reads would stop a chatty target), stopped on every exit path.
class target_process {
 public:
  target_process(const lab::network& network, const std::string& command, unsigned short port,
                 deadpeer::sock_diag& diag)
      : log_(fs::temp_directory_path() /
             ("deadpeer-target-" + std::to_string(::getpid()) + ".log")) {
    auto argv = network.server_exec_prefix();
    // exec: the target itself is probe's child, so it dies with probe (parent-death signal).
    argv.insert(argv.end(), {"sh", "-c", "exec " + command});
    process_ = std::make_unique<child_process>(argv, log_.string());
    const auto until = std::chrono::steady_clock::now() + start_timeout;
    for (;;) {
      const auto sockets = diag.list();
      if (std::any_of(sockets.begin(), sockets.end(), [&](const deadpeer::socket_entry& s) {
            return s.state == deadpeer::tcp_state::listen && s.local.port() == port;
          }))
        return;
      if (const auto status = process_->wait(milliseconds(0)))
        throw std::runtime_error("the target command exited before listening on port " +
                                 std::to_string(port) + " (status " + std::to_string(*status) +
                                 "); it wrote: " + tail_of(log_));
      if (std::chrono::steady_clock::now() > until)
        throw std::runtime_error("the target command did not listen on port " +
                                 std::to_string(port) + " within " +
                                 deadpeer::format_duration(start_timeout) +
                                 " (inside the lab's server namespace; is --target-port right?); "
                                 "it wrote: " +
                                 tail_of(log_));
      std::this_thread::sleep_for(milliseconds(20));
    }
  }
  ~target_process() {
    process_->signal(SIGTERM);
    if (!process_->wait(milliseconds(3000))) process_->signal(SIGKILL);
    (void)process_->wait(milliseconds(3000));
    std::error_code ignored;
    fs::remove(log_, ignored);
  }
  target_process(const target_process&) = delete;
  target_process& operator=(const target_process&) = delete;

 private:
  fs::path log_;
  std::unique_ptr<child_process> process_;
};

std::string missed_note(const std::optional<deadpeer::socket_entry>& last,
                        std::int64_t close_wait_ns, std::int64_t now_ns) {
  using deadpeer::socket_timer;
  if (!last) return "";
  if (last->state == deadpeer::tcp_state::close_wait)
    return "CLOSE_WAIT for " +
           deadpeer::format_duration(milliseconds((now_ns - close_wait_ns) / 1'000'000)) +
           ": the victim's FIN arrived and the target never closed its socket (a leak in the "
           "target)";
  switch (last->timer) {
    case socket_timer::keepalive:
      return "the target's socket has keepalive on (next probe in " +
             deadpeer::format_duration(last->timer_expires) +
             "): its kernel ends it later than the limit";
    case socket_timer::retransmit:
      return "the target is retransmitting to the victim (" + std::to_string(last->retransmits) +
             " so far): its kernel gives up after tcp_retries2 or its TCP_USER_TIMEOUT";
    default:
      return "the target's socket has no keepalive timer and nothing in flight: the target "
             "has no keepalive of its own, and nothing on its side will ever notice this peer "
             "is gone";
  }
}

// Polls the target's socket (every poll_period) until it is gone or in a state the
// target's own close() leads to; CLOSE_WAIT (the peer's FIN taken, not acted on) is noted.
struct socket_watch {
  std::int64_t detected_ns = 0;   // 0: not within the deadline
  std::int64_t close_wait_ns = 0;  // when CLOSE_WAIT was first seen
  std::string left_in;             // "CLOSED" or the state it left ESTABLISHED for
  std::optional<deadpeer::socket_entry> last;
};

socket_watch watch_socket(deadpeer::sock_diag& diag, const tcp::endpoint& local,
                          const tcp::endpoint& remote, std::int64_t deadline_ns,
                          std::optional<deadpeer::socket_entry> before) {
  socket_watch w;
  w.last = std::move(before);
  while (!interrupted()) {
    const auto now = deadpeer::monotonic_ns();
    const auto s = diag.find(local, remote);
    if (!s) {
      w.left_in = "CLOSED";
    } else if (s->state == deadpeer::tcp_state::close_wait) {
      if (w.close_wait_ns == 0) w.close_wait_ns = now;
    } else if (s->state != deadpeer::tcp_state::established) {
      w.left_in = std::string(deadpeer::to_string(s->state));
    }
    if (!w.left_in.empty()) {
      w.detected_ns = now;
      return w;
    }
    w.last = s;
    if (now > deadline_ns) return w;
    std::this_thread::sleep_for(poll_period);
  }
  return w;
}

void fill_outcome(trial_result& r, const socket_watch& w, std::int64_t t0, milliseconds limit) {
  if (w.detected_ns != 0) {
    r.outcome = "detected";
    r.latency_ms = static_cast<double>(w.detected_ns - t0) / 1e6;
    r.detected_by = "target_close";
    r.cause = lower(w.left_in);
    r.note = w.left_in == "CLOSED" ? "the target's socket is gone (closed and answered, or reset)"
                                   : "the target's socket left ESTABLISHED for " + w.left_in;
    if (w.close_wait_ns != 0)
      r.add_note("CLOSE_WAIT for " + std::to_string((w.detected_ns - w.close_wait_ns) / 1'000'000) +
                 " ms first (the peer's FIN arrived, then the target closed)");
    return;
  }
  r.outcome = interrupted() ? "interrupted" : "missed";
  if (!interrupted())
    r.note = "not detected within " + deadpeer::format_duration(limit) + "; " +
             missed_note(w.last, w.close_wait_ns, deadpeer::monotonic_ns());
}


// --target-side client: the target is a client program; probe's answering server is its
// peer in the server namespace, and the faults cut the path or hang that server.
std::vector<trial_result> run_client_target(const experiment_config& config, std::int64_t run_id,
                                            int first_trial, const trial_callback& progress) {
  const auto& t = *config.target;
  if (config.fault != "cable-pull" && config.fault != "link-down" && config.fault != "hang")
    throw usage_error("--fault " + config.fault +
                      " does not apply to a client-side target (--target-side client: "
                      "cable-pull, link-down, hang: the server stops answering)");
  const auto greet = greeting::parse(t.greeting);
  if (const auto why = lab::unavailable_reason())
    throw std::runtime_error("--target-side client runs the target inside the network lab: " + *why);
  lab::network network;
  const tcp::endpoint server_endpoint(boost::asio::ip::make_address(network.topo().server_addr),
                                      t.port);
  std::unique_ptr<answering_server> answerer;
  network.in_server_ns([&] { answerer = std::make_unique<answering_server>(greet, server_endpoint); });
  std::unique_ptr<deadpeer::sock_diag> diag;
  network.in_victim_ns([&] { diag = std::make_unique<deadpeer::sock_diag>(); });
  std::string wire_why;
  const auto wire = open_wire_observer(&network, wire_why, lab_side::victim);
  if (!wire) std::cerr << "probe: the wire is not observed in these trials: " << wire_why << "\n";

  std::string command = t.command;
  for (const auto& [key, value] : {std::pair<std::string, std::string>{"{host}", network.topo().server_addr},
                                   {"{port}", std::to_string(t.port)}})
    for (auto at = command.find(key); at != std::string::npos; at = command.find(key, at))
      command.replace(at, key.size(), value);
  const fs::path log = fs::temp_directory_path() /
                       ("deadpeer-target-client-" + std::to_string(::getpid()) + ".log");
  deadpeer::event_store store({.path = config.db});
  const auto limit = config.hard_limit();
  const auto answer_wait = greet.interval * 2 + milliseconds(10'000);
  std::vector<trial_result> results;
  for (int i = 0; i < config.trials && !interrupted(); ++i) {
    trial_result r;
    r.trial = first_trial + i;
    answerer->reset();
    auto argv = network.victim_exec_prefix();
    argv.insert(argv.end(), {"sh", "-c", "exec " + command});
    child_process target(argv, log.string());
    // The target's connection to the answering server, as the kernel of its namespace sees it.
    std::optional<deadpeer::socket_entry> before;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!before && !interrupted() && std::chrono::steady_clock::now() < until) {
      for (const auto& e : diag->list())
        if (e.state == deadpeer::tcp_state::established && e.remote == server_endpoint) before = e;
      if (!before) std::this_thread::sleep_for(milliseconds(10));
    }
    if (interrupted()) break;
    if (!before)
      throw std::runtime_error("the target client did not connect to " +
                               deadpeer::format_endpoint(server_endpoint) + " within 10s; it wrote: " +
                               tail_of(log));
    // Right after an answer, so the time measured is the whole time the client takes.
    if (greet.periodic()) {
      const auto seen = answerer->answers();
      const auto answered_by = std::chrono::steady_clock::now() + answer_wait;
      while (answerer->answers() == seen && !interrupted() &&
             std::chrono::steady_clock::now() < answered_by)
        std::this_thread::sleep_for(milliseconds(1));
      if (interrupted()) break;
      if (answerer->answers() == seen)
        throw std::runtime_error("the target client sent nothing to answer within " +
                                 deadpeer::format_duration(std::chrono::duration_cast<milliseconds>(answer_wait)) +
                                 " (is --greeting its protocol?); it wrote: " + tail_of(log));
    }

    if (wire) wire->watch(before->local, server_endpoint);
    const auto t0 = deadpeer::monotonic_ns();
    if (config.fault == "cable-pull") network.cable_pull();
    if (config.fault == "link-down") network.link_down();
    if (config.fault == "hang") answerer->hang();
    const auto w =
        watch_socket(*diag, before->local, server_endpoint, t0 + limit.count() * 1'000'000, before);
    fill_outcome(r, w, t0, limit);
    if (w.detected_ns != 0) record_wire(wire.get(), r, w.detected_ns);
    network.cable_heal();
    network.link_up();
    target.signal(SIGKILL);
    (void)target.wait(milliseconds(5000));
    store_trial(store, config, run_id, r, t0, w.detected_ns, "");
    if (progress) progress(config, r);
    results.push_back(std::move(r));
  }
  store.flush();
  std::error_code ignored;
  fs::remove(log, ignored);
  return results;
}

}  // namespace

std::vector<trial_result> run_target_experiment(const experiment_config& config,
                                                std::int64_t run_id, int first_trial,
                                                const trial_callback& progress) {
  const auto& t = *config.target;
  if (t.client_side) return run_client_target(config, run_id, first_trial, progress);
  // The fault table knows which faults act on the lab's network.
  const auto& kind = find_fault(config.fault);
  if (kind.server_side || (!kind.needs_lab && config.fault != "crash" && config.fault != "hang"))
    throw usage_error("--fault " + config.fault +
                      " does not apply to a target (target mode: crash, hang, cable-pull, "
                      "link-down, reboot)");
  const auto greet = greeting::parse(t.greeting);
  if (t.command.empty() && kind.needs_lab)
    throw usage_error("--fault " + config.fault +
                      " acts on the lab's network, and a --target that is already listening is "
                      "outside it: give the command that starts the server (--target-cmd "
                      "\"...\" --target-port PORT) so probe runs it inside the lab");

  std::unique_ptr<lab::network> network;
  if (!t.command.empty()) {
    if (const auto why = lab::unavailable_reason())
      throw std::runtime_error("--target-cmd runs the target inside the network lab: " + *why);
    network = std::make_unique<lab::network>();
  }
  // The observer lives in the target's network namespace.
  std::unique_ptr<deadpeer::sock_diag> diag;
  auto make_diag = [&] { diag = std::make_unique<deadpeer::sock_diag>(); };
  if (network)
    network->in_server_ns(make_diag);
  else
    make_diag();

  const tcp::endpoint target_endpoint =
      network ? tcp::endpoint(boost::asio::ip::make_address(network->topo().server_addr), t.port)
              : *t.address;
  std::unique_ptr<target_process> target;
  if (network) target = std::make_unique<target_process>(*network, t.command, t.port, *diag);

  std::string wire_why;
  const auto wire = open_wire_observer(network.get(), wire_why);
  if (!wire) std::cerr << "probe: the wire is not observed in these trials: " << wire_why << "\n";
  deadpeer::event_store store({.path = config.db});
  const auto limit = config.hard_limit();
  const auto probe_path = self_executable();
  const auto answer_wait = greet.interval * 2 + milliseconds(10'000);
  std::vector<trial_result> results;
  for (int i = 0; i < config.trials && !interrupted(); ++i) {
    trial_result r;
    r.trial = first_trial + i;
    std::vector<std::string> argv =
        network ? network->victim_exec_prefix() : std::vector<std::string>{};
    argv.insert(
        argv.end(),
        {probe_path, "speak", "--server", deadpeer::format_endpoint(target_endpoint), "--greeting", t.greeting,
         "--id", "deadpeer-probe-" + std::to_string(::getpid()) + "-" + std::to_string(r.trial)});
    child_process victim(argv);
    const auto connected = victim.wait_for_line("connected local=", milliseconds(10'000));
    if (interrupted()) break;  // Ctrl-C before the fault: no trial happened
    if (!connected)
      throw std::runtime_error("the victim could not connect to the target at " +
                               deadpeer::format_endpoint(target_endpoint) + ": " + victim.output());
    const auto local_text = connected->substr(connected->find("local=") + 6);
    const auto victim_endpoint =
        deadpeer::parse_endpoint(local_text.substr(0, local_text.find(' ')));
    const bool steady = victim.wait_for_line("ready", answer_wait) &&
                        (!greet.periodic() || victim.wait_for_line("exchange", answer_wait));
    if (interrupted()) break;
    if (!steady)
      throw std::runtime_error("the target did not answer the greeting " + t.greeting +
                               "; the victim printed: " + victim.output());
    const auto before = diag->find(target_endpoint, victim_endpoint);
    if (!before || before->state != deadpeer::tcp_state::established)
      throw std::runtime_error("the target holds no ESTABLISHED socket for the victim " +
                               deadpeer::format_endpoint(victim_endpoint) + " (sock_diag)");

    if (wire) wire->watch(target_endpoint, victim_endpoint);
    const auto t0 = deadpeer::monotonic_ns();
    (void)inject_fault(config.fault, network.get(), victim);

    const auto w =
        watch_socket(*diag, target_endpoint, victim_endpoint, t0 + limit.count() * 1'000'000, before);
    fill_outcome(r, w, t0, limit);
    if (w.detected_ns != 0) record_wire(wire.get(), r, w.detected_ns);
    if (network) {
      network->cable_heal();
      network->link_up();
    }
    victim.signal(SIGKILL);
    (void)victim.wait(milliseconds(5000));
    store_trial(store, config, run_id, r, t0, w.detected_ns, "");
    if (progress) progress(config, r);
    results.push_back(std::move(r));
  }
  store.flush();
  return results;
}

}  // namespace probe
