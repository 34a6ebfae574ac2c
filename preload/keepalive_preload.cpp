// libdeadpeer-preload.so: kernel keepalive and TCP_USER_TIMEOUT for a program that cannot
// be rebuilt. Loaded with LD_PRELOAD (probe wrap does that), it sets the options on every
// TCP socket the program accepts (accept, accept4) or connects (connect), IPv4 and IPv6.
//
// What this library decides:
// - Configured from the environment once, at load: DEADPEER_KEEPALIVE
//   (idle:interval:count[:user_timeout], durations with units, as probe writes them),
//   DEADPEER_USER_TIMEOUT (a duration), DEADPEER_ONLY_PORT (only sockets whose local or
//   remote port is this one). A setting it cannot read disables it, said once on stderr;
//   the program runs as it would without us.
// - Never fails the program's own call: the options are best effort, errors ignored, errno
//   preserved. Non-TCP sockets (UDP, Unix) are left alone.
// - On connect() the options go on before the call (the kernel keeps them), so a
//   non-blocking connect is covered too.
// - Says once on stderr what it applies and the worst case it gives for an idle dead peer
//   (idle + interval × count, or the user timeout's first probe at or past it).
// - No C++ runtime beyond what the compiler needs: it is loaded into foreign programs.
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

struct settings {
  bool valid = false;
  long idle_s = 0, interval_s = 0, count = 0;  // 0: leave the system's value
  long user_timeout_ms = -1;                   // -1: leave it
  long only_port = 0;                          // 0: every port
};

settings config;
bool announced = false;

using accept_fn = int (*)(int, sockaddr*, socklen_t*);
using accept4_fn = int (*)(int, sockaddr*, socklen_t*, int);
using connect_fn = int (*)(int, const sockaddr*, socklen_t);

// "250ms", "10s", "5m", "2h" -> milliseconds; -1 when it is not one.
long parse_ms(const char* text, const char* end) {
  if (text == end) return -1;
  char* unit = nullptr;
  const double value = std::strtod(text, &unit);
  if (unit == text || value < 0) return -1;
  const auto unit_length = static_cast<std::size_t>(end - unit);
  auto is = [&](const char* u) { return std::strlen(u) == unit_length && std::strncmp(unit, u, unit_length) == 0; };
  double ms = -1;
  if (is("ms")) ms = value;
  if (is("s")) ms = value * 1000;
  if (is("m")) ms = value * 60'000;
  if (is("h")) ms = value * 3'600'000;
  return ms < 0 || ms > 1e12 ? -1 : static_cast<long>(ms);
}

bool parse_settings() {
  const char* spec = std::getenv("DEADPEER_KEEPALIVE");
  const char* user_timeout = std::getenv("DEADPEER_USER_TIMEOUT");
  const char* port = std::getenv("DEADPEER_ONLY_PORT");
  if (spec != nullptr && *spec != '\0') {
    const char* field[4] = {spec, nullptr, nullptr, nullptr};
    const char* ends[4] = {nullptr, nullptr, nullptr, nullptr};
    int fields = 1;
    for (const char* p = spec;; ++p) {
      if (*p == ':' || *p == '\0') {
        ends[fields - 1] = p;
        if (*p == '\0') break;
        if (fields == 4) return false;
        field[fields++] = p + 1;
      }
    }
    if (fields < 3) return false;
    const long idle = parse_ms(field[0], ends[0]), interval = parse_ms(field[1], ends[1]);
    char* count_end = nullptr;
    const long count = std::strtol(field[2], &count_end, 10);
    if (idle < 1000 || interval < 1000 || count_end != ends[2] || count < 1 || count > 127)
      return false;
    config.idle_s = idle / 1000;
    config.interval_s = interval / 1000;
    config.count = count;
    if (fields == 4 && (config.user_timeout_ms = parse_ms(field[3], ends[3])) < 0) return false;
  }
  if (user_timeout != nullptr && *user_timeout != '\0' &&
      (config.user_timeout_ms = parse_ms(user_timeout, user_timeout + std::strlen(user_timeout))) < 0)
    return false;
  if (port != nullptr && *port != '\0') {
    char* end = nullptr;
    config.only_port = std::strtol(port, &end, 10);
    if (*end != '\0' || config.only_port < 1 || config.only_port > 65535) return false;
  }
  return config.count > 0 || config.user_timeout_ms >= 0;
}

__attribute__((constructor)) void load() {
  config.valid = parse_settings();
  if (!config.valid && (std::getenv("DEADPEER_KEEPALIVE") || std::getenv("DEADPEER_USER_TIMEOUT")))
    std::fprintf(stderr,
                 "deadpeer-preload: cannot read DEADPEER_KEEPALIVE=\"%s\" / DEADPEER_USER_TIMEOUT=\"%s\" "
                 "/ DEADPEER_ONLY_PORT=\"%s\"; nothing is changed\n",
                 std::getenv("DEADPEER_KEEPALIVE") ? std::getenv("DEADPEER_KEEPALIVE") : "",
                 std::getenv("DEADPEER_USER_TIMEOUT") ? std::getenv("DEADPEER_USER_TIMEOUT") : "",
                 std::getenv("DEADPEER_ONLY_PORT") ? std::getenv("DEADPEER_ONLY_PORT") : "");
}

unsigned short port_of(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port);
  if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port);
  return 0;
}

void announce() {
  if (announced) return;
  announced = true;
  long idle_bound_ms = -1;
  if (config.count > 0) {
    idle_bound_ms = (config.idle_s + config.interval_s * config.count) * 1000;
    if (config.user_timeout_ms > 0) {  // the abort comes at the first probe at or past it
      long probes = 1;
      while (probes < 1000 && (config.idle_s + config.interval_s * probes) * 1000 < config.user_timeout_ms)
        ++probes;
      idle_bound_ms = (config.idle_s + config.interval_s * probes) * 1000;
    }
  }
  std::fprintf(stderr, "deadpeer-preload: on accepted and connected TCP sockets");
  if (config.only_port != 0) std::fprintf(stderr, " of port %ld", config.only_port);
  if (config.count > 0)
    std::fprintf(stderr, ": keepalive idle %lds, interval %lds, count %ld", config.idle_s,
                 config.interval_s, config.count);
  if (config.user_timeout_ms >= 0) std::fprintf(stderr, ", user timeout %ldms", config.user_timeout_ms);
  if (idle_bound_ms >= 0)
    std::fprintf(stderr,
                 "; a dead idle peer is noticed after %.1fs nominally (the kernel's timers run "
                 "a little later: `probe bound` gives the bound)",
                 static_cast<double>(idle_bound_ms) / 1000);
  std::fprintf(stderr, "\n");
}

// Applies the settings to `fd` when it is a TCP socket (and on the chosen port).
void apply(int fd, unsigned short remote_port) {
  if (!config.valid || fd < 0) return;
  const int saved_errno = errno;
  int type = 0, protocol = 0, domain = 0;
  socklen_t length = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) != 0 || type != SOCK_STREAM) {
    errno = saved_errno;
    return;
  }
  length = sizeof protocol;
  ::getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &length);
  length = sizeof domain;
  ::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &length);
  if (protocol != IPPROTO_TCP || (domain != AF_INET && domain != AF_INET6)) {
    errno = saved_errno;
    return;
  }
  if (config.only_port != 0) {
    sockaddr_storage local{};
    socklen_t local_length = sizeof local;
    const bool local_ok = ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_length) == 0;
    if (remote_port != config.only_port && (!local_ok || port_of(local) != config.only_port)) {
      errno = saved_errno;
      return;
    }
  }
  if (config.count > 0) {
    const int on = 1;
    const int idle = static_cast<int>(config.idle_s), interval = static_cast<int>(config.interval_s),
              count = static_cast<int>(config.count);
    ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
  }
  if (config.user_timeout_ms >= 0) {
    const unsigned int timeout = static_cast<unsigned int>(config.user_timeout_ms);
    ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout, sizeof timeout);
  }
  announce();
  errno = saved_errno;
}

unsigned short remote_port(int fd) {
  sockaddr_storage peer{};
  socklen_t length = sizeof peer;
  return ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &length) == 0 ? port_of(peer) : 0;
}

template <typename F>
F next(const char* name) {
  return reinterpret_cast<F>(::dlsym(RTLD_NEXT, name));
}

}  // namespace

extern "C" {

int accept(int fd, sockaddr* address, socklen_t* length) {
  static const auto real = next<accept_fn>("accept");
  const int accepted = real(fd, address, length);
  if (accepted >= 0) apply(accepted, remote_port(accepted));
  return accepted;
}

int accept4(int fd, sockaddr* address, socklen_t* length, int flags) {
  static const auto real = next<accept4_fn>("accept4");
  const int accepted = real(fd, address, length, flags);
  if (accepted >= 0) apply(accepted, remote_port(accepted));
  return accepted;
}

int connect(int fd, const sockaddr* address, socklen_t length) {
  static const auto real = next<connect_fn>("connect");
  if (address != nullptr && length >= sizeof(sa_family_t)) {
    sockaddr_storage to{};
    std::memcpy(&to, address, length < sizeof to ? length : sizeof to);
    apply(fd, port_of(to));
  }
  return real(fd, address, length);
}

}  // extern "C"
