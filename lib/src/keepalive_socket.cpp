// Setting and reading keepalive options on a real socket. Only the Linux branch is
// exercised by deadpeer's tests; the macOS and Windows branches follow those systems'
// documented option names and are compiled there but not verified here.
#include <deadpeer/keepalive.hpp>

#include <cerrno>

#ifdef _WIN32
#include <mstcpip.h>
#include <ws2tcpip.h>
#else
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#endif

namespace deadpeer {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::error_code last_error() {
#ifdef _WIN32
  return {WSAGetLastError(), std::system_category()};
#else
  return {errno, std::generic_category()};
#endif
}

std::error_code set_int(native_socket s, int level, int name, int value) {
  if (::setsockopt(s, level, name, reinterpret_cast<const char*>(&value), sizeof value) != 0)
    return last_error();
  return {};
}

int get_int(native_socket s, int level, int name, std::error_code& ec) {
  int value = 0;
#ifdef _WIN32
  int len = sizeof value;
#else
  socklen_t len = sizeof value;
#endif
  if (!ec && ::getsockopt(s, level, name, reinterpret_cast<char*>(&value), &len) != 0)
    ec = last_error();
  return value;
}

#if defined(__APPLE__)
constexpr int idle_option = TCP_KEEPALIVE;  // macOS names TCP_KEEPIDLE this way
#elif !defined(_WIN32) || defined(TCP_KEEPIDLE)
constexpr int idle_option = TCP_KEEPIDLE;
#endif

}  // namespace

std::error_code apply_keepalive(native_socket s, const keepalive_options& o) {
  if (auto ec = set_int(s, SOL_SOCKET, SO_KEEPALIVE, o.enabled ? 1 : 0)) return ec;
  if (o.enabled) {
    if (o.idle)
      if (auto ec = set_int(s, IPPROTO_TCP, idle_option, static_cast<int>(o.idle->count())))
        return ec;
    if (o.interval)
      if (auto ec = set_int(s, IPPROTO_TCP, TCP_KEEPINTVL, static_cast<int>(o.interval->count())))
        return ec;
    if (o.count)
      if (auto ec = set_int(s, IPPROTO_TCP, TCP_KEEPCNT, *o.count)) return ec;
  }
  if (o.user_timeout) {
#if defined(TCP_USER_TIMEOUT)
    if (auto ec =
            set_int(s, IPPROTO_TCP, TCP_USER_TIMEOUT, static_cast<int>(o.user_timeout->count())))
      return ec;
#elif defined(__APPLE__)
    // macOS: TCP_RXT_CONNDROPTIME takes whole seconds.
    if (auto ec = set_int(s, IPPROTO_TCP, TCP_RXT_CONNDROPTIME,
                          static_cast<int>((o.user_timeout->count() + 999) / 1000)))
      return ec;
#else
    if (o.user_timeout->count() != 0) return std::make_error_code(std::errc::not_supported);
#endif
  }
  return {};
}

keepalive_settings read_keepalive(native_socket s, std::error_code& ec) {
  ec.clear();
  keepalive_settings k;
  k.enabled = get_int(s, SOL_SOCKET, SO_KEEPALIVE, ec) != 0;
  k.idle = seconds(get_int(s, IPPROTO_TCP, idle_option, ec));
  k.interval = seconds(get_int(s, IPPROTO_TCP, TCP_KEEPINTVL, ec));
  k.count = get_int(s, IPPROTO_TCP, TCP_KEEPCNT, ec);
#if defined(TCP_USER_TIMEOUT)
  k.user_timeout = milliseconds(get_int(s, IPPROTO_TCP, TCP_USER_TIMEOUT, ec));
#elif defined(__APPLE__)
  k.user_timeout = seconds(get_int(s, IPPROTO_TCP, TCP_RXT_CONNDROPTIME, ec));
#endif
  return k;
}

}  // namespace deadpeer
