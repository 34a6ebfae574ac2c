// Why a connection ended. An error_code alone is ambiguous: ETIMEDOUT can be the
// keepalive timer, TCP_USER_TIMEOUT or exhausted retransmissions, and which one it was
// depends on what the connection was doing. The classifier takes the code plus that
// context and names one cause; each cause carries an explanation written for the
// operator who has to act on it. Error numbers are accepted in Linux errno and Winsock
// form, by number or by name, so a log line from either platform can be explained.
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

/// Looks up user input as printed in a log: a number ("104", "10053"), an errno or
/// Winsock name ("ECONNRESET", "WSAECONNABORTED", case-insensitive), or a cause name
/// ("heartbeat_timeout"). Linux errno numbers (< 200) and Windows numbers (995 and
/// >= 10000) do not overlap, so the answer is unique. nullopt when nothing matches.
struct lookup_result {
  std::optional<known_error> error;  ///< set when the input named an error number
  deadpeer::cause cause;
};
std::optional<lookup_result> lookup(std::string_view text);

}  // namespace deadpeer
