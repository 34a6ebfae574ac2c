// Faults that measure false verdicts: the victim stays alive and keeps heartbeating while
// its path loses packets (`lossy`) or its process is paused now and then (`stall`, a model
// of garbage-collection pauses), for a fixed duration per trial. Any verdict of the server
// within that time is false: the trial is `premature`, and when, why and after how much
// silence (or how far into a pause) is stored; a trial without one `survived`. The report
// turns these into false verdicts per hour of trial time, the figure a detector is tuned
// against (fast enough on a dead peer, rare enough on a live one).
//
// What this module decides:
// - A trial ends at its first verdict: the victim's connection is gone, and the exposure
//   (trial time) it contributes is the time until that verdict, so that false verdicts per
//   hour is an honest rate (verdicts / time at risk) and not a count per trial.
// - The victim's own detector is made generous (the trial's duration and a minute more):
//   the server's detector is the one under test, and a client that gave up first would
//   end the connection with a reset that says nothing about it.
// - Pause lengths are log-uniform between --pause's bounds (each doubling of length as
//   likely as the next: many short pauses, a few long ones, as in garbage collectors),
//   and gaps are exponential (pauses arrive at random), at least a heartbeat interval
//   apart so two pauses never merge into one longer than --pause allows. The schedule is
//   a pure function of (seed, trial index), drawn from std::mt19937_64 with our own
//   mapping to [0, 1) (the standard distributions differ between libraries), so a trial
//   is repeatable anywhere and a resumed sweep pauses its remaining trials as a fresh run
//   would have. Loss cannot be seeded: the kernel draws it.
#pragma once

#include "experiment.hpp"

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace probe {

/// The part of config_key() that lossy and stall add (their settings under test).
std::string noise_key(const experiment_config& config);

/// Runs lossy or stall trials (see the module comment) and stores them.
std::vector<trial_result> run_noise_experiment(const experiment_config& config,
                                               std::int64_t run_id, int first_trial,
                                               const trial_callback& progress);

namespace noise {

/// "5%", "5", "0.25%": basis points (1/100 of a percent), 1..10000. Throws usage_error.
int parse_loss(std::string_view text);
/// 500 -> "5%", 25 -> "0.25%".
std::string format_loss(int basis_points);
/// "200ms..2s" (bounds included) or "500ms" (always that long). Throws usage_error.
std::pair<std::chrono::milliseconds, std::chrono::milliseconds> parse_pause_range(
    std::string_view text);

/// One pause of the victim, from the trial's start.
struct pause {
  std::chrono::milliseconds start{0};
  std::chrono::milliseconds length{0};
  bool operator==(const pause&) const = default;
};

struct pause_settings {
  std::chrono::milliseconds min{200}, max{2000};  ///< log-uniform between these (inclusive)
  std::chrono::milliseconds mean_gap{2000};  ///< mean time from a pause's end to the next start
  std::chrono::milliseconds min_gap{100};    ///< at least this (the heartbeat interval)
  std::uint64_t seed = 1;
};

/// The pauses of trial `trial` (1-based) within `duration`, in order, none overlapping.
/// A pause that would run past the end is cut at the end. At most 100000 pauses.
std::vector<pause> pause_schedule(const pause_settings& settings, int trial,
                                  std::chrono::milliseconds duration);

}  // namespace noise
}  // namespace probe
