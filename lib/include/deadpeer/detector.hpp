// Failure detectors: they turn the arrival times of a peer's frames into a verdict.
// Pure logic with time passed in (steady_clock time points), so they are tested with a
// synthetic clock. Besides the verdict they answer "when could the verdict next
// change?", which lets a session sleep on exactly one timer instead of polling.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
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

/// deadpeer's adaptive detector (detector.cpp explains the rules): dead after a silence longer
/// than the longest the link has shown lately, stretched by a margin, never shorter than the
/// protocol's sending promise nor longer than a cap. One default fits calm and rough links.
struct adaptive_detector_config {
  std::chrono::milliseconds interval{1000};  ///< the agreed heartbeat interval
  /// How far beyond the longest remembered silence (measured from the mean gap) the verdict
  /// waits, on a link just met: timeout = mean + (1 + m) x (longest - mean), where
  /// m = margin x sqrt(fade / (fade + link time seen)): the margin is for the silences the link
  /// has not shown yet, and shrinks as more of it is seen (halved after 3 x fade).
  double margin = 1.0;
  std::chrono::seconds margin_fades_over{600};
  /// How long the longest silence is remembered (link time, in four slices: the oldest slice
  /// is forgotten as a new one starts).
  std::chrono::minutes memory{1200};
  /// A floor that follows a change of regime within a few arrivals: mean + deviations x the
  /// mean absolute deviation of the gaps (TCP's RTO rule uses 4 on round-trip times).
  double deviations = 2.0;
  /// Never dead before this multiple of the interval: the peer promises a frame within
  /// 1.1 x interval of its previous one (protocol §6).
  double min_multiplier = 1.1;
  /// Added to min_multiplier x interval: the protocol promises when a frame is sent, not
  /// when it is read. Timers fire a few ms late, a busy receiver reads late, and the
  /// network's delay varies before the link has shown by how much: without it, a peer that
  /// keeps its promise to the ms is declared dead when the learned tail is still narrow.
  std::chrono::milliseconds delivery_slack{50};
  /// Never later than this multiple: the worst case, and the bound the probe measures against.
  double max_multiplier = 10.0;
  /// A link just met may still pause (a garbage collector, a busy host): until it has shown
  /// its own silences, the verdict waits at least this long, a floor that fades as the margin
  /// does (x sqrt(fade / (fade + link time seen))). Absolute time, not intervals: a pause
  /// lasts as long as it lasts whatever the heartbeat rate.
  std::chrono::milliseconds start_floor{3500};
  /// For the first `warmup_arrivals` arrivals, at least start_multiplier x interval.
  std::size_t warmup_arrivals = 3;
  double start_multiplier = 2.0;
};

using detector_config =
    std::variant<fixed_detector_config, phi_detector_config, adaptive_detector_config>;


/// What an adaptive detector has learned of its link, for /connections and probe qos.
struct detector_estimate {
  double mean_gap_ms = 0;     ///< the mean silence between arrivals
  double spread_ms = 0;       ///< its mean absolute deviation
  double longest_gap_ms = 0;  ///< the longest silence remembered
  double timeout_ms = 0;      ///< the silence after which the peer is now declared dead
};

/// The adaptive detector's learning, compact (48 bytes) so that the protocol engine keeps one
/// inline per connection; the configuration and the connection's interval are passed to each
/// call, so a server shares one configuration. detector.cpp explains the rules.
class adaptive_state {
 public:
  explicit adaptive_state(std::chrono::milliseconds interval = std::chrono::milliseconds(1000));
  /// A silence of `gap_ms` between two arrivals has ended.
  void learn(const adaptive_detector_config& config, double gap_ms);
  /// The silence after which the peer is declared dead, as things stand.
  double timeout_ms(const adaptive_detector_config& config, std::chrono::milliseconds interval) const;
  detector_estimate estimate(const adaptive_detector_config& config,
                             std::chrono::milliseconds interval) const;

 private:
  static constexpr int slice_count = 4;
  double longest_ms() const;  ///< the longest gap remembered
  double slice_elapsed_ms_ = 0;  ///< link time in the current slice
  double seen_ms_ = 0;           ///< link time since the start
  float mean_ms_;
  float deviation_ms_ = 0;
  float longest_in_slice_ms_[slice_count] = {};
  std::uint8_t current_ = 0;
  std::uint8_t arrivals_ = 0;  ///< counted up to the warmup (at most 255)
};

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
  /// What the detector has learned of the link (adaptive and phi); nullopt for fixed.
  virtual std::optional<detector_estimate> estimate() const { return std::nullopt; }
};

/// The fixed detector's silence limit: `timeout` when set, else multiplier × interval
/// rounded to whole milliseconds. Throws config_error like make_detector. The protocol
/// engine keeps this one number inline instead of a detector object per connection.
std::chrono::milliseconds fixed_timeout(const fixed_detector_config& config);

/// The same configuration with its heartbeat interval replaced (the one a connection agreed).
detector_config with_interval(detector_config config, std::chrono::milliseconds interval);

/// Builds a detector from its configuration; `start` counts as the first arrival.
/// Throws config_error for nonsense parameters (non-positive interval, multiplier or
/// threshold, zero window).
std::unique_ptr<failure_detector> make_detector(const detector_config& config, steady_time start);

}  // namespace deadpeer
