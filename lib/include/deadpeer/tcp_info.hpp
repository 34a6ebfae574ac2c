// A snapshot of what the kernel knows about one TCP connection (Linux TCP_INFO): its
// state, RTT estimate, unacknowledged segments, retransmissions and keepalive probes.
// The reaper uses the state to find CLOSE_WAIT leaks; the control API shows the rest so
// an operator can see a connection dying before any timer fires.
#pragma once

#include <deadpeer/cause.hpp>
#include <deadpeer/keepalive.hpp>

#include <cstdint>
#include <optional>
#include <string_view>
#include <system_error>

namespace deadpeer {

struct tcp_snapshot {
  std::string_view state;    ///< "ESTABLISHED", "CLOSE_WAIT", ...
  std::uint32_t rtt_us = 0;  ///< smoothed RTT
  std::uint32_t rttvar_us = 0;
  std::uint32_t rto_us = 0;             ///< current retransmission timeout
  std::uint32_t unacked = 0;            ///< segments sent and not yet acknowledged
  std::uint32_t retransmits = 0;        ///< consecutive retransmissions of the head segment
  std::uint32_t probes = 0;             ///< unanswered zero-window or keepalive probes
  std::uint32_t backoff = 0;            ///< RTO back-off exponent
  std::uint32_t last_data_recv_ms = 0;  ///< since the last data segment arrived
  std::uint32_t last_data_sent_ms = 0;  ///< since the last data segment was sent
  std::uint32_t last_ack_recv_ms = 0;   ///< since the last ACK arrived
};

/// Reads TCP_INFO. Linux only; elsewhere sets ec to operation_not_supported.
std::optional<tcp_snapshot> read_tcp_info(native_socket socket, std::error_code& ec);

/// Why the kernel ended a connection: classify() fed with what the kernel still knows.
/// It purges its queues on abort but keeps its counters: retransmissions mean data was in
/// flight (retransmission or user timeout), keepalive probes mean it was idle. When
/// TCP_INFO cannot say, `sent_since_heard` (we sent after the last thing heard from a peer
/// that answers everything) stands in. Shared by every driver of the protocol engine.
classification classify_socket_end(native_socket socket, std::error_code ec,
                                   connection_context::operation op, bool sent_since_heard,
                                   const keepalive_settings& in_force);

}  // namespace deadpeer
