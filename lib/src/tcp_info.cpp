#include <deadpeer/tcp_info.hpp>

#include <array>
#include <cerrno>

#ifdef __linux__
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#endif

namespace deadpeer {

std::optional<tcp_snapshot> read_tcp_info(native_socket socket, std::error_code& ec) {
  ec.clear();
#ifdef __linux__
  // Indexed by the kernel's TCP_* state numbers (include/net/tcp_states.h).
  static constexpr std::array<std::string_view, 13> names{
      "UNKNOWN", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",   "TIME_WAIT",
      "CLOSE",   "CLOSE_WAIT",  "LAST_ACK", "LISTEN",   "CLOSING",   "NEW_SYN_RECV"};
  tcp_info info{};
  socklen_t length = sizeof info;
  if (::getsockopt(socket, IPPROTO_TCP, TCP_INFO, &info, &length) != 0) {
    ec.assign(errno, std::generic_category());
    return std::nullopt;
  }
  tcp_snapshot s;
  s.state = info.tcpi_state < names.size() ? names[info.tcpi_state] : names[0];
  s.rtt_us = info.tcpi_rtt;
  s.rttvar_us = info.tcpi_rttvar;
  s.rto_us = info.tcpi_rto;
  s.unacked = info.tcpi_unacked;
  s.retransmits = info.tcpi_retransmits;
  s.probes = info.tcpi_probes;
  s.backoff = info.tcpi_backoff;
  s.last_data_recv_ms = info.tcpi_last_data_recv;
  s.last_ack_recv_ms = info.tcpi_last_ack_recv;
  return s;
#else
  (void)socket;
  ec = std::make_error_code(std::errc::operation_not_supported);
  return std::nullopt;
#endif
}

}  // namespace deadpeer
