// Failure detectors decide when a silent peer is dead, from nothing but the arrival times of
// its frames, and when that verdict would come if nothing else arrives (dead_at), so a session
// sleeps on one timer instead of polling.
//
// fixed: dead once now - last_arrival >= timeout. Simple and predictable: the bound a user
//   configures is the bound they get, which is what the probe measures against.
// phi accrual (Hayashibara et al. 2004, parameterised as Akka does): suspicion grows with the
//   silence measured against the peer's own history of inter-arrival times, so a peer that
//   heartbeats very regularly is given up on sooner than a jittery one at the same threshold.
//   Choices made here:
//   - The window starts with two samples, interval -/+ interval/4 (mean = interval, std dev =
//     interval/4), Akka's first-heartbeat estimate, so the detector is usable at once.
//   - Arrivals closer than interval/2 to the previous one move last_arrival (any frame is
//     life) but add no sample. A burst of DATA frames would otherwise fill the window with
//     tiny intervals; when traffic falls back to heartbeats the mean would be far too small
//     and the first ordinary heartbeat gap would read as a death.
//   - phi uses Akka's logistic approximation of the normal CDF. Its two branches are both
//     log10(1 + e^z); that is evaluated as a softplus that neither over- nor underflows, so
//     phi is finite for every input and strictly increasing in the silence.
//   - Because phi only grows with the silence, dead_at is found once per new sample by
//     bisection on whole clock ticks, and is_dead is `now >= dead_at`: the verdict and the
//     session's timer can never disagree. The search is capped at mean + 1000 std devs
//     (phi ~ 3e7 there); an absurd threshold beyond that still ends in a verdict at the cap.
//   - Running sums drift under add/remove, so they are recomputed from the window once per
//     window's worth of samples (amortised O(1)); the variance is clamped at 0 before sqrt.
#include <deadpeer/detector.hpp>

#include <deadpeer/config_error.hpp>
#include <deadpeer/duration.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <limits>
#include <numbers>
#include <type_traits>

namespace deadpeer {
namespace {

using std::chrono::milliseconds;
using tick = steady_time::duration;
using rep = tick::rep;

constexpr rep ticks_per_ms = std::chrono::duration_cast<tick>(milliseconds(1)).count();
// The longest duration in milliseconds that still converts to clock ticks.
constexpr std::int64_t max_ms = std::numeric_limits<rep>::max() / ticks_per_ms;

std::string quote(milliseconds d) {
  return "\"" + format_duration(d) + "\"";
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

[[noreturn]] void fail(const char* detector, const std::string& why) {
  throw config_error(std::string("invalid ") + detector + " detector: " + why);
}

void check_interval(const char* detector, milliseconds interval) {
  if (interval <= milliseconds(0)) fail(detector, "interval must be > 0, got " + quote(interval));
  if (interval.count() > max_ms)
    fail(detector, "interval " + quote(interval) + " is beyond the steady clock's range");
}

// Silence from `from` to `to`, 0 when `to` is not later; exact even across the whole range.
tick elapsed(steady_time from, steady_time to) {
  if (to <= from) return tick(0);
  using urep = std::make_unsigned_t<rep>;
  const urep diff = static_cast<urep>(to.time_since_epoch().count()) -
                    static_cast<urep>(from.time_since_epoch().count());
  return tick(static_cast<rep>(std::min<urep>(diff, std::numeric_limits<rep>::max())));
}

steady_time saturating_add(steady_time t, tick d) {
  const rep base = t.time_since_epoch().count();
  if (base >= 0 && d.count() > std::numeric_limits<rep>::max() - base) return steady_time::max();
  return t + d;
}

double to_ms(tick d) {
  return static_cast<double>(d.count()) / static_cast<double>(ticks_per_ms);
}

tick ms_to_ticks_saturating(double ms) {
  const double ticks = ms * static_cast<double>(ticks_per_ms);
  if (!(ticks < 9.0e18)) return tick::max();  // also catches NaN
  return tick(static_cast<rep>(std::max(0.0, ticks)));
}

class fixed_detector final : public failure_detector {
 public:
  fixed_detector(const fixed_detector_config& config, milliseconds timeout, steady_time start)
      : config_(config),
        timeout_(timeout),
        last_(start),
        dead_at_(saturating_add(start, timeout)) {}

  void record_arrival(steady_time now) override {
    if (now <= last_) return;
    last_ = now;
    dead_at_ = saturating_add(last_, timeout_);
  }
  steady_time last_arrival() const override { return last_; }
  double suspicion(steady_time now) const override {
    return to_ms(elapsed(last_, now)) / static_cast<double>(timeout_.count());
  }
  bool is_dead(steady_time now) const override { return now >= dead_at_; }
  steady_time dead_at() const override { return dead_at_; }
  std::string describe() const override {
    std::string text = "fixed " + format_duration(timeout_);
    if (config_.timeout > milliseconds(0)) return text + " (explicit)";
    return text + " (" + number(config_.multiplier) + " x " + format_duration(config_.interval) +
           ")";
  }

 private:
  fixed_detector_config config_;
  milliseconds timeout_;
  steady_time last_;
  steady_time dead_at_;
};

class phi_detector final : public failure_detector {
 public:
  phi_detector(const phi_detector_config& config, steady_time start)
      : config_(config),
        min_sample_gap_(std::chrono::duration_cast<tick>(config.interval) / 2),
        last_(start) {
    const double interval_ms = static_cast<double>(config.interval.count());
    push_sample(interval_ms - interval_ms / 4);
    push_sample(interval_ms + interval_ms / 4);
    update_estimate();
    dead_at_ = saturating_add(last_, dead_after_);
  }

  void record_arrival(steady_time now) override {
    if (now < last_) return;
    const tick gap = elapsed(last_, now);
    last_ = now;
    if (gap >= min_sample_gap_) {
      push_sample(to_ms(gap));
      update_estimate();
    }
    dead_at_ = saturating_add(last_, dead_after_);
  }
  steady_time last_arrival() const override { return last_; }
  double suspicion(steady_time now) const override { return phi(to_ms(elapsed(last_, now))); }
  bool is_dead(steady_time now) const override { return now >= dead_at_; }
  steady_time dead_at() const override { return dead_at_; }
  std::string describe() const override {
    return "phi threshold " + number(config_.threshold) + " (window " +
           std::to_string(config_.max_samples) + ", min std " +
           format_duration(config_.min_std_deviation) + ", pause " +
           format_duration(config_.acceptable_pause) + ")";
  }

 private:
  void push_sample(double ms) {
    samples_.push_back(ms);
    sum_ += ms;
    sum_sq_ += ms * ms;
    if (samples_.size() > config_.max_samples) {
      const double old = samples_.front();
      samples_.pop_front();
      sum_ -= old;
      sum_sq_ -= old * old;
    }
    if (++since_resum_ >= config_.max_samples) {
      since_resum_ = 0;
      sum_ = 0;
      sum_sq_ = 0;
      for (const double s : samples_) {
        sum_ += s;
        sum_sq_ += s * s;
      }
    }
  }

  // Recomputes the distribution from the window, then the silence at which phi reaches the
  // threshold.
  void update_estimate() {
    const auto n = static_cast<double>(samples_.size());
    const double mean = sum_ / n;
    const double variance = std::max(0.0, sum_sq_ / n - mean * mean);
    mean_ms_ = mean + static_cast<double>(config_.acceptable_pause.count());
    std_ms_ = std::max(std::sqrt(variance), static_cast<double>(config_.min_std_deviation.count()));

    const auto reached = [this](tick silence) { return phi(to_ms(silence)) >= config_.threshold; };
    tick lo(0);
    tick hi = ms_to_ticks_saturating(mean_ms_ + 1000.0 * std_ms_);
    if (reached(lo)) {
      hi = lo;
    } else if (reached(hi)) {
      // Invariant: !reached(lo) && reached(hi); stop when they are one tick apart.
      while (hi - lo > tick(1)) {
        const tick mid = lo + (hi - lo) / 2;
        if (reached(mid))
          hi = mid;
        else
          lo = mid;
      }
    }
    dead_after_ = hi;
  }

  double phi(double silence_ms) const {
    const double y = (silence_ms - mean_ms_) / std_ms_;
    const double z = y * (1.5976 + 0.070566 * y * y);
    // Akka: e = exp(-z); phi = -log10(e / (1 + e)) above the mean, -log10(1 - 1 / (1 + e))
    // below it. Both equal log10(1 + exp(z)), a softplus computed without overflow.
    const double softplus = z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z));
    return softplus / std::numbers::ln10;
  }

  phi_detector_config config_;
  tick min_sample_gap_;
  std::deque<double> samples_;  // inter-arrival intervals in milliseconds
  double sum_ = 0;
  double sum_sq_ = 0;
  std::size_t since_resum_ = 0;
  double mean_ms_ = 0;  // sample mean + acceptable pause
  double std_ms_ = 1;   // max(sample std dev, min std dev)
  steady_time last_;
  tick dead_after_{0};  // silence at which phi reaches the threshold
  steady_time dead_at_;
};

std::unique_ptr<failure_detector> make_fixed(const fixed_detector_config& c, steady_time start) {
  return std::make_unique<fixed_detector>(c, fixed_timeout(c), start);
}

std::unique_ptr<failure_detector> make_phi(const phi_detector_config& c, steady_time start) {
  const char* name = "phi";
  check_interval(name, c.interval);
  if (!(std::isfinite(c.threshold) && c.threshold > 0))
    fail(name, "threshold must be a finite number > 0, got " + number(c.threshold));
  if (c.max_samples < 2)
    fail(name, "window (max_samples) must be >= 2, the first estimate takes two samples; got " +
                   std::to_string(c.max_samples));
  if (c.min_std_deviation <= milliseconds(0))
    fail(name, "min std deviation must be > 0, got " + quote(c.min_std_deviation));
  if (c.acceptable_pause < milliseconds(0))
    fail(name, "acceptable pause must be >= 0, got " + quote(c.acceptable_pause));
  return std::make_unique<phi_detector>(c, start);
}

}  // namespace

milliseconds fixed_timeout(const fixed_detector_config& c) {
  const char* name = "fixed";
  check_interval(name, c.interval);
  if (!(std::isfinite(c.multiplier) && c.multiplier > 0))
    fail(name, "multiplier must be a finite number > 0, got " + number(c.multiplier));
  if (c.timeout < milliseconds(0))
    fail(name, "timeout must be >= 0 (0 means multiplier x interval), got " + quote(c.timeout));
  if (c.timeout.count() > max_ms)
    fail(name, "timeout " + quote(c.timeout) + " is beyond the steady clock's range");
  if (c.timeout > milliseconds(0)) return c.timeout;
  const double product = c.multiplier * static_cast<double>(c.interval.count());
  const std::string what =
      "multiplier x interval = " + number(c.multiplier) + " x " + format_duration(c.interval);
  if (!(product < static_cast<double>(max_ms)))
    fail(name, what + " is beyond the steady clock's range");
  const milliseconds timeout(std::llround(product));
  if (timeout <= milliseconds(0)) fail(name, what + " rounds to 0ms; the timeout must be >= 1ms");
  return timeout;
}

std::unique_ptr<failure_detector> make_detector(const detector_config& config, steady_time start) {
  if (const auto* fixed = std::get_if<fixed_detector_config>(&config))
    return make_fixed(*fixed, start);
  return make_phi(std::get<phi_detector_config>(config), start);
}

}  // namespace deadpeer
