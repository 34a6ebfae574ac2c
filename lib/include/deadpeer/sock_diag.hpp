// What the kernel knows about TCP sockets it holds for any process, asked over
// NETLINK_INET_DIAG (sock_diag(7)): state, pending timer, queues, owner inode.
//
// What this module decides:
// - It reads and never writes. An observer of a program we did not write (probe's target
//   mode, doctor) learns when that program's socket for one peer leaves ESTABLISHED or
//   disappears without knowing anything of its protocol.
// - A lookup by exact 4-tuple is one request and one answer (no dump of the whole table),
//   cheap enough to poll every millisecond. The kernel answers such a lookup with the
//   listening socket when no connection matches; that is reported as "no such socket".
// - TCP_INFO (INET_DIAG_INFO) is asked for only when wanted: it triples each answer, and
//   doctor needs it where a lookup by 4-tuple does not.
// - The netlink socket belongs to the network namespace it was created in: create the
//   object inside the namespace to observe (the lab's server namespace), use it anywhere.
#pragma once

#include <deadpeer/tcp_info.hpp>

#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace deadpeer {

/// TCP states as the kernel numbers them (include/net/tcp_states.h).
enum class tcp_state : std::uint8_t {
  established = 1,
  syn_sent,
  syn_recv,
  fin_wait1,
  fin_wait2,
  time_wait,
  close,
  close_wait,
  last_ack,
  listen,
  closing,
  new_syn_recv,
};
/// "ESTABLISHED", "FIN_WAIT1", ... as ss(8) prints them.
std::string_view to_string(tcp_state state);

/// The timer the kernel has pending on a socket (inet_diag_msg.idiag_timer).
enum class socket_timer : std::uint8_t {
  none = 0,
  retransmit = 1,  ///< also a pending loss probe
  keepalive = 2,   ///< SO_KEEPALIVE is on and the connection is idle
  time_wait = 3,
  zero_window_probe = 4,
};
std::string_view to_string(socket_timer timer);

struct socket_entry {
  boost::asio::ip::tcp::endpoint local, remote;
  tcp_state state = tcp_state::close;
  socket_timer timer = socket_timer::none;
  std::chrono::milliseconds timer_expires{0};  ///< until the pending timer fires
  std::uint8_t retransmits = 0;     ///< retransmissions (or keepalive probes) of that timer
  std::uint32_t receive_queue = 0;  ///< bytes not yet read (listen: pending connections)
  std::uint32_t send_queue = 0;     ///< bytes not yet acknowledged
  std::uint32_t uid = 0;
  std::uint64_t inode = 0;  ///< 0 once no process holds it (orphaned)
  /// The kernel's TCP_INFO for the socket, when asked for (sock_diag::detail::tcp_info).
  std::optional<tcp_snapshot> info;
};

/// One NETLINK_INET_DIAG socket in the network namespace of the thread that created it.
class sock_diag {
 public:
  /// Throws std::system_error when netlink is unavailable.
  sock_diag();
  ~sock_diag();
  sock_diag(const sock_diag&) = delete;
  sock_diag& operator=(const sock_diag&) = delete;

  /// The connection with exactly this local and remote address (both of one family);
  /// nullopt when the kernel holds none. Throws std::system_error on a netlink failure.
  std::optional<socket_entry> find(const boost::asio::ip::tcp::endpoint& local,
                                   const boost::asio::ip::tcp::endpoint& remote);
  /// What list() asks the kernel for besides the fixed part of each answer.
  enum class detail { states, tcp_info };
  /// Every TCP socket of both families (listeners included), with TCP_INFO when `what` is
  /// detail::tcp_info. Throws std::system_error.
  std::vector<socket_entry> list(detail what = detail::states);

 private:
  int fd_ = -1;
  std::uint32_t sequence_ = 0;
};

}  // namespace deadpeer
