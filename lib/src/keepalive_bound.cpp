// How long can a dead peer go unnoticed? The arithmetic here mirrors Linux's timers
// (tcp_keepalive_timer and tcp_write_timeout in net/ipv4/tcp_timer.c) and, when the tick
// rate is known, how the timer wheel (kernel/time/timer.c) delays each of them, so the
// bound is the latest the kernel can abort: a promise the fault lab holds every trial to.
// The tuner runs the nominal arithmetic backwards.
#include <deadpeer/keepalive.hpp>

#include <deadpeer/duration.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <tuple>
#include <utility>

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

namespace {

// A busy connection (data unacknowledged) to a dead peer, as tcp_timer.c ends it, from the
// moment the first unacknowledged segment leaves: a tail loss probe (2 RTT + 200 ms with
// one segment in flight), then the retransmission timer (RTO, 200 ms on a path with RTT
// far below that). The first RTO retransmission starts the clock both limits are checked
// against (retrans_stamp): the user timeout, to which the re-armed timer is clamped, or
// the tcp_retries2 model timeout, checked at each back-off. Each timer late by its wheel
// grid at `hz` (0: nominal). Measured in the lab's namespaces at HZ 250: user timeout 1 s
// aborts at 1.43 s, 2.5 s at 2.93 s; tcp_retries2 2 at 3.34 s and 3 at 6.79 s.
std::pair<milliseconds, std::string> busy_abort(const keepalive_settings& s, int retries2,
                                                int hz) {
  const ticks_at at{hz > 0 ? hz : 1000};
  const auto late = [&](milliseconds d) {
    return hz > 0 ? at.ms(latest_ticks(at.ticks(d))) : d;
  };
  const auto grid_note = [&](milliseconds d) {
    return hz > 0 ? " on its " + fmt(at.ms(wheel_granularity(at.ticks(d)))) + " grid" : std::string();
  };
  // RTO = srtt + rttvar, the variance held at 200 ms: on a short path 200 ms plus the
  // smoothed RTT, which the kernel rounds up to a whole tick. The loss probe waits as long.
  const milliseconds tick = hz > 0 ? at.ms(1) : milliseconds(0);
  const milliseconds rto_base = rto_min + tick;
  const milliseconds probe = late(rto_base), first_rto = late(rto_base);
  const milliseconds stamp = probe + first_rto;
  const std::string start = "loss probe " + fmt(probe) + " + first retransmission timeout " +
                            fmt(first_rto) + " (RTO " + fmt(rto_base) + " when RTT << 200ms)";
  const std::string ticks = hz > 0 ? ", each timer late by its grid at HZ " + std::to_string(hz) : "";
  if (s.user_timeout.count() != 0) {
    // Back-offs from the first retransmission until the next would pass the user timeout;
    // the last timer is armed for what is left of it.
    milliseconds last_armed{0}, rto = rto_base * 2;
    while (last_armed + rto < s.user_timeout) {
      last_armed += rto;
      rto = std::min(rto * 2, rto_max);
    }
    const auto remainder = s.user_timeout - last_armed;
    const auto slack = late(remainder) - remainder;
    const auto total = stamp + s.user_timeout + slack;
    return {total, start + " + user_timeout " + fmt(s.user_timeout) +
                       (hz > 0 ? " + " + fmt(slack) + " (the last timer, clamped to the " +
                                     fmt(remainder) + " left," + grid_note(remainder) + ")"
                               : std::string()) +
                       " = " + fmt(total) + " from the first unacknowledged segment" + ticks +
                       " (keepalive is not sent while data is unacknowledged)"};
  }
  // Without a user timeout: the first back-off whose total since the first retransmission
  // reaches the model timeout (the sum tcp_retries2 + 1 doubling timeouts would take).
  const auto model = retransmission_give_up_time(retries2);
  milliseconds since_stamp{0}, elapsed{0}, nominal_rto = rto_min * 2, rto = rto_base * 2;
  int backoffs = 0;
  while (since_stamp < model) {
    since_stamp += nominal_rto;
    elapsed += late(rto);
    nominal_rto = std::min(nominal_rto * 2, rto_max);
    rto = std::min(rto * 2, rto_max);
    ++backoffs;
  }
  const auto total = stamp + elapsed;
  return {total, "no user timeout: " + start + " + " + std::to_string(backoffs) +
                     " back-offs from " + fmt(rto_base * 2) +
                     " doubling to at most 120s until their sum reaches "
                     "tcp_retries2 " + std::to_string(retries2) + "'s " + fmt(model) + " = " +
                     fmt(total) + ticks + " (longer when RTT > 200ms)"};
}

}  // namespace

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

  std::tie(b.busy, b.busy_arithmetic) = busy_abort(s, tcp_retries2, 0);
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

  std::tie(b.busy, b.busy_arithmetic) = busy_abort(s, kernel.retries2, kernel.hz);
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
  // The user timeout's clock starts at the first retransmission, after a loss probe and one
  // RTO (400 ms on a short path): U = idle bound - 400 ms bounds busy connections by the same
  // figure, and leaves the idle bound unchanged (the interval is at least 1 s).
  p.settings.user_timeout = milliseconds(seconds(idle + interval * count)) - 2 * rto_min;
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
                    " (its clock starts after a loss probe and one retransmission timeout, "
                    "about 400ms): a busy connection (unacknowledged data, where keepalive is "
                    "silent) is bounded the same; without it tcp_retries2 15 allows about 17 min");
  return p;
}

}  // namespace deadpeer
