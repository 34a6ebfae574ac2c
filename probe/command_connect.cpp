// probe connect: a real heartbeat client. It is what users point at their own server to
// watch RTT and see why a connection ends, and what the experiments run as the victim.
#include "cli.hpp"
#include "connect_faults.hpp"

#include <deadpeer/cause.hpp>

#include <deadpeer/clock.hpp>
#include <deadpeer/config_error.hpp>
#include <deadpeer/duration.hpp>
#include <deadpeer/endpoint.hpp>
#include <deadpeer/keepalive.hpp>
#include <deadpeer/secret_file.hpp>
#include <deadpeer/session.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <sys/prctl.h>

#include <csignal>
#include <cstdlib>
#include <iostream>
#include <random>

namespace probe {
namespace {

namespace asio = boost::asio;
namespace po = boost::program_options;
using namespace asio::experimental::awaitable_operators;
using std::chrono::milliseconds;
using tcp = asio::ip::tcp;

struct connect_settings {
  tcp::endpoint server;
  deadpeer::session_config session;
  bool reconnect = false;
  bool verbose = false;
  bool lab = false;  ///< run by an experiment: extra machine-readable output
  milliseconds connect_timeout{5000};
};

std::string seconds_text(std::int64_t ns) {
  return deadpeer::format_duration(milliseconds(ns / 1'000'000));
}

// One connection: connect (bounded), run a session until it ends. Returns the end.
asio::awaitable<std::optional<deadpeer::session_end>> run_once(
    const connect_settings& s, std::shared_ptr<deadpeer::session>& current) {
  auto executor = co_await asio::this_coro::executor;
  tcp::socket socket(executor);
  asio::steady_timer deadline(executor, s.connect_timeout);
  const auto result =
      co_await (socket.async_connect(s.server, asio::as_tuple(asio::use_awaitable)) ||
                deadline.async_wait(asio::as_tuple(asio::use_awaitable)));
  if (result.index() == 1) {
    // Our own deadline, before the kernel's SYN retries ran out: still a connect timeout.
    std::cout << "cannot connect to " << s.server << ": connect_timeout (no answer within "
              << deadpeer::format_duration(s.connect_timeout) << "): "
              << deadpeer::explain(deadpeer::cause::connect_timeout).on_the_wire << std::endl;
    co_return std::nullopt;
  }
  if (const auto [ec] = std::get<0>(result); ec) {
    const std::error_code error(ec.value(), std::system_category());
    std::cout << "cannot connect to " << s.server << ": "
              << (ec.category() == boost::system::system_category()
                      ? describe_connect_failure(ec.value())
                      : ec.message() + " (" +
                            std::string(deadpeer::to_string(
                                deadpeer::classify(error, {.op = deadpeer::connection_context::
                                                               operation::connecting})
                                    .cause)) +
                            ")")
              << std::endl;
    co_return std::nullopt;
  }

  if (s.lab) {  // machine-readable: the experiment watches this 4-tuple on the wire
    boost::system::error_code ignored;
    std::cout << "local " << socket.local_endpoint(ignored) << std::endl;
  }
  asio::steady_timer ended(executor, std::chrono::steady_clock::time_point::max());
  std::optional<deadpeer::session_end> end;
  std::int64_t last_rtt_print = 0;
  deadpeer::session_handlers h;
  h.on_established = [&](const deadpeer::session_established& e) {
    std::cout << "connected to " << s.server << " as " << e.client_id << ": interval "
              << deadpeer::format_duration(e.interval) << ", dead after "
              << deadpeer::format_duration(e.dead_after) << ", session " << e.session_id
              << std::endl;
  };
  h.on_rtt = [&](std::chrono::nanoseconds rtt) {
    const auto now = deadpeer::monotonic_ns();
    if (!s.verbose && now - last_rtt_print < 1'000'000'000) return;  // at most 1 line/s
    last_rtt_print = now;
    std::cout << "rtt " << static_cast<double>(rtt.count()) / 1e6 << " ms" << std::endl;
  };
  h.on_end = [&](const deadpeer::session_end& e) {
    end = e;
    ended.cancel();
  };
  current = deadpeer::session::start(std::move(socket), s.session, std::move(h));
  co_await ended.async_wait(asio::as_tuple(asio::use_awaitable));
  current.reset();
  if (end) {
    std::cout << "ended: " << deadpeer::to_string(end->cause) << " (detected by "
              << deadpeer::to_string(end->detected_by) << ") after "
              << seconds_text(end->decided_ns - end->last_heard_ns) << " of silence";
    if (end->error) std::cout << ", " << end->error.message();
    if (end->protocol_error) std::cout << ", " << deadpeer::wire::to_string(*end->protocol_error);
    std::cout << std::endl;
    if (s.lab)  // machine-readable, for the experiment that runs this client
      std::cout << "end cause=" << deadpeer::to_string(end->cause)
                << " detected_by=" << deadpeer::to_string(end->detected_by) << " errno="
                << (end->error.category() == std::generic_category() ||
                            end->error.category() == std::system_category()
                        ? end->error.value()
                        : 0)
                << " decided_mono_ns=" << end->decided_ns
                << " silence_ms=" << static_cast<double>(end->decided_ns - end->last_heard_ns) / 1e6
                << std::endl;
  }
  co_return end;
}

}  // namespace

int command_connect(const std::vector<std::string>& args) {
  po::options_description options("Options");
  options.add_options()  //
      ("server,s",
       po::value<std::string>()->default_value("127.0.0.1:7700")->value_name("HOST:PORT"),
       "heartbeat-server to connect to")  //
      ("id", po::value<std::string>()->default_value("probe")->value_name("NAME"),
       "client id sent in HELLO (1-64 bytes); a second client with the same id replaces the "
       "first")  //
      ("heartbeat", po::value<std::string>()->default_value("500ms")->value_name("INTERVAL|off"),
       "heartbeat interval to request; off: send no PINGs and run no detector (kernel "
       "keepalive only)")  //
      ("dead-after", po::value<std::string>()->value_name("DURATION"),
       "declare the server dead after this silence (default: 3 x the agreed interval)")  //
      ("keepalive,k", po::value<std::string>()->value_name("SPEC"),
       "kernel keepalive idle:interval:count[:user_timeout], e.g. 1s:1s:3")                     //
      ("user-timeout,u", po::value<std::string>()->value_name("DURATION"), "TCP_USER_TIMEOUT")  //
      ("auth-token-file", po::value<std::string>()->value_name("FILE"),
       "the secret of a server started with --auth-token-file: the first line of FILE (or "
       "set DEADPEER_AUTH_TOKEN in the environment)")  //
      ("auth-token", po::value<std::string>()->value_name("TOKEN"),
       "the secret itself; other users see it in ps: prefer --auth-token-file or "
       "DEADPEER_AUTH_TOKEN")                    //
      ("reconnect", "reconnect with back-off (100ms doubling to 5s) after every end")  //
      ("lab-signals",
       "fault-lab hooks: SIGUSR1 closes with RST (SO_LINGER 0), SIGUSR2 half-closes and goes "
       "quiet (the experiments send these)")  //
      ("verbose,v", "print every RTT sample (default: at most one per second)");
  po::variables_map vm;
  if (!parse_command_line(args, options, {},
                          "Usage: probe connect [--server HOST:PORT] [--id NAME] "
                          "[--heartbeat 500ms] [--reconnect]\n\n"
                          "Runs one heartbeat client: prints the agreed settings, RTT, and why "
                          "the connection\nended. Ctrl-C closes it gracefully (BYE).",
                          vm, std::cout))
    return exit_ok;

  connect_settings s;
  s.server = deadpeer::parse_endpoint(vm["server"].as<std::string>());
  s.session.role = deadpeer::session_role::client;
  s.session.client_id = vm["id"].as<std::string>();
  if (s.session.client_id.empty() || s.session.client_id.size() > deadpeer::wire::max_client_id)
    throw usage_error("--id must be 1 to 64 bytes");
  const auto heartbeat = vm["heartbeat"].as<std::string>();
  if (heartbeat == "off") {
    s.session.heartbeat = false;
    s.session.requested_interval = milliseconds(0);
  } else {
    s.session.requested_interval = deadpeer::parse_duration(heartbeat);
    if (s.session.requested_interval.count() == 0)
      throw usage_error("--heartbeat 0: write off to disable heartbeats");
  }
  if (vm.count("dead-after") != 0)
    s.session.detector = deadpeer::fixed_detector_config{
        .interval = milliseconds(1000),
        .multiplier = 3.0,
        .timeout = deadpeer::parse_duration(vm["dead-after"].as<std::string>())};
  if (vm.count("keepalive") != 0)
    s.session.keepalive = deadpeer::parse_keepalive(vm["keepalive"].as<std::string>());
  if (vm.count("user-timeout") != 0) {
    s.session.keepalive = s.session.keepalive.value_or(deadpeer::keepalive_options{});
    s.session.keepalive->user_timeout =
        deadpeer::parse_duration(vm["user-timeout"].as<std::string>());
    deadpeer::validate(*s.session.keepalive);
  }
  if (vm.count("auth-token") + vm.count("auth-token-file") > 1)
    throw usage_error("--auth-token and --auth-token-file: give the secret one way");
  if (vm.count("auth-token-file") != 0) {
    try {
      s.session.auth_token = deadpeer::read_secret_file(vm["auth-token-file"].as<std::string>());
    } catch (const deadpeer::config_error& e) {
      throw usage_error(std::string("--auth-token-file ") + e.what());
    }
  } else if (vm.count("auth-token") != 0) {
    s.session.auth_token = vm["auth-token"].as<std::string>();
    std::cerr << "probe connect: note: --auth-token is visible to other users of this host "
                 "(ps); --auth-token-file or DEADPEER_AUTH_TOKEN keep it out of the command line"
              << std::endl;
  } else if (const char* from_environment = std::getenv("DEADPEER_AUTH_TOKEN")) {
    s.session.auth_token = from_environment;
  }
  s.reconnect = vm.count("reconnect") != 0;
  s.verbose = vm.count("verbose") != 0;
  s.lab = vm.count("lab-signals") != 0;

  asio::io_context io;
  bool interrupted = false;
  std::shared_ptr<deadpeer::session> current;
  std::optional<deadpeer::session_end> last_end;
  asio::signal_set signals(io, SIGINT, SIGTERM);
  asio::steady_timer backoff_timer(io);
  signals.async_wait([&](const boost::system::error_code& ec, int) {
    if (ec) return;
    interrupted = true;
    backoff_timer.cancel();
    if (current) current->close(deadpeer::wire::bye_reason::normal);
  });
  // Fault-lab hooks: SIGUSR1 closes abortively (SO_LINGER 0: the server sees RST),
  // SIGUSR2 half-closes and goes quiet (the server sees FIN, then silence).
  asio::signal_set lab_signals(io, SIGUSR1, SIGUSR2);
  std::function<void()> wait_lab_signal = [&] {
    lab_signals.async_wait([&](const boost::system::error_code& ec, int signal) {
      if (ec) return;
      if (current && signal == SIGUSR1)
        current->abort(deadpeer::cause::local_close, deadpeer::detected_by::application);
      if (current && signal == SIGUSR2) current->half_close();
      wait_lab_signal();
    });
  };
  if (vm.count("lab-signals") != 0) {
    wait_lab_signal();
    // A lab victim never outlives the experiment that runs it, even a stopped one.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  }
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        std::minstd_rand rng(std::random_device{}());
        milliseconds backoff(100);
        while (!interrupted) {
          last_end = co_await run_once(s, current);
          if (!s.reconnect || interrupted) break;
          if (last_end && last_end->frames_received > 1) backoff = milliseconds(100);
          std::uniform_int_distribution<long> jitter(0, backoff.count() / 2);
          backoff_timer.expires_after(backoff + milliseconds(jitter(rng)));
          std::cout << "reconnecting in "
                    << deadpeer::format_duration(std::chrono::duration_cast<milliseconds>(
                           backoff_timer.expiry() - std::chrono::steady_clock::now()))
                    << std::endl;
          co_await backoff_timer.async_wait(asio::as_tuple(asio::use_awaitable));
          backoff = std::min(backoff * 2, milliseconds(5000));
        }
        signals.cancel();
        lab_signals.cancel();
      },
      [](const std::exception_ptr& e) {
        if (e) std::rethrow_exception(e);
      });
  io.run();
  if (interrupted) return exit_ok;
  return last_end && last_end->cause == deadpeer::cause::local_close ? exit_ok : exit_negative;
}

}  // namespace probe
