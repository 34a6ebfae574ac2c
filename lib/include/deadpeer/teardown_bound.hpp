// How long a closed connection lingers in the kernel after close() when the peer does not
// finish the close: the teardown states of Linux's TCP (net/ipv4/tcp.c, tcp_timer.c,
// tcp_minisocks.c), modelled from the sysctls that drive them and the timer wheel that runs
// them, so the result is the latest the kernel can hold each state: a bound the fault lab
// holds its teardown faults (fin-drop, fin-wait2, time-wait) to.
//
// What the kernel does, as measured in the lab (6.18, HZ 250) and as the source reads:
// - FIN_WAIT1 of an orphan (we closed; our FIN is never acknowledged): a tail loss probe
//   (when tcp_early_retrans is 3 or 4 and SACK is on) after about one RTO, then RTO
//   retransmissions doubling from the connection's RTO. The first RTO retransmission starts
//   the clock (retrans_stamp); at each later firing the orphan is destroyed once that clock
//   reaches the model timeout of tcp_orphan_retries (the tcp_retries2 arithmetic from
//   200 ms). tcp_orphan_retries 0 means 8 while the RTO is below TCP_RTO_MAX (measured:
//   0 kept the orphan 106.2 s, 8 retransmissions; 8 predicts 104.4 s nominal). With RTO
//   204 ms and 2 retries: probe 204 ms + 204 ms + 408 + 816 + 1632 ms = 3.26 s; measured
//   3.34 s.
// - FIN_WAIT2 of an orphan (our FIN acknowledged, the peer's FIN never arrives): a
//   timewait socket in substate FIN_WAIT2 for tcp_fin_time() = max(tcp_fin_timeout,
//   3.5 RTO) from the ACK; above 60 s the first (time - 60 s) runs on the keepalive timer.
// - TIME_WAIT: TCP_TIMEWAIT_LEN, 60 s, fixed (no sysctl changes it on 6.18; tcp_tw_reuse
//   only lets a new connect() take the port over).
// - Each timer fires late by its wheel level's granularity plus a tick (kernel_timer_timing):
//   at HZ 250 a 2 s FIN_WAIT2 (500 ticks, level 1) up to 36 ms late, 3 s (level 2) up to
//   260 ms, TIME_WAIT's 60 s up to 2.05 s.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

namespace deadpeer {

/// The teardown state whose lifetime is bounded.
enum class teardown_state {
  fin_wait1,  ///< orphan whose FIN is never acknowledged: destroyed after tcp_orphan_retries
  fin_wait2,  ///< orphan whose FIN was acknowledged, the peer's FIN never comes: tcp_fin_timeout
  time_wait,  ///< after a complete active close: TCP_TIMEWAIT_LEN
};
/// "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT".
std::string_view to_string(teardown_state state);

/// TIME_WAIT's length on Linux (TCP_TIMEWAIT_LEN): compiled in, not a sysctl.
inline constexpr std::chrono::milliseconds time_wait_length{60'000};

/// What decides the teardown timers (sysctls per network namespace, and the connection's RTO).
struct teardown_settings {
  int orphan_retries = 0;                         ///< net.ipv4.tcp_orphan_retries (0: kernel's 8)
  std::chrono::milliseconds fin_timeout{60'000};  ///< net.ipv4.tcp_fin_timeout
  bool loss_probe = true;  ///< tcp_early_retrans 3 or 4 and tcp_sack on: a tail loss probe first
  std::chrono::milliseconds rto{200};  ///< the connection's RTO at close (TCP_INFO tcpi_rto)
  /// Allowance for one exchange with the peer (its ACK of our FIN, its FIN): the state's
  /// timer starts only then. 0 counts from the state's entry.
  std::chrono::milliseconds round_trip{0};
  bool from_system = false;  ///< the sysctls were read, not Linux's defaults
};

/// Reads net.ipv4.tcp_orphan_retries, tcp_fin_timeout, tcp_early_retrans and tcp_sack of
/// the calling thread's network namespace from /proc/sys; a file that cannot be read keeps
/// Linux's default. rto and round_trip are left as they are (per connection).
teardown_settings read_teardown_settings();

/// tcp_orphan_retries as the kernel applies it: 0 means 8 (while the RTO is below 120 s).
int effective_orphan_retries(int orphan_retries);

/// The latest the kernel can hold one teardown state, from close().
struct teardown_bound {
  /// With every timer on time.
  std::chrono::milliseconds nominal{0};
  /// Every timer late by its timer wheel grid at `hz`, plus the round trips the state waits for.
  std::chrono::milliseconds latest{0};
  /// FIN_WAIT1: RTO retransmissions of the FIN before the orphan is destroyed (the loss
  /// probe not counted); 0 for the other states.
  int retransmissions = 0;
  /// The timers in order, nominal; the last one ends the state.
  std::vector<std::chrono::milliseconds> timeouts;
  /// What ends the state: "tcp_orphan_retries", "tcp_fin_timeout" or "TCP_TIMEWAIT_LEN".
  std::string ended_by;
  /// The formula with the numbers filled in.
  std::string arithmetic;
};

/// Models `state` for `settings` at timer tick rate `hz` (0: nominal, no timer slack).
/// Throws std::invalid_argument for a negative orphan_retries, a fin_timeout below 1 s or
/// an RTO below 1 ms.
teardown_bound compute_teardown_bound(teardown_state state, const teardown_settings& settings,
                                      int hz);

}  // namespace deadpeer
