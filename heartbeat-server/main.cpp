// heartbeat-server: holds client connections with the configured kernel keepalive and
// reports, for every connection that ends, why it ended and after how long. This first
// version speaks no application protocol: it reads and discards, so what it measures is
// the kernel's own detection (FIN, RST, keepalive, user timeout).
#include <deadpeer/cause.hpp>
#include <deadpeer/config_error.hpp>
#include <deadpeer/duration.hpp>
#include <deadpeer/endpoint.hpp>
#include <deadpeer/keepalive.hpp>

#include <boost/asio.hpp>
#include <boost/program_options.hpp>

#include <array>
#include <chrono>
#include <iostream>

namespace {

namespace asio = boost::asio;
namespace po = boost::program_options;
using tcp = asio::ip::tcp;
using std::chrono::steady_clock;

constexpr int exit_usage = 2;

class usage_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

std::string errno_name(const std::error_code& ec) {
  if (deadpeer::classify(ec, {}).cause == deadpeer::cause::peer_closed) return "EOF";
  for (const auto& e : deadpeer::known_errors())
    if (e.platform == "linux" && e.number == ec.value() &&
        ec.category() != asio::error::get_misc_category())
      return std::string(e.name);
  return ec.message();
}

asio::awaitable<void> hold(tcp::socket socket, tcp::endpoint peer,
                           deadpeer::keepalive_settings keepalive) {
  const auto opened = steady_clock::now();
  boost::system::error_code ec;
  std::array<char, 4096> buffer{};
  for (;;) {
    const auto [read_ec, n] =
        co_await socket.async_read_some(asio::buffer(buffer), asio::as_tuple(asio::use_awaitable));
    if (!read_ec) continue;  // data is proof of life; this server has no use for it
    const deadpeer::connection_context context{
        .op = deadpeer::connection_context::operation::reading,
        .data_in_flight = false,
        .keepalive_armed = keepalive.enabled,
        .user_timeout_armed = keepalive.user_timeout.count() != 0};
    const auto verdict = deadpeer::classify(read_ec, context);
    const auto lived =
        std::chrono::duration_cast<std::chrono::milliseconds>(steady_clock::now() - opened);
    std::cout << "ended " << peer << " after " << deadpeer::format_duration(lived) << ": "
              << deadpeer::to_string(verdict.cause) << " (detected by "
              << deadpeer::to_string(verdict.detected_by) << ", " << errno_name(read_ec) << ")"
              << std::endl;
    break;
  }
  socket.close(ec);
}

asio::awaitable<void> accept_loop(tcp::acceptor& acceptor, deadpeer::keepalive_options options,
                                  deadpeer::keepalive_settings settings) {
  for (;;) {
    tcp::endpoint peer;
    auto [ec, socket] = co_await acceptor.async_accept(peer, asio::as_tuple(asio::use_awaitable));
    if (ec == asio::error::operation_aborted) co_return;
    if (ec) {
      // EMFILE and friends: report and keep serving the connections we have.
      std::cerr << "heartbeat-server: accept: " << ec.message() << std::endl;
      continue;
    }
    if (const auto applied = deadpeer::apply_keepalive(socket.native_handle(), options)) {
      std::cerr << "heartbeat-server: keepalive: " << applied.message() << std::endl;
      continue;
    }
    std::cout << "accepted " << peer << std::endl;
    asio::co_spawn(acceptor.get_executor(), hold(std::move(socket), peer, settings),
                   [](const std::exception_ptr& e) {
                     if (e) std::rethrow_exception(e);
                   });
  }
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description options("Options");
  options.add_options()             //
      ("help,h", "show this help")  //
      ("listen,l",
       po::value<std::string>()->default_value("127.0.0.1:7700")->value_name("HOST:PORT"),
       "address to accept clients on; [::1]:7700 for IPv6; port 0 picks a free port")  //
      ("keepalive,k", po::value<std::string>()->value_name("SPEC"),
       "kernel keepalive for accepted sockets: idle:interval:count[:user_timeout], e.g. "
       "60s:10s:5; empty fields keep the system default; \"off\" disables it")  //
      ("preset,p", po::value<std::string>()->value_name("NAME"),
       "keepalive preset (linux-default, lan, mobile, iot, aggressive; see probe presets); "
       "--keepalive and --user-timeout override its fields")  //
      ("user-timeout,u", po::value<std::string>()->value_name("DURATION"),
       "TCP_USER_TIMEOUT for accepted sockets, e.g. 30s; 0s turns it off");
  try {
    po::variables_map vm;
    try {
      po::store(po::parse_command_line(argc, argv, options), vm);
      po::notify(vm);
    } catch (const po::error& e) {
      throw usage_error(std::string(e.what()) + " (see --help)");
    }
    if (vm.count("help") != 0) {
      std::cout << "Usage: heartbeat-server [options]\n\n"
                   "Accepts TCP clients, applies kernel keepalive to each, and prints one line\n"
                   "per connection that ends: how long it lived and why it ended.\n\n"
                << options << "\n";
      return 0;
    }
    deadpeer::keepalive_options keepalive;
    if (vm.count("preset") != 0)
      keepalive = deadpeer::find_keepalive_preset(vm["preset"].as<std::string>()).options;
    if (vm.count("keepalive") != 0)
      keepalive = deadpeer::overlay(keepalive,
                                    deadpeer::parse_keepalive(vm["keepalive"].as<std::string>()));
    if (vm.count("user-timeout") != 0)
      keepalive.user_timeout = deadpeer::parse_duration(vm["user-timeout"].as<std::string>());
    deadpeer::validate(keepalive);
    const auto listen = deadpeer::parse_endpoint(vm["listen"].as<std::string>());

    asio::io_context io;
    tcp::acceptor acceptor(io, listen);
    const auto settings = deadpeer::resolve(keepalive, deadpeer::read_kernel_defaults());
    std::cout << "listening on " << acceptor.local_endpoint() << ", keepalive "
              << deadpeer::to_string(deadpeer::to_options(settings)) << std::endl;
    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](const boost::system::error_code&, int) { io.stop(); });
    asio::co_spawn(io, accept_loop(acceptor, keepalive, settings), [](const std::exception_ptr& e) {
      if (e) std::rethrow_exception(e);
    });
    io.run();
    return 0;
  } catch (const usage_error& e) {
    std::cerr << "heartbeat-server: " << e.what() << "\n";
    return exit_usage;
  } catch (const deadpeer::config_error& e) {
    std::cerr << "heartbeat-server: " << e.what() << "\n";
    return exit_usage;
  } catch (const std::exception& e) {
    std::cerr << "heartbeat-server: error: " << e.what() << "\n";
    return 1;
  }
}
