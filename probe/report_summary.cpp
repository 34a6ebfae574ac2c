// probe report, the statistics: groups of trials per (fault, configuration), nearest-rank
// percentiles over the detected ones, failures, bound ratios and wire disagreements. Pure
// functions over plain rows (report.hpp says what each decides).
#include "report.hpp"

#include <deadpeer/duration.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace probe {
namespace report {
namespace {

using std::chrono::milliseconds;

/// "fixed 3s (3 x 1s)" -> "fixed 3s"; "phi threshold 8 (window 1000, ...)" -> "phi 8".
std::string compact_detector(std::string_view detector) {
  std::string text(detector.substr(0, detector.find(" (")));
  constexpr std::string_view phi = "phi threshold ";
  if (text.starts_with(phi)) text = "phi " + text.substr(phi.size());
  return text;
}

/// The keepalive spec without its fourth (user timeout) field when that field says the
/// same as the user_timeout_ms column, which is printed separately.
std::string compact_keepalive(const std::string& spec, std::int64_t user_timeout_ms) {
  if (spec.empty()) return "-";
  if (std::count(spec.begin(), spec.end(), ':') != 3) return spec;
  const auto last = spec.rfind(':');
  std::string why;
  const auto ut = deadpeer::try_parse_duration(std::string_view(spec).substr(last + 1), why);
  if (ut && ut->count() == user_timeout_ms) return spec.substr(0, last);
  return spec;
}

/// Layers that detected the group's faults, most common first, joined with "+".
std::string join_layers(const std::map<std::string, std::size_t>& counts) {
  std::vector<std::pair<std::string, std::size_t>> layers(counts.begin(), counts.end());
  std::stable_sort(layers.begin(), layers.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  std::string text;
  for (const auto& [name, count] : layers) {
    if (!text.empty()) text += '+';
    text += name;
  }
  return text;
}

}  // namespace

// --- summary ---------------------------------------------------------------------------

// Nearest-rank percentile: with the n values sorted ascending x[1] <= ... <= x[n], the
// P-th percentile is x[ceil(P / 100 * n)], the smallest value with at least P% of the
// values at or below it. It is always one of the measured values. Examples: n = 1 gives
// x[1] for every P; n = 5 gives p50 = x[3] and p95 = x[5]; n = 20 gives p50 = x[10] and
// p95 = x[19]. The rank is computed in integers so that 95% of 20 is exactly 19.
double nearest_rank(std::span<const double> sorted, unsigned percent) {
  const std::size_t n = sorted.size();
  const std::size_t rank = std::max<std::size_t>(1, (percent * n + 99) / 100);
  return sorted[std::min(rank, n) - 1];
}

std::string describe_configuration(const trial_row& row) {
  // A target's settings are its own: its command and the greeting say what was measured.
  if (row.config_key.rfind("target=", 0) == 0) return row.config_key;
  // Connect faults: the SYN retries are the whole configuration (connect_faults.hpp).
  if (row.config_key.rfind("connect ", 0) == 0) return row.config_key.substr(8);
  // Teardown faults: the state and its sysctl are the whole configuration (teardown_faults.hpp).
  if (row.config_key.rfind("teardown ", 0) == 0) return row.config_key.substr(9);
  // early-reject: the server's close is the whole configuration.
  if (row.config_key.rfind("server_close=", 0) == 0) return row.config_key;
  std::string text = "ka=" + compact_keepalive(row.keepalive, row.user_timeout_ms);
  text += " hb=";
  if (row.heartbeat_interval_ms > 0) {
    text += deadpeer::format_duration(milliseconds(row.heartbeat_interval_ms));
    if (!row.detector.empty()) text += "(" + compact_detector(row.detector) + ")";
  } else {
    text += "off";
  }
  text += " ut=";
  text += row.user_timeout_ms > 0 ? deadpeer::format_duration(milliseconds(row.user_timeout_ms))
                                  : std::string("off");
  return text;
}

std::optional<double> false_verdicts_per_hour(std::size_t premature, double trial_time_ms) {
  if (!(trial_time_ms > 0)) return std::nullopt;
  constexpr double ms_per_hour = 3'600'000;
  return static_cast<double>(premature) * ms_per_hour / trial_time_ms;
}

bool wire_disagrees(double wire_gap_ms, double latency_ms) {
  return std::abs(wire_gap_ms) > std::max(5.0, 0.02 * std::abs(latency_ms));
}

std::vector<summary_row> summarize(const std::vector<trial_row>& rows) {
  struct group {
    summary_row summary;
    std::vector<double> latencies;
    std::map<std::string, std::size_t> layers;
  };
  std::vector<group> groups;
  std::map<std::pair<std::string, std::string>, std::size_t> index;
  for (const auto& row : rows) {
    // A trial cut short by Ctrl-C measured nothing: not a trial, not a failure.
    if (row.outcome == "interrupted") continue;
    const auto [found, added] = index.try_emplace({row.fault, row.config_key}, groups.size());
    if (added) {
      summary_row s;
      s.fault = row.fault;
      s.config_key = row.config_key;
      s.configuration = describe_configuration(row);
      s.keepalive = row.keepalive;
      s.heartbeat_interval_ms = row.heartbeat_interval_ms;
      s.detector = row.detector;
      s.user_timeout_ms = row.user_timeout_ms;
      groups.push_back({std::move(s), {}, {}});
    }
    auto& g = groups[found->second];
    auto& s = g.summary;
    ++s.trials;
    // Equal keys promise equal settings, so one bound; should rows disagree anyway, the
    // largest finite one is kept (the most generous promise, so never a false "over").
    if (row.bound_ms >= 0 && (!s.bound_ms || row.bound_ms > *s.bound_ms)) s.bound_ms = row.bound_ms;
    if (row.trial_time_ms) s.trial_time_ms += *row.trial_time_ms;
    if (row.outcome == "detected") {
      ++s.detected;
      if (row.latency_ms) g.latencies.push_back(*row.latency_ms);
      if (over_bound(row)) ++s.over_bound;
      if (row.wire_gap_ms && row.latency_ms) {
        ++s.wire_seen;
        if (wire_disagrees(*row.wire_gap_ms, *row.latency_ms)) ++s.wire_disagree;
      }
      ++g.layers[row.detected_by.empty() ? std::string("unknown") : row.detected_by];
    } else if (row.outcome == "observed") {
      ++s.observed;
      if (row.answer_read.value_or(false)) ++s.answer_read;
      if (row.answer_read.value_or(false) && row.answer_after_error) ++s.answer_after_error;
      if (row.latency_ms) g.latencies.push_back(*row.latency_ms);
      ++g.layers[row.detected_by.empty() ? std::string("unknown") : row.detected_by];
    } else if (row.outcome == "survived") {
      ++s.survived;
    } else if (row.outcome == "missed") {
      ++s.missed;
    } else if (row.outcome == "premature") {
      ++s.premature;
    }
  }

  std::vector<summary_row> out;
  out.reserve(groups.size());
  for (auto& g : groups) {
    auto& s = g.summary;
    if (!g.latencies.empty()) {
      std::sort(g.latencies.begin(), g.latencies.end());
      s.p50_ms = nearest_rank(g.latencies, 50);
      s.p95_ms = nearest_rank(g.latencies, 95);
      s.max_ms = g.latencies.back();
    }
    if (s.max_ms && s.bound_ms && *s.bound_ms > 0) {
      s.max_over_bound = *s.max_ms / static_cast<double>(*s.bound_ms);
      s.p50_over_bound = *s.p50_ms / static_cast<double>(*s.bound_ms);
    }
    s.detected_by = join_layers(g.layers);
    s.false_verdicts_per_hour = false_verdicts_per_hour(s.premature, s.trial_time_ms);
    out.push_back(std::move(s));
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const summary_row& a, const summary_row& b) { return a.fault < b.fault; });

  // Two keys that compact to the same text (settings the compact form leaves out) would
  // look like one configuration twice: those print their full key instead.
  std::map<std::string, std::set<std::string>> keys_of;
  for (const auto& s : out)
    keys_of[s.configuration].insert(s.config_key);
  for (auto& s : out)
    if (keys_of[s.configuration].size() > 1) s.configuration = s.config_key;
  return out;
}

}  // namespace report
}  // namespace probe
