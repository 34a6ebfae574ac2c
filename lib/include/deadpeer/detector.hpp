// Failure detectors: they turn the arrival times of a peer's frames into a verdict.
// Pure logic with time passed in (steady_clock time points), so they are tested with a
// synthetic clock. Besides the verdict they answer "when could the verdict next
// change?", which lets a session sleep on exactly one timer instead of polling.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <variant>

namespace deadpeer {

using steady_time = std::chrono::steady_clock::time_point;

/// Dead after a fixed silence: timeout = multiplier × interval (MQTT uses 1.5, deadpeer's
/// default is 3: two lost heartbeats are tolerated).
struct fixed_detector_config {
  std::chrono::milliseconds interval{1000};  ///< the accepted heartbeat interval
  double multiplier = 3.0;
  /// Explicit timeout; when set, it replaces multiplier × interval.
  std::chrono::milliseconds timeout{0};
};

/// The phi accrual detector of Hayashibara et al. (2004), with Akka's parameters.
struct phi_detector_config {
  std::chrono::milliseconds interval{1000};  ///< expected heartbeat interval (bootstrap)
  double threshold = 8.0;                    ///< phi at which the peer is declared dead
  std::size_t max_samples = 1000;            ///< window of inter-arrival times
  std::chrono::milliseconds min_std_deviation{100};
  std::chrono::milliseconds acceptable_pause{3000};  ///< added to the mean: tolerated pause
};

using detector_config = std::variant<fixed_detector_config, phi_detector_config>;

/// Common interface. The detector starts at `start` as if a frame had just arrived.
class failure_detector {
 public:
  virtual ~failure_detector() = default;

  /// A frame from the peer arrived at `now` (any frame counts as life).
  virtual void record_arrival(steady_time now) = 0;
  /// When the last frame arrived.
  virtual steady_time last_arrival() const = 0;
  /// Suspicion at `now`: fixed: silence / timeout (dead at >= 1); phi: phi (dead at >= threshold).
  virtual double suspicion(steady_time now) const = 0;
  /// True once the peer is judged dead at `now` (assuming nothing arrived since).
  virtual bool is_dead(steady_time now) const = 0;
  /// The earliest instant at which is_dead becomes true if nothing more arrives.
  /// A session sleeps until then; an arrival moves it later.
  virtual steady_time dead_at() const = 0;
  /// Short description with parameters, e.g. "fixed 3s" or "phi 8.0 (window 1000, ...)".
  virtual std::string describe() const = 0;
};

/// The fixed detector's silence limit: `timeout` when set, else multiplier × interval
/// rounded to whole milliseconds. Throws config_error like make_detector. The protocol
/// engine keeps this one number inline instead of a detector object per connection.
std::chrono::milliseconds fixed_timeout(const fixed_detector_config& config);

/// Builds a detector from its configuration; `start` counts as the first arrival.
/// Throws config_error for nonsense parameters (non-positive interval, multiplier or
/// threshold, zero window).
std::unique_ptr<failure_detector> make_detector(const detector_config& config, steady_time start);

}  // namespace deadpeer
