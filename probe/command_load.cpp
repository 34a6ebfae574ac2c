// probe load: holds N heartbeating clients against a server on this host and reports what
// it cost the server (memory and CPU per connection, leaked descriptors) and how the
// clients fared (handshake rate and failures, RTT, verdicts). It decides the phases of a
// run — ramp, settle, a measured hold window (with the reconnect storm), graceful close —
// and splits the clients over several processes when one process's descriptor limit is
// too small; the clients themselves are load.cpp's engine. Loopback only: a load
// generator pointed at someone else's host by mistake is an attack.
#include "cli.hpp"
#include "http_client.hpp"
#include "load.hpp"

#include <deadpeer/json_text.hpp>
#include <deadpeer/clock.hpp>
#include <deadpeer/config_error.hpp>
#include <deadpeer/duration.hpp>
#include <deadpeer/store.hpp>
#include <deadpeer/endpoint.hpp>

#include <sqlite3.h>
#include <boost/json.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <numeric>
#include <optional>
#include <sstream>
#include <thread>

#ifndef DEADPEER_VERSION
#define DEADPEER_VERSION "unknown"
#endif

namespace probe {
namespace {

namespace po = boost::program_options;
namespace json = boost::json;
using std::chrono::milliseconds;

// Descriptors a process keeps for itself: stdio, epoll, signalfd, pipes, the database.
constexpr rlim_t fd_reserve = 64;
constexpr std::int64_t progress_period_ns = 1'000'000'000;
constexpr auto server_settle_after_close = std::chrono::seconds(5);

struct load_settings {
  load::engine_config engine;
  std::string server_text;
  milliseconds duration{60'000};
  milliseconds settle{0};
  std::size_t processes = 1;
  int server_pid = 0;
  std::optional<boost::asio::ip::tcp::endpoint> control;
  std::string source_text;
  bool json = false;
  std::string db = "results.db";
  bool child = false;
  std::string command_line;
};

std::int64_t ms_to_ns(milliseconds d) {
  return d.count() * 1'000'000;
}

// Everything a run may take, so a wedged server or child can never hold probe forever.
std::int64_t overall_budget_ns(const load_settings& s) {
  const auto per_process = static_cast<double>(s.engine.connections);
  const auto ramp_ns = static_cast<std::int64_t>(per_process / s.engine.ramp_per_s * 1e9);
  return ramp_ns + ms_to_ns(s.engine.connect_timeout + s.engine.handshake_timeout) +
         ms_to_ns(s.duration + s.engine.close_timeout) + 15'000'000'000;
}

std::string format_rate(double per_s) {
  std::ostringstream out;
  out << std::setprecision(10) << per_s;
  return out.str();
}

std::string fixed(double value, int decimals) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(decimals) << value;
  return out.str();
}

// ---- the command line ------------------------------------------------------------------

constexpr std::string_view usage = R"(Usage: probe load --server HOST:PORT --connections N [options]

Holds N heartbeating clients against a server on this host for --duration, then closes
them gracefully (deadpeer: BYE normal; mqtt: DISCONNECT) and reports: handshake rate and
failures by reason, RTT p50/p99/max, PINGs sent and PONGs received, verdicts seen (ERROR
codes, BYE reasons, EOF, errno names), connections held at the end. With --server-pid it
also measures the server: user-space memory per connection (Private_Dirty, baseline vs
settled), CPU over the hold window as % of one core, and leaked descriptors.

Phases: ramp (--ramp connections/s) -> settle (--settle) -> measured window with the
storm, if any -> end of --duration (counted from the end of the ramp) -> graceful close.
Traffic goes to loopback addresses only (127.0.0.0/8, ::1). One process holds as many
connections as its descriptor limit allows (less a reserve of 64); beyond that, or with
--processes, probe runs itself K times and merges the reports. Progress goes to stderr
once a second; the report to stdout and to the load_runs table of --db.
Exit status: 0 done, 1 the run failed (deadline, a child failed), 2 bad usage, 130 interrupted.)";

load_settings parse_settings(const std::vector<std::string>& args, bool& help) {
  po::options_description options("Options");
  options.add_options()  //
      ("server,s", po::value<std::string>()->value_name("HOST:PORT"),
       "server to load: a loopback address (127.0.0.0/8 or [::1]) and port")                     //
      ("connections,n", po::value<long long>()->value_name("N"), "clients to hold, at least 1")  //
      ("interval", po::value<std::string>()->default_value("10s")->value_name("DURATION"),
       "heartbeat interval: deadpeer asks for it in HELLO and then uses WELCOME's; mqtt "
       "pings at it and declares keep alive = it rounded up to whole seconds (at least 1)")  //
      ("duration", po::value<std::string>()->default_value("60s")->value_name("DURATION"),
       "how long the clients are held, counted from the end of the ramp")  //
      ("settle", po::value<std::string>()->value_name("DURATION"),
       "wait after the ramp before the measured window starts (default: 3 intervals, at "
       "most a third of --duration)")  //
      ("protocol", po::value<std::string>()->default_value("deadpeer")->value_name("NAME"),
       "deadpeer (docs/protocol.md) or mqtt (MQTT 3.1.1 CONNECT, PINGREQ, DISCONNECT)")  //
      ("source-addresses", po::value<std::string>()->value_name("A-B[,C]"),
       "bind each socket to these 127.0.0.0/8 source addresses, round-robin "
       "(IP_BIND_ADDRESS_NO_PORT), to get past the ~28k ephemeral ports of one address pair")  //
      ("processes", po::value<long long>()->value_name("K"),
       "split the clients over K processes (default: as few as the descriptor limit allows)")  //
      ("ramp", po::value<double>()->default_value(2000)->value_name("RATE"),
       "new connections per second during the ramp")  //
      ("storm", po::value<double>()->default_value(0)->value_name("RATE"),
       "during the measured window, reconnect RATE clients per second: reset the socket "
       "without BYE and connect again at once with the same client id")  //
      ("storm-burst", po::value<long long>()->value_name("N"),
       "when the measured window starts, drop N established clients at once (reset, no BYE) "
       "and let each connect again within --storm-window, no handshake cap: the reconnect "
       "storm after a server or network blip. Reports the handshake rate, failures by cause "
       "and the time until all N are back")  //
      ("storm-window", po::value<std::string>()->default_value("0s")->value_name("DURATION"),
       "with --storm-burst: each dropped client reconnects at an instant drawn uniformly from "
       "this window (0s: all at once)")  //
      ("server-pid", po::value<int>()->value_name("PID"),
       "measure this server process through /proc/PID: memory, CPU, descriptors")  //
      ("control", po::value<std::string>()->value_name("HOST:PORT"),
       "the server's control API: read GET /status \"live\" at the end of the hold and "
       "after the close")                   //
      ("json", "print the report as JSON")  //
      ("db", po::value<std::string>()->default_value("results.db")->value_name("FILE"),
       "SQLite file to add a load_runs row to; \"off\" stores nothing")  //
      ("id-prefix", po::value<std::string>()->default_value("load-")->value_name("TEXT"),
       "client ids are TEXT followed by the client's number");
  po::options_description hidden;
  hidden.add_options()("child-first-index", po::value<long long>(), "internal");
  po::options_description all;
  all.add(options).add(hidden);

  if (std::find(args.begin(), args.end(), "--help") != args.end() ||
      std::find(args.begin(), args.end(), "-h") != args.end()) {
    po::options_description shown;
    shown.add(options);
    shown.add_options()("help,h", "show this help");
    std::cout << usage << "\n\n" << shown << "\n";
    help = true;
    return {};
  }
  help = false;
  po::variables_map vm;
  (void)parse_command_line(args, all, {}, usage, vm, std::cout);

  load_settings s;
  if (vm.count("server") == 0) throw usage_error("--server HOST:PORT is required (see --help)");
  if (vm.count("connections") == 0) throw usage_error("--connections N is required (see --help)");
  s.server_text = vm["server"].as<std::string>();
  s.engine.server = deadpeer::parse_endpoint(s.server_text);
  if (!load::is_loopback(s.engine.server.address()) || s.engine.server.port() == 0)
    throw usage_error("--server " + s.server_text +
                      ": probe load only loads a server on this host: give a loopback address "
                      "(127.0.0.0/8 or [::1]) and a port other than 0");
  const auto connections = vm["connections"].as<long long>();
  if (connections < 1 || connections > 10'000'000)
    throw usage_error("--connections " + std::to_string(connections) +
                      ": give at least 1 (and at most 10000000)");
  s.engine.connections = static_cast<std::size_t>(connections);
  s.engine.interval = deadpeer::parse_duration(vm["interval"].as<std::string>());
  if (s.engine.interval.count() < 1 || s.engine.interval > std::chrono::hours(18))
    throw usage_error("--interval " + vm["interval"].as<std::string>() +
                      ": give at least 1ms (and at most 18h)");
  s.duration = deadpeer::parse_duration(vm["duration"].as<std::string>());
  if (s.duration.count() < 1)
    throw usage_error("--duration " + vm["duration"].as<std::string>() + ": give at least 1ms");
  if (vm.count("settle") != 0) {
    s.settle = deadpeer::parse_duration(vm["settle"].as<std::string>());
    if (s.settle >= s.duration)
      throw usage_error("--settle " + vm["settle"].as<std::string>() +
                        " must be shorter than --duration " + vm["duration"].as<std::string>());
  } else {
    s.settle = std::min(3 * s.engine.interval, s.duration / 3);
  }
  const auto protocol = vm["protocol"].as<std::string>();
  if (protocol == "deadpeer")
    s.engine.proto = load::protocol::deadpeer;
  else if (protocol == "mqtt")
    s.engine.proto = load::protocol::mqtt;
  else
    throw usage_error("--protocol " + protocol + ": give deadpeer or mqtt");
  if (s.engine.proto == load::protocol::mqtt && s.engine.interval > std::chrono::seconds(65535))
    throw usage_error("--interval " + vm["interval"].as<std::string>() +
                      ": MQTT keep alive is at most 65535s");
  if (vm.count("source-addresses") != 0) {
    s.source_text = vm["source-addresses"].as<std::string>();
    s.engine.source_addresses = load::parse_source_addresses(s.source_text);
    if (!s.engine.server.address().is_v4())
      throw usage_error("--source-addresses binds IPv4 sources: give an IPv4 --server");
  }
  s.engine.ramp_per_s = vm["ramp"].as<double>();
  if (!(s.engine.ramp_per_s > 0) || !std::isfinite(s.engine.ramp_per_s))
    throw usage_error("--ramp " + format_rate(s.engine.ramp_per_s) +
                      ": give a positive number of connections per second");
  s.engine.storm_per_s = vm["storm"].as<double>();
  if (!(s.engine.storm_per_s >= 0) || !std::isfinite(s.engine.storm_per_s))
    throw usage_error("--storm " + format_rate(s.engine.storm_per_s) +
                      ": give a number of reconnects per second, 0 or more");
  if (vm.count("storm-burst") != 0) {
    const auto burst = vm["storm-burst"].as<long long>();
    if (burst < 1 || static_cast<unsigned long long>(burst) > s.engine.connections)
      throw usage_error("--storm-burst " + std::to_string(burst) +
                        ": give at least 1 and at most --connections");
    s.engine.burst = static_cast<std::size_t>(burst);
  }
  s.engine.burst_window = deadpeer::parse_duration(vm["storm-window"].as<std::string>());
  if (!vm["storm-window"].defaulted() && s.engine.burst == 0)
    throw usage_error("--storm-window goes with --storm-burst");
  if (s.engine.burst_window.count() < 0 || s.engine.burst_window >= s.duration - s.settle)
    throw usage_error("--storm-window " + vm["storm-window"].as<std::string>() +
                      " must end before the hold does (--duration less --settle)");
  if (vm.count("server-pid") != 0) {
    s.server_pid = vm["server-pid"].as<int>();
    if (s.server_pid < 1 || !std::filesystem::exists("/proc/" + std::to_string(s.server_pid)))
      throw usage_error("--server-pid " + std::to_string(s.server_pid) + ": no such process");
  }
  if (vm.count("control") != 0) {
    const auto text = vm["control"].as<std::string>();
    s.control = deadpeer::parse_endpoint(text);
    if (!s.control->address().is_v4() || !s.control->address().to_v4().is_loopback() ||
        s.control->port() == 0)
      throw usage_error("--control " + text + ": give an IPv4 loopback address and a port");
  }
  s.json = vm.count("json") != 0;
  s.db = vm["db"].as<std::string>();
  s.engine.id_prefix = vm["id-prefix"].as<std::string>();
  const auto widest_id = s.engine.id_prefix.size() + std::to_string(s.engine.connections).size();
  if (widest_id > 64)
    throw usage_error("--id-prefix \"" + s.engine.id_prefix +
                      "\" is too long: client ids are at most 64 bytes");
  if (vm.count("child-first-index") != 0) {
    s.child = true;
    s.engine.first_index = static_cast<std::size_t>(vm["child-first-index"].as<long long>());
  }

  // One process holds what its descriptor limit allows; raise the soft limit to the hard one.
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
  const std::size_t per_process =
      limit.rlim_cur > fd_reserve * 2 ? static_cast<std::size_t>(limit.rlim_cur - fd_reserve) : 1;
  const std::size_t needed = (s.engine.connections + per_process - 1) / per_process;
  if (vm.count("processes") != 0) {
    const auto k = vm["processes"].as<long long>();
    if (k < 1 || static_cast<unsigned long long>(k) > s.engine.connections)
      throw usage_error("--processes " + std::to_string(k) +
                        ": give at least 1 and at most --connections");
    s.processes = static_cast<std::size_t>(k);
    if (s.processes < needed && !s.child)
      throw usage_error("--processes " + std::to_string(k) + " gives each process " +
                        std::to_string((s.engine.connections + s.processes - 1) / s.processes) +
                        " connections, more than its descriptor limit allows (" +
                        std::to_string(per_process) + "); use at least " + std::to_string(needed));
  } else {
    s.processes = needed;
  }
  s.engine.hard_deadline_ns = 0;  // set when the run starts
  s.command_line = "probe load";
  for (const auto& a : args)
    s.command_line += " " + a;
  return s;
}

// ---- the phases and the server's measurements ------------------------------------------

int control_live(const load_settings& s) {
  if (!s.control) return -1;
  try {
    const auto response = http_get(s.control->address().to_string(), s.control->port(), "/status",
                                   milliseconds(3000));
    const auto body = json::parse(response.body);
    return static_cast<int>(json::value_to<std::int64_t>(body.at("live")));
  } catch (const std::exception& e) {
    std::cerr << "probe load: cannot read live sessions from the control API: " << e.what() << "\n";
    return -1;
  }
}

// Decides, from the time the ramp ended, when the measured window starts and ends, and
// takes the server's samples at those instants. Shared by the one-process run (called
// from the engine's ticks) and the several-process run (called from the parent's loop).
class timeline {
 public:
  explicit timeline(const load_settings& s) : s_(s) {}

  void take_baseline() {
    if (s_.server_pid != 0) baseline_ = load::sample_server(s_.server_pid);
    live_before_ = control_live(s_);
  }

  void ramp_finished(std::int64_t now_ns) {
    if (ramp_end_ns_ != 0) return;
    ramp_end_ns_ = now_ns;
    settle_at_ns_ = now_ns + ms_to_ns(s_.settle);
    hold_end_ns_ = now_ns + ms_to_ns(s_.duration);
  }

  struct actions {
    bool start_storm = false;
    bool stop = false;
  };

  // `held` is the number of established clients right now.
  actions advance(std::int64_t now_ns, std::uint64_t held) {
    actions a;
    if (ramp_end_ns_ == 0) return a;
    if (!window_started_ && now_ns >= settle_at_ns_) {
      window_started_ = true;
      held_at_settle_ = held;
      if (s_.server_pid != 0) settled_ = load::sample_server(s_.server_pid);
      a.start_storm = s_.engine.storm_per_s > 0 || s_.engine.burst > 0;
    }
    if (window_started_ && !window_ended_ && now_ns >= hold_end_ns_) {
      window_ended_ = true;
      if (s_.server_pid != 0) end_ = load::sample_server(s_.server_pid);
      live_at_hold_end_ = control_live(s_);
      a.stop = true;
    }
    return a;
  }

  // After every client has closed: waits (bounded) for the server to close its side. The
  // descriptor count is read before each control API request, which holds one itself.
  void take_after_close() {
    const auto deadline = std::chrono::steady_clock::now() + server_settle_after_close;
    for (;;) {
      if (s_.server_pid != 0) after_close_ = load::sample_server(s_.server_pid);
      const bool fds_back =
          s_.server_pid == 0 || (after_close_.valid && after_close_.fds <= baseline_.fds);
      live_after_close_ = control_live(s_);
      const bool live_back =
          !s_.control || (live_after_close_ >= 0 && live_after_close_ <= std::max(live_before_, 0));
      if ((fds_back && live_back) || std::chrono::steady_clock::now() >= deadline) break;
      std::this_thread::sleep_for(milliseconds(50));
    }
  }

  json::object server_json() const {
    json::object o;
    o["pid"] = s_.server_pid;
    const bool measured = s_.server_pid != 0 && baseline_.valid && settled_.valid;
    o["baseline"] = baseline_.to_json();
    o["settled"] = settled_.to_json();
    o["hold_end"] = end_.to_json();
    o["after_close"] = after_close_.to_json();
    o["held_at_settle"] = held_at_settle_;
    o["bytes_per_connection"] =
        measured && held_at_settle_ > 0
            ? static_cast<double>(settled_.private_dirty_kb - baseline_.private_dirty_kb) * 1024.0 /
                  static_cast<double>(held_at_settle_)
            : -1.0;
    o["cpu_percent"] = measured && end_.valid ? load::cpu_percent(settled_, end_) : -1.0;
    o["cpu_window_ms"] =
        measured && end_.valid ? (end_.mono_ns - settled_.mono_ns) / 1'000'000 : std::int64_t{-1};
    o["fds_before"] = baseline_.valid ? baseline_.fds : -1;
    o["fds_after"] = after_close_.valid ? after_close_.fds : -1;
    o["leaked_fds"] =
        baseline_.valid && after_close_.valid ? after_close_.fds - baseline_.fds : std::int64_t{-1};
    o["live_before"] = live_before_;
    o["live_at_hold_end"] = live_at_hold_end_;
    o["live_after_close"] = live_after_close_;
    return o;
  }

 private:
  const load_settings& s_;
  std::int64_t ramp_end_ns_ = 0;
  std::int64_t settle_at_ns_ = 0;
  std::int64_t hold_end_ns_ = 0;
  bool window_started_ = false;
  bool window_ended_ = false;
  std::uint64_t held_at_settle_ = 0;
  load::server_sample baseline_, settled_, end_, after_close_;
  int live_before_ = -1;
  int live_at_hold_end_ = -1;
  int live_after_close_ = -1;
};

void print_progress(const load::progress& p, std::uint64_t requested) {
  std::cerr << "load: " << p.established << "/" << requested << " connected, " << p.held
            << " held, " << p.failed << " failed, " << p.verdicts << " verdicts, " << p.pongs
            << " pongs" << std::endl;
}

// SIGINT and SIGTERM arrive on a descriptor the event loops watch, so Ctrl-C ends a run
// through the same graceful close as the end of the hold.
class signal_watch {
 public:
  signal_watch() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    ::sigprocmask(SIG_BLOCK, &set, &previous_);
    fd_ = ::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    ::signal(SIGPIPE, SIG_IGN);
  }
  ~signal_watch() {
    ::close(fd_);
    ::sigprocmask(SIG_SETMASK, &previous_, nullptr);
  }
  signal_watch(const signal_watch&) = delete;
  signal_watch& operator=(const signal_watch&) = delete;
  int fd() const { return fd_; }
  /// Consumes pending signals; true if there was one.
  bool take() {
    signalfd_siginfo info{};
    bool any = false;
    while (::read(fd_, &info, sizeof info) == static_cast<ssize_t>(sizeof info))
      any = true;
    return any;
  }
  const sigset_t& previous_mask() const { return previous_; }

 private:
  int fd_ = -1;
  sigset_t previous_;
};

struct run_outcome {
  load::process_result result;
  bool interrupted = false;
  std::string failure;  ///< why the run failed (a child died, the deadline passed)
};

run_outcome run_in_this_process(load_settings& s, timeline& phases, signal_watch& signals) {
  run_outcome outcome;
  s.engine.hard_deadline_ns = deadpeer::monotonic_ns() + overall_budget_ns(s);
  load::engine engine(s.engine);
  engine.watch(signals.fd(), [&] {
    if (signals.take()) {
      outcome.interrupted = true;
      engine.stop();
    }
  });
  engine.on_ramp_finished(
      [&](const load::progress&, std::int64_t now_ns) { phases.ramp_finished(now_ns); });
  std::int64_t next_progress_ns = 0;
  engine.on_tick([&](const load::progress& p, std::int64_t now_ns) {
    if (now_ns >= next_progress_ns) {
      next_progress_ns = now_ns + progress_period_ns;
      print_progress(p, s.engine.connections);
    }
    const auto a = phases.advance(now_ns, p.held);
    if (a.start_storm) engine.start_storm();
    if (a.stop) engine.stop();
  });
  outcome.result = engine.run();
  if (outcome.result.deadline_hit) outcome.failure = "the run passed its deadline";
  return outcome;
}

// probe load --child-first-index: one share of a several-process run. Commands arrive on
// stdin ('s' start the storm, 'q' end the hold; end of file also ends it), reports leave on
// stdout as JSON lines: ramped, progress (every 100 ms), result.
int run_as_child(load_settings& s) {
  if (::getppid() == 1) return exit_negative;  // the parent is already gone
  signal_watch signals;
  s.engine.hard_deadline_ns = deadpeer::monotonic_ns() + overall_budget_ns(s) + 10'000'000'000;
  load::engine engine(s.engine);
  const auto emit = [](const json::object& o) {
    const auto line = deadpeer::json_text(o) + "\n";
    (void)!::write(STDOUT_FILENO, line.data(), line.size());
  };
  const auto progress_json = [](const load::progress& p) {
    return json::object{{"opened", p.opened}, {"established", p.established}, {"held", p.held},
                        {"failed", p.failed}, {"verdicts", p.verdicts},       {"pongs", p.pongs}};
  };
  ::fcntl(STDIN_FILENO, F_SETFL, ::fcntl(STDIN_FILENO, F_GETFL) | O_NONBLOCK);
  engine.watch(STDIN_FILENO, [&] {
    char commands[64];
    const auto n = ::read(STDIN_FILENO, commands, sizeof commands);
    if (n == 0) engine.stop();  // the parent closed the pipe or died
    for (ssize_t i = 0; i < n; ++i) {
      if (commands[i] == 's') engine.start_storm();
      if (commands[i] == 'q') engine.stop();
    }
  });
  engine.watch(signals.fd(), [&] {
    if (signals.take()) engine.stop();
  });
  engine.on_ramp_finished([&](const load::progress& p, std::int64_t now_ns) {
    emit({{"event", "ramped"}, {"at_ns", now_ns}, {"progress", progress_json(p)}});
  });
  engine.on_tick([&](const load::progress& p, std::int64_t) {
    emit({{"event", "progress"}, {"progress", progress_json(p)}});
  });
  const auto result = engine.run();
  emit({{"event", "result"}, {"result", result.to_json()}});
  return exit_ok;
}

struct child {
  pid_t pid = -1;
  int command_fd = -1;  // its stdin
  int report_fd = -1;   // its stdout
  std::string buffer;
  load::progress last;
  bool ramped = false;
  std::optional<load::process_result> result;
  bool reaped = false;
};

// Every child this run started, ended by its PID on every exit path.
class children_guard {
 public:
  std::vector<child> list;
  ~children_guard() {
    for (auto& c : list) {
      if (c.command_fd >= 0) ::close(c.command_fd);
      if (c.report_fd >= 0) ::close(c.report_fd);
      if (!c.reaped && c.pid > 0) {
        ::kill(c.pid, SIGKILL);
        int status = 0;
        ::waitpid(c.pid, &status, 0);
      }
    }
  }
  void tell_all(char command) {
    for (auto& c : list)
      if (c.command_fd >= 0) (void)!::write(c.command_fd, &command, 1);
  }
};

std::vector<std::string> child_arguments(const load_settings& s, std::size_t index,
                                         std::size_t first, std::size_t count) {
  const auto k = static_cast<double>(s.processes);
  std::vector<std::string> argv{"probe",
                                "load",
                                "--server",
                                s.server_text,
                                "--connections",
                                std::to_string(count),
                                "--interval",
                                deadpeer::format_duration(s.engine.interval),
                                "--duration",
                                deadpeer::format_duration(s.duration),
                                "--settle",
                                deadpeer::format_duration(s.settle),
                                "--protocol",
                                std::string(load::to_string(s.engine.proto)),
                                "--ramp",
                                format_rate(s.engine.ramp_per_s / k),
                                "--storm",
                                format_rate(s.engine.storm_per_s / k),
                                "--id-prefix",
                                s.engine.id_prefix,
                                "--db",
                                "off",
                                "--child-first-index",
                                std::to_string(first)};
  const auto& sources = s.engine.source_addresses;
  if (!sources.empty()) {
    // Each child its own addresses when there are enough, so no two share a port range.
    std::string list;
    for (std::size_t a = 0; a < sources.size(); ++a)
      if (sources.size() < s.processes || a % s.processes == index)
        list += (list.empty() ? "" : ",") + load::format_ipv4(sources[a]);
    argv.insert(argv.end(), {"--source-addresses", list});
  }
  // The storm burst is shared in proportion to each child's clients (the shares add up).
  const auto n = s.engine.connections;
  const auto burst_share = s.engine.burst * (first + count) / n - s.engine.burst * first / n;
  if (burst_share > 0)
    argv.insert(argv.end(), {"--storm-burst", std::to_string(burst_share), "--storm-window",
                             deadpeer::format_duration(s.engine.burst_window)});
  return argv;
}

void spawn(children_guard& guard, const load_settings& s, const signal_watch& signals) {
  const auto per_child = s.engine.connections / s.processes;
  const auto extra = s.engine.connections % s.processes;
  std::size_t first = 0;
  const pid_t parent = ::getpid();
  for (std::size_t i = 0; i < s.processes; ++i) {
    const auto count = per_child + (i < extra ? 1 : 0);
    const auto argv = child_arguments(s, i, first, count);
    first += count;
    int command_pipe[2];
    int report_pipe[2];
    if (::pipe2(command_pipe, O_CLOEXEC) != 0)
      throw std::system_error(errno, std::generic_category(), "pipe");
    if (::pipe2(report_pipe, O_CLOEXEC) != 0) {
      ::close(command_pipe[0]);
      ::close(command_pipe[1]);
      throw std::system_error(errno, std::generic_category(), "pipe");
    }
    std::vector<char*> raw;
    for (const auto& a : argv)
      raw.push_back(const_cast<char*>(a.c_str()));
    raw.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      ::dup2(command_pipe[0], STDIN_FILENO);
      ::dup2(report_pipe[1], STDOUT_FILENO);
      ::sigprocmask(SIG_SETMASK, &signals.previous_mask(), nullptr);
      ::execv("/proc/self/exe", raw.data());
      ::_exit(127);
    }
    ::close(command_pipe[0]);
    ::close(report_pipe[1]);
    if (pid < 0) {
      ::close(command_pipe[1]);
      ::close(report_pipe[0]);
      throw std::system_error(errno, std::generic_category(), "fork");
    }
    ::fcntl(report_pipe[0], F_SETFL, O_NONBLOCK);
    child started;
    started.pid = pid;
    started.command_fd = command_pipe[1];
    started.report_fd = report_pipe[0];
    guard.list.push_back(std::move(started));
  }
}

// Reads what a child reported; false when its pipe closed.
bool read_reports(child& c) {
  char chunk[8192];
  for (;;) {
    const auto n = ::read(c.report_fd, chunk, sizeof chunk);
    if (n == 0) return false;
    if (n < 0) return errno == EAGAIN || errno == EINTR;
    c.buffer.append(chunk, static_cast<std::size_t>(n));
    std::size_t newline;
    while ((newline = c.buffer.find('\n')) != std::string::npos) {
      const auto line = c.buffer.substr(0, newline);
      c.buffer.erase(0, newline + 1);
      json::object o;
      try {
        o = json::parse(line).as_object();
      } catch (const std::exception&) {
        std::cerr << "probe load: child " << c.pid << " said: " << line << "\n";
        continue;
      }
      const auto event = std::string(o.at("event").as_string());
      if (o.contains("progress")) {
        const auto& p = o.at("progress").as_object();
        const auto u = [&](std::string_view k) { return json::value_to<std::uint64_t>(p.at(k)); };
        c.last = {.opened = u("opened"),
                  .established = u("established"),
                  .held = u("held"),
                  .failed = u("failed"),
                  .verdicts = u("verdicts"),
                  .pongs = u("pongs"),
                  .ramp_finished = c.ramped};
      }
      if (event == "ramped") c.ramped = true;
      if (event == "result") c.result = load::process_result::from_json(o.at("result").as_object());
    }
  }
}

run_outcome run_in_children(load_settings& s, timeline& phases, signal_watch& signals) {
  run_outcome outcome;
  const auto deadline_ns = deadpeer::monotonic_ns() + overall_budget_ns(s);
  children_guard guard;
  spawn(guard, s, signals);
  std::int64_t next_progress_ns = 0;
  bool stopped = false;
  std::int64_t stop_grace_end_ns = 0;
  for (;;) {
    std::vector<pollfd> fds{{.fd = signals.fd(), .events = POLLIN, .revents = 0}};
    for (const auto& c : guard.list)
      if (c.report_fd >= 0) fds.push_back({.fd = c.report_fd, .events = POLLIN, .revents = 0});
    if (fds.size() == 1) break;  // every child has reported and closed its pipe
    (void)::poll(fds.data(), fds.size(), 100);
    const auto now = deadpeer::monotonic_ns();
    if (signals.take() && !stopped) {
      outcome.interrupted = true;
      stopped = true;
      stop_grace_end_ns = now + ms_to_ns(s.engine.close_timeout) + 5'000'000'000;
      guard.tell_all('q');
    }
    for (auto& c : guard.list) {
      if (c.report_fd < 0 || read_reports(c)) continue;
      ::close(c.report_fd);
      c.report_fd = -1;
      if (!c.result && outcome.failure.empty())
        outcome.failure = "child " + std::to_string(c.pid) + " ended without a report";
    }
    load::progress total;
    bool all_ramped = true;
    for (const auto& c : guard.list) {
      total.opened += c.last.opened;
      total.established += c.last.established;
      total.held += c.last.held;
      total.failed += c.last.failed;
      total.verdicts += c.last.verdicts;
      total.pongs += c.last.pongs;
      all_ramped = all_ramped && c.ramped;
    }
    if (all_ramped) phases.ramp_finished(now);
    if (now >= next_progress_ns) {
      next_progress_ns = now + progress_period_ns;
      print_progress(total, s.engine.connections);
    }
    const auto a = phases.advance(now, total.held);
    if (a.start_storm) guard.tell_all('s');
    if (a.stop && !stopped) {
      stopped = true;
      stop_grace_end_ns = now + ms_to_ns(s.engine.close_timeout) + 5'000'000'000;
      guard.tell_all('q');
    }
    if (!outcome.failure.empty() && !stopped) {  // one share is gone: end the others
      stopped = true;
      stop_grace_end_ns = now + ms_to_ns(s.engine.close_timeout) + 5'000'000'000;
      guard.tell_all('q');
    }
    if (now >= deadline_ns || (stopped && now >= stop_grace_end_ns)) {
      if (outcome.failure.empty()) outcome.failure = "children did not finish within the deadline";
      break;
    }
  }
  for (auto& c : guard.list) {
    if (c.result) outcome.result.merge(*c.result);
    // Reports are in; wait briefly for a clean exit, then the guard kills the rest.
    for (int attempt = 0; attempt < 100 && !c.reaped; ++attempt) {
      int status = 0;
      if (::waitpid(c.pid, &status, WNOHANG) == c.pid)
        c.reaped = true;
      else
        std::this_thread::sleep_for(milliseconds(20));
    }
  }
  return outcome;
}

// ---- the report --------------------------------------------------------------------------

json::object report_json(const load_settings& s, const run_outcome& outcome,
                         const timeline& phases) {
  const auto& r = outcome.result;
  json::array sources;
  for (const auto a : s.engine.source_addresses)
    sources.push_back(json::string(load::format_ipv4(a)));
  json::object failures, verdicts, burst_failures;
  for (const auto& [k, n] : r.handshake_failures)
    failures[k] = n;
  for (const auto& [k, n] : r.burst_failures)
    burst_failures[k] = n;
  for (const auto& [k, n] : r.verdicts)
    verdicts[k] = n;
  return {
      {"protocol", load::to_string(s.engine.proto)},
      {"server_address", s.server_text},
      {"connections_requested", s.engine.connections},
      {"processes", s.processes},
      {"interval_ms", s.engine.interval.count()},
      {"duration_ms", s.duration.count()},
      {"settle_ms", s.settle.count()},
      {"ramp_per_s", s.engine.ramp_per_s},
      {"storm_per_s", s.engine.storm_per_s},
      {"source_addresses", std::move(sources)},
      {"attempts", r.attempts},
      {"established", r.established},
      {"held_at_end", r.held_at_end},
      {"ramp_ms", static_cast<double>(r.ramp_end_ns - r.ramp_start_ns) / 1e6},
      {"handshake_rate_per_s", r.handshake_rate_per_s()},
      {"handshake_failures_total", r.handshake_failures_total()},
      {"handshake_failures", std::move(failures)},
      {"pings_sent", r.pings_sent},
      {"pongs_received", r.pongs_received},
      {"server_pings_answered", r.server_pings_answered},
      {"rtt",
       {{"samples", r.rtt.samples()},
        {"p50_ms", r.rtt.quantile_ms(0.50)},
        {"p99_ms", r.rtt.quantile_ms(0.99)},
        {"max_ms", r.rtt.max_ms()}}},
      {"verdicts_total", r.verdicts_total()},
      {"verdicts", std::move(verdicts)},
      {"storm_disconnects", r.storm_disconnects},
      {"reconnects", r.reconnects},
      {"storm_burst",
       {{"requested", s.engine.burst},
        {"window_ms", s.engine.burst_window.count()},
        {"dropped", r.burst_dropped},
        {"back", r.burst_back},
        {"handshake_rate_per_s", r.burst_rate_per_s()},
        {"all_back_ms", r.burst_all_back_ms()},
        {"last_back_ms", r.burst_dropped > 0 && r.burst_back > 0
                             ? static_cast<double>(r.burst_last_back_ns - r.burst_start_ns) / 1e6
                             : -1.0},
        {"failures_total",
         std::accumulate(r.burst_failures.begin(), r.burst_failures.end(), std::uint64_t{0},
                         [](std::uint64_t a, const auto& kv) { return a + kv.second; })},
        {"failures", std::move(burst_failures)}}},
      {"closed_gracefully", r.closed_gracefully},
      {"close_timeouts", r.close_timeouts},
      {"server_process", phases.server_json()},
      {"interrupted", outcome.interrupted},
      {"failure", outcome.failure},
  };
}

std::string counts_text(const json::object& counts) {
  if (counts.empty()) return "none";
  std::string text;
  for (const auto& [k, n] : counts)
    text += (text.empty() ? "" : ", ") + std::string(k) + " " + deadpeer::json_text(n);
  return text;
}

void print_table(const json::object& o, std::ostream& out) {
  const auto u = [&](std::string_view k) { return json::value_to<std::uint64_t>(o.at(k)); };
  const auto d = [](const json::value& v) { return json::value_to<double>(v); };
  const auto& rtt = o.at("rtt").as_object();
  out << "probe load: " << o.at("protocol").as_string().c_str() << " "
      << o.at("server_address").as_string().c_str() << ", " << u("connections_requested")
      << " connections in " << u("processes") << " process(es), interval "
      << deadpeer::format_duration(milliseconds(o.at("interval_ms").as_int64())) << ", hold "
      << deadpeer::format_duration(milliseconds(o.at("duration_ms").as_int64())) << " (settle "
      << deadpeer::format_duration(milliseconds(o.at("settle_ms").as_int64())) << ")\n";
  out << "  connections  established " << u("established") << ", held at end " << u("held_at_end")
      << ", handshake failures " << u("handshake_failures_total") << "\n";
  out << "  handshakes   " << fixed(d(o.at("handshake_rate_per_s")), 0) << "/s over a "
      << fixed(d(o.at("ramp_ms")) / 1000, 2)
      << " s ramp; failures: " << counts_text(o.at("handshake_failures").as_object()) << "\n";
  out << "  heartbeats   pings sent " << u("pings_sent") << ", pongs received "
      << u("pongs_received") << ", server pings answered " << u("server_pings_answered") << "\n";
  out << "  rtt          p50 " << fixed(d(rtt.at("p50_ms")), 3) << " ms, p99 "
      << fixed(d(rtt.at("p99_ms")), 3) << " ms, max " << fixed(d(rtt.at("max_ms")), 3) << " ms ("
      << deadpeer::json_text(rtt.at("samples")) << " samples)\n";
  out << "  verdicts     " << counts_text(o.at("verdicts").as_object()) << "\n";
  if (d(o.at("storm_per_s")) > 0)
    out << "  storm        " << u("storm_disconnects") << " resets, " << u("reconnects")
        << " reconnected\n";
  const auto& burst = o.at("storm_burst").as_object();
  if (burst.at("requested").as_uint64() > 0) {
    const auto all_back = d(burst.at("all_back_ms"));
    out << "  storm burst  " << burst.at("dropped").as_uint64() << " dropped at once, "
        << burst.at("back").as_uint64() << " back ("
        << (all_back >= 0
                ? "all within " + fixed(all_back / 1000, 3) + " s"
                : "not all: last back after " + fixed(d(burst.at("last_back_ms")) / 1000, 3) + " s")
        << ", window " << deadpeer::format_duration(milliseconds(burst.at("window_ms").as_int64()))
        << "), " << fixed(d(burst.at("handshake_rate_per_s")), 0)
        << " handshakes/s; failures: " << counts_text(burst.at("failures").as_object()) << "\n";
  }
  out << "  close        " << u("closed_gracefully") << " graceful, " << u("close_timeouts")
      << " timed out\n";
  const auto& server = o.at("server_process").as_object();
  if (server.at("pid").as_int64() != 0) {
    const auto& base = server.at("baseline").as_object();
    const auto& settled = server.at("settled").as_object();
    out << "  server " << server.at("pid").as_int64() << "   Private_Dirty "
        << base.at("private_dirty_kb").as_int64() << " -> "
        << settled.at("private_dirty_kb").as_int64() << " kB with "
        << server.at("held_at_settle").as_uint64()
        << " held: " << fixed(d(server.at("bytes_per_connection")), 0) << " B/connection; RSS "
        << base.at("rss_kb").as_int64() << " -> " << settled.at("rss_kb").as_int64() << " kB\n";
    out << "               CPU " << fixed(d(server.at("cpu_percent")), 2) << "% of a core over "
        << fixed(static_cast<double>(server.at("cpu_window_ms").as_int64()) / 1000, 1)
        << " s; descriptors " << server.at("fds_before").as_int64() << " -> "
        << server.at("fds_after").as_int64() << " (leaked " << server.at("leaked_fds").as_int64()
        << ")\n";
  }
  if (server.at("live_at_hold_end").as_int64() >= 0 ||
      server.at("live_after_close").as_int64() >= 0)
    out << "  control API  live sessions " << server.at("live_at_hold_end").as_int64()
        << " at the end of the hold, " << server.at("live_after_close").as_int64()
        << " after the close\n";
  if (o.at("interrupted").as_bool()) out << "  interrupted: the run was stopped early\n";
  if (!o.at("failure").as_string().empty())
    out << "  failed: " << o.at("failure").as_string().c_str() << "\n";
}

// ---- load_runs ---------------------------------------------------------------------------

constexpr const char* load_runs_schema = R"(
CREATE TABLE IF NOT EXISTS load_runs (
  id INTEGER PRIMARY KEY,
  started_unix_ms INTEGER NOT NULL,
  started_at TEXT,
  version TEXT NOT NULL,
  host TEXT NOT NULL,
  command TEXT NOT NULL,
  protocol TEXT NOT NULL,
  server_address TEXT NOT NULL,
  connections_requested INTEGER NOT NULL,
  processes INTEGER NOT NULL,
  interval_ms INTEGER NOT NULL,
  duration_ms INTEGER NOT NULL,
  settle_ms INTEGER NOT NULL,
  ramp_per_s REAL NOT NULL,
  storm_per_s REAL NOT NULL,
  source_addresses TEXT NOT NULL,
  established INTEGER NOT NULL,
  held_at_end INTEGER NOT NULL,
  ramp_ms REAL NOT NULL,
  handshake_rate_per_s REAL NOT NULL,
  handshake_failures INTEGER NOT NULL,
  pings_sent INTEGER NOT NULL,
  pongs_received INTEGER NOT NULL,
  rtt_samples INTEGER NOT NULL,
  rtt_p50_ms REAL NOT NULL,
  rtt_p99_ms REAL NOT NULL,
  rtt_max_ms REAL NOT NULL,
  verdicts INTEGER NOT NULL,
  storm_disconnects INTEGER NOT NULL,
  reconnects INTEGER NOT NULL,
  server_pid INTEGER NOT NULL,
  server_private_dirty_baseline_kb INTEGER NOT NULL,
  server_private_dirty_settled_kb INTEGER NOT NULL,
  server_rss_baseline_kb INTEGER NOT NULL,
  server_rss_settled_kb INTEGER NOT NULL,
  server_bytes_per_connection REAL NOT NULL,
  server_cpu_percent REAL NOT NULL,
  server_cpu_window_ms INTEGER NOT NULL,
  server_fds_before INTEGER NOT NULL,
  server_fds_after INTEGER NOT NULL,
  server_leaked_fds INTEGER NOT NULL,
  server_live_at_hold_end INTEGER NOT NULL,
  server_live_after_close INTEGER NOT NULL,
  report_json TEXT NOT NULL
);)";

std::string iso_utc(std::int64_t unix_ms) {
  const std::time_t seconds = unix_ms / 1000;
  std::tm tm{};
  ::gmtime_r(&seconds, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
  std::ostringstream out;
  out << text << "." << std::setw(3) << std::setfill('0') << unix_ms % 1000 << "Z";
  return out.str();
}

std::string host_description() {
  utsname u{};
  ::uname(&u);
  return std::string(u.nodename) + " " + u.release;
}

class database {
 public:
  explicit database(const std::string& path) : path_(path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
        SQLITE_OK)
      fail("cannot open");
    sqlite3_busy_timeout(db_, 5000);
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=NORMAL");
    sqlite3_stmt* version = prepare("PRAGMA user_version");
    const int schema = sqlite3_step(version) == SQLITE_ROW ? sqlite3_column_int(version, 0) : 0;
    sqlite3_finalize(version);
    if (schema > deadpeer::store_schema_version)
      throw std::runtime_error(path + " was written by a newer deadpeer (schema " +
                               std::to_string(schema) + ", this build knows " +
                               std::to_string(deadpeer::store_schema_version) + ")");
    exec(load_runs_schema);
  }
  ~database() { sqlite3_close(db_); }
  database(const database&) = delete;
  database& operator=(const database&) = delete;

  std::int64_t insert(const load_settings& s, const json::object& o, std::int64_t started_unix_ms) {
    static constexpr const char* sql =
        "INSERT INTO load_runs (started_unix_ms, started_at, version, host, command, protocol, "
        "server_address, connections_requested, processes, interval_ms, duration_ms, settle_ms, "
        "ramp_per_s, storm_per_s, source_addresses, established, held_at_end, ramp_ms, "
        "handshake_rate_per_s, handshake_failures, pings_sent, pongs_received, rtt_samples, "
        "rtt_p50_ms, rtt_p99_ms, rtt_max_ms, verdicts, storm_disconnects, reconnects, "
        "server_pid, server_private_dirty_baseline_kb, server_private_dirty_settled_kb, "
        "server_rss_baseline_kb, server_rss_settled_kb, server_bytes_per_connection, "
        "server_cpu_percent, server_cpu_window_ms, server_fds_before, server_fds_after, "
        "server_leaked_fds, server_live_at_hold_end, server_live_after_close, report_json) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,"
        "?,?,?)";
    sqlite3_stmt* st = prepare(sql);
    int column = 0;
    const auto text = [&](const std::string& v) {
      sqlite3_bind_text(st, ++column, v.c_str(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    };
    const auto integer = [&](const json::value& v) {
      sqlite3_bind_int64(st, ++column,
                         v.is_uint64() ? static_cast<std::int64_t>(v.as_uint64())
                                       : json::value_to<std::int64_t>(v));
    };
    const auto real = [&](const json::value& v) {
      sqlite3_bind_double(st, ++column, json::value_to<double>(v));
    };
    const auto& rtt = o.at("rtt").as_object();
    const auto& server = o.at("server_process").as_object();
    const auto measured = [&](std::string_view sample, std::string_view key) -> json::value {
      const auto& taken = server.at(sample).as_object();
      return taken.at("valid").as_bool() ? taken.at(key) : json::value(-1);
    };
    sqlite3_bind_int64(st, ++column, started_unix_ms);
    text(iso_utc(started_unix_ms));
    text(DEADPEER_VERSION);
    text(host_description());
    text(s.command_line);
    text(std::string(o.at("protocol").as_string()));
    text(s.server_text);
    integer(o.at("connections_requested"));
    integer(o.at("processes"));
    integer(o.at("interval_ms"));
    integer(o.at("duration_ms"));
    integer(o.at("settle_ms"));
    real(o.at("ramp_per_s"));
    real(o.at("storm_per_s"));
    text(s.source_text);
    integer(o.at("established"));
    integer(o.at("held_at_end"));
    real(o.at("ramp_ms"));
    real(o.at("handshake_rate_per_s"));
    integer(o.at("handshake_failures_total"));
    integer(o.at("pings_sent"));
    integer(o.at("pongs_received"));
    integer(rtt.at("samples"));
    real(rtt.at("p50_ms"));
    real(rtt.at("p99_ms"));
    real(rtt.at("max_ms"));
    integer(o.at("verdicts_total"));
    integer(o.at("storm_disconnects"));
    integer(o.at("reconnects"));
    integer(server.at("pid"));
    integer(measured("baseline", "private_dirty_kb"));
    integer(measured("settled", "private_dirty_kb"));
    integer(measured("baseline", "rss_kb"));
    integer(measured("settled", "rss_kb"));
    real(server.at("bytes_per_connection"));
    real(server.at("cpu_percent"));
    integer(server.at("cpu_window_ms"));
    integer(server.at("fds_before"));
    integer(server.at("fds_after"));
    integer(server.at("leaked_fds"));
    integer(server.at("live_at_hold_end"));
    integer(server.at("live_after_close"));
    text(deadpeer::json_text(o));
    const int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) fail("cannot insert into load_runs of");
    return sqlite3_last_insert_rowid(db_);
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    throw std::runtime_error(what + " " + path_ + ": " + (db_ ? sqlite3_errmsg(db_) : "?"));
  }
  void exec(const char* sql) {
    if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) != SQLITE_OK)
      fail(std::string("cannot run \"") + std::string(sql).substr(0, 40) + "\" on");
  }
  sqlite3_stmt* prepare(const char* sql) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, sql, -1, &st, nullptr) != SQLITE_OK) fail("cannot prepare for");
    return st;
  }
  std::string path_;
  sqlite3* db_ = nullptr;
};

}  // namespace

int command_load(const std::vector<std::string>& args) {
  bool help = false;
  auto s = parse_settings(args, help);
  if (help) return exit_ok;
  if (s.child) return run_as_child(s);

  const auto started_unix_ms =
      std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  std::optional<database> db;
  if (s.db != "off") db.emplace(s.db);  // a file that cannot be written fails before the load

  constexpr std::size_t ports_per_address_hint = 8000;
  if (s.engine.source_addresses.empty() &&
      s.engine.connections / s.processes > ports_per_address_hint)
    std::cerr << "probe load: hint: with this many connections from one source address the "
                 "kernel's search for a free port makes each connect() slow (and the ramp and "
                 "RTT with it); --source-addresses 127.0.1.1-127.0.1.8 spreads them\n";
  signal_watch signals;
  timeline phases(s);
  phases.take_baseline();
  auto outcome = s.processes > 1 ? run_in_children(s, phases, signals)
                                 : run_in_this_process(s, phases, signals);
  phases.take_after_close();
  auto report = report_json(s, outcome, phases);

  const bool complete = !outcome.interrupted && outcome.failure.empty();
  if (db && complete) {
    const auto id = db->insert(s, report, started_unix_ms);
    report["db"] = s.db;
    report["load_run_id"] = id;
  }
  if (s.json)
    std::cout << deadpeer::json_text(report) << std::endl;
  else
    print_table(report, std::cout);
  if (!s.json && db && complete)
    std::cout << "results: " << s.db << " (load_runs id " << report.at("load_run_id").as_int64()
              << ")\n";
  if (!complete) std::cerr << "probe load: the run was not stored (incomplete)\n";
  if (outcome.interrupted) return exit_interrupted;
  return complete ? exit_ok : exit_negative;
}

}  // namespace probe
