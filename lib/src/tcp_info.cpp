#include <deadpeer/tcp_info.hpp>

#include "tcp_snapshot_of.hpp"

#include <array>
#include <cerrno>

#ifdef __linux__
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#endif

namespace deadpeer {

#ifdef __linux__
tcp_snapshot snapshot_of(const ::tcp_info& info) {
  // Indexed by the kernel's TCP_* state numbers (include/net/tcp_states.h).
  static constexpr std::array<std::string_view, 13> names{
      "UNKNOWN", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",   "TIME_WAIT",
      "CLOSE",   "CLOSE_WAIT",  "LAST_ACK", "LISTEN",   "CLOSING",   "NEW_SYN_RECV"};
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
  s.last_data_sent_ms = info.tcpi_last_data_sent;
  s.last_ack_recv_ms = info.tcpi_last_ack_recv;
  return s;
}
#endif

std::optional<tcp_snapshot> read_tcp_info(native_socket socket, std::error_code& ec) {
  ec.clear();
#ifdef __linux__
  tcp_info info{};
  socklen_t length = sizeof info;
  if (::getsockopt(socket, IPPROTO_TCP, TCP_INFO, &info, &length) != 0) {
    ec.assign(errno, std::generic_category());
    return std::nullopt;
  }
  return snapshot_of(info);
#else
  (void)socket;
  ec = std::make_error_code(std::errc::operation_not_supported);
  return std::nullopt;
#endif
}

classification classify_socket_end(native_socket socket, std::error_code ec,
                                   connection_context::operation op, bool sent_since_heard,
                                   const keepalive_settings& in_force) {
  bool in_flight = sent_since_heard;
  std::error_code info_error;
  if (const auto kernel = read_tcp_info(socket, info_error)) {
    if (kernel->retransmits > 0 || kernel->backoff > 0)
      in_flight = true;
    else if (kernel->probes > 0)
      in_flight = false;
  }
  return classify(ec, connection_context{.op = op,
                                         .data_in_flight = in_flight,
                                         .keepalive_armed = in_force.enabled,
                                         .user_timeout_armed = in_force.user_timeout.count() != 0});
}

}  // namespace deadpeer
