// probe speak: a well-behaved client of any TCP server (raw, a line of text, MQTT, HTTP,
// Redis) that holds one connection and says on stdout what happened, line by line. Target
// mode runs it as the victim inside the lab; users can point it at their own server to
// see it hold (or drop) an idle client. Plain POSIX sockets and poll(): one connection,
// one thread, nothing to hide.
//
// --never-close plays the other part: a program that leaks CLOSE_WAIT. After the server's
// FIN it keeps its socket open until it is killed, as a server that forgets to close its
// side does (the peer is gone, the socket stays, descriptors run out); probe doctor
// --close-wait-over then finds it. It waits in pause() until a signal ends it.
#include "cli.hpp"
#include "connect_faults.hpp"
#include "greeting.hpp"

#include <deadpeer/cause.hpp>
#include <deadpeer/clock.hpp>
#include <deadpeer/duration.hpp>
#include <deadpeer/endpoint.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <sstream>

namespace probe {
namespace {

namespace po = boost::program_options;
using std::chrono::milliseconds;
using clock_type = std::chrono::steady_clock;

std::string endpoint_text(const sockaddr_storage& a) {
  char host[INET6_ADDRSTRLEN] = {};
  unsigned short port = 0;
  if (a.ss_family == AF_INET) {
    const auto& v4 = reinterpret_cast<const sockaddr_in&>(a);
    ::inet_ntop(AF_INET, &v4.sin_addr, host, sizeof host);
    port = ntohs(v4.sin_port);
    return std::string(host) + ":" + std::to_string(port);
  }
  const auto& v6 = reinterpret_cast<const sockaddr_in6&>(a);
  ::inet_ntop(AF_INET6, &v6.sin6_addr, host, sizeof host);
  port = ntohs(v6.sin6_port);
  return "[" + std::string(host) + "]:" + std::to_string(port);
}

void say(const std::string& line) {
  std::cout << line << std::endl;
}

std::string error_words(int error) {
  return "errno=" + std::to_string(error) + " " + std::string(deadpeer::linux_errno_name(error));
}

bool send_all(int fd, const std::vector<std::byte>& bytes, int& error) {
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    const auto n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      error = errno;
      return false;
    }
    sent += static_cast<std::size_t>(n);
  }
  return true;
}

// Connects within `timeout`; returns the socket or -1 with `error` set.
int connect_within(const boost::asio::ip::tcp::endpoint& to, milliseconds timeout, int& error) {
  const int fd = ::socket(to.protocol().family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    error = errno;
    return -1;
  }
  if (::connect(fd, to.data(), static_cast<socklen_t>(to.size())) != 0 && errno != EINPROGRESS) {
    error = errno;
    ::close(fd);
    return -1;
  }
  pollfd p{.fd = fd, .events = POLLOUT, .revents = 0};
  const int ready = ::poll(&p, 1, static_cast<int>(timeout.count()));
  socklen_t len = sizeof error;
  if (ready <= 0) {
    error = ready == 0 ? ETIMEDOUT : errno;
  } else if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0) {
    error = errno;
  }
  if (error != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

int command_speak(const std::vector<std::string>& args) {
  po::options_description options("Options");
  options.add_options()  //
      ("server,s", po::value<std::string>()->value_name("HOST:PORT"),
       "the server to connect to")  //
      ("greeting,g", po::value<std::string>()->default_value("raw")->value_name("SPEC"),
       "what to say: raw (connect only), send:TEXT (then silence; \\r \\n \\t decoded), "
       "mqtt:keepalive=D (CONNECT, then PINGREQ every D), http[:interval=D] (a keep-alive GET "
       "every D, default 5s), redis[:interval=D] (PING every D, default 5s)")  //
      ("id", po::value<std::string>()->default_value("deadpeer-probe")->value_name("ID"),
       "MQTT client id")  //
      ("connect-timeout", po::value<std::string>()->default_value("5s")->value_name("DURATION"),
       "give up connecting after this long")  //
      ("never-close",
       "after the server ends the connection, keep the socket open until killed: a CLOSE_WAIT "
       "leak to find with probe doctor --close-wait-over");
  po::variables_map vm;
  if (!parse_command_line(
          args, options, {},
          "Usage: probe speak --server HOST:PORT [--greeting mqtt:keepalive=5s]\n\n"
          "Holds one connection to any TCP server as a well-behaved client would, and prints\n"
          "one line per event: \"connected local=A remote=B\", \"ready\" (the greeting was\n"
          "accepted), \"exchange N mono_ns=T\" (the server answered), \"end eof\" or\n"
          "\"end error errno=N NAME\" (the server closed or the connection failed). probe run\n"
          "--target-cmd uses it as the victim; it runs until the server ends the connection\n"
          "or it is killed. Exit status: 0 the connection ended, 1 it could not be made or\n"
          "the server's answers made no sense, 2 bad usage.\n\n"
          "With --never-close it never closes its socket after the server's FIN: it says\n"
          "\"holding pid=P\" and stays in CLOSE_WAIT until killed, the leak of a program\n"
          "that forgets to close (probe speak --server H:P --never-close &, then\n"
          "probe doctor --pid P --close-wait-over 0s).",
          vm, std::cout))
    return exit_ok;
  if (vm.count("server") == 0) throw usage_error("--server HOST:PORT is required");
  const auto server = deadpeer::parse_endpoint(vm["server"].as<std::string>());
  const auto g = greeting::parse(vm["greeting"].as<std::string>());
  const auto connect_timeout = deadpeer::parse_duration(vm["connect-timeout"].as<std::string>());
  if (connect_timeout <= milliseconds(0)) throw usage_error("--connect-timeout must be positive");

  int error = 0;
  const int fd = connect_within(server, connect_timeout, error);
  if (fd < 0) {
    say("cannot connect to " + vm["server"].as<std::string>() + ": " + error_words(error) + " " +
        describe_connect_failure(error));
    return exit_negative;
  }
  sockaddr_storage local{}, remote{};
  socklen_t len = sizeof local;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len);
  len = sizeof remote;
  ::getpeername(fd, reinterpret_cast<sockaddr*>(&remote), &len);
  say("connected local=" + endpoint_text(local) + " remote=" + endpoint_text(remote));

  const auto opening = g.opening(vm["id"].as<std::string>());
  if (!opening.empty() && !send_all(fd, opening, error)) {
    say("end error " + error_words(error));
    ::close(fd);
    return exit_ok;
  }
  answer_reader reader(g);
  const auto request = g.request(endpoint_text(remote));
  // MQTT pings a keep alive after CONNECT; HTTP and Redis ask at once.
  auto next_request =
      clock_type::now() + (g.kind == greeting::protocol::mqtt ? g.interval : milliseconds(0));
  const bool waits_for_answer =
      g.kind != greeting::protocol::raw && g.kind != greeting::protocol::send;
  if (!waits_for_answer) say("ready");
  int exchanges = 0;
  char buffer[16384];
  for (;;) {
    int timeout_ms = -1;
    if (g.periodic()) {
      const auto left = std::chrono::ceil<milliseconds>(next_request - clock_type::now());
      timeout_ms = static_cast<int>(std::max<long long>(0, left.count()));
    }
    pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
    const int ready = ::poll(&p, 1, timeout_ms);
    if (ready < 0 && errno != EINTR) {
      say("end error " + error_words(errno));
      break;
    }
    if (ready > 0) {
      const auto n = ::recv(fd, buffer, sizeof buffer, 0);
      if (n == 0) {
        say("end eof");
        break;
      }
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) continue;
        say("end error " + error_words(errno));
        break;
      }
      const int answers = reader.feed({buffer, static_cast<std::size_t>(n)});
      if (!reader.error().empty()) {
        say("end protocol " + reader.error());
        ::close(fd);
        return exit_negative;
      }
      for (int i = 0; i < answers; ++i) {
        if (++exchanges == 1) say("ready");
        say("exchange " + std::to_string(exchanges) +
            " mono_ns=" + std::to_string(deadpeer::monotonic_ns()));
      }
    }
    if (g.periodic() && clock_type::now() >= next_request) {
      if (!send_all(fd, request, error)) {
        say("end error " + error_words(error));
        break;
      }
      next_request += g.interval;
    }
  }
  if (vm.count("never-close") != 0) {
    // The leak: the descriptor stays open until a signal ends the program.
    say("holding pid=" + std::to_string(::getpid()) +
        " (--never-close: the socket stays in CLOSE_WAIT until this program is killed)");
    for (;;)
      ::pause();
  }
  ::close(fd);
  return exit_ok;
}

}  // namespace probe
