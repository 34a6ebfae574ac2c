// probe qos: the quality of service of failure detectors (Chen, Toueg and Aguilera 2002),
// measured by replaying heartbeat arrival traces. Two numbers judge a detector together:
// T_D, the time from a crash to the verdict, and lambda_M, false verdicts per hour on a
// live peer. Everything here is pure: a trace is a list of arrival instants, the detectors
// are the library's own (deadpeer::make_detector), time is the trace's, and a seed fixes
// every random choice, so a run is reproducible to the digit.
//
// Replay. The detector is fed the arrivals in order. After each arrival it states when it
// would declare the peer dead (dead_at); when the next arrival comes at or after that
// instant, the detector declared a live peer dead: a mistake. It is kept running (a real
// client would reconnect and be judged again), so one bad spell can count several times.
// A crash at instant c ends the arrivals there: the verdict comes at the dead_at of the
// last arrival before c (at c itself when that is already past), and T_D = verdict - c.
// Crash instants are spread uniformly over the trace (stratified: one per equal slice).
#pragma once

#include <deadpeer/detector.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace probe {

namespace qos {

/// Heartbeat arrival instants of one link, in milliseconds (any origin, non-decreasing).
struct trace {
  std::string name;                   ///< "calm", a file name, "connection 17 (client-a)", ...
  std::chrono::milliseconds interval{1000};  ///< the heartbeat interval the peer was asked for
  std::vector<double> arrival_ms;
};

/// Synthetic families, each a model of a kind of link (parameters in qos.cpp's comment).
enum class family {
  calm,     ///< a LAN: gaussian network delay, a few ms of spread
  gc,       ///< the sender stops for garbage-collection-like pauses (lognormal lengths)
  mobile,   ///< bursty delays of a cellular link: good and bad spells (Gilbert-Elliott)
  regime,   ///< calm and jittery half hours in turn: the spread switches regime
};

std::vector<family> all_families();
std::string_view family_name(family f);
std::optional<family> family_from_name(std::string_view name);

struct synthetic_options {
  std::chrono::milliseconds interval{1000};
  double hours = 100;
  std::uint64_t seed = 1;
};

/// A trace of the family, deterministic for the options.
trace make_synthetic(family f, const synthetic_options& options);

/// Reads a trace file: one arrival time in milliseconds per line (decimals allowed), any
/// origin; blank lines and lines starting with '#' are skipped. Times must not decrease.
/// Throws std::runtime_error naming the file and line for anything else, or for fewer than
/// 3 arrivals. `interval` is the heartbeat interval the trace was recorded with.
trace read_trace_file(const std::string& path, std::chrono::milliseconds interval);

/// Every recorded connection in a deadpeer SQLite file (heartbeat-server
/// --record-arrivals, or probe's lab) with at least `min_arrivals` arrivals, as traces named
/// after the connection. Throws std::runtime_error when the file cannot be read or holds no
/// recorded arrivals table.
std::vector<trace> read_traces_from_db(const std::string& path, std::size_t min_arrivals = 3);

/// What one detector setting achieved on one trace.
struct quality {
  double hours = 0;               ///< the trace's span
  std::size_t mistakes = 0;       ///< false verdicts on the live peer
  double mistakes_per_hour = 0;   ///< lambda_M
  std::size_t crashes = 0;        ///< crash instants sampled
  double td_mean_ms = 0;          ///< T_D over the crash instants
  double td_p99_ms = 0;
};

/// Replays `t` through a detector built from `config` (its interval replaced by the trace's).
/// `crashes` crash instants, placed with `seed`. Throws deadpeer::config_error for a bad
/// configuration and std::invalid_argument for a trace of fewer than 2 arrivals.
quality evaluate(const trace& t, const deadpeer::detector_config& config, std::size_t crashes = 20000,
                 std::uint64_t seed = 1);

/// One point of a sweep: a detector kind ("fixed", "phi", "adaptive"), the swept parameter's
/// value (multiplier, threshold, ...) and the configuration.
struct setting {
  std::string kind;
  double parameter = 0;
  std::string label;  ///< e.g. "fixed 1.5x", "phi 8"
  deadpeer::detector_config config;
  bool server_default = false;  ///< the detector heartbeat-server uses unless told otherwise
};

/// The default sweep for a heartbeat interval: fixed 1.05x..6x, phi thresholds 1..16, and the
/// adaptive detector's margins; the server's default detector is one of them.
std::vector<setting> default_sweep(std::chrono::milliseconds interval);
/// The index of the server's default detector in default_sweep.
std::size_t default_setting(const std::vector<setting>& sweep);

/// The fixed timeout tuned for one trace: the shortest that makes at most `mistakes` false
/// verdicts on it (whole milliseconds, just above the (mistakes+1)-th longest gap).
deadpeer::fixed_detector_config tuned_fixed(const trace& t, std::size_t mistakes);

/// What the sweep says about one trace.
struct trace_verdict {
  /// Per detector kind, the setting with the shortest mean T_D within the budget (nullopt: none).
  std::vector<std::pair<std::string, std::optional<std::size_t>>> fastest_within_budget;
  /// The fixed timeout tuned for this trace at the default detector's mistake count, its quality,
  /// and the default's mean T_D over it (1.15 means 15% slower).
  deadpeer::fixed_detector_config fixed_at_default_rate;
  quality fixed_at_default_quality;
  double default_over_fixed = 0;
  /// The fixed timeout tuned for this trace at the budget.
  deadpeer::fixed_detector_config fixed_at_budget;
};

struct analysis {
  std::size_t default_setting = 0;
  std::vector<trace_verdict> traces;
  bool default_meets_budget_everywhere = true;
  /// The one fixed multiplier that keeps every trace within the budget (the largest of the
  /// tuned ones), and its mean T_D on each trace.
  double single_fixed_multiplier = 0;
  std::vector<quality> single_fixed_quality;
};

/// `by_trace[t][s]` is setting s of `sweep` evaluated on traces[t]. Evaluates the tuned fixed
/// timeouts it needs with the same crashes and seed.
analysis analyse(const std::vector<trace>& traces, const std::vector<setting>& sweep,
                 const std::vector<std::vector<quality>>& by_trace, double budget_per_hour,
                 std::size_t crashes, std::uint64_t seed);

}  // namespace qos
}  // namespace probe
