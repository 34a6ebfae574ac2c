// heartbeat-server: the thin program around deadpeer::server. It turns flags and a config
// file into server_options, refuses bad values with exit status 2, runs the server until
// SIGINT or SIGTERM, and then shuts down cleanly (BYE going_away, store flushed, exit 0, or
// 1 when connection ends could not be written). SIGHUP reopens --log and reloads the
// config file; a second SIGINT or SIGTERM cuts the graceful close short.
#include <deadpeer/config_error.hpp>
#include <deadpeer/duration.hpp>
#include <deadpeer/endpoint.hpp>
#include <deadpeer/keepalive.hpp>
#include <deadpeer/log.hpp>
#include <deadpeer/secret_file.hpp>
#include <deadpeer/server.hpp>
#include <deadpeer/store.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/program_options.hpp>
#include <boost/system/system_error.hpp>
#include <boost/version.hpp>

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>

namespace {

namespace po = boost::program_options;
using std::chrono::milliseconds;

constexpr int exit_usage = 2;

class usage_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Printed by --version: what was built, from which commit, against which libraries.
void print_version(std::ostream& out) {
  out << "heartbeat-server " << DEADPEER_VERSION << "\n"
      << "commit " << DEADPEER_GIT_COMMIT << "\n"
      << "Boost " << BOOST_LIB_VERSION << "\n"
      << "SQLite " << sqlite3_libversion() << "\n";
}

milliseconds duration_option(const po::variables_map& vm, const char* name) {
  try {
    return deadpeer::parse_duration(vm[name].as<std::string>());
  } catch (const deadpeer::config_error& e) {
    throw usage_error(std::string("--") + name + ": " + e.what());
  }
}

// A whole number in [min, max]; Boost would read "-1" as the largest unsigned value.
std::size_t count_option(const po::variables_map& vm, const char* name, std::size_t min,
                         std::size_t max) {
  const auto& text = vm[name].as<std::string>();
  std::size_t value = 0;
  const auto* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, value);
  if (text.empty() || error != std::errc() || stop != end || value < min || value > max)
    throw usage_error(std::string("--") + name + " \"" + text + "\": expected a whole number " +
                      (max == std::numeric_limits<std::size_t>::max()
                           ? "of at least " + std::to_string(min)
                           : "from " + std::to_string(min) + " to " + std::to_string(max)));
  return value;
}

// The secret in a file (deadpeer::read_secret_file), refused with `flag` named.
std::string read_token_file(const std::string& path, const std::string& flag) {
  try {
    return deadpeer::read_secret_file(path);
  } catch (const deadpeer::config_error& e) {
    throw usage_error(flag + " " + e.what());
  }
}

po::options_description describe_options() {
  po::options_description o("Options (durations take a unit: 250ms, 1.5s, 30s, 5m)");
  o.add_options()                   //
      ("help,h", "show this help")  //
      ("version",
       "print the version, the commit it was built from, and the Boost and "
       "SQLite versions")  //
      ("config", po::value<std::string>()->value_name("FILE"),
       "read options from FILE: one key = value per line, keys as the long flags without "
       "dashes (listen = 127.0.0.1:7700); flags given on the command line win")  //
      ("listen,l",
       po::value<std::string>()->default_value("127.0.0.1:7700")->value_name("HOST:PORT"),
       "address for heartbeat clients; [::1]:7700 for IPv6; port 0 picks a free port")  //
      ("control",
       po::value<std::string>()->default_value("127.0.0.1:7701")->value_name("HOST:PORT"),
       "HTTP control API (/status, /connections, /events, /metrics, /arrivals); \"off\" "
       "disables it")  //
      ("control-token-file", po::value<std::string>()->value_name("FILE"),
       "the control API answers only requests with \"Authorization: Bearer TOKEN\", TOKEN "
       "being the first line of FILE (for a control address other hosts can reach)")  //
      ("control-host", po::value<std::vector<std::string>>()->composing()->value_name("NAME"),
       "a host name the control API answers to besides IP addresses and localhost (any "
       "other Host header is refused: DNS rebinding); repeat for several")  //
      ("db", po::value<std::string>()->default_value("deadpeer.db")->value_name("FILE"),
       "SQLite file that records every connection's end; \"off\" records nothing")  //
      ("keepalive,k", po::value<std::string>()->value_name("SPEC"),
       "kernel keepalive on accepted sockets: idle:interval:count[:user_timeout], e.g. "
       "60s:10s:5; \"off\" disables it (default: leave the system's settings)")  //
      ("preset,p", po::value<std::string>()->value_name("NAME"),
       "keepalive preset: linux-default, lan, mobile, iot, aggressive (probe presets "
       "explains each); --keepalive and --user-timeout refine it")  //
      ("user-timeout,u", po::value<std::string>()->value_name("DURATION"),
       "TCP_USER_TIMEOUT on accepted sockets; 0s turns it off")  //
      ("heartbeat", po::value<std::string>()->default_value("on")->value_name("on|off"),
       "off: no PINGs and no detector, only the kernel notices deaths (keepalive experiments)")  //
      ("interval-min", po::value<std::string>()->default_value("100ms")->value_name("DURATION"),
       "smallest heartbeat interval granted; faster requests are raised to it")  //
      ("interval-max", po::value<std::string>()->default_value("60s")->value_name("DURATION"),
       "largest heartbeat interval granted; slower requests are lowered to it")  //
      ("interval-default", po::value<std::string>()->default_value("1s")->value_name("DURATION"),
       "interval granted to a client that asks for 0 (server's choice)")  //
      ("detector",
       po::value<std::string>()->default_value("adaptive")->value_name("adaptive|fixed|phi"),
       "failure detector: adaptive (dead after the longest silence the link has shown lately, "
       "with a margin; see docs/detectors.md), fixed (dead after a set silence; implied by "
       "--dead-after and --dead-after-multiplier) or phi (phi accrual)")  //
      ("adaptive-margin", po::value<double>()->default_value(1.0)->value_name("X"),
       "adaptive detector: how far beyond the longest silence seen it waits on a link just met "
       "(fades as more of the link is seen)")  //
      ("adaptive-memory", po::value<std::string>()->default_value("20h")->value_name("DURATION"),
       "adaptive detector: how long the longest silence is remembered")  //
      ("adaptive-max", po::value<double>()->default_value(10.0)->value_name("X"),
       "adaptive detector: never waits longer than X heartbeat intervals (its worst case)")  //
      ("adaptive-slack", po::value<std::string>()->default_value("50ms")->value_name("DURATION"),
       "adaptive detector: never declares dead before 1.1 intervals plus this (the protocol "
       "promises when a frame is sent; timers, readers and the network add some delay)")  //
      ("dead-after", po::value<std::string>()->value_name("DURATION"),
       "fixed detector: silence that means dead (default: --dead-after-multiplier x interval)")  //
      ("dead-after-multiplier", po::value<double>()->default_value(3.0)->value_name("X"),
       "fixed detector: dead after X heartbeat intervals of silence (MQTT uses 1.5)")  //
      ("phi-threshold", po::value<double>()->default_value(8.0)->value_name("X"),
       "phi detector: suspicion at which the peer is declared dead")  //
      ("phi-window", po::value<std::string>()->default_value("1000")->value_name("N"),
       "phi detector: inter-arrival samples kept")  //
      ("phi-min-std", po::value<std::string>()->default_value("100ms")->value_name("DURATION"),
       "phi detector: floor on the standard deviation")  //
      ("phi-pause", po::value<std::string>()->default_value("3s")->value_name("DURATION"),
       "phi detector: acceptable pause added to the mean")  //
      ("handshake-timeout", po::value<std::string>()->default_value("5s")->value_name("DURATION"),
       "a connection must complete HELLO within this (slowloris protection)")  //
      ("reap-interval", po::value<std::string>()->default_value("1s")->value_name("DURATION"),
       "how often the reaper sweeps for CLOSE_WAIT leaks, stuck handshakes and silent ghosts")  //
      ("on-eof", po::value<std::string>()->default_value("end")->value_name("end|reap"),
       "a client's FIN without BYE: end the connection at once (a crash is noticed within a "
       "round trip), or treat it as a half-close and let the reaper end the CLOSE_WAIT "
       "ghost at its next sweep")  //
      ("max-connections", po::value<std::string>()->default_value("10000")->value_name("N"),
       "connections held at most; newcomers get ERROR server_full")  //
      ("max-per-ip", po::value<std::string>()->default_value("1000")->value_name("N"),
       "connections from one IP address at most")  //
      ("auth-token-file", po::value<std::string>()->value_name("FILE"),
       "shared secret (first line of FILE) clients must send in HELLO; without it anyone "
       "may connect")  //
      ("threads", po::value<std::string>()->default_value("0")->value_name("N"),
       "event loops, each a thread with its own listener (SO_REUSEPORT), timers and "
       "connections; 0: one per core")  //
      ("record-arrivals", po::value<std::string>()->default_value("0")->value_name("N"),
       "record heartbeat arrival traces to tune the failure detector on your links (probe "
       "qos --from-db): keep the last N arrival times of each recorded connection (8 bytes "
       "each, at most 1000000), served by GET /arrivals and written to the --db arrivals "
       "table when it ends; 0: off")  //
      ("record-sample", po::value<std::string>()->default_value("1")->value_name("K"),
       "with --record-arrivals, record one established connection in K (1: all)")  //
      ("reuse-port", po::bool_switch(),
       "let other heartbeat-server processes listen on the same port (SO_REUSEPORT), to hold "
       "more connections than one process's descriptor limit allows")  //
      ("log", po::value<std::string>()->value_name("FILE"),
       "append everything printed (stdout and stderr) to FILE; SIGHUP reopens it, for log "
       "rotation")  //
      ("verbose,v", po::bool_switch(),
       "print one JSON line per connection end (in --config: verbose = true or false)");
  return o;
}

deadpeer::server_options build_options(const po::variables_map& vm) {
  deadpeer::server_options o;
  o.listen = deadpeer::parse_endpoint(vm["listen"].as<std::string>());
  const auto control = vm["control"].as<std::string>();
  if (control == "off")
    o.control.reset();
  else
    o.control = deadpeer::parse_endpoint(control);
  const auto db = vm["db"].as<std::string>();
  o.db_path = db == "off" ? "" : db;
  if (!o.db_path.empty()) {
    namespace fs = std::filesystem;
    const auto parent = fs::path(o.db_path).parent_path();
    std::error_code ec;
    if (fs::is_directory(o.db_path, ec))
      throw usage_error("--db \"" + db + "\" is a directory; give a file name in it, or off");
    if (!parent.empty() && !fs::is_directory(parent, ec))
      throw usage_error("--db \"" + db + "\": the directory \"" + parent.string() +
                        "\" does not exist; create it first, or give a file in an existing one");
  }

  std::optional<deadpeer::keepalive_options> keepalive;
  if (vm.count("preset") != 0)
    keepalive = deadpeer::find_keepalive_preset(vm["preset"].as<std::string>()).options;
  if (vm.count("keepalive") != 0)
    keepalive = deadpeer::overlay(keepalive.value_or(deadpeer::keepalive_options{}),
                                  deadpeer::parse_keepalive(vm["keepalive"].as<std::string>()));
  if (vm.count("user-timeout") != 0) {
    keepalive = keepalive.value_or(deadpeer::keepalive_options{});
    keepalive->user_timeout = duration_option(vm, "user-timeout");
  }
  if (keepalive) deadpeer::validate(*keepalive);
  o.keepalive = keepalive;

  const auto heartbeat = vm["heartbeat"].as<std::string>();
  if (heartbeat != "on" && heartbeat != "off")
    throw usage_error("--heartbeat \"" + heartbeat + "\": expected on or off");
  o.heartbeat = heartbeat == "on";
  o.min_interval = duration_option(vm, "interval-min");
  o.max_interval = duration_option(vm, "interval-max");
  o.default_interval = duration_option(vm, "interval-default");

  // The phi parameters are checked whichever detector runs: a typo in a config file should
  // not wait until someone switches to phi to be found.
  deadpeer::phi_detector_config p;
  p.interval = o.default_interval;
  p.threshold = vm["phi-threshold"].as<double>();
  if (!std::isfinite(p.threshold) || p.threshold <= 0) {
    std::ostringstream text;
    text << "--phi-threshold " << p.threshold << ": expected a number above 0, e.g. 8";
    throw usage_error(text.str());
  }
  p.max_samples = count_option(vm, "phi-window", 2, 1'000'000);
  p.min_std_deviation = duration_option(vm, "phi-min-std");
  if (p.min_std_deviation <= milliseconds(0))
    throw usage_error("--phi-min-std " + deadpeer::format_duration(p.min_std_deviation) +
                      ": expected a positive duration, e.g. 100ms");
  p.acceptable_pause = duration_option(vm, "phi-pause");
  if (p.acceptable_pause < milliseconds(0))
    throw usage_error("--phi-pause " + deadpeer::format_duration(p.acceptable_pause) +
                      ": expected 0s or more");

  deadpeer::adaptive_detector_config a;
  a.interval = o.default_interval;
  a.margin = vm["adaptive-margin"].as<double>();
  if (!std::isfinite(a.margin) || a.margin < 0)
    throw usage_error("--adaptive-margin: expected a number of 0 or more, e.g. 1");
  const auto memory = duration_option(vm, "adaptive-memory");
  if (memory < std::chrono::minutes(1))
    throw usage_error("--adaptive-memory " + vm["adaptive-memory"].as<std::string>() +
                      ": expected at least 1m, e.g. 20h");
  a.memory = std::chrono::duration_cast<std::chrono::minutes>(memory);
  a.delivery_slack = duration_option(vm, "adaptive-slack");
  a.max_multiplier = vm["adaptive-max"].as<double>();
  if (!std::isfinite(a.max_multiplier) || a.max_multiplier < a.min_multiplier)
    throw usage_error("--adaptive-max: expected a number of at least " +
                      std::to_string(a.min_multiplier).substr(0, 3) +
                      " (heartbeat intervals), e.g. 10");

  auto detector = vm["detector"].as<std::string>();
  const bool fixed_options =
      vm.count("dead-after") != 0 || !vm["dead-after-multiplier"].defaulted();
  if (vm["detector"].defaulted() && fixed_options) detector = "fixed";  // implied
  if (detector != "fixed" && fixed_options)
    throw usage_error(
        "--dead-after and --dead-after-multiplier set the fixed detector; they do not apply to "
        "--detector " +
        detector);
  if (detector == "adaptive") {
    o.detector = a;
  } else if (detector == "fixed") {
    deadpeer::fixed_detector_config f;
    f.interval = o.default_interval;
    f.multiplier = vm["dead-after-multiplier"].as<double>();
    if (vm.count("dead-after") != 0) {
      f.timeout = duration_option(vm, "dead-after");
      if (f.timeout <= milliseconds(0))
        throw usage_error("--dead-after " + vm["dead-after"].as<std::string>() +
                          ": expected a positive duration (leave it out for "
                          "--dead-after-multiplier x the heartbeat interval)");
    }
    o.detector = f;
  } else if (detector == "phi") {
    o.detector = p;
  } else {
    throw usage_error("--detector \"" + detector + "\": expected adaptive, fixed or phi");
  }
  o.handshake_timeout = duration_option(vm, "handshake-timeout");
  o.reap_interval = duration_option(vm, "reap-interval");
  const auto on_eof = vm["on-eof"].as<std::string>();
  if (on_eof != "end" && on_eof != "reap")
    throw usage_error("--on-eof \"" + on_eof + "\": expected end or reap");
  o.end_on_eof = on_eof == "end";
  const auto unlimited = std::numeric_limits<std::size_t>::max();
  o.max_connections = count_option(vm, "max-connections", 1, unlimited);
  o.max_per_ip = count_option(vm, "max-per-ip", 1, unlimited);
  o.threads = static_cast<unsigned>(count_option(vm, "threads", 0, 1024));
  o.reuse_port = vm["reuse-port"].as<bool>();
  o.record_arrivals = count_option(vm, "record-arrivals", 0, deadpeer::max_record_arrivals);
  o.record_sample = count_option(vm, "record-sample", 1, unlimited);
  if (vm.count("auth-token-file") != 0)
    o.auth_token = read_token_file(vm["auth-token-file"].as<std::string>(), "--auth-token-file");
  if (vm.count("control-token-file") != 0)
    o.control_api_access.bearer_token =
        read_token_file(vm["control-token-file"].as<std::string>(), "--control-token-file");
  if (vm.count("control-host") != 0)
    for (const auto& name : vm["control-host"].as<std::vector<std::string>>()) {
      const bool plain = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-';
      });
      if (!plain)
        throw usage_error("--control-host \"" + name +
                          "\": expected a host name (letters, digits, dots and dashes)");
      o.control_api_access.host_names.push_back(name);
    }
  deadpeer::validate(o);
  return o;
}

// Stores a config file's options; a file that cannot be read, that names another one, or
// whose values are malformed is refused, naming the file.
void store_config(const std::string& path, const po::options_description& options,
                  po::variables_map& vm) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw usage_error("--config \"" + path + "\" is a directory; give a file of key = value lines");
  std::ifstream in(path);
  if (!in) throw usage_error("--config \"" + path + "\": cannot be read");
  try {
    auto parsed = po::parse_config_file(in, options);
    for (const auto& option : parsed.options)
      if (option.string_key == "config")
        throw usage_error("--config \"" + path +
                          "\": a config file cannot name another one (config = ...); "
                          "give every setting in this file, or on the command line");
    po::store(parsed, vm);
  } catch (const po::error& e) {
    throw usage_error("--config \"" + path + "\": " + e.what());
  }
}

// A listener that cannot be opened, said as what to do about it rather than as errno.
[[noreturn]] void refuse_listen(const boost::system::system_error& e, const po::variables_map& vm) {
  const bool control = std::string_view(e.what()).starts_with("control API:");
  const char* flag = control ? "--control" : "--listen";
  const auto address = vm[control ? "control" : "listen"].as<std::string>();
  const auto& code = e.code();
  std::string text = std::string(flag) + " " + address + ": ";
  if (code == boost::system::errc::address_in_use)
    text +=
        "the address is in use (another program, or another heartbeat-server, listens on "
        "it): stop that program, or choose another port (port 0 picks a free one)";
  else if (code == boost::system::errc::address_not_available)
    text +=
        "the address is not one of this host's (ip -brief address lists them): use one of "
        "its addresses, 127.0.0.1 for this host only, or 0.0.0.0 for every interface";
  else if (code == boost::system::errc::permission_denied)
    text +=
        "permission denied: ports below 1024 need root or CAP_NET_BIND_SERVICE; choose a "
        "port above 1023";
  else
    text += "cannot listen: " + code.message();
  throw usage_error(text);
}

}  // namespace

// The command line, then the config file it names (the command line wins). Run again on
// SIGHUP, so an edited file is read with the same rules as at start.
po::variables_map parse_arguments(int argc, char** argv, const po::options_description& options) {
  po::variables_map vm;
  try {
    const auto parsed = po::parse_command_line(argc, argv, options);
    const auto stray = po::collect_unrecognized(parsed.options, po::include_positional);
    if (!stray.empty())
      throw usage_error("unexpected argument \"" + stray.front() +
                        "\": heartbeat-server takes only options (see --help)");
    po::store(parsed, vm);
    if (vm.count("help") == 0 && vm.count("version") == 0 && vm.count("config") != 0)
      store_config(vm["config"].as<std::string>(), options, vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw usage_error(std::string(e.what()) + " (see --help)");
  }
  return vm;
}

// --log FILE: stdout and stderr appended to FILE, opened again on SIGHUP (after a log
// rotation renamed it). Throws usage_error when it cannot be opened.
void open_log(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0)
    throw usage_error("--log \"" + path +
                      "\": cannot be opened for appending: " + std::strerror(errno));
  std::cout.flush();
  std::cerr.flush();
  ::dup2(fd, STDOUT_FILENO);
  ::dup2(fd, STDERR_FILENO);
  ::close(fd);
}

// Signals, on the io_context's thread: SIGHUP reloads, the first SIGINT/SIGTERM stops
// gracefully, a second one cuts the graceful close short (rows are still written).
class signal_handler {
 public:
  signal_handler(boost::asio::io_context& io, deadpeer::server& server, int argc, char** argv,
                 const po::options_description& options)
      : io_(io),
        server_(server),
        argc_(argc),
        argv_(argv),
        options_(options),
        signals_(io, SIGINT, SIGTERM, SIGHUP) {
    wait();
  }

 private:
  void wait() {
    signals_.async_wait([this](const boost::system::error_code& ec, int signal) {
      if (ec) return;
      if (signal == SIGHUP)
        reload();
      else if (!stopping_) {
        stopping_ = true;
        deadpeer::log_line(deadpeer::log_level::info, 1)
            << "heartbeat-server: " << ::strsignal(signal) << ": closing "
            << server_.live_connections()
            << " connection(s) with BYE going_away (send it again to cut this short)";
        server_.stop([this] { io_.stop(); });
      } else {
        deadpeer::log_line(deadpeer::log_level::warning, 1)
            << "heartbeat-server: " << ::strsignal(signal)
            << " again: closing every connection now; their ends are still written";
        server_.hurry_stop();
      }
      wait();
    });
  }

  void reload() {
    try {
      const auto vm = parse_arguments(argc_, argv_, options_);
      if (vm.count("log") != 0) open_log(vm["log"].as<std::string>());
      const auto changes = server_.reconfigure(build_options(vm));
      if (changes.empty())
        deadpeer::log_line(deadpeer::log_level::info, 1)
            << "heartbeat-server: SIGHUP: reloaded; nothing changed";
      for (const auto& change : changes)
        deadpeer::log_line(deadpeer::log_level::info, 1) << "heartbeat-server: SIGHUP: " << change;
    } catch (const std::exception& e) {
      deadpeer::log_line(deadpeer::log_level::error)
          << "heartbeat-server: SIGHUP: not reloaded, the running settings stay: " << e.what();
    }
  }

  boost::asio::io_context& io_;
  deadpeer::server& server_;
  int argc_;
  char** argv_;
  const po::options_description& options_;
  boost::asio::signal_set signals_;
  bool stopping_ = false;
};

int main(int argc, char** argv) {
  const auto options = describe_options();
  try {
    const auto vm = parse_arguments(argc, argv, options);
    if (vm.count("help") != 0) {
      std::cout << "Usage: heartbeat-server [options]\n\n"
                   "Holds heartbeating deadpeer clients, notices every death (FIN, RST, kernel\n"
                   "keepalive, user timeout, heartbeat silence), reaps ghost connections, and\n"
                   "records when and why each connection ended in SQLite.\n\n"
                << options << "\n";
      return 0;
    }
    if (vm.count("version") != 0) {
      print_version(std::cout);
      return 0;
    }
    if (vm.count("log") != 0) open_log(vm["log"].as<std::string>());
    const bool verbose = vm["verbose"].as<bool>();
    auto server_options = build_options(vm);
    const bool has_control_token = !server_options.control_api_access.bearer_token.empty();
    if (server_options.record_arrivals != 0 && server_options.db_path.empty())
      deadpeer::log_line(deadpeer::log_level::warning)
          << "heartbeat-server: note: --record-arrivals with --db off: the traces are "
             "served by GET /arrivals while connections live, and kept nowhere after";
    if (verbose)
      server_options.on_event = [](const std::string& event) { std::cout << event << std::endl; };

    // Every connection is a descriptor: take all the process may have.
    if (rlimit limit{};
        ::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
      limit.rlim_cur = limit.rlim_max;
      ::setrlimit(RLIMIT_NOFILE, &limit);
    }
    boost::asio::io_context io;
    std::optional<deadpeer::server> held;
    try {
      held.emplace(io, std::move(server_options));
    } catch (const boost::system::system_error& e) {
      refuse_listen(e, vm);
    } catch (const deadpeer::store_error& e) {
      throw usage_error(std::string("--db: ") + e.what());
    }
    auto& server = *held;
    server.start();
    // Before the banner: whoever waits for it may signal at once, and a signal that came
    // before the handlers would end the process without its stop.
    signal_handler signals(io, server, argc, argv, options);
    {
      deadpeer::log_line banner(deadpeer::log_level::info, 1);
      banner << "heartbeat-server listening on " << server.local_endpoint();
      if (const auto control = server.control_endpoint())
        banner << ", control API on http://" << *control << " (live view: http://" << *control
               << "/)";
    }
    deadpeer::log_line(deadpeer::log_level::info, 1)
        << "heartbeat-server: " << server.threads() << " event loop(s)";
    if (const auto control = server.control_endpoint();
        control && !control->address().is_loopback() && !has_control_token)
      deadpeer::log_line(deadpeer::log_level::warning)
          << "heartbeat-server: WARNING: the control API on " << *control
          << " can be reached from other hosts and asks for no token: anyone who reaches "
             "it reads client ids and peer addresses. Give --control-token-file FILE, or "
             "listen on 127.0.0.1 (--control 127.0.0.1:PORT).";

    io.run();
    if (const auto lost = server.records_not_written(); lost != 0) {
      deadpeer::log_line(deadpeer::log_level::error)
          << "heartbeat-server: stopped; " << lost << " connection end(s) could not be "
          << "written to " << vm["db"].as<std::string>() << " (see the store's messages above)";
      return 1;
    }
    deadpeer::log_line(deadpeer::log_level::info, 1) << "heartbeat-server stopped";
    return 0;
  } catch (const usage_error& e) {
    std::cerr << "heartbeat-server: " << e.what() << "\n";
    return exit_usage;
  } catch (const deadpeer::config_error& e) {
    std::cerr << "heartbeat-server: " << e.what() << "\n";
    return exit_usage;
  } catch (const deadpeer::store_error& e) {
    std::cerr << "heartbeat-server: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "heartbeat-server: error: " << e.what() << "\n";
    return 1;
  }
}
