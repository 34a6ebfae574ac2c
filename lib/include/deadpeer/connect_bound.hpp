// How long a connect() to a peer that never answers can take before it fails with
// ETIMEDOUT: the SYN retry schedule of Linux (tcp_write_timeout and tcp_retransmit_timer in
// net/ipv4/tcp_timer.c), modelled from the sysctls that drive it and the timer wheel that
// runs it, so the result is the latest the kernel can give up, a bound the fault lab holds
// its connect faults to.
//
// What the kernel does, as measured in the lab (6.18, HZ 250) and as the source reads:
// - The first SYN leaves at connect(); the retransmission timer starts at 1 s
//   (TCP_TIMEOUT_INIT). With net.ipv4.tcp_syn_linear_timeouts = L (kernels since 6.7;
//   default 4), the first L + 1 timeouts are all 1 s, then the timeout doubles (2, 4, 8 s...,
//   capped at 120 s). Without the sysctl, it doubles from the start: 1, 2, 4, 8 s...
// - Each time the timer fires the socket gives up, instead of sending another SYN, when
//   either (a) it has already retransmitted tcp_syn_retries + L times, or (b) the time since
//   the first SYN reaches the classic back-off's total for tcp_syn_retries = N:
//   (2^(N+1) - 1) s for N <= 6, else 127 s + (N - 6) x 120 s. So with L = 4, N = 1 gives up
//   at 3 s (rule b), N = 2 at 7 s (rule b), N = 3 at 19 s (rule a, 7 retransmissions).
// - Each timeout is armed from the previous firing and fires late by its wheel level's
//   granularity plus a tick (kernel_timer_timing), and that lateness adds up.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace deadpeer {

/// The sysctls (per network namespace) that decide a connect's SYN retries.
struct syn_retry_settings {
  int syn_retries = 6;                 ///< net.ipv4.tcp_syn_retries (1..127)
  std::optional<int> linear_timeouts;  ///< net.ipv4.tcp_syn_linear_timeouts; nullopt: absent
  int synack_retries = 5;              ///< net.ipv4.tcp_synack_retries (the listener's side)
  bool from_system = false;            ///< read from /proc, not Linux's defaults
};

/// Reads net.ipv4.tcp_syn_retries, tcp_syn_linear_timeouts and tcp_synack_retries of the
/// calling thread's network namespace from /proc/sys. A file that cannot be read keeps
/// Linux's default; tcp_syn_linear_timeouts missing means a kernel without linear timeouts.
syn_retry_settings read_syn_retry_settings();

/// The worst case of one connect() that is never answered (SYN or SYN-ACK lost, listener
/// queue full), from the moment connect() sends the first SYN.
struct connect_bound {
  /// The option arithmetic: when the kernel gives up with every timer on time.
  std::chrono::milliseconds nominal{0};
  /// The latest it can give up: every timeout late by its timer wheel grid at `hz`.
  std::chrono::milliseconds latest{0};
  /// SYN retransmissions before giving up (the first SYN not counted).
  int retransmissions = 0;
  /// The retransmission timeouts in order, nominal: the last one ends in the failure.
  std::vector<std::chrono::milliseconds> timeouts;
  /// Why the kernel stops there: "retransmission count" or "time since the first SYN".
  std::string stop_rule;
  /// The formula with the numbers filled in.
  std::string arithmetic;
};

/// Models the SYN retry schedule for `settings` at timer tick rate `hz` (0: nominal, no
/// timer slack). Throws std::invalid_argument for syn_retries outside 1..127 or a negative
/// linear_timeouts.
connect_bound compute_connect_bound(const syn_retry_settings& settings, int hz);

/// How long a listener keeps a half-open connection whose SYN-ACKs go unanswered:
/// tcp_synack_retries retransmissions, doubling from 1 s, then one more timeout. Nominal
/// (its timers run on the listener's request-socket timer, not exactly the wheel model).
std::chrono::milliseconds synack_give_up_time(int synack_retries);

}  // namespace deadpeer
