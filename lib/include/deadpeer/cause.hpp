// Why a connection ended. An error_code alone is ambiguous: ETIMEDOUT can be the
// keepalive timer, TCP_USER_TIMEOUT or exhausted retransmissions, and which one it was
// depends on what the connection was doing. The classifier takes the code plus that
// context and names one cause; each cause carries an explanation written for the
// operator who has to act on it. Error numbers are accepted in Linux errno and Winsock
// form, by number or by name, and so are the messages programs print for them (strerror,
// Java, .NET, Python, Go) and TCP state names, so a log line from either platform can be
// explained as it was pasted.
//
// Causes are stored by name in SQLite: a cause is never renamed or removed, new ones are
// appended. deadpeer's own protocol refusals (ERROR codes that are policy, not broken
// bytes) are causes of their own, so /events and stored results say `server_full`
// rather than a generic protocol_error.
#pragma once

#include <optional>
#include <span>
#include <string_view>
#include <system_error>

namespace deadpeer {

/// The reason a connection ended, as deadpeer reports and stores it.
enum class cause {
  peer_closed,             ///< orderly FIN from the peer (read returned 0 / asio eof)
  peer_reset,              ///< RST from the peer (ECONNRESET, WSAECONNRESET 10054)
  local_abort,             ///< our own stack aborted it (ECONNABORTED, WSAECONNABORTED 10053)
  keepalive_timeout,       ///< idle connection, keepalive probes unanswered (ETIMEDOUT)
  user_timeout,            ///< data unacknowledged longer than TCP_USER_TIMEOUT (ETIMEDOUT)
  retransmission_timeout,  ///< data unacknowledged through tcp_retries2 back-offs (ETIMEDOUT)
  connect_timeout,         ///< SYN never answered (ETIMEDOUT while connecting)
  broken_pipe,             ///< we wrote after the connection was already reset (EPIPE)
  host_unreachable,        ///< ICMP host unreachable or ARP failure (EHOSTUNREACH)
  network_unreachable,     ///< no route, or our own link is down (ENETUNREACH)
  connection_refused,      ///< nothing listening: RST answered our SYN (ECONNREFUSED)
  heartbeat_timeout,       ///< application heartbeat detector declared the peer dead
  reaped,                  ///< ended by the reaper sweep (e.g. CLOSE_WAIT leak)
  superseded,              ///< the same client id connected again; this session was replaced
  handshake_timeout,       ///< the peer never completed the HELLO/WELCOME handshake in time
  protocol_error,          ///< the peer sent bytes that violate the wire protocol
  local_close,             ///< we closed it on purpose (shutdown, operator request)
  not_a_failure,           ///< EAGAIN / EWOULDBLOCK / EINTR: retry, the connection is fine
  unknown,                 ///< an error deadpeer has no specific knowledge of
  // Appended: stored names of the values above never change.
  auth_failed,          ///< ERROR auth_failed: the server refused the client's token
  too_many_pings,       ///< ERROR too_many_pings: the client pinged faster than agreed
  server_full,          ///< ERROR server_full: the server's connection limit was reached
  unsupported_version,  ///< ERROR unsupported_version: the two sides speak no common version
  invalid_client_id,    ///< ERROR invalid_client_id: HELLO's client id was refused
  internal_error,       ///< ERROR internal_error: the side that sent it failed
  resource_exhausted,   ///< EMFILE / ENFILE / ENOBUFS: a local limit, not the peer
  address_in_use,       ///< EADDRINUSE: the local address and port are taken
  address_unavailable,  ///< EADDRNOTAVAIL: no usable local address or port (ports exhausted)
  invalid_call,         ///< EINVAL, ENOPROTOOPT, EPROTONOSUPPORT, ...: the call itself was wrong
};

/// The layer that noticed the end first (stored as `detected_by`).
enum class detected_by {
  eof,             ///< kernel delivered FIN
  reset,           ///< kernel delivered RST or an error for an RST
  keepalive,       ///< SO_KEEPALIVE probes exhausted
  user_timeout,    ///< TCP_USER_TIMEOUT expired
  retransmission,  ///< tcp_retries2 exhausted
  icmp,            ///< an ICMP error or a local routing failure surfaced as an errno
  heartbeat,       ///< application heartbeat detector
  reaper,          ///< periodic reaper sweep
  application,     ///< the application or protocol layer decided (takeover, protocol error, close)
  none,            ///< nothing failed (transient errors)
};

/// What the connection was doing when the error surfaced.
struct connection_context {
  enum class operation { reading, writing, connecting, other };
  operation op = operation::reading;
  bool data_in_flight = false;      ///< we had sent data not yet acknowledged (or queued)
  bool keepalive_armed = false;     ///< SO_KEEPALIVE was on
  bool user_timeout_armed = false;  ///< TCP_USER_TIMEOUT was non-zero
};

/// The classifier's answer for one error.
struct classification {
  deadpeer::cause cause;
  deadpeer::detected_by detected_by;
};

/// Explanation of a cause in three parts, for a person reading a log or `probe explain`.
struct cause_explanation {
  std::string_view on_the_wire;  ///< what TCP did, segment by segment
  std::string_view typical;      ///< the usual reasons in real deployments
  std::string_view what_to_do;   ///< what an operator or developer should change or check
};

/// One error number known to deadpeer, in the form a given platform prints it.
struct known_error {
  int number;                 ///< the value as that platform reports it (104, 10054, ...)
  std::string_view name;      ///< symbolic name (ECONNRESET, WSAECONNRESET, ...)
  std::string_view platform;  ///< "linux" or "winsock"
  deadpeer::cause cause;      ///< the cause it maps to (ETIMEDOUT: keepalive_timeout, see note)
  std::string_view note;      ///< one line on what distinguishes this code, may be empty
};

/// Classifies an error from a socket operation. Accepts system/generic category codes and
/// boost::system::error_code converted to std::error_code (asio's eof is the peer's FIN).
/// A zero error_code means nothing failed and classifies as not_a_failure. An application
/// timer that cancels an operation shows up as local_close: the caller that armed the timer
/// knows better (connect or handshake timeout) and records that cause itself.
classification classify(std::error_code ec, const connection_context& context);

/// Every cause, in declaration order.
std::span<const cause> known_causes();

/// Stable snake_case name, as stored in the database ("peer_reset").
std::string_view to_string(cause c);
std::string_view to_string(detected_by d);

/// Inverse of to_string; nullopt for an unknown name.
std::optional<cause> cause_from_string(std::string_view name);
std::optional<detected_by> detected_by_from_string(std::string_view name);

/// The explanation for a cause; every cause has one.
const cause_explanation& explain(cause c);

/// The Linux errno name of `number` ("ETIMEDOUT" for 110); empty when unknown or 0.
std::string_view linux_errno_name(int number);

/// All error numbers deadpeer knows, Linux and Winsock.
std::span<const known_error> known_errors();

/// A text that programs print for a failure or a connection's state, as it appears in logs.
struct known_text {
  std::string_view text;        ///< "Connection reset by peer", "SYN_SENT", ...
  std::string_view source;      ///< who prints it: "strerror", "java", ".net", "python", ...
  std::string_view error_name;  ///< the known_errors() name it stands for; empty if none
  deadpeer::cause cause;        ///< the cause (the error's, when error_name is set)
  std::string_view note;        ///< what this text says beyond its error, may be empty
  bool is_tcp_state = false;    ///< a TCP state name (as ss or netstat print it)
};

/// All messages and TCP state names deadpeer recognises.
std::span<const known_text> known_texts();

/// What a connection was doing when an error surfaced, as a person reading a log can tell.
enum class activity { connecting, idle, sending };
std::string_view to_string(activity a);
/// "connecting", "idle" or "sending"; nullopt otherwise.
std::optional<activity> activity_from_string(std::string_view name);

/// Whether the cause of `e` depends on what the connection was doing (ETIMEDOUT does).
bool depends_on_activity(const known_error& e);

/// The cause of `e` on a connection that was doing `a`, by classify()'s rules: ETIMEDOUT
/// while connecting is connect_timeout, while idle keepalive_timeout (the only timer that
/// runs on an idle connection with keepalive), while sending retransmission_timeout (or
/// user_timeout where TCP_USER_TIMEOUT was set). Other errors keep their cause.
deadpeer::cause cause_while(const known_error& e, activity a);

/// Looks up user input as it was printed or pasted:
/// - a number ("104", "10053") or a Winsock number in hex ("0x2746", HRESULT "0x80072746");
/// - an errno or Winsock name ("ECONNRESET", "WSAECONNABORTED"), a cause name
///   ("heartbeat_timeout") or a TCP state ("CLOSE_WAIT", "FIN-WAIT-1"), ignoring case;
/// - a message or a whole log line that contains one ("java.net.SocketException:
///   Connection reset", "[Errno 104] Connection reset by peer", "read: connection reset
///   by peer"), ignoring case; an error name or "errno N" inside the line also counts.
///   When several known texts occur, the longest match wins.
/// Linux errno numbers (< 200) and Windows numbers (995 and >= 10000) do not overlap, so
/// the answer is unique. nullopt when nothing matches.
struct lookup_result {
  std::optional<known_error> error;  ///< set when the input named or implied an error number
  deadpeer::cause cause;
  std::optional<known_text> text;  ///< set when a message or state name matched
  std::string_view matched;        ///< the part of the input that decided it (a view into it)
};
std::optional<lookup_result> lookup(std::string_view text);

}  // namespace deadpeer
