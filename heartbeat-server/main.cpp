// heartbeat-server: the thin program around deadpeer::server. It turns flags and a config
// file into server_options, refuses bad values with exit status 2, runs the server until
// SIGINT or SIGTERM, and then shuts down cleanly (BYE going_away, store flushed, exit 0).
#include <deadpeer/config_error.hpp>
#include <deadpeer/duration.hpp>
#include <deadpeer/endpoint.hpp>
#include <deadpeer/keepalive.hpp>
#include <deadpeer/server.hpp>
#include <deadpeer/store.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/program_options.hpp>

#include <sys/resource.h>

#include <fstream>
#include <iostream>
#include <sstream>

namespace {

namespace po = boost::program_options;
using std::chrono::milliseconds;

constexpr int exit_usage = 2;

class usage_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

milliseconds duration_option(const po::variables_map& vm, const char* name) {
  try {
    return deadpeer::parse_duration(vm[name].as<std::string>());
  } catch (const deadpeer::config_error& e) {
    throw usage_error(std::string("--") + name + ": " + e.what());
  }
}

std::string read_token_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw usage_error("--auth-token-file \"" + path + "\": cannot be read");
  std::string token;
  std::getline(in, token);
  while (!token.empty() && (token.back() == '\r' || token.back() == ' '))
    token.pop_back();
  if (token.empty())
    throw usage_error("--auth-token-file \"" + path + "\": the first line is empty");
  return token;
}

po::options_description describe_options() {
  po::options_description o("Options (durations take a unit: 250ms, 1.5s, 30s, 5m)");
  o.add_options()                   //
      ("help,h", "show this help")  //
      ("config", po::value<std::string>()->value_name("FILE"),
       "read options from FILE: one key = value per line, keys as the long flags without "
       "dashes (listen = 127.0.0.1:7700); flags given on the command line win")  //
      ("listen,l",
       po::value<std::string>()->default_value("127.0.0.1:7700")->value_name("HOST:PORT"),
       "address for heartbeat clients; [::1]:7700 for IPv6; port 0 picks a free port")  //
      ("control",
       po::value<std::string>()->default_value("127.0.0.1:7701")->value_name("HOST:PORT"),
       "HTTP control API (/status, /connections, /events, /metrics); \"off\" disables it")  //
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
      ("detector", po::value<std::string>()->default_value("fixed")->value_name("fixed|phi"),
       "failure detector: fixed (dead after a silence) or phi (phi accrual, adapts to jitter)")  //
      ("dead-after", po::value<std::string>()->value_name("DURATION"),
       "fixed detector: silence that means dead (default: --dead-after-multiplier x interval)")  //
      ("dead-after-multiplier", po::value<double>()->default_value(3.0)->value_name("X"),
       "fixed detector: dead after X heartbeat intervals of silence (MQTT uses 1.5)")  //
      ("phi-threshold", po::value<double>()->default_value(8.0)->value_name("X"),
       "phi detector: suspicion at which the peer is declared dead")  //
      ("phi-window", po::value<std::size_t>()->default_value(1000)->value_name("N"),
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
      ("max-connections", po::value<std::size_t>()->default_value(10000)->value_name("N"),
       "connections held at most; newcomers get ERROR server_full")  //
      ("max-per-ip", po::value<std::size_t>()->default_value(1000)->value_name("N"),
       "connections from one IP address at most")  //
      ("auth-token-file", po::value<std::string>()->value_name("FILE"),
       "shared secret (first line of FILE) clients must send in HELLO; without it anyone "
       "may connect")  //
      ("threads", po::value<unsigned>()->default_value(0)->value_name("N"),
       "event loops, each a thread with its own listener (SO_REUSEPORT), timers and "
       "connections; 0: one per core")  //
      ("reuse-port", "let other heartbeat-server processes listen on the same port "
                     "(SO_REUSEPORT), to hold more connections than one process's "
                     "descriptor limit allows")  //
      ("verbose,v", "print one JSON line per connection end");
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

  const auto detector = vm["detector"].as<std::string>();
  if (detector == "fixed") {
    deadpeer::fixed_detector_config f;
    f.interval = o.default_interval;
    f.multiplier = vm["dead-after-multiplier"].as<double>();
    if (vm.count("dead-after") != 0) f.timeout = duration_option(vm, "dead-after");
    o.detector = f;
  } else if (detector == "phi") {
    deadpeer::phi_detector_config p;
    p.interval = o.default_interval;
    p.threshold = vm["phi-threshold"].as<double>();
    p.max_samples = vm["phi-window"].as<std::size_t>();
    p.min_std_deviation = duration_option(vm, "phi-min-std");
    p.acceptable_pause = duration_option(vm, "phi-pause");
    o.detector = p;
  } else {
    throw usage_error("--detector \"" + detector + "\": expected fixed or phi");
  }
  o.handshake_timeout = duration_option(vm, "handshake-timeout");
  o.reap_interval = duration_option(vm, "reap-interval");
  const auto on_eof = vm["on-eof"].as<std::string>();
  if (on_eof != "end" && on_eof != "reap")
    throw usage_error("--on-eof \"" + on_eof + "\": expected end or reap");
  o.end_on_eof = on_eof == "end";
  o.max_connections = vm["max-connections"].as<std::size_t>();
  o.max_per_ip = vm["max-per-ip"].as<std::size_t>();
  o.threads = vm["threads"].as<unsigned>();
  o.reuse_port = vm.count("reuse-port") != 0;
  if (vm.count("auth-token-file") != 0)
    o.auth_token = read_token_file(vm["auth-token-file"].as<std::string>());
  deadpeer::validate(o);
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const auto options = describe_options();
  try {
    po::variables_map vm;
    try {
      po::store(po::parse_command_line(argc, argv, options), vm);
      if (vm.count("config") != 0) {
        const auto path = vm["config"].as<std::string>();
        std::ifstream in(path);
        if (!in) throw usage_error("--config \"" + path + "\": cannot be read");
        po::store(po::parse_config_file(in, options), vm);
      }
      po::notify(vm);
    } catch (const po::error& e) {
      throw usage_error(std::string(e.what()) + " (see --help)");
    }
    if (vm.count("help") != 0) {
      std::cout << "Usage: heartbeat-server [options]\n\n"
                   "Holds heartbeating deadpeer clients, notices every death (FIN, RST, kernel\n"
                   "keepalive, user timeout, heartbeat silence), reaps ghost connections, and\n"
                   "records when and why each connection ended in SQLite.\n\n"
                << options << "\n";
      return 0;
    }
    const bool verbose = vm.count("verbose") != 0;
    auto server_options = build_options(vm);
    if (verbose)
      server_options.on_event = [](const std::string& event) { std::cout << event << std::endl; };

    // Every connection is a descriptor: take all the process may have.
    if (rlimit limit{}; ::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
      limit.rlim_cur = limit.rlim_max;
      ::setrlimit(RLIMIT_NOFILE, &limit);
    }
    boost::asio::io_context io;
    deadpeer::server server(io, std::move(server_options));
    server.start();
    std::cout << "heartbeat-server listening on " << server.local_endpoint();
    if (const auto control = server.control_endpoint())
      std::cout << ", control API on http://" << *control;
    std::cout << std::endl;
    std::cout << "heartbeat-server: " << server.threads() << " event loop(s)" << std::endl;

    boost::asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](const boost::system::error_code& ec, int) {
      if (ec) return;
      server.stop([&io] { io.stop(); });
    });
    io.run();
    std::cout << "heartbeat-server stopped" << std::endl;
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
