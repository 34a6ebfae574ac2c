// probe doctor: what is wrong with the TCP connections of programs we did not write.
//
// What this module decides:
// - Doctor reads, never writes. The kernel's view of every socket (sock_diag with TCP_INFO),
//   /proc/PID/fd for which process holds which socket, and, where the kernel permits
//   (pidfd_getfd: same user or CAP_SYS_PTRACE), the keepalive and user-timeout options each
//   socket really has. Where they cannot be read, the socket's pending timer still says
//   whether keepalive is on (an idle ESTABLISHED socket with SO_KEEPALIVE always has the
//   keepalive timer pending), and the report says which values were assumed.
// - Sockets are grouped per process and per place: a port the host listens on (the
//   connections it accepted) or a remote endpoint (the ones it opened). A finding names
//   its group, counts its sockets, gives the worst age, says in plain words what it means
//   and what to do. Orphaned sockets (no process holds them: TIME_WAIT, FIN_WAIT) are
//   counted host-wide against tcp_fin_timeout and the ephemeral port range.
// - The diagnosis is pure: a snapshot and thresholds in, a report out (tested on snapshots
//   of real sockets); scan() is the thin I/O that takes the snapshot.
// - Worst-case detection times come from the keepalive bound calculator with the settings
//   in force, so doctor and `probe bound` never disagree.
#pragma once

#include <deadpeer/keepalive.hpp>
#include <deadpeer/sock_diag.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

namespace probe::doctor {

/// A process holding sockets. pid 0: no process we could see holds it.
struct process_ref {
  int pid = 0;
  std::string program;  ///< /proc/PID/comm
  friend auto operator<=>(const process_ref&, const process_ref&) = default;
};

/// Everything doctor needs, taken at one instant.
struct host_snapshot {
  std::vector<deadpeer::socket_entry> sockets;  ///< with TCP_INFO
  std::unordered_map<std::uint64_t, process_ref> owners;  ///< socket inode -> holder
  /// Socket inode -> options read from the socket itself (pidfd_getfd + getsockopt).
  std::unordered_map<std::uint64_t, deadpeer::keepalive_settings> settings;
  /// Why some sockets' options could not be read (empty when all could).
  std::string settings_unreadable;
  deadpeer::kernel_defaults defaults;
  std::chrono::seconds fin_timeout{60};  ///< net.ipv4.tcp_fin_timeout
  int port_range_first = 32768, port_range_last = 60999;  ///< net.ipv4.ip_local_port_range
};

/// Which sockets to look at: all, those of one process, or those with one local or remote port.
struct scope {
  std::optional<int> pid;
  std::optional<unsigned short> port;
};

struct thresholds {
  /// An ESTABLISHED socket without keepalive and silent this long is a ghost candidate.
  std::chrono::milliseconds idle_over = std::chrono::minutes(10);
  /// A CLOSE_WAIT socket whose last data is older than this is a leak, not a close under way.
  std::chrono::milliseconds close_wait_over = std::chrono::minutes(1);
};

/// Where a group's sockets are: connections accepted on a listening port, or opened to a
/// remote endpoint.
struct place {
  std::optional<unsigned short> listening_port;
  std::optional<boost::asio::ip::tcp::endpoint> remote;
  std::string describe() const;  ///< "port 8080" or "to 10.0.0.5:443"
  friend bool operator==(const place&, const place&) = default;
  friend bool operator<(const place& a, const place& b) {
    return std::tie(a.listening_port, a.remote) < std::tie(b.listening_port, b.remote);
  }
};

/// Keepalive as it is in force for one group.
struct coverage {
  int sockets = 0;        ///< connected sockets in the group (not LISTEN)
  int settings_read = 0;  ///< of which the options were read from the socket
  int keepalive_on = 0, keepalive_off = 0;  ///< known per socket (read, or from the timer)
  /// The settings that give the longest idle bound among the sockets (read values; where
  /// none could be read, the system's keepalive values and keepalive on when any socket
  /// shows the keepalive timer).
  deadpeer::keepalive_settings worst;
  bool user_timeout_known = false;  ///< false: no socket's options could be read
  deadpeer::detection_bound bound;  ///< for `worst`
  /// "read from 12 of 12 sockets", "assumed: ...".
  std::string basis;
};

struct group {
  process_ref process;
  place where;
  std::map<std::string, int> states;  ///< "ESTABLISHED" -> count
  coverage keepalive;
};

enum class finding_kind {
  close_wait_leak,         ///< the program never closed after the peer's FIN
  idle_without_keepalive,  ///< ghost candidates: nothing will ever notice a dead peer
  retransmitting,          ///< the peer went silent while we were sending
  peer_not_reading,        ///< zero-window probes: the peer is alive and does not read
  fin_wait2_held,          ///< half-closed by the program, never finished by the peer
  time_wait_ports,         ///< TIME_WAIT to one destination eating the ephemeral ports
};
std::string_view to_string(finding_kind kind);

struct finding {
  finding_kind kind{};
  process_ref process;  ///< pid 0 for host-wide findings
  std::string where;    ///< "port 8080", "to 10.0.0.5:443", "host"
  int count = 0;
  std::chrono::milliseconds worst{0};  ///< oldest age, longest idle or longest time left
  std::string verdict;  ///< one paragraph, plain words: what it is and what it means
  std::string advice;   ///< what to do
};

/// Host-wide teardown states, orphans included.
struct teardown {
  int time_wait = 0;
  int fin_wait2_orphaned = 0, fin_wait2_held = 0;
  int fin_wait1 = 0, last_ack = 0, closing = 0;
  int busiest_destination_time_wait = 0;  ///< TIME_WAIT toward the busiest remote endpoint
  std::string busiest_destination;
  int port_range_size = 0;
};

struct report {
  int sockets_seen = 0;  ///< in scope
  std::vector<group> groups;
  std::vector<finding> findings;
  teardown closing;
};

/// The diagnosis of one snapshot.
report diagnose(const host_snapshot& host, const scope& only, const thresholds& limits);

/// Takes the snapshot of this network namespace's sockets (those in `only`, to keep the
/// reads few) and the processes of this PID namespace. Throws std::system_error when
/// sock_diag is unavailable.
host_snapshot scan(const scope& only);

}  // namespace probe::doctor
