// The connect bound: Linux's SYN retry schedule (net/ipv4/tcp_timer.c) stepped timer by
// timer, because its two stopping rules (a retransmission count and a time budget) cross
// at different retries depending on the sysctls, and a closed formula would hide which one
// decided. Timer slack comes from kernel_timer_timing, the same wheel model as keepalive.
#include <deadpeer/connect_bound.hpp>

#include <deadpeer/duration.hpp>
#include <deadpeer/keepalive.hpp>

#include <algorithm>
#include <fstream>
#include <stdexcept>

namespace deadpeer {
namespace {

using std::chrono::milliseconds;

constexpr milliseconds syn_initial_timeout{1000};  // TCP_TIMEOUT_INIT
constexpr milliseconds rto_max{120'000};           // TCP_RTO_MAX
constexpr int max_syn_retries = 127;               // MAX_TCP_SYNCNT

std::optional<int> read_int(const char* path) {
  std::ifstream in(path);
  int value = 0;
  if (in >> value) return value;
  return std::nullopt;
}

// tcp_model_timeout(): the time the classic doubling back-off takes for `boundary`
// retries from a base of 1 s, the budget a SYN_SENT socket is held to.
milliseconds model_timeout(int boundary) {
  const int linear_backoff_thresh = 6;  // ilog2(TCP_RTO_MAX / TCP_TIMEOUT_INIT)
  if (boundary <= linear_backoff_thresh)
    return syn_initial_timeout * ((2 << boundary) - 1);
  return syn_initial_timeout * ((2 << linear_backoff_thresh) - 1) +
         rto_max * (boundary - linear_backoff_thresh);
}

std::string join_timeouts(const std::vector<milliseconds>& timeouts) {
  // Runs of equal timeouts are written once with a count: "5 x 1s + 2s + 4s + 8s".
  std::string text;
  for (std::size_t i = 0; i < timeouts.size();) {
    std::size_t j = i;
    while (j < timeouts.size() && timeouts[j] == timeouts[i])
      ++j;
    if (!text.empty()) text += " + ";
    if (j - i > 1) text += std::to_string(j - i) + " x ";
    text += format_duration(timeouts[i]);
    i = j;
  }
  return text;
}

}  // namespace

syn_retry_settings read_syn_retry_settings() {
  syn_retry_settings s;
  const auto retries = read_int("/proc/sys/net/ipv4/tcp_syn_retries");
  const auto synack = read_int("/proc/sys/net/ipv4/tcp_synack_retries");
  s.linear_timeouts = read_int("/proc/sys/net/ipv4/tcp_syn_linear_timeouts");
  if (retries) s.syn_retries = *retries;
  if (synack) s.synack_retries = *synack;
  s.from_system = retries.has_value();
  return s;
}

connect_bound compute_connect_bound(const syn_retry_settings& settings, int hz) {
  const int n = settings.syn_retries;
  if (n < 1 || n > max_syn_retries)
    throw std::invalid_argument("tcp_syn_retries " + std::to_string(n) + " is outside 1..127");
  if (settings.linear_timeouts && *settings.linear_timeouts < 0)
    throw std::invalid_argument("tcp_syn_linear_timeouts " +
                                std::to_string(*settings.linear_timeouts) + " is negative");
  const int linear = settings.linear_timeouts.value_or(0);
  const int max_retransmissions = n + linear;
  const auto budget = model_timeout(n);

  connect_bound b;
  milliseconds timeout = syn_initial_timeout;
  milliseconds elapsed{0};
  // Timer k fires after the k-th timeout; retransmissions so far: k - 1. Bounded: rule (a)
  // stops it after n + linear + 1 timers at most.
  for (int k = 1; k <= max_retransmissions + 1; ++k) {
    b.timeouts.push_back(timeout);
    elapsed += timeout;
    b.latest += kernel_timer_timing(timeout, hz).latest;
    const bool count_rule = k - 1 >= max_retransmissions;
    const bool time_rule = elapsed >= budget;
    if (count_rule || time_rule) {
      b.stop_rule = count_rule ? "retransmission count" : "time since the first SYN";
      break;
    }
    ++b.retransmissions;
    // tcp_retransmit_timer: timeouts stay at 1 s while fewer than linear + 1 have expired.
    if (k > linear) timeout = std::min(timeout * 2, rto_max);
  }
  b.nominal = elapsed;

  const std::string linear_text =
      settings.linear_timeouts ? "tcp_syn_linear_timeouts " + std::to_string(linear)
                               : "no tcp_syn_linear_timeouts (classic back-off)";
  b.arithmetic = "tcp_syn_retries " + std::to_string(n) + ", " + linear_text +
                 ": SYN timeouts " + join_timeouts(b.timeouts) + " = " + format_duration(b.nominal) +
                 " (" + std::to_string(b.retransmissions) + " retransmissions; stops on the " +
                 b.stop_rule + ": " + std::to_string(max_retransmissions) +
                 " retransmissions or " + format_duration(budget) + " since the first SYN)";
  if (hz > 0)
    b.arithmetic += "; each timeout late by its timer wheel grid at HZ " + std::to_string(hz) +
                    ": at most " + format_duration(b.latest);
  return b;
}

milliseconds synack_give_up_time(int synack_retries) {
  milliseconds total{0}, timeout = syn_initial_timeout;
  for (int i = 0; i <= std::clamp(synack_retries, 0, 255); ++i) {
    total += timeout;
    timeout = std::min(timeout * 2, rto_max);
  }
  return total;
}

}  // namespace deadpeer
