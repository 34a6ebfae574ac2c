// How long can a dead peer go unnoticed? The arithmetic here mirrors Linux's timers
// (tcp_keepalive_timer and tcp_write_timeout in net/ipv4/tcp_timer.c) and, when the tick
// rate is known, how the timer wheel (kernel/time/timer.c) delays each of them, so the
// bound is the latest the kernel can abort: a promise the fault lab holds every trial to.
// The tuner runs the nominal arithmetic backwards.
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

// Time in jiffies at `hz`. msecs_to_jiffies rounds up; back to milliseconds rounds up too,
// so a bound never shrinks in the conversion.
struct ticks_at {
  int hz;
  std::int64_t ticks(milliseconds d) const { return (d.count() * hz + 999) / 1000; }
  milliseconds ms(std::int64_t t) const { return milliseconds((t * 1000 + hz - 1) / hz); }
};

// The timer wheel's granularity for a timer due in `t` ticks: level 0 (1 tick) below
// LVL_START(1) = 63 ticks, then 8 times coarser per level, each level 8 times longer.
std::int64_t wheel_granularity(std::int64_t t) {
  // Level n >= 1 holds timers due in [63 x 8^(n-1), 63 x 8^n) ticks, granularity 8^n.
  std::int64_t granularity = 1, level_end = 63;
  while (t >= level_end && granularity < (std::int64_t{1} << 24)) {
    granularity <<= 3;
    level_end <<= 3;
  }
  return granularity;
}

// A timer armed for t ticks from any instant fires at most this many ticks later: the
// bucket is the next granularity boundary strictly after the due time, and the callback
// may run one tick after that.
std::int64_t latest_ticks(std::int64_t t) { return t + wheel_granularity(t) + 1; }

// A timer re-armed for t ticks from its own callback (which ran on a boundary of the same
// granularity) fires exactly this many ticks later.
std::int64_t periodic_ticks(std::int64_t t) {
  const auto g = wheel_granularity(t);
  return (t / g + 1) * g;
}

}  // namespace

timer_wheel_timing kernel_timer_timing(milliseconds delay, int hz) {
  if (hz <= 0) return {delay, delay, milliseconds(0)};
  const ticks_at at{hz};
  const auto t = at.ticks(delay);
  return {at.ms(latest_ticks(t)), at.ms(periodic_ticks(t)), at.ms(wheel_granularity(t))};
}

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

detection_bound compute_bound(const keepalive_settings& s, const kernel_defaults& kernel) {
  if (kernel.hz <= 0) return compute_bound(s, kernel.retries2);
  const detection_bound nominal = compute_bound(s, kernel.retries2);
  detection_bound b;
  const ticks_at at{kernel.hz};
  const std::string hz = "HZ " + std::to_string(kernel.hz);
  const auto grid = [&](milliseconds d) {
    return fmt(at.ms(wheel_granularity(at.ticks(d))));
  };

  if (!s.enabled) {
    b.idle_arithmetic = nominal.idle_arithmetic;
  } else {
    // Ticks from the last segment heard (t0): the first probe leaves at most one wheel
    // granularity and one tick after the idle time; its timer then re-arms itself every
    // interval on its grid (the first re-arm may start off the grid: up to d + granularity).
    const auto idle_t = at.ticks(s.idle), interval_t = at.ticks(s.interval);
    const auto first_probe = latest_ticks(idle_t);
    const auto second_fire_earliest = idle_t + interval_t + 1;
    const auto second_fire_latest = first_probe + interval_t + wheel_granularity(interval_t);
    const auto period = periodic_ticks(interval_t);
    std::int64_t abort_t = 0;
    std::string how;
    if (s.user_timeout.count() == 0) {
      abort_t = second_fire_latest + (s.count - 1) * period;
      how = std::to_string(s.count) + " probes " + fmt(at.ms(period)) + " apart (" +
            fmt(s.interval) + " on the " + grid(s.interval) + " grid; the first up to " +
            fmt(at.ms(second_fire_latest - first_probe)) + ")";
    } else {
      // Abort at the first re-armed firing at which the silence has lasted the user
      // timeout: the latest such firing over every moment the second firing can take.
      const auto user_t = at.ticks(s.user_timeout);
      for (auto x = second_fire_earliest; x <= second_fire_latest; ++x) {
        const auto fires = x >= user_t ? 0 : (user_t - x + period - 1) / period;
        abort_t = std::max(abort_t, x + fires * period);
      }
      how = "probes " + fmt(at.ms(period)) + " apart (" + fmt(s.interval) + " on the " +
            grid(s.interval) + " grid) until one falls due with the silence at least the user "
            "timeout " + fmt(s.user_timeout) + " (count " + std::to_string(s.count) + " ignored)";
    }
    b.idle = at.ms(abort_t);
    b.idle_arithmetic = "first probe by " + fmt(at.ms(first_probe)) + " (idle " + fmt(s.idle) +
                        " + the " + grid(s.idle) + " timer grid at " + hz + " + one tick), " +
                        how + ": aborted by " + fmt(*b.idle) + "; nominal " +
                        fmt(*nominal.idle) + " (" + nominal.idle_arithmetic + ")";
  }

  if (s.user_timeout.count() != 0) {
    // The retransmission timer is clamped to the time left of the user timeout: its last
    // firing is armed at the earliest at the last nominal back-off before the timeout, for
    // at most the remainder, and is late by at most that remainder's grid and a tick.
    const auto user_t = at.ticks(s.user_timeout);
    std::int64_t last_armed = 0;
    milliseconds rto = rto_min;
    while (last_armed + at.ticks(rto) < user_t) {
      last_armed += at.ticks(rto);
      rto = std::min(rto * 2, rto_max);
    }
    const auto remainder = user_t - last_armed;
    const auto slack = latest_ticks(remainder) - remainder;
    b.busy = at.ms(user_t + slack);
    b.busy_arithmetic = "user_timeout " + fmt(s.user_timeout) + " from the first unacknowledged "
                        "segment + at most " + fmt(at.ms(slack)) + " (the last retransmission "
                        "timer, clamped to the " + fmt(at.ms(remainder)) + " left, on its " +
                        fmt(at.ms(wheel_granularity(remainder))) + " grid at " + hz +
                        ", and one tick) = " + fmt(b.busy) +
                        " (keepalive is not sent while data is unacknowledged)";
  } else {
    std::int64_t total = 0;
    milliseconds rto = rto_min;
    for (int i = 0; i <= std::max(kernel.retries2, 0); ++i) {
      total += latest_ticks(at.ticks(rto));
      rto = std::min(rto * 2, rto_max);
    }
    b.busy = at.ms(total);
    b.busy_arithmetic = "no user timeout: " + std::to_string(kernel.retries2 + 1) +
                        " retransmission timeouts, 200ms doubling to at most 120s, each late by "
                        "its timer grid and one tick at " + hz + " = " + fmt(b.busy) +
                        " from the first unacknowledged segment; nominal " + fmt(nominal.busy) +
                        " (a lower bound when RTT > 200ms)";
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
