// probe report: turns the trials table into a summary per (fault, configuration): how fast
// the fault was noticed (p50, p95, max), against the bound the settings promise, by which
// layer, and how often it was missed or declared too early. The summary is computed by
// pure functions over plain rows, so it is tested without a database; reading SQLite,
// formatting and plotting are separate steps around it.
#pragma once

#include "gnuplot.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace probe {

/// probe report [--db FILE] [--format table|csv|json] [--plot FILE.png] [--run ID|last|all]
int command_report(const std::vector<std::string>& args);

namespace report {

/// The columns of one `trials` row that the report uses (docs/results-schema.md).
struct trial_row {
  std::int64_t run_id = 0;
  std::string fault;
  std::string config_key;
  std::string keepalive;  ///< spec or "off"
  std::int64_t heartbeat_interval_ms = 0;
  std::string detector;
  std::int64_t user_timeout_ms = 0;
  std::int64_t bound_ms = -1;  ///< -1: no finite bound
  /// latency_ms_exact (latency_ms where that is NULL); nullopt when not measured (-1).
  std::optional<double> latency_ms;
  std::string detected_by;
  std::string outcome;  ///< "detected", "missed", "premature" or "interrupted"
  /// The wire's FIN/RST instant minus the decision instant; nullopt when the wire was not
  /// observed or showed none.
  std::optional<double> wire_gap_ms;
  /// early-reject (outcome "observed"): whether the client read the server's whole answer
  /// (details.answer_read); nullopt for other faults.
  std::optional<bool> answer_read;
  /// early-reject: the answer was read only after the client's first error (a client that
  /// gives up at its first failed call never sees it; details.answer_before_error).
  bool answer_after_error = false;
  /// lossy, stall: how long the live peer was exposed to false verdicts in this trial (the
  /// whole duration, or until the verdict; details.observed_ms); nullopt for other faults.
  std::optional<double> trial_time_ms;
};

/// A detected trial later than the bound its settings promised (the report's over_bound).
inline bool over_bound(const trial_row& t) {
  return t.outcome == "detected" && t.latency_ms && t.bound_ms >= 0 &&
         *t.latency_ms > static_cast<double>(t.bound_ms);
}

/// True when the wire and the application disagree by more than 5 ms or 2% of the latency.
bool wire_disagrees(double wire_gap_ms, double latency_ms);

/// One (fault, config_key) group of trials.
struct summary_row {
  std::string fault;
  std::string config_key;
  /// Compact settings, e.g. "ka=1s:1s:3 hb=1s(fixed 3s) ut=5s"; the config_key itself when
  /// two different keys would print the same.
  std::string configuration;
  std::string keepalive;
  std::int64_t heartbeat_interval_ms = 0;
  std::string detector;
  std::int64_t user_timeout_ms = 0;
  std::size_t trials = 0;  ///< n: every trial of the group, whatever its outcome
  std::size_t detected = 0;
  std::size_t missed = 0;
  std::size_t premature = 0;
  /// Over the detected trials' latencies; nullopt when none was detected.
  std::optional<double> p50_ms, p95_ms, max_ms;
  std::optional<std::int64_t> bound_ms;  ///< nullopt: no finite bound
  std::optional<double> max_over_bound;  ///< max_ms / bound_ms when both exist (bound > 0)
  std::optional<double> p50_over_bound;  ///< p50_ms / bound_ms: how tight the bound is
  /// Detected trials whose latency exceeded their own bound: a promise broken.
  std::size_t over_bound = 0;
  std::string detected_by;               ///< "eof", "eof+reset"; empty when none detected
  std::size_t wire_seen = 0;      ///< detected trials with a FIN/RST instant from the wire
  std::size_t wire_disagree = 0;  ///< of those, how many disagree (wire_disagrees)
  /// Trials that record what a client saw (outcome "observed": early-reject); their
  /// latencies count in p50, p95 and max like detected ones.
  std::size_t observed = 0;
  std::size_t answer_read = 0;  ///< of those, how many read the server's whole answer
  std::size_t answer_after_error = 0;  ///< of those, how many only after their first error
  /// lossy, stall: trials in which the live peer was never declared dead (outcome
  /// "survived"), the trial time of the group's trials, and premature / trial time in
  /// hours (nullopt when no trial time was recorded: not such a fault).
  std::size_t survived = 0;
  double trial_time_ms = 0;
  std::optional<double> false_verdicts_per_hour;

  std::size_t failures() const { return missed + premature; }
};

/// False verdicts per hour of trial time: `premature` verdicts over `trial_time_ms` of
/// exposure (a rate, so trials that ended at their verdict count only until then);
/// nullopt when there was no trial time.
std::optional<double> false_verdicts_per_hour(std::size_t premature, double trial_time_ms);

/// Nearest-rank percentile of `sorted` (ascending, non-empty), 0 < percent <= 100.
double nearest_rank(std::span<const double> sorted, unsigned percent);

/// The compact configuration of a row: keepalive, heartbeat interval and detector, user
/// timeout.
std::string describe_configuration(const trial_row& row);

/// Groups `rows` by (fault, config_key) and summarizes each group. Groups are ordered by
/// fault, then by their first row in `rows` (the order the sweep ran them in).
std::vector<summary_row> summarize(const std::vector<trial_row>& rows);

/// A latency for people: "0.84 ms", "42.3 ms", "4.07 s", "7875 s".
std::string format_latency(double ms);

/// The summary as an aligned table with a header line, one line per group; when some
/// groups measured false verdicts (lossy, stall), a second table follows under its own
/// heading: trials, survived, premature, trial time, false verdicts per hour.
std::string format_table(const std::vector<summary_row>& rows);
/// RFC 4180 CSV (CRLF line ends) with a header row; numbers raw, in milliseconds; a missing
/// value (no detection, no bound) is an empty field.
std::string format_csv(const std::vector<summary_row>& rows);
/// A JSON array of objects with the CSV's fields; a missing value is null.
std::string format_json(const std::vector<summary_row>& rows);
/// One CSV field, quoted when it holds a comma, a quote, CR or LF.
std::string csv_field(std::string_view text);

/// Which runs to report: --run ID|last|all.
struct run_selection {
  enum class kind { all, last, id };
  kind which = kind::all;
  std::int64_t id = 0;  ///< for kind::id
};
/// Parses "all", "last" or a positive run id; throws usage_error otherwise.
run_selection parse_run_selection(std::string_view text);

/// The selected trials of the database at `path`, in insertion order, read through a
/// read-only connection. Throws usage_error naming the path when the file does not exist,
/// is not a readable SQLite database or has no trials table. `description` receives what
/// was selected in words ("all runs", "run 3", "the last run (5)").
std::vector<trial_row> load_trials(const std::string& path, const run_selection& selection,
                                   std::string& description);

/// Plotting failed (gnuplot error, unwritable output file); what() says why. The plot
/// helpers are gnuplot.hpp's, shared with probe qos.
using probe::plot_error;
/// The full path of the gnuplot program found on PATH, or nullopt.
using gnuplot::find_gnuplot;
/// The image format a plot file's name asks for: "png" or "svg" (by its extension, in any
/// case), or nullopt for any other name.
using gnuplot::plot_format;

/// Draws `png_path` (a PNG, or SVG when plot_format says so) with gnuplot: (1) each detected trial's latency per configuration on a
/// log scale in seconds, with the promised bound as a bar; (2) the latency distribution per
/// detecting layer (box and points). Work files live in a temporary directory that is
/// removed afterwards. Throws plot_error.
void write_plot(const std::string& gnuplot, const std::vector<trial_row>& trials,
                const std::vector<summary_row>& rows, const std::string& png_path,
                std::string_view title);

}  // namespace report
}  // namespace probe
