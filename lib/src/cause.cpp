// The classifier turns "read failed with 110" into "keepalive probes went unanswered", and
// says which layer noticed. The error number alone often cannot say this: ETIMEDOUT is
// produced by four different kernel timers, so the caller's context (connecting? data in
// flight? which timers armed?) picks the one that can actually have fired on Linux.
//
// detected_by names the mechanism whose event produced the error, not the call that
// reported it:
// - reset covers every error that is the kernel's echo of a reset: ECONNRESET, ECONNREFUSED
//   (RST to our SYN), EPIPE (write after an RST; an RST in CLOSE_WAIT is even reported as
//   EPIPE directly) and ECONNABORTED. The latter is our own stack's abort, which also sends
//   an RST; there is no "local stack" layer, and the code does not tell us whether
//   retransmissions or an operator (ss -K) caused it, so we do not claim retransmission.
// - ETIMEDOUT while connecting is SYN retransmission running out, unless TCP_USER_TIMEOUT
//   was armed (Linux applies it in SYN_SENT too, and is usually set well below the
//   ~2 min SYN budget). On an idle connection with keepalive, the probes did the detecting
//   even when TCP_USER_TIMEOUT chose the moment to give up. With neither timer armed and
//   nothing known to be in flight, retransmission is the only kernel path to ETIMEDOUT.
// - ENOTCONN / ESHUTDOWN mean the application used a socket whose connection was already
//   over: broken_pipe, detected by the application; the real cause was reported earlier.
// - ECANCELED / EBADF are our own close or cancel (Asio: operation_aborted, bad_descriptor).
// - Local conditions (EMFILE, ENOBUFS, EADDRINUSE, EADDRNOTAVAIL, EINVAL and other misuse)
//   get causes of their own, detected by the application: the peer had no part in them,
//   and lumping them into unknown would send the operator looking at the network.
// - Anything unrecognised is unknown/application: it surfaced in the application's call and
//   we do not pretend to know which layer produced it.
//
// Error codes are matched through their generic (errno) condition, so std::system_category,
// std::generic_category and converted boost::system codes all work, on any platform whose
// standard library maps its native codes to errno conditions. Asio's end-of-file lives in
// its own "asio.misc" category and is recognised by name, which also covers standalone Asio.
//
// The table of known errors describes Linux and Winsock as they print numbers. Linux rows
// take their numbers from <cerrno> (deadpeer builds on Linux only); Winsock rows are
// literal, since no header here defines them. Reading pasted text (messages, log lines,
// TCP states) is cause_lookup.cpp's business.
#include <deadpeer/cause.hpp>

#include <array>
#include <cerrno>
#include <cstddef>
#include <string_view>

namespace deadpeer {
namespace {

constexpr std::string_view linux_ = "linux";
constexpr std::string_view winsock = "winsock";

// A Linux row takes its number from the E* macro of <cerrno> and its name from the same
// token, so the two cannot disagree and no number differs from the header's.
#define DEADPEER_LINUX_ERRNO(name) name, #name, linux_

constexpr auto errors = std::to_array<known_error>({
    {DEADPEER_LINUX_ERRNO(EINTR), cause::not_a_failure,
     "a signal interrupted a blocking call; retry it"},
    {DEADPEER_LINUX_ERRNO(EBADF), cause::local_close,
     "the descriptor was already closed by us (Asio: bad_descriptor)"},
    {DEADPEER_LINUX_ERRNO(EAGAIN), cause::not_a_failure,
     "a non-blocking call would block, or SO_RCVTIMEO/SO_SNDTIMEO expired"},
    {DEADPEER_LINUX_ERRNO(EWOULDBLOCK), cause::not_a_failure, "the same value as EAGAIN on Linux"},
    {DEADPEER_LINUX_ERRNO(EPIPE), cause::broken_pipe,
     "write after the connection was reset or shut down; SIGPIPE unless MSG_NOSIGNAL"},
    {DEADPEER_LINUX_ERRNO(ENETDOWN), cause::network_unreachable, "the local interface is down"},
    {DEADPEER_LINUX_ERRNO(ENETUNREACH), cause::network_unreachable,
     "no route: our own link is down, or a router said the network is unreachable"},
    {DEADPEER_LINUX_ERRNO(ENETRESET), cause::keepalive_timeout,
     "Winsock meaning (10052): keepalive found the peer gone; Linux TCP does not normally report "
     "it"},
    {DEADPEER_LINUX_ERRNO(ECONNABORTED), cause::local_abort,
     "our own stack dropped the connection (e.g. ss -K); ECONNRESET is the peer's RST. Linux "
     "accept() does not return it for a client that reset while queued: accept succeeds and "
     "the first recv gets ECONNRESET"},
    {DEADPEER_LINUX_ERRNO(ECONNRESET), cause::peer_reset, "an RST arrived from the peer"},
    {DEADPEER_LINUX_ERRNO(ENOTCONN), cause::broken_pipe,
     "the socket is no longer (or not yet) connected; an earlier error holds the cause"},
    {DEADPEER_LINUX_ERRNO(ESHUTDOWN), cause::broken_pipe,
     "send after shutdown; Linux TCP reports EPIPE for this instead"},
    {DEADPEER_LINUX_ERRNO(ETIMEDOUT), cause::keepalive_timeout,
     "SYN retries while connecting, keepalive probes while idle, retransmissions or "
     "TCP_USER_TIMEOUT while sending: which one depends on what the connection was doing"},
    {DEADPEER_LINUX_ERRNO(ECONNREFUSED), cause::connection_refused,
     "our SYN was answered with RST: nothing listens on that port"},
    {DEADPEER_LINUX_ERRNO(EHOSTDOWN), cause::host_unreachable,
     "an ICMP \"destination host unknown\" came back; treated like EHOSTUNREACH"},
    {DEADPEER_LINUX_ERRNO(EHOSTUNREACH), cause::host_unreachable,
     "ICMP host unreachable (one round trip), or ARP/neighbour discovery for the next hop "
     "failed, which takes about 3 s of unanswered requests"},
    {DEADPEER_LINUX_ERRNO(ECANCELED), cause::local_close,
     "we cancelled the operation or closed the socket (Asio: operation_aborted)"},
    {DEADPEER_LINUX_ERRNO(EINPROGRESS), cause::not_a_failure,
     "not a failure: a non-blocking connect has started; wait until the socket is writable, "
     "then read SO_ERROR for the outcome"},
    {DEADPEER_LINUX_ERRNO(EALREADY), cause::not_a_failure,
     "not a failure: connect() again while a non-blocking connect is still in progress"},
    {DEADPEER_LINUX_ERRNO(EISCONN), cause::not_a_failure,
     "connect() on a socket that is already connected: the earlier non-blocking connect "
     "succeeded"},
    {DEADPEER_LINUX_ERRNO(ENOBUFS), cause::resource_exhausted,
     "the kernel could not allocate socket memory or a queue was full; a host limit, not the "
     "peer"},
    {DEADPEER_LINUX_ERRNO(ENOMEM), cause::resource_exhausted,
     "the kernel is out of memory for this request (or tcp_mem is exhausted)"},
    {DEADPEER_LINUX_ERRNO(EMFILE), cause::resource_exhausted,
     "this process reached its descriptor limit (RLIMIT_NOFILE, ulimit -n); often a leak of "
     "sockets never closed"},
    {DEADPEER_LINUX_ERRNO(ENFILE), cause::resource_exhausted,
     "the whole system reached its file limit (fs.file-max)"},
    {DEADPEER_LINUX_ERRNO(EADDRINUSE), cause::address_in_use,
     "bind(): the address and port are taken, by a listener or by connections still in "
     "TIME_WAIT without SO_REUSEADDR"},
    {DEADPEER_LINUX_ERRNO(EADDRNOTAVAIL), cause::address_unavailable,
     "on connect: no free local port for this destination (ports exhausted, often by "
     "TIME_WAIT); on bind: the address is not on this host"},
    {DEADPEER_LINUX_ERRNO(EINVAL), cause::invalid_call,
     "an argument was wrong for this socket or its state (bind twice, listen on a connected "
     "socket, a bad option value)"},
    {DEADPEER_LINUX_ERRNO(ENOPROTOOPT), cause::invalid_call,
     "setsockopt/getsockopt with an option this kernel or socket type does not have"},
    {DEADPEER_LINUX_ERRNO(EPROTOTYPE), cause::invalid_call,
     "the socket type does not fit the call (e.g. a datagram socket connected to a stream one)"},
    {DEADPEER_LINUX_ERRNO(EMSGSIZE), cause::invalid_call,
     "a datagram larger than the socket or path allows; TCP never reports it"},
    {DEADPEER_LINUX_ERRNO(EDESTADDRREQ), cause::invalid_call,
     "send() on an unconnected datagram socket without a destination"},
    {DEADPEER_LINUX_ERRNO(ENOTSOCK), cause::local_close,
     "the descriptor is not a socket: used after close() and perhaps reused for a file"},
    {DEADPEER_LINUX_ERRNO(ESOCKTNOSUPPORT), cause::invalid_call,
     "socket(): the address family does not support this socket type"},
    {DEADPEER_LINUX_ERRNO(EPROTONOSUPPORT), cause::invalid_call,
     "socket(): the protocol does not exist for this family and type (e.g. UDP on a stream "
     "socket)"},
    {995, "WSA_OPERATION_ABORTED", winsock, cause::local_close,
     "Win32 ERROR_OPERATION_ABORTED: Asio's operation_aborted on Windows"},
    {10004, "WSAEINTR", winsock, cause::not_a_failure, "a blocking call was interrupted; retry"},
    {10022, "WSAEINVAL", winsock, cause::invalid_call,
     "an invalid argument, or a call in the wrong state (e.g. accept before listen)"},
    {10024, "WSAEMFILE", winsock, cause::resource_exhausted,
     "too many open sockets for this process or the system"},
    {10035, "WSAEWOULDBLOCK", winsock, cause::not_a_failure,
     "a non-blocking call would block (a non-blocking connect reports this, not 10036); wait "
     "for readiness and retry"},
    {10036, "WSAEINPROGRESS", winsock, cause::not_a_failure,
     "a blocking Winsock call is still running on this thread; not the non-blocking connect "
     "case, which Windows reports as 10035"},
    {10037, "WSAEALREADY", winsock, cause::not_a_failure,
     "a non-blocking connect on this socket is still in progress"},
    {10038, "WSAENOTSOCK", winsock, cause::local_close,
     "the handle is no longer a socket: used after closesocket()"},
    {10048, "WSAEADDRINUSE", winsock, cause::address_in_use,
     "the address and port are taken (bind), or no ephemeral port is left for connect"},
    {10049, "WSAEADDRNOTAVAIL", winsock, cause::address_unavailable,
     "the address is not valid on this host (bind), or the destination is 0.0.0.0 (connect)"},
    {10050, "WSAENETDOWN", winsock, cause::network_unreachable,
     "the network subsystem or local interface is down"},
    {10051, "WSAENETUNREACH", winsock, cause::network_unreachable,
     "no route to the destination network"},
    {10052, "WSAENETRESET", winsock, cause::keepalive_timeout,
     "keep-alive detected a failure while an operation was in progress"},
    {10053, "WSAECONNABORTED", winsock, cause::local_abort,
     "Windows dropped the connection itself, but usually in answer to the peer: a server that "
     "replied and closed while the client was still sending sent FIN, then RST; Linux shows "
     "the same exchange as EOF, then EPIPE or ECONNRESET"},
    {10054, "WSAECONNRESET", winsock, cause::peer_reset,
     "a bare RST arrived from the peer; compare 10053, where this host aborted"},
    {10055, "WSAENOBUFS", winsock, cause::resource_exhausted,
     "no buffer space: out of memory, or ephemeral ports exhausted on connect"},
    {10056, "WSAEISCONN", winsock, cause::not_a_failure,
     "connect on a socket that is already connected"},
    {10057, "WSAENOTCONN", winsock, cause::broken_pipe,
     "the socket is not connected (any more); an earlier error holds the cause"},
    {10058, "WSAESHUTDOWN", winsock, cause::broken_pipe,
     "send or receive after shutdown() in that direction"},
    {10060, "WSAETIMEDOUT", winsock, cause::keepalive_timeout,
     "connect, keepalive or retransmission timeout: which one depends on what the connection "
     "was doing"},
    {10061, "WSAECONNREFUSED", winsock, cause::connection_refused,
     "our SYN was answered with RST: nothing listens on that port"},
    {10064, "WSAEHOSTDOWN", winsock, cause::host_unreachable,
     "the destination host is reported down; treated like 10065"},
    {10065, "WSAEHOSTUNREACH", winsock, cause::host_unreachable,
     "no route to the host (ICMP host unreachable)"},
});

#undef DEADPEER_LINUX_ERRNO

// Checks on the table, so that a typo in a number or a name fails the build.
constexpr bool same_letters_ignoring_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto lower = [](char c) {
      return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
    };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

constexpr bool table_is_consistent() {
  for (const known_error& a : errors) {
    if (a.platform != linux_ && a.platform != winsock) return false;
    for (const known_error& b : errors) {
      if (&a == &b) continue;
      if (same_letters_ignoring_case(a.name, b.name)) return false;
      // One number, one answer: lookup() must not depend on which entry it meets first.
      if (a.number == b.number && (a.platform != b.platform || a.cause != b.cause)) return false;
    }
  }
  return true;
}
static_assert(table_is_consistent());

constexpr std::array all_causes{
    cause::peer_closed,
    cause::peer_reset,
    cause::local_abort,
    cause::keepalive_timeout,
    cause::user_timeout,
    cause::retransmission_timeout,
    cause::connect_timeout,
    cause::broken_pipe,
    cause::host_unreachable,
    cause::network_unreachable,
    cause::connection_refused,
    cause::heartbeat_timeout,
    cause::reaped,
    cause::superseded,
    cause::handshake_timeout,
    cause::protocol_error,
    cause::local_close,
    cause::not_a_failure,
    cause::unknown,
    cause::auth_failed,
    cause::too_many_pings,
    cause::server_full,
    cause::unsupported_version,
    cause::invalid_client_id,
    cause::internal_error,
    cause::resource_exhausted,
    cause::address_in_use,
    cause::address_unavailable,
    cause::invalid_call,
};

constexpr std::array all_detected_by{
    detected_by::eof,          detected_by::reset,          detected_by::keepalive,
    detected_by::user_timeout, detected_by::retransmission, detected_by::icmp,
    detected_by::heartbeat,    detected_by::reaper,         detected_by::application,
    detected_by::none,
};

template <typename Enum, std::size_t N>
constexpr bool lists_every_value_in_order(const std::array<Enum, N>& values) {
  for (std::size_t i = 0; i < N; ++i) {
    if (static_cast<std::size_t>(values[i]) != i) return false;
  }
  return true;
}
static_assert(lists_every_value_in_order(all_causes) && all_causes.back() == cause::invalid_call,
              "all_causes must list every cause, in declaration order");
static_assert(lists_every_value_in_order(all_detected_by) &&
                  all_detected_by.back() == detected_by::none,
              "all_detected_by must list every detected_by, in declaration order");

// The errno value behind a code, if it has one. libstdc++ maps system_category codes it
// knows to generic conditions; the fallback covers errno values it does not list.
std::optional<int> errno_value(std::error_code ec) {
  if (ec.category() == std::generic_category()) return ec.value();
  const std::error_condition condition = ec.default_error_condition();
  if (condition.category() == std::generic_category()) return condition.value();
#ifndef _WIN32
  if (ec.category() == std::system_category()) return ec.value();
#endif
  return std::nullopt;
}

bool is_asio_eof(std::error_code ec) {
  constexpr int asio_misc_eof = 2;  // asio::error::misc_errors::eof
  return ec.value() == asio_misc_eof && std::string_view(ec.category().name()) == "asio.misc";
}

classification classify_timeout(const connection_context& context) {
  if (context.op == connection_context::operation::connecting) {
    return {cause::connect_timeout,
            context.user_timeout_armed ? detected_by::user_timeout : detected_by::retransmission};
  }
  if (context.data_in_flight) {
    // Keepalive never probes while data is unacknowledged, so it cannot be the one.
    if (context.user_timeout_armed) return {cause::user_timeout, detected_by::user_timeout};
    return {cause::retransmission_timeout, detected_by::retransmission};
  }
  if (context.keepalive_armed) return {cause::keepalive_timeout, detected_by::keepalive};
  if (context.user_timeout_armed) return {cause::user_timeout, detected_by::user_timeout};
  return {cause::retransmission_timeout, detected_by::retransmission};
}

classification classify_errno(int value, const connection_context& context) {
  switch (value) {
    case ECONNRESET:
      return {cause::peer_reset, detected_by::reset};
    case ECONNABORTED:
      return {cause::local_abort, detected_by::reset};
    case ETIMEDOUT:
      return classify_timeout(context);
    case ENETRESET:
      return {cause::keepalive_timeout, detected_by::keepalive};
    case EPIPE:
      return {cause::broken_pipe, detected_by::reset};
    case ENOTCONN:
#ifdef ESHUTDOWN
    case ESHUTDOWN:
#endif
      return {cause::broken_pipe, detected_by::application};
    case EHOSTUNREACH:
#ifdef EHOSTDOWN
    case EHOSTDOWN:
#endif
      return {cause::host_unreachable, detected_by::icmp};
    case ENETUNREACH:
    case ENETDOWN:
      return {cause::network_unreachable, detected_by::icmp};
    case ECONNREFUSED:
      return {cause::connection_refused, detected_by::reset};
    case EAGAIN:
#if EWOULDBLOCK != EAGAIN
    case EWOULDBLOCK:
#endif
    case EINTR:
      return {cause::not_a_failure, detected_by::none};
    case ECANCELED:
    case EBADF:
    case ENOTSOCK:
      return {cause::local_close, detected_by::application};
    case EINPROGRESS:
    case EALREADY:
    case EISCONN:
      return {cause::not_a_failure, detected_by::none};
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
    case ENOMEM:
      return {cause::resource_exhausted, detected_by::application};
    case EADDRINUSE:
      return {cause::address_in_use, detected_by::application};
    case EADDRNOTAVAIL:
      return {cause::address_unavailable, detected_by::application};
    case EINVAL:
    case ENOPROTOOPT:
    case EPROTOTYPE:
    case EMSGSIZE:
    case EDESTADDRREQ:
    case ESOCKTNOSUPPORT:
    case EPROTONOSUPPORT:
      return {cause::invalid_call, detected_by::application};
    default:
      return {cause::unknown, detected_by::application};
  }
}

}  // namespace

classification classify(std::error_code ec, const connection_context& context) {
  if (!ec) return {cause::not_a_failure, detected_by::none};
  if (is_asio_eof(ec)) return {cause::peer_closed, detected_by::eof};
  if (const std::optional<int> value = errno_value(ec)) return classify_errno(*value, context);
  return {cause::unknown, detected_by::application};
}

std::span<const cause> known_causes() {
  return all_causes;
}

std::string_view to_string(activity a) {
  switch (a) {
    case activity::connecting:
      return "connecting";
    case activity::idle:
      return "idle";
    case activity::sending:
      return "sending";
  }
  return "invalid";
}

std::optional<activity> activity_from_string(std::string_view name) {
  for (const activity a : {activity::connecting, activity::idle, activity::sending}) {
    if (to_string(a) == name) return a;
  }
  return std::nullopt;
}

bool depends_on_activity(const known_error& e) {
  return e.name == "ETIMEDOUT" || e.name == "WSAETIMEDOUT";
}

cause cause_while(const known_error& e, activity a) {
  if (!depends_on_activity(e)) return e.cause;
  connection_context context;
  switch (a) {
    case activity::connecting:
      context.op = connection_context::operation::connecting;
      break;
    case activity::idle:
      context.keepalive_armed = true;
      break;
    case activity::sending:
      context.op = connection_context::operation::writing;
      context.data_in_flight = true;
      break;
  }
  return classify_timeout(context).cause;
}

std::string_view to_string(cause c) {
  switch (c) {
    case cause::peer_closed:
      return "peer_closed";
    case cause::peer_reset:
      return "peer_reset";
    case cause::local_abort:
      return "local_abort";
    case cause::keepalive_timeout:
      return "keepalive_timeout";
    case cause::user_timeout:
      return "user_timeout";
    case cause::retransmission_timeout:
      return "retransmission_timeout";
    case cause::connect_timeout:
      return "connect_timeout";
    case cause::broken_pipe:
      return "broken_pipe";
    case cause::host_unreachable:
      return "host_unreachable";
    case cause::network_unreachable:
      return "network_unreachable";
    case cause::connection_refused:
      return "connection_refused";
    case cause::heartbeat_timeout:
      return "heartbeat_timeout";
    case cause::reaped:
      return "reaped";
    case cause::superseded:
      return "superseded";
    case cause::handshake_timeout:
      return "handshake_timeout";
    case cause::protocol_error:
      return "protocol_error";
    case cause::local_close:
      return "local_close";
    case cause::not_a_failure:
      return "not_a_failure";
    case cause::unknown:
      return "unknown";
    case cause::auth_failed:
      return "auth_failed";
    case cause::too_many_pings:
      return "too_many_pings";
    case cause::server_full:
      return "server_full";
    case cause::unsupported_version:
      return "unsupported_version";
    case cause::invalid_client_id:
      return "invalid_client_id";
    case cause::internal_error:
      return "internal_error";
    case cause::resource_exhausted:
      return "resource_exhausted";
    case cause::address_in_use:
      return "address_in_use";
    case cause::address_unavailable:
      return "address_unavailable";
    case cause::invalid_call:
      return "invalid_call";
  }
  return "invalid";  // a value outside the enumeration: a bug, but never a crash
}

std::string_view to_string(detected_by d) {
  switch (d) {
    case detected_by::eof:
      return "eof";
    case detected_by::reset:
      return "reset";
    case detected_by::keepalive:
      return "keepalive";
    case detected_by::user_timeout:
      return "user_timeout";
    case detected_by::retransmission:
      return "retransmission";
    case detected_by::icmp:
      return "icmp";
    case detected_by::heartbeat:
      return "heartbeat";
    case detected_by::reaper:
      return "reaper";
    case detected_by::application:
      return "application";
    case detected_by::none:
      return "none";
  }
  return "invalid";
}

std::optional<cause> cause_from_string(std::string_view name) {
  for (const cause c : all_causes) {
    if (to_string(c) == name) return c;
  }
  return std::nullopt;
}

std::optional<detected_by> detected_by_from_string(std::string_view name) {
  for (const detected_by d : all_detected_by) {
    if (to_string(d) == name) return d;
  }
  return std::nullopt;
}

const cause_explanation& explain(cause c) {
  switch (c) {
    case cause::peer_closed: {
      static constexpr cause_explanation e{
          "The peer sent a FIN: it will send nothing more, and once everything before the FIN "
          "has been read, a read returns 0 bytes (Asio reports error::eof). Our side stays in "
          "CLOSE_WAIT, still able to send, until we close too.",
          "The peer program closed the socket or exited; the kernel also sends a FIN for a "
          "killed or crashed process if it had no unread data. A host shutting down cleanly "
          "does the same. A process killed during a partition leaves a FIN that arrives only "
          "after the network heals, so a late clean EOF can hide an earlier crash.",
          "Usually nothing but closing our end promptly, or the socket lingers in CLOSE_WAIT. "
          "If the EOF came in the middle of a request, the peer gave up or died: look in its "
          "logs for a crash or for a timeout of its own."};
      return e;
    }
    case cause::peer_reset: {
      static constexpr cause_explanation e{
          "A segment with the RST flag arrived from the peer's address and our kernel "
          "destroyed the connection on the spot: data still queued in either direction is "
          "lost, and the next read or write fails with ECONNRESET (Winsock 10054, "
          "WSAECONNRESET). The RST is not acknowledged and nothing after it is delivered.",
          "The peer closed while it still had unread received data, which makes its kernel "
          "send RST instead of FIN (RFC 2525 section 2.17): a server that rejects a large "
          "upload early and closes leaves the client, still writing, with ECONNRESET or "
          "EPIPE. An abortive close with SO_LINGER {1, 0} resets on purpose, and so does a "
          "crashed process that had unread data. A rebooted host answers our next segment "
          "with RST because it has no state for the connection, and a NAT or load balancer "
          "that lost its mapping may answer RST in the peer's name.",
          "Work out which of these it was from the peer side: a reboot or a middlebox shows as "
          "an RST to the first segment after a quiet period. A server that rejects a request "
          "should drain the rest of the body, or shut down its sending side and wait briefly, "
          "before closing; a client should read the reply before treating a write error as "
          "final. Do not use SO_LINGER {1, 0} as a normal close."};
      return e;
    }
    case cause::local_abort: {
      static constexpr cause_explanation e{
          "This host's TCP stack tore the connection down and reported ECONNABORTED (Winsock "
          "10053, WSAECONNABORTED), normally sending an RST as it did so; 10054 "
          "(ECONNRESET) is the bare RST of the peer instead. On Windows, 10053 is mostly the "
          "end of an exchange the peer started: a server that answered an error and closed "
          "while the client was still sending sent its FIN, its kernel then answered the "
          "client's further data with RST, and Windows reported the abort to the client. "
          "Linux shows that same exchange as EOF on read, then EPIPE or ECONNRESET on write.",
          "On Windows: a server that rejected a request (HTTP 413, 401, an error frame) and "
          "closed without draining the body; data retransmitted until the stack gave up; "
          "local firewalls or security software killing connections. On Linux a read or "
          "write gets ECONNABORTED only when the socket was destroyed administratively (ss -K, "
          "SOCK_DESTROY). Linux accept() does not report it for a client that reset while "
          "queued: accept returns that connection and the first recv gets ECONNRESET.",
          "Before blaming this host, read what the peer sent last: an error reply that arrived "
          "before the abort is the real answer, and the client should read it instead of "
          "treating the failed write as final. If nothing came back and data was outstanding, "
          "treat it as a retransmission timeout and check the path; otherwise look at local "
          "firewall and security software. Code written for BSD or Windows that retries "
          "accept() on ECONNABORTED is harmless on Linux."};
      return e;
    }
    case cause::keepalive_timeout: {
      static constexpr cause_explanation e{
          "The connection was idle, so after TCP_KEEPIDLE the kernel sent keepalive probes "
          "(empty segments one byte behind what the peer already acknowledged, which a live "
          "peer must ACK) every TCP_KEEPINTVL; after TCP_KEEPCNT unanswered probes it dropped "
          "the connection with ETIMEDOUT. That takes idle + count x interval, over two hours "
          "with the Linux defaults (7200 s + 9 x 75 s); with TCP_USER_TIMEOUT also set, the "
          "count is ignored and the end comes at the first probe after the user timeout.",
          "The peer host or the path to it vanished without a word: a pulled cable, a dead "
          "battery, a lost radio link, or a NAT or firewall that forgot the mapping and now "
          "silently drops the packets. Winsock reports the same failure as 10052 "
          "(WSAENETRESET) when an operation was in progress.",
          "Set TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT per socket so that idle + interval "
          "x count fits the detection time you need, with the idle time below the shortest "
          "NAT or load balancer idle timeout on the path. Keepalive does not see a hung "
          "process, because the peer's kernel keeps answering the probes, and it sends no "
          "probes while data is unacknowledged: add TCP_USER_TIMEOUT for busy connections "
          "and an application heartbeat for hung peers."};
      return e;
    }
    case cause::user_timeout: {
      static constexpr cause_explanation e{
          "Data we sent stayed unacknowledged longer than TCP_USER_TIMEOUT while the kernel "
          "kept retransmitting it with growing back-off, so the kernel aborted the connection "
          "with ETIMEDOUT. The limit is checked only when a retransmission (or keepalive "
          "probe) is due, so the abort lands somewhat after the configured time.",
          "The peer host or the path died while we had data in flight: a cable pull, a lost "
          "radio link, a middlebox that started dropping the flow. On a busy connection this "
          "is the only kernel mechanism that notices within seconds, since keepalive stays "
          "silent while data is outstanding.",
          "Set TCP_USER_TIMEOUT to the longest time an unacknowledged write may wait before "
          "you would rather fail; it must exceed several round trips plus any outage you want "
          "to ride out. Combine it with keepalive for idle periods and with an application "
          "heartbeat for peers that hang."};
      return e;
    }
    case cause::retransmission_timeout: {
      static constexpr cause_explanation e{
          "Data we sent was never acknowledged; the kernel retransmitted it with a timeout "
          "doubling from about 200 ms up to 120 s per attempt until tcp_retries2 (default 15) "
          "attempts were used up, then aborted with ETIMEDOUT. With the defaults that takes "
          "about 15 minutes (roughly 924 s), and keepalive cannot shorten it because no "
          "probes are sent while data is unacknowledged.",
          "The peer host or the path failed while we were sending (cable pull, power loss, "
          "routing change, a middlebox dropping the flow) and no TCP_USER_TIMEOUT was set. "
          "It is also the answer when neither keepalive nor a user timeout was armed: on "
          "Linux only retransmission can then end a connection with ETIMEDOUT.",
          "Set TCP_USER_TIMEOUT on connections that carry data, so a dead peer is found in "
          "seconds instead of a quarter of an hour; lowering net.ipv4.tcp_retries2 works too "
          "but changes every connection on the host. An application heartbeat bounds "
          "detection independently of the kernel."};
      return e;
    }
    case cause::connect_timeout: {
      static constexpr cause_explanation e{
          "Our SYN was never answered, neither by a SYN-ACK nor by an RST, so the kernel "
          "resent it until tcp_syn_retries (default 6) or TCP_USER_TIMEOUT ran out, and "
          "connect() failed with ETIMEDOUT (Winsock 10060). Classic kernels double the wait "
          "each time (1 s, 2 s, 4 s, ... about 127 s in all); newer ones first resend "
          "tcp_syn_linear_timeouts times (default 4) 1 s apart and only then double, so the "
          "first retries come sooner and the whole budget is shorter.",
          "The server host is down or unreachable and nothing sends ICMP back, a firewall "
          "silently drops the SYN, the address is wrong, or the server's accept queue is full "
          "(Linux drops SYNs then instead of refusing them).",
          "Give connect an explicit deadline in the application instead of relying on the "
          "kernel's budget, and retry with back-off and jitter. Check reachability and "
          "firewall rules on the path; on the server, a growing TcpExtListenOverflows (nstat) "
          "means the backlog is full."};
      return e;
    }
    case cause::broken_pipe: {
      static constexpr cause_explanation e{
          "We used a connection that was already over. After an RST the first read or write "
          "reports ECONNRESET and every later write fails with EPIPE, which also raises "
          "SIGPIPE unless the write used MSG_NOSIGNAL (Asio does on Linux); an RST that "
          "arrives after the peer's FIN is reported as EPIPE directly. ENOTCONN and "
          "ESHUTDOWN (Winsock 10057, 10058) say the same about a socket no longer connected "
          "or already shut down in that direction.",
          "The peer reset the connection and our code kept writing, often because a read on "
          "another path consumed the ECONNRESET, or because a client kept streaming a request "
          "the server had already rejected. A process that dies of SIGPIPE with nothing in "
          "its log is the classic symptom.",
          "Ignore SIGPIPE (or send with MSG_NOSIGNAL) and treat EPIPE like a reset. EPIPE is "
          "an echo: the first error logged for this connection, usually ECONNRESET, names "
          "the real cause."};
      return e;
    }
    case cause::host_unreachable: {
      static constexpr cause_explanation e{
          "An ICMP host-unreachable came back for our segments, or our own kernel could not "
          "resolve the next hop's link-layer address (ARP or neighbour discovery failed): "
          "EHOSTUNREACH (Winsock 10065), or EHOSTDOWN (10064) for an ICMP host-unknown. A "
          "router's ICMP makes connect() fail after one round trip, but an unanswered ARP "
          "takes seconds: Linux sends mcast_solicit (3) requests retrans_time_ms (1 s) apart "
          "before giving up, so connect() fails after about 3 s. On an established Linux "
          "connection it is held as a soft error and reported in place of ETIMEDOUT when the "
          "retransmission or user timeout ends the connection.",
          "The peer host is off or its link is down on a directly attached network (no ARP "
          "reply), a router reports the host unreachable, or a firewall rejects with an ICMP "
          "host-unreachable or admin-prohibited message.",
          "Check that the host is up and on the network (ip neigh shows FAILED for a "
          "neighbour that never answered) and look for reject rules along the path. Treat "
          "the peer as gone and reconnect with back-off."};
      return e;
    }
    case cause::network_unreachable: {
      static constexpr cause_explanation e{
          "There was no route to the destination: our own routing table had none, because "
          "our interface went down or lost its address, or a router answered with ICMP "
          "network-unreachable. It is reported as ENETUNREACH (Winsock 10051), or ENETDOWN "
          "(10050) when the local interface itself is down; on an established Linux "
          "connection it replaces ETIMEDOUT when the retransmission or user timeout expires.",
          "Our own link went down, a VPN or mobile interface disappeared, a DHCP lease "
          "expired, or a route was withdrawn. Far less often a router on the path has lost "
          "its route to the peer's network.",
          "Look at this host first (ip link, ip route get <peer address>): the fault is "
          "usually local. Reconnect when the network is back; mobile clients should react to "
          "network change events instead of waiting for timers."};
      return e;
    }
    case cause::connection_refused: {
      static constexpr cause_explanation e{
          "Our SYN was answered with an RST, so connect() failed with ECONNREFUSED (Winsock "
          "10061) after one round trip: the host is up, but nothing accepts connections on "
          "that port. An ICMP port-unreachable or a firewall rule that rejects with a TCP "
          "reset ends the same way.",
          "The server process is not running or is restarting, it listens on another port or "
          "address (for example only on 127.0.0.1), or a firewall rejects the connection.",
          "Check that the server listens where the client points (ss -ltn on the server) and "
          "retry with back-off: refusals during a restart are expected and brief."};
      return e;
    }
    case cause::heartbeat_timeout: {
      static constexpr cause_explanation e{
          "TCP may have shown nothing wrong, the connection still ESTABLISHED, but no "
          "heartbeat or other frame arrived from the peer before the failure detector's "
          "deadline, so the application declared the peer dead and closed the connection.",
          "A hung or stalled peer process (deadlock, long pause, SIGSTOP, a blocked event "
          "loop): its kernel still acknowledges data and keepalive probes, so only an "
          "application heartbeat can see it. Also any silent loss of the host or path that "
          "the heartbeat noticed before the kernel's timers did.",
          "Check the peer for stalls: CPU starvation, long garbage-collection or event-loop "
          "pauses, blocked threads. If the peer was merely slow, lengthen the deadline or use "
          "an adaptive detector; it must cover the heartbeat interval plus the worst normal "
          "delay."};
      return e;
    }
    case cause::reaped: {
      static constexpr cause_explanation e{
          "The connection was still open at the TCP level, but our periodic sweep found it in "
          "a state that should not last and closed it. The classic case is CLOSE_WAIT: the "
          "peer sent its FIN long ago, our kernel acknowledged it, and our code never called "
          "close().",
          "A code path that stops using a connection after an error or an EOF without closing "
          "it, or a session that never progressed past setup. Left alone, such sockets pile "
          "up until the process runs out of file descriptors and refuses new clients.",
          "Treat each reap as a bug report: find the path that dropped the connection without "
          "closing it (ss -tanp state close-wait shows the owning process). The reaper is a "
          "safety net whose sweep period bounds how long a leak lives."};
      return e;
    }
    case cause::superseded: {
      static constexpr cause_explanation e{
          "A new connection with the same client id completed its handshake while this one "
          "still looked alive, so the new session took over and this one was closed. The old "
          "connection usually carried no traffic at the end: its other end no longer existed.",
          "The client lost its path (cable pull, Wi-Fi to mobile handover, a NAT rebinding it "
          "to a new public port) and reconnected before our timers noticed the old "
          "connection was dead, which left the old session a ghost. Two clients configured "
          "with the same id cause it too, over and over.",
          "Nothing if it is occasional: takeover is working as designed. If one id keeps "
          "superseding itself, look for duplicated client ids; if ghosts are common, shorten "
          "keepalive or heartbeat settings so dead sessions are found sooner."};
      return e;
    }
    case cause::handshake_timeout: {
      static constexpr cause_explanation e{
          "TCP connected, but the peer did not complete the HELLO/WELCOME exchange before the "
          "handshake deadline: it sent too little, too slowly, or nothing at all.",
          "A slowloris-style client holding connections open by trickling bytes, a port "
          "scanner or health check that connects and waits, a client speaking some other "
          "protocol (TLS, HTTP) to this port, or a legitimate client on a very lossy link.",
          "Keep the deadline short, a few seconds, so such connections cannot use up file "
          "descriptors. If real clients hit it, check their version and the address they were "
          "given; if many come from one address, rate-limit it."};
      return e;
    }
    case cause::protocol_error: {
      static constexpr cause_explanation e{
          "The peer sent bytes that do not decode as a valid frame (wrong magic, version, "
          "length or type), so we stopped trusting the stream and closed it. TCP itself "
          "worked.",
          "Client and server on incompatible versions, a client speaking another protocol to "
          "this port, a bug in an encoder, or, rarely, a middlebox that rewrites payloads.",
          "Log the peer address and the first offending bytes, and compare client and server "
          "versions. TCP's checksum makes undetected corruption rare, so suspect the "
          "sender's code before the network."};
      return e;
    }
    case cause::local_close: {
      static constexpr cause_explanation e{
          "We ended the connection on purpose, with a FIN (or an RST if we chose an abortive "
          "close). Operations still pending completed with operation_aborted (ECANCELED, "
          "Windows 995), and operations started afterwards fail with EBADF.",
          "Server shutdown or restart, an operator or control API request, a client that "
          "finished its work, or our own deadline timer cancelling an operation that took "
          "too long.",
          "Nothing, if the close was intended. Otherwise find what cancelled the operation: "
          "a timer that fired, a shutdown signal, or an object destroyed while its I/O was "
          "pending."};
      return e;
    }
    case cause::not_a_failure: {
      static constexpr cause_explanation e{
          "Nothing happened to the connection. EAGAIN/EWOULDBLOCK (Winsock 10035) means a "
          "non-blocking call had nothing to do yet; EINTR (10004) means a signal interrupted "
          "a blocking call before it completed. A zero error code also lands here.",
          "Non-blocking sockets used without waiting for readiness, SO_RCVTIMEO or "
          "SO_SNDTIMEO expiring (they also return EAGAIN), or a signal handler running during "
          "a blocking call.",
          "Retry the call, after waiting for readiness in the EAGAIN case; never close a "
          "connection or count it as dead because of these. If SO_RCVTIMEO serves as a "
          "liveness check, treat its EAGAIN as your own timeout, not as a network error."};
      return e;
    }
    case cause::auth_failed: {
      static constexpr cause_explanation e{
          "TCP connected and the client sent HELLO, but its auth token was missing or did not "
          "match, so the server answered ERROR auth_failed (code 7) and closed gracefully. "
          "The server checks the token after the version and the client id, before capacity.",
          "A client deployed without its token or with an old one after a rotation, a token "
          "given to the wrong environment, or a client that was never meant to connect.",
          "Compare the client's token with the server's (--auth-token-file); rotate "
          "tokens by letting the server accept the new one before clients switch. Many "
          "refusals from one address are worth a look: something is guessing."};
      return e;
    }
    case cause::too_many_pings: {
      static constexpr cause_explanation e{
          "The server counted a strike for each PING that arrived less than half the agreed "
          "interval after the previous one; at the fifth strike in a row it sent ERROR "
          "too_many_pings (code 8) instead of a PONG and closed gracefully.",
          "A client that ignores WELCOME's interval and pings at its own, shorter one, a "
          "client that pings on every send or in a tight loop after a bug, or several "
          "heartbeat timers started for one connection.",
          "Make the client use the interval_ms from WELCOME, not the one it asked for, and "
          "keep one heartbeat timer per connection. If the client really needs faster "
          "detection, lower the server's --interval-min instead of pinging around it."};
      return e;
    }
    case cause::server_full: {
      static constexpr cause_explanation e{
          "The server refused the connection with ERROR server_full (code 9) and closed: its "
          "total connection limit or its limit per IP address was reached, or it had no "
          "descriptors left for the newcomer (then before reading HELLO at all). A HELLO "
          "that replaces a live session with the same client id is not refused for the total.",
          "More clients than the server is configured for, many clients behind one NAT "
          "address hitting --max-per-ip, a reconnect storm after an outage, or ghost "
          "connections of dead clients still holding places.",
          "Retry later with back-off and jitter, as the code asks. On the server, compare "
          "--max-connections and --max-per-ip with the real load, raise the descriptor limit, "
          "and shorten dead-peer detection so ghosts give their places back sooner."};
      return e;
    }
    case cause::unsupported_version: {
      static constexpr cause_explanation e{
          "The HELLO carried a magic or protocol version the server does not speak, or the "
          "WELCOME a version the client does not speak, so that side sent ERROR "
          "unsupported_version (code 3) and closed. Its text says which versions it speaks.",
          "A client and a server from different releases, or another protocol's bytes "
          "arriving where deadpeer's HELLO was expected.",
          "Read the ERROR text for the versions on offer, then upgrade the older side; keep "
          "servers able to speak the previous version while clients are rolled forward."};
      return e;
    }
    case cause::invalid_client_id: {
      static constexpr cause_explanation e{
          "The HELLO's client id was empty, longer than 64 bytes or not valid UTF-8, so the "
          "server answered ERROR invalid_client_id (code 6) and closed.",
          "A client built with an empty or generated id that grew too long, or an id taken "
          "from a host name or a path that is not UTF-8.",
          "Give every client a stable, unique id of 1 to 64 bytes of UTF-8; reusing the same "
          "id on reconnect is what lets the server replace a ghost session at once."};
      return e;
    }
    case cause::internal_error: {
      static constexpr cause_explanation e{
          "The side that sent ERROR internal_error (code 11) failed on its own, for example "
          "an exception in its handler, and closed gracefully; the connection and the other "
          "side did nothing wrong.",
          "A bug or a resource problem in the application code that handles connections, "
          "such as a callback that threw.",
          "Look at the log of the side that sent it: deadpeer logs the exception there. The "
          "other side may reconnect; it is not at fault."};
      return e;
    }
    case cause::resource_exhausted: {
      static constexpr cause_explanation e{
          "Nothing reached the wire: this host refused to create or grow a socket because a "
          "local limit was reached. EMFILE (Winsock 10024) is the process's descriptor limit "
          "(RLIMIT_NOFILE), ENFILE the system's (fs.file-max), ENOBUFS (10055) and ENOMEM "
          "socket memory or a full queue.",
          "A descriptor leak (connections or files never closed, sockets piling up in "
          "CLOSE_WAIT), a limit of 1024 left at its default on a busy server, or memory "
          "pressure. It is a limit of this host, not a problem of the peer.",
          "Count the process's descriptors (ls /proc/PID/fd | wc -l) against ulimit -n, and "
          "look for CLOSE_WAIT sockets that reveal a leak. Raise RLIMIT_NOFILE where the load "
          "is real, and keep a few descriptors in reserve so a full server can still refuse "
          "newcomers politely."};
      return e;
    }
    case cause::address_in_use: {
      static constexpr cause_explanation e{
          "bind() found the local address and port already taken (EADDRINUSE, Winsock "
          "10048): a socket listens there, or connections that ended are still in TIME_WAIT "
          "on that port. connect() reports it when an explicitly bound local port already "
          "has a connection to the same destination.",
          "A second instance of the server, a previous one still shutting down, or a restart "
          "within a minute of the old process's connections closing, when the new listener "
          "does not set SO_REUSEADDR.",
          "Find the holder (ss -ltnp sport = :PORT). Servers should set SO_REUSEADDR before "
          "bind so that TIME_WAIT connections do not block a restart; do not bind client "
          "sockets to fixed ports."};
      return e;
    }
    case cause::address_unavailable: {
      static constexpr cause_explanation e{
          "On connect, the kernel found no free local port for this destination "
          "(EADDRNOTAVAIL; Windows reports 10048 or 10055 there): every port of "
          "ip_local_port_range already has a connection to it, usually most of them in "
          "TIME_WAIT after short-lived connections. On bind, the address is not one of this "
          "host's (10049).",
          "A client opening and closing many short connections to one server address, so "
          "the closed ones pile up in TIME_WAIT for 60 s each; a proxy or load test without "
          "connection reuse; a server configured to bind an address the host no longer has.",
          "Reuse connections (keep-alive pools) instead of opening one per request, widen "
          "net.ipv4.ip_local_port_range, and let the server close first so TIME_WAIT lands "
          "there. For bind, check the address with ip addr."};
      return e;
    }
    case cause::invalid_call: {
      static constexpr cause_explanation e{
          "The call itself was refused before anything was sent: an argument or option did "
          "not fit the socket or its state (EINVAL, Winsock 10022), the option does not "
          "exist here (ENOPROTOOPT), or the family, type and protocol do not go together "
          "(EPROTONOSUPPORT, ESOCKTNOSUPPORT, EPROTOTYPE).",
          "A bug in the calling code, such as binding a socket twice or listening on a "
          "connected one, or a socket option this kernel does not have (TCP_USER_TIMEOUT "
          "before Linux 2.6.37, TCP_KEEPIDLE on a non-TCP socket), or a value out of range.",
          "Fix the call: check the order of socket, setsockopt, bind, listen and connect, and "
          "the option values against the kernel's limits. A network problem cannot cause "
          "these errors."};
      return e;
    }
    case cause::unknown:
      break;
  }
  static constexpr cause_explanation fallback{
      "The error is not one deadpeer can tie to a specific TCP event, so nothing is claimed "
      "about what happened on the wire.",
      "Name resolution or TLS failures, errors of other libraries and platforms, or a "
      "socket error deadpeer's table does not list yet.",
      "Log the full error (category, number and message) with the connection's context; if "
      "it recurs, add it to deadpeer's table with the cause it turns out to have."};
  return fallback;
}

std::span<const known_error> known_errors() {
  return errors;
}

std::string_view linux_errno_name(int number) {
  if (number == 0) return {};
  for (const auto& e : errors)
    if (e.platform == linux_ && e.number == number) return e.name;
  return {};
}

}  // namespace deadpeer
