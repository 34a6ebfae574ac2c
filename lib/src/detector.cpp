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
  std::optional<detector_estimate> estimate() const override {
    return detector_estimate{mean_ms_ - static_cast<double>(config_.acceptable_pause.count()), std_ms_,
                             0, to_ms(dead_after_)};
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

// The adaptive detector. Rules, each for a reason the QoS replay (probe qos) showed:
// - The verdict waits for the longest silence the link has shown lately, stretched beyond the
//   mean gap by a margin: a tail of the link's own, learned from every arrival (any frame is
//   life). A normal model (phi) has no tail and keeps making mistakes on links with pauses;
//   the longest silence of the last hours is a high empirical quantile, kept in a few numbers.
// - The margin is for what the link has not shown yet, so it shrinks as 1/sqrt of the link
//   time seen: large on a link just met (the longest of a few minutes says little of the
//   next hour), small after hours. Nothing of the start-up lingers in the estimate itself.
// - "Lately" is `memory` of link time, kept as the longest gap of each of four slices; when a
//   slice is full the oldest is forgotten. A link that was rough and is calm again is trusted
//   again after 3/4 of the memory to all of it.
// - Jacobson's mean and deviation (gains 1/8 and 1/4, as TCP's RTO estimator) follow a change
//   of regime within a few arrivals: mean + `deviations` x deviation is a floor on the
//   verdict, so a link whose spread jumps is given room before its longest silence is seen.
// - A link just met may pause before it has shown it can: the verdict waits at least
//   start_floor (absolute time, as a pause is), fading with the margin. Without it a fresh
//   connection to a peer that stops for a second or two is declared dead at its first pause.
// - Never below min_multiplier x interval (the protocol's sending promise) plus a delivery
//   slack (timers and readers are late by some ms, the network by its delay variation:
//   with the promise alone, bench-scale saw 2 in 5,000 idle clients at 10 s heartbeats
//   declared dead within a minute, on an idle machine), never above
//   max_multiplier x interval (the worst case is a bound the user can rely on), and for the
//   first arrivals at least start_multiplier x interval: a fresh connection knows nothing.
std::string describe_adaptive(const adaptive_detector_config& c) {
  const auto ms = [](auto d) { return format_duration(std::chrono::duration_cast<milliseconds>(d)); };
  return "adaptive margin " + number(c.margin) + " (fading over " + ms(c.margin_fades_over) +
         ", memory " + ms(c.memory) + ", " + number(c.min_multiplier) + "x interval + " +
         ms(c.delivery_slack) + " to " + number(c.max_multiplier) + "x)";
}

class adaptive_detector final : public failure_detector {
 public:
  adaptive_detector(const adaptive_detector_config& config, steady_time start)
      : config_(config), state_(config.interval), last_(start), dead_at_(verdict_after(start)) {}

  void record_arrival(steady_time now) override {
    if (now < last_) return;
    state_.learn(config_, to_ms(elapsed(last_, now)));
    last_ = now;
    dead_at_ = verdict_after(now);
  }
  steady_time last_arrival() const override { return last_; }
  double suspicion(steady_time now) const override {
    return to_ms(elapsed(last_, now)) / state_.timeout_ms(config_, config_.interval);
  }
  bool is_dead(steady_time now) const override { return now >= dead_at_; }
  steady_time dead_at() const override { return dead_at_; }
  std::string describe() const override { return describe_adaptive(config_); }
  std::optional<detector_estimate> estimate() const override {
    return state_.estimate(config_, config_.interval);
  }

 private:
  steady_time verdict_after(steady_time arrival) const {
    return saturating_add(arrival, ms_to_ticks_saturating(state_.timeout_ms(config_, config_.interval)));
  }

  adaptive_detector_config config_;
  adaptive_state state_;
  steady_time last_;
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

std::unique_ptr<failure_detector> make_adaptive(const adaptive_detector_config& c, steady_time start) {
  const char* name = "adaptive";
  check_interval(name, c.interval);
  const auto finite_at_least = [&](double value, double least, const char* what) {
    if (!(std::isfinite(value) && value >= least))
      fail(name, std::string(what) + " must be a finite number >= " + number(least) + ", got " + number(value));
  };
  finite_at_least(c.margin, 0, "margin");
  if (c.margin_fades_over <= std::chrono::seconds(0))
    fail(name, "the margin's fade must be > 0, got " + quote(std::chrono::duration_cast<milliseconds>(c.margin_fades_over)));
  finite_at_least(c.deviations, 0, "deviations");
  finite_at_least(c.min_multiplier, 1, "min multiplier");
  finite_at_least(c.max_multiplier, c.min_multiplier, "max multiplier (at least the min multiplier)");
  finite_at_least(c.start_multiplier, 1, "start multiplier");
  if (c.memory < std::chrono::minutes(1))
    fail(name, "memory must be >= 1min, got " + quote(std::chrono::duration_cast<milliseconds>(c.memory)));
  if (c.start_floor < milliseconds(0)) fail(name, "start floor must be >= 0, got " + quote(c.start_floor));
  if (c.delivery_slack < milliseconds(0))
    fail(name, "delivery slack must be >= 0, got " + quote(c.delivery_slack));
  if (c.warmup_arrivals > 255) fail(name, "warmup arrivals must be <= 255, got " + std::to_string(c.warmup_arrivals));
  if (c.max_multiplier * static_cast<double>(c.interval.count()) >= static_cast<double>(max_ms))
    fail(name, "max multiplier x interval is beyond the steady clock's range");
  return std::make_unique<adaptive_detector>(c, start);
}

}  // namespace

// Kept inline in every connection's engine: its size is part of the server's cost per connection.
static_assert(sizeof(adaptive_state) <= 48);

adaptive_state::adaptive_state(milliseconds interval) : mean_ms_(static_cast<float>(interval.count())) {}

void adaptive_state::learn(const adaptive_detector_config& c, double gap_ms) {
  const double error = gap_ms - mean_ms_;
  mean_ms_ = static_cast<float>(mean_ms_ + error / 8);
  deviation_ms_ = static_cast<float>(deviation_ms_ + (std::abs(error) - deviation_ms_) / 4);
  slice_elapsed_ms_ += gap_ms;
  const double slice_ms =
      static_cast<double>(std::chrono::duration_cast<milliseconds>(c.memory).count()) / slice_count;
  if (slice_elapsed_ms_ >= slice_ms) {
    slice_elapsed_ms_ = 0;
    current_ = static_cast<std::uint8_t>((current_ + 1) % slice_count);
    longest_in_slice_ms_[current_] = 0;
  }
  longest_in_slice_ms_[current_] = std::max(longest_in_slice_ms_[current_], static_cast<float>(gap_ms));
  seen_ms_ += gap_ms;
  if (arrivals_ < c.warmup_arrivals) ++arrivals_;
}

double adaptive_state::timeout_ms(const adaptive_detector_config& c, milliseconds interval) const {
  const double interval_ms = static_cast<double>(interval.count());
  const double mean = mean_ms_;
  const double longest = longest_ms();
  // The margin covers what the link has not shown yet: it shrinks as more of it is seen.
  const double fade_ms = static_cast<double>(std::chrono::duration_cast<milliseconds>(c.margin_fades_over).count());
  const double unseen = std::sqrt(fade_ms / (fade_ms + seen_ms_));  // 1 at the start, then less
  const double tail = mean + (1 + c.margin * unseen) * std::max(0.0, longest - mean);
  const double promise = c.min_multiplier * interval_ms + static_cast<double>(c.delivery_slack.count());
  double timeout = std::max({tail, mean + c.deviations * deviation_ms_, promise,
                             static_cast<double>(c.start_floor.count()) * unseen});
  if (arrivals_ < c.warmup_arrivals) timeout = std::max(timeout, c.start_multiplier * interval_ms);
  return std::min(timeout, c.max_multiplier * interval_ms);
}

detector_estimate adaptive_state::estimate(const adaptive_detector_config& c, milliseconds interval) const {
  return {mean_ms_, deviation_ms_, longest_ms(), timeout_ms(c, interval)};
}

double adaptive_state::longest_ms() const {
  return *std::max_element(std::begin(longest_in_slice_ms_), std::end(longest_in_slice_ms_));
}

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

detector_config with_interval(detector_config config, milliseconds interval) {
  std::visit([&](auto& c) { c.interval = interval; }, config);
  return config;
}

std::unique_ptr<failure_detector> make_detector(const detector_config& config, steady_time start) {
  if (const auto* fixed = std::get_if<fixed_detector_config>(&config))
    return make_fixed(*fixed, start);
  if (const auto* adaptive = std::get_if<adaptive_detector_config>(&config))
    return make_adaptive(*adaptive, start);
  return make_phi(std::get<phi_detector_config>(config), start);
}

}  // namespace deadpeer
