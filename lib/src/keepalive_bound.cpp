// How long can a dead peer go unnoticed? The arithmetic here mirrors Linux's timers
// (tcp_keepalive_timer and tcp_write_timeout in net/ipv4/tcp_timer.c) so the figures it
// prints are the ones the fault lab measures, plus tens of milliseconds of timer slack.
// The tuner runs the same arithmetic backwards.
#include <deadpeer/keepalive.hpp>

#include <deadpeer/duration.hpp>

#include <algorithm>
#include <cstdint>

namespace deadpeer {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr milliseconds rto_min{200};      // TCP_RTO_MIN
constexpr milliseconds rto_max{120'000};  // TCP_RTO_MAX

std::string fmt(milliseconds d) {
  return format_duration(d);
}

}  // namespace

milliseconds retransmission_give_up_time(int retries2) {
  // One initial RTO plus `retries2` back-offs, each doubling and capped at TCP_RTO_MAX.
  milliseconds total{0};
  milliseconds rto = rto_min;
  for (int i = 0; i <= std::max(retries2, 0); ++i) {
    total += rto;
    rto = std::min(rto * 2, rto_max);
  }
  return total;
}

detection_bound compute_bound(const keepalive_settings& s, int tcp_retries2) {
  detection_bound b;
  const milliseconds idle = s.idle;
  const milliseconds interval = s.interval;
  const milliseconds user = s.user_timeout;

  if (!s.enabled) {
    b.idle_arithmetic = "keepalive off: an idle connection to a dead peer is never noticed";
  } else if (user.count() == 0) {
    b.idle = idle + interval * s.count;
    b.idle_arithmetic = "idle + interval x count = " + fmt(idle) + " + " + fmt(interval) + " x " +
                        std::to_string(s.count) + " = " + fmt(*b.idle);
  } else {
    // With a user timeout the probe count is ignored: the keepalive timer aborts at the
    // first probe time where the silence has lasted at least U and one probe is out.
    const auto after_idle = user - idle;
    std::int64_t probes = 1;
    if (after_idle > milliseconds(0))
      probes =
          std::max<std::int64_t>(1, (after_idle.count() + interval.count() - 1) / interval.count());
    b.idle = idle + interval * probes;
    b.idle_arithmetic =
        "idle + interval x max(1, ceil((user_timeout - idle) / interval)) = " + fmt(idle) + " + " +
        fmt(interval) + " x max(1, ceil((" + fmt(user) + " - " + fmt(idle) + ") / " +
        fmt(interval) + ")) = " + fmt(idle) + " + " + fmt(interval) + " x " +
        std::to_string(probes) + " = " + fmt(*b.idle) + " (count " + std::to_string(s.count) +
        " is ignored when a user timeout is set)";
  }

  if (user.count() != 0) {
    b.busy = user;
    b.busy_arithmetic =
        "user_timeout = " + fmt(user) + " (keepalive is not sent while data is unacknowledged)";
  } else {
    b.busy = retransmission_give_up_time(tcp_retries2);
    const int doublings = std::min(tcp_retries2, 9);
    b.busy_arithmetic = "no user timeout: retransmission back-off with tcp_retries2 = " +
                        std::to_string(tcp_retries2) + ": 200ms doubling";
    b.busy_arithmetic += tcp_retries2 > 9 ? " to 102.4s (" + std::to_string(doublings + 1) +
                                                " timeouts), then " +
                                                std::to_string(tcp_retries2 - 9) + " x 120s"
                                          : " (" + std::to_string(tcp_retries2 + 1) + " timeouts)";
    b.busy_arithmetic += " = " + fmt(b.busy) + " (a lower bound when RTT > 200ms)";
  }
  return b;
}

tune_proposal tune(const tune_request& r) {
  tune_proposal p;
  const auto target_s = std::chrono::duration_cast<seconds>(r.detect_within).count();
  if (target_s < 2) {
    p.reason = "kernel keepalive cannot detect within " + fmt(r.detect_within) +
               ": idle, interval and count are at least 1s, 1s and 1, so the shortest bound is "
               "2s; use an application heartbeat (deadpeer's session) for sub-2s detection";
    return p;
  }
  std::int64_t idle_cap = max_keepalive_idle.count();
  if (r.nat_idle) {
    const auto nat_ms = r.nat_idle->count();
    // Keepalive traffic must come before the middlebox forgets the flow: keep idle at
    // most 80% of its timeout, in whole seconds, and strictly below it.
    idle_cap = std::min<std::int64_t>(idle_cap, nat_ms * 4 / 5 / 1000);
    if (idle_cap < 1) {
      p.reason = "a NAT idle timeout of " + fmt(*r.nat_idle) +
                 " is too short for kernel keepalive (idle is at least 1s and must stay "
                 "below 80% of the NAT timeout); send application heartbeats instead";
      return p;
    }
  }

  // Spend about half the budget waiting for silence and half on probes, with three
  // probes where the budget allows (one lost probe is then not fatal).
  const std::int64_t count = std::min<std::int64_t>(3, target_s - 1);
  const std::int64_t interval =
      std::clamp<std::int64_t>(target_s / 2 / count, 1, max_keepalive_interval.count());
  const std::int64_t idle = std::clamp<std::int64_t>(target_s - interval * count, 1, idle_cap);

  p.feasible = true;
  p.settings.enabled = true;
  p.settings.idle = seconds(idle);
  p.settings.interval = seconds(interval);
  p.settings.count = static_cast<int>(count);
  // U equal to the idle bound keeps the idle bound unchanged and bounds busy connections
  // by the same figure.
  p.settings.user_timeout = milliseconds(seconds(idle + interval * count));
  p.bound = compute_bound(p.settings, kernel_defaults{}.retries2);

  p.notes.push_back("count " + std::to_string(count) +
                    (count == 3 ? ": one lost probe does not kill a live connection"
                                : ": the target leaves room for only this many probes"));
  p.notes.push_back("interval " + std::to_string(interval) + "s and idle " + std::to_string(idle) +
                    "s: silence + probes fit in " + fmt(r.detect_within));
  if (r.nat_idle)
    p.notes.push_back("idle " + std::to_string(idle) + "s stays below 80% of the " +
                      fmt(*r.nat_idle) + " NAT timeout, so probes keep the mapping alive");
  p.notes.push_back("user timeout " + fmt(p.settings.user_timeout) +
                    ": a busy connection (unacknowledged data, where keepalive is silent) is "
                    "bounded the same; without it tcp_retries2 allows about 15 min");
  return p;
}

}  // namespace deadpeer
