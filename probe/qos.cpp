// The QoS replay of qos.hpp and its synthetic links. The families are models, chosen so that
// each stresses one thing a detector must cope with; their parameters are fixed here and
// printed by `probe qos --help`, so a figure can always be traced to its model:
//
// Every family sends as deadpeer's protocol does (§6): the next heartbeat leaves a wait drawn
// uniformly from [0.9, 1.1] x interval after the previous one. The network adds a delay per
// heartbeat; TCP delivers in order, so a heartbeat never arrives before the one sent ahead of
// it (a late one holds the next ones back, and they then arrive in a bunch).
// - calm: delay ~ normal(30 ms, 8 ms), clipped at 0. A LAN or a good datacenter link.
// - gc: calm's network, and the sender stops for pauses that come as a Poisson process (one a
//   minute on average) with lognormal lengths (median 250 ms, log-sd 0.6: 1 in 100 beyond
//   1 s, the longest of a 100-hour trace ~2.5 s). A heartbeat due during a pause leaves when
//   it ends. Garbage collectors, a VM being migrated, a swapping host.
// - mobile: a Gilbert-Elliott channel per heartbeat: good (delay ~ normal(60 ms, 15 ms)) and
//   bad spells (200 ms + exponential, mean 350 ms: radio retransmissions and handovers); a
//   bad spell starts with probability 1/300 per heartbeat and lasts 5 heartbeats on average.
// - regime: half an hour of calm, then half an hour of jitter (delay ~ normal(150 ms, 120 ms)),
//   in turn: a link whose spread switches regime, as a Wi-Fi client that walks away.
#include "qos.hpp"

#include <deadpeer/config_error.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numbers>
#include <stdexcept>

namespace probe {
namespace qos {
namespace {

using std::chrono::milliseconds;

// A small, fast generator with a fixed algorithm (splitmix64), so a seed gives the same trace
// with every standard library; the distributions are written out for the same reason.
class random_source {
 public:
  explicit random_source(std::uint64_t seed) : state_(seed ^ 0x6a09e667f3bcc909ULL) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  /// Uniform in [0, 1).
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  /// Standard normal (Box-Muller; one value per call, simple over fast).
  double normal() {
    const double u1 = 1.0 - uniform();  // (0, 1]
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }
  double normal(double mean, double sd) { return mean + sd * normal(); }
  double exponential(double mean) { return -mean * std::log(1.0 - uniform()); }
  bool chance(double p) { return uniform() < p; }

 private:
  std::uint64_t state_;
};

constexpr double ms_per_hour = 3'600'000.0;

// Sends at protocol spacing; `delay(send_ms)` is the network delay of the heartbeat sent
// then, and `resume(send_ms)` moves a send out of a sender pause (identity for most).
template <class Delay, class Resume>
trace build(std::string name, const synthetic_options& o, random_source& rng, Delay delay,
            Resume resume) {
  trace t;
  t.name = std::move(name);
  t.interval = o.interval;
  const double interval_ms = static_cast<double>(o.interval.count());
  const double span_ms = o.hours * ms_per_hour;
  t.arrival_ms.reserve(static_cast<std::size_t>(span_ms / interval_ms * 1.02) + 2);
  double send_ms = 0;
  double last_arrival = -std::numeric_limits<double>::infinity();
  while (send_ms <= span_ms) {
    const double arrival = std::max(last_arrival, send_ms + delay(send_ms));
    t.arrival_ms.push_back(arrival);
    last_arrival = arrival;
    send_ms = resume(send_ms + interval_ms * rng.uniform(0.9, 1.1));
  }
  return t;
}

double calm_delay(random_source& rng) {
  return std::max(0.0, rng.normal(30, 8));
}

trace make_calm(const synthetic_options& o, random_source& rng) {
  return build(
      "calm", o, rng, [&](double) { return calm_delay(rng); }, [](double s) { return s; });
}

trace make_gc(const synthetic_options& o, random_source& rng) {
  constexpr double pauses_per_ms = 1.0 / 60'000.0;
  double pause_start = rng.exponential(1.0 / pauses_per_ms);
  double pause_end = pause_start + 250.0 * std::exp(0.6 * rng.normal());
  const auto resume = [&](double send_ms) {
    // Pauses before this send are over; the next one may hold it.
    while (pause_end < send_ms) {
      pause_start = pause_end + rng.exponential(1.0 / pauses_per_ms);
      pause_end = pause_start + 250.0 * std::exp(0.6 * rng.normal());
    }
    return send_ms >= pause_start ? pause_end : send_ms;
  };
  return build(
      "gc", o, rng, [&](double) { return calm_delay(rng); }, resume);
}

trace make_mobile(const synthetic_options& o, random_source& rng) {
  bool bad = false;
  const auto delay = [&](double) {
    bad = bad ? !rng.chance(1.0 / 5.0) : rng.chance(1.0 / 300.0);
    return bad ? 200.0 + rng.exponential(350.0) : std::max(0.0, rng.normal(60, 15));
  };
  return build("mobile", o, rng, delay, [](double s) { return s; });
}

trace make_regime(const synthetic_options& o, random_source& rng) {
  constexpr double half_hour_ms = ms_per_hour / 2;
  const auto delay = [&](double send_ms) {
    const bool jittery = static_cast<long long>(send_ms / half_hour_ms) % 2 == 1;
    return jittery ? std::max(0.0, rng.normal(150, 120)) : calm_delay(rng);
  };
  return build("regime", o, rng, delay, [](double s) { return s; });
}

using tick = deadpeer::steady_time::duration;

// Trace milliseconds as clock instants; the origin sits an hour into the clock so that no
// detector arithmetic meets the clock's zero.
deadpeer::steady_time instant(double ms, double origin_ms) {
  const double ns = (ms - origin_ms + ms_per_hour) * 1e6;
  return deadpeer::steady_time(std::chrono::duration_cast<tick>(std::chrono::nanoseconds(std::llround(ns))));
}

double trace_ms(deadpeer::steady_time t, double origin_ms) {
  if (t == deadpeer::steady_time::max()) return std::numeric_limits<double>::infinity();
  return static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count()) /
             1e6 -
         ms_per_hour + origin_ms;
}

std::string number(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", v);
  return text;
}

}  // namespace

std::vector<family> all_families() {
  return {family::calm, family::gc, family::mobile, family::regime};
}

std::string_view family_name(family f) {
  switch (f) {
    case family::calm: return "calm";
    case family::gc: return "gc";
    case family::mobile: return "mobile";
    case family::regime: return "regime";
  }
  return "?";
}

std::optional<family> family_from_name(std::string_view name) {
  for (const auto f : all_families())
    if (family_name(f) == name) return f;
  return std::nullopt;
}

trace make_synthetic(family f, const synthetic_options& o) {
  if (o.interval <= milliseconds(0)) throw std::invalid_argument("the interval must be > 0");
  if (!(o.hours > 0 && o.hours <= 10'000))
    throw std::invalid_argument("the trace length must be > 0 and at most 10000 hours");
  // Each family draws from its own stream: changing one model leaves the others' traces alone.
  random_source rng(o.seed * 4 + static_cast<std::uint64_t>(f));
  switch (f) {
    case family::calm: return make_calm(o, rng);
    case family::gc: return make_gc(o, rng);
    case family::mobile: return make_mobile(o, rng);
    case family::regime: return make_regime(o, rng);
  }
  throw std::invalid_argument("unknown family");
}

quality evaluate(const trace& t, const deadpeer::detector_config& config, std::size_t crashes,
                 std::uint64_t seed) {
  const auto& a = t.arrival_ms;
  if (a.size() < 2) throw std::invalid_argument("trace " + t.name + " has fewer than 2 arrivals");
  const double origin = a.front();
  const double span = a.back() - a.front();
  auto detector = deadpeer::make_detector(deadpeer::with_interval(config, t.interval), instant(origin, origin));

  quality q;
  q.hours = span / ms_per_hour;
  q.crashes = span > 0 ? crashes : 0;
  std::vector<double> detection_ms;
  detection_ms.reserve(q.crashes);
  random_source rng(seed);
  const double slice = q.crashes > 0 ? span / static_cast<double>(q.crashes) : 0;
  std::size_t next_crash = 0;
  double crash_at = origin + slice * rng.uniform();

  for (std::size_t i = 0; i + 1 < a.size(); ++i) {
    const double verdict = trace_ms(detector->dead_at(), origin);
    // Crashes between this arrival and the next: the verdict is this arrival's dead_at.
    while (next_crash < q.crashes && crash_at < a[i + 1]) {
      detection_ms.push_back(std::max(0.0, verdict - crash_at));
      ++next_crash;
      crash_at = origin + slice * (static_cast<double>(next_crash) + rng.uniform());
    }
    if (a[i + 1] >= verdict) ++q.mistakes;
    detector->record_arrival(instant(a[i + 1], origin));
  }
  q.crashes = detection_ms.size();
  q.mistakes_per_hour = q.hours > 0 ? static_cast<double>(q.mistakes) / q.hours : 0;
  if (!detection_ms.empty()) {
    double sum = 0;
    for (const double d : detection_ms) sum += d;
    q.td_mean_ms = sum / static_cast<double>(detection_ms.size());
    const auto rank = static_cast<std::size_t>(0.99 * static_cast<double>(detection_ms.size() - 1));
    std::nth_element(detection_ms.begin(), detection_ms.begin() + static_cast<std::ptrdiff_t>(rank),
                     detection_ms.end());
    q.td_p99_ms = detection_ms[rank];
  }
  return q;
}

std::vector<setting> default_sweep(milliseconds interval) {
  std::vector<setting> sweep;
  for (const double m : {1.05, 1.1, 1.15, 1.2, 1.3, 1.4, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0}) {
    deadpeer::fixed_detector_config c;
    c.interval = interval;
    c.multiplier = m;
    sweep.push_back({"fixed", m, "fixed " + number(m) + "x", c});
  }
  for (const double threshold : {1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0, 16.0}) {
    deadpeer::phi_detector_config c;
    c.interval = interval;
    c.threshold = threshold;
    sweep.push_back({"phi", threshold, "phi " + number(threshold), c});
  }
  for (const double margin : {0.25, 0.5, 1.0, 1.5, 2.0}) {
    deadpeer::adaptive_detector_config c;
    c.interval = interval;
    c.margin = margin;
    const bool server_default = margin == deadpeer::adaptive_detector_config{}.margin;
    sweep.push_back({"adaptive", margin, "adaptive " + number(margin), c, server_default});
  }
  return sweep;
}

std::size_t default_setting(const std::vector<setting>& sweep) {
  for (std::size_t i = 0; i < sweep.size(); ++i)
    if (sweep[i].server_default) return i;
  throw std::logic_error("the sweep has no server default");
}

deadpeer::fixed_detector_config tuned_fixed(const trace& t, std::size_t mistakes) {
  std::vector<double> gaps;
  gaps.reserve(t.arrival_ms.size());
  for (std::size_t i = 0; i + 1 < t.arrival_ms.size(); ++i) gaps.push_back(t.arrival_ms[i + 1] - t.arrival_ms[i]);
  deadpeer::fixed_detector_config c;
  c.interval = t.interval;
  double longest_allowed = 0;  // the longest gap that must not be a mistake
  if (mistakes < gaps.size()) {
    const auto kth = gaps.begin() + static_cast<std::ptrdiff_t>(mistakes);
    std::nth_element(gaps.begin(), kth, gaps.end(), std::greater<>());
    longest_allowed = *kth;
  }
  // A gap of exactly the timeout is a verdict, so the timeout must exceed the gap.
  c.timeout = milliseconds(static_cast<long long>(std::floor(longest_allowed)) + 1);
  return c;
}

analysis analyse(const std::vector<trace>& traces, const std::vector<setting>& sweep,
                 const std::vector<std::vector<quality>>& by_trace, double budget, std::size_t crashes,
                 std::uint64_t seed) {
  analysis a;
  a.default_setting = default_setting(sweep);
  for (std::size_t t = 0; t < traces.size(); ++t) {
    const auto& results = by_trace.at(t);
    trace_verdict v;
    for (const auto& s : sweep) {
      if (std::none_of(v.fastest_within_budget.begin(), v.fastest_within_budget.end(),
                       [&](const auto& entry) { return entry.first == s.kind; }))
        v.fastest_within_budget.push_back({s.kind, std::nullopt});
    }
    for (std::size_t s = 0; s < sweep.size(); ++s) {
      if (results[s].mistakes_per_hour > budget) continue;
      for (auto& [kind, best] : v.fastest_within_budget)
        if (kind == sweep[s].kind && (!best || results[s].td_mean_ms < results[*best].td_mean_ms)) best = s;
    }
    const auto& by_default = results[a.default_setting];
    if (by_default.mistakes_per_hour > budget) a.default_meets_budget_everywhere = false;
    v.fixed_at_default_rate = tuned_fixed(traces[t], by_default.mistakes);
    v.fixed_at_default_quality = evaluate(traces[t], v.fixed_at_default_rate, crashes, seed);
    v.default_over_fixed = v.fixed_at_default_quality.td_mean_ms > 0
                               ? by_default.td_mean_ms / v.fixed_at_default_quality.td_mean_ms
                               : 0;
    const auto allowed = static_cast<std::size_t>(std::floor(budget * by_default.hours + 1e-9));
    v.fixed_at_budget = tuned_fixed(traces[t], allowed);
    a.single_fixed_multiplier =
        std::max(a.single_fixed_multiplier, static_cast<double>(v.fixed_at_budget.timeout.count()) /
                                                static_cast<double>(traces[t].interval.count()));
    a.traces.push_back(std::move(v));
  }
  for (const auto& t : traces) {
    deadpeer::fixed_detector_config c;
    c.interval = t.interval;
    c.multiplier = a.single_fixed_multiplier;
    a.single_fixed_quality.push_back(evaluate(t, c, crashes, seed));
  }
  return a;
}

}  // namespace qos
}  // namespace probe
