// The teardown bound: each state's timers stepped one by one, because FIN_WAIT1's end is
// decided by a time budget checked only when a back-off fires (which firing crosses it
// depends on the RTO), and FIN_WAIT2 above 60 s runs on two timers in turn. Timer slack
// comes from kernel_timer_timing, the same wheel model as the keepalive and connect bounds.
#include <deadpeer/teardown_bound.hpp>

#include <deadpeer/duration.hpp>
#include <deadpeer/keepalive.hpp>

#include <algorithm>
#include <fstream>
#include <optional>
#include <stdexcept>

namespace deadpeer {
namespace {

using std::chrono::milliseconds;

constexpr milliseconds rto_max{120'000};   // TCP_RTO_MAX
constexpr int default_orphan_retries = 8;  // tcp_orphan_retries() when the sysctl is 0
constexpr int max_backoffs = 64;           // far above any budget's crossing; bounds the loop

std::optional<int> read_int(const char* path) {
  std::ifstream in(path);
  int value = 0;
  if (in >> value) return value;
  return std::nullopt;
}

std::string join(const std::vector<milliseconds>& timeouts) {
  std::string text;
  for (const auto t : timeouts)
    text += (text.empty() ? "" : " + ") + format_duration(t);
  return text;
}

}  // namespace

std::string_view to_string(teardown_state state) {
  switch (state) {
    case teardown_state::fin_wait1:
      return "FIN_WAIT1";
    case teardown_state::fin_wait2:
      return "FIN_WAIT2";
    case teardown_state::time_wait:
      return "TIME_WAIT";
  }
  return "?";
}

teardown_settings read_teardown_settings() {
  teardown_settings s;
  const auto orphan = read_int("/proc/sys/net/ipv4/tcp_orphan_retries");
  const auto fin = read_int("/proc/sys/net/ipv4/tcp_fin_timeout");
  const auto early = read_int("/proc/sys/net/ipv4/tcp_early_retrans");
  const auto sack = read_int("/proc/sys/net/ipv4/tcp_sack");
  if (orphan) s.orphan_retries = *orphan;
  if (fin) s.fin_timeout = std::chrono::seconds(*fin);
  s.loss_probe = (early.value_or(3) == 3 || early.value_or(3) == 4) && sack.value_or(1) != 0;
  s.from_system = orphan.has_value() && fin.has_value();
  return s;
}

int effective_orphan_retries(int orphan_retries) {
  return orphan_retries == 0 ? default_orphan_retries : orphan_retries;
}

teardown_bound compute_teardown_bound(teardown_state state, const teardown_settings& settings,
                                      int hz) {
  if (settings.orphan_retries < 0)
    throw std::invalid_argument("tcp_orphan_retries " + std::to_string(settings.orphan_retries) +
                                " is negative");
  if (settings.fin_timeout < milliseconds(1000))
    throw std::invalid_argument("tcp_fin_timeout " + format_duration(settings.fin_timeout) +
                                " is below 1s");
  if (settings.rto < milliseconds(1))
    throw std::invalid_argument("an RTO of " + format_duration(settings.rto) + " is below 1ms");
  const auto late = [hz](milliseconds d) { return kernel_timer_timing(d, hz).latest; };
  const std::string grid =
      hz > 0 ? "; each timer late by its timer wheel grid at HZ " + std::to_string(hz) : "";

  teardown_bound b;
  if (state == teardown_state::fin_wait1) {
    const int retries = effective_orphan_retries(settings.orphan_retries);
    // tcp_model_timeout(retries, TCP_RTO_MIN): the same doubling sum as tcp_retries2.
    const auto budget = retransmission_give_up_time(retries);
    if (settings.loss_probe) b.timeouts.push_back(settings.rto);  // PTO: at most the RTO
    b.timeouts.push_back(settings.rto);  // first RTO: retransmission 1, retrans_stamp
    b.retransmissions = 1;
    milliseconds since_stamp{0}, rto = std::min(settings.rto * 2, rto_max);
    for (int k = 0; k < max_backoffs; ++k) {
      b.timeouts.push_back(rto);
      since_stamp += rto;
      if (since_stamp >= budget) break;  // this firing destroys the orphan
      ++b.retransmissions;
      rto = std::min(rto * 2, rto_max);
    }
    for (const auto t : b.timeouts) {
      b.nominal += t;
      b.latest += late(t);
    }
    b.ended_by = "tcp_orphan_retries";
    b.arithmetic = "tcp_orphan_retries " + std::to_string(settings.orphan_retries) +
                   (settings.orphan_retries == 0 ? " (the kernel's 8)" : "") + ", RTO " +
                   format_duration(settings.rto) + ": " +
                   (settings.loss_probe ? "loss probe + " : "") + "timeouts " + join(b.timeouts) +
                   " = " + format_duration(b.nominal) + " (" + std::to_string(b.retransmissions) +
                   " retransmissions of the FIN; destroyed at the first back-off " +
                   format_duration(budget) + " or more after the first retransmission)" + grid +
                   ": at most " + format_duration(b.latest);
    return b;
  }

  // FIN_WAIT2 and TIME_WAIT start when the peer's ACK (and, for TIME_WAIT, its FIN) arrives.
  const int exchanges = state == teardown_state::fin_wait2 ? 1 : 2;
  const auto waits = settings.round_trip * exchanges;
  std::string what;
  if (state == teardown_state::fin_wait2) {
    // tcp_fin_time(): never below 3.5 RTO.
    const auto held = std::max(settings.fin_timeout, settings.rto * 4 - settings.rto / 2);
    if (held > time_wait_length) {
      b.timeouts = {held - time_wait_length, time_wait_length};  // keepalive timer, then timewait
    } else {
      b.timeouts = {held};
    }
    b.ended_by = "tcp_fin_timeout";
    what = "tcp_fin_timeout " + format_duration(settings.fin_timeout) +
           (held != settings.fin_timeout ? " (3.5 RTO " + format_duration(held) + ")" : "") +
           (b.timeouts.size() > 1
                ? ": keepalive timer " + format_duration(b.timeouts[0]) + " then timewait 60s"
                : "");
  } else {
    b.timeouts = {time_wait_length};
    b.ended_by = "TCP_TIMEWAIT_LEN";
    what = "TCP_TIMEWAIT_LEN 60s (fixed)";
  }
  for (const auto t : b.timeouts) {
    b.nominal += t;
    b.latest += late(t);
  }
  b.latest += waits;
  b.arithmetic =
      what + " = " + format_duration(b.nominal) + " from the peer's " +
      (exchanges == 1 ? "ACK of our FIN" : "FIN") +
      (waits.count() > 0 ? ", " + std::to_string(exchanges) + " x " +
                               format_duration(settings.round_trip) + " allowed for the exchange"
                         : "") +
      grid + ": at most " + format_duration(b.latest) + " from close()";
  return b;
}

}  // namespace deadpeer
