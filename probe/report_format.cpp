// probe report, the formats: an aligned table for people, RFC 4180 CSV and JSON for tools.
#include "report.hpp"

#include <deadpeer/json_text.hpp>

#include "report_text.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace probe {
namespace report {

namespace detail {

std::string number_text(double value) {
  std::array<char, 64> buffer{};
  const auto result = std::to_chars(buffer.data(), buffer.data() + buffer.size(), value);
  return std::string(buffer.data(), result.ptr);
}

std::string printf_text(const char* format, double value) {
  std::array<char, 64> buffer{};
  const int n = std::snprintf(buffer.data(), buffer.size(), format, value);
  return std::string(buffer.data(), n > 0 ? static_cast<std::size_t>(n) : 0);
}

}  // namespace detail
namespace {

using detail::number_text;
using detail::printf_text;

/// max/bound with two decimals; a ratio too small for them (an instant crash against a
/// keepalive bound) prints as "<0.01" rather than a misleading 0.00.
std::string format_ratio(double ratio) {
  return ratio < 0.005 ? std::string("<0.01") : printf_text("%.2f", ratio);
}

}  // namespace

// --- formats ---------------------------------------------------------------------------

std::string format_latency(double ms) {
  if (ms < 0.01) return printf_text("%.3f ms", ms);
  if (ms < 10) return printf_text("%.2f ms", ms);
  if (ms < 100) return printf_text("%.1f ms", ms);
  if (ms < 1000) return printf_text("%.0f ms", ms);
  const double s = ms / 1000;
  if (s < 10) return printf_text("%.2f s", s);
  if (s < 100) return printf_text("%.1f s", s);
  return printf_text("%.0f s", s);
}

namespace {

/// Trial time for people: as a latency up to an hour, then in hours.
std::string trial_time_text(double ms) {
  constexpr double ms_per_hour = 3'600'000;
  return ms < ms_per_hour ? format_latency(ms) : printf_text("%.2f h", ms / ms_per_hour);
}

/// lossy and stall: a live peer declared dead is a false verdict; their groups get a table
/// of their own under a heading (empty when no group measured any trial time).
std::string false_verdict_table(const std::vector<summary_row>& rows) {
  std::vector<std::vector<std::string>> cells{
      {"fault", "configuration", "trials", "survived", "premature", "trial_time", "per_hour"}};
  for (const auto& r : rows) {
    if (!r.false_verdicts_per_hour) continue;
    const double rate = *r.false_verdicts_per_hour;
    cells.push_back({r.fault, r.configuration, std::to_string(r.trials), std::to_string(r.survived),
                     std::to_string(r.premature), trial_time_text(r.trial_time_ms),
                     printf_text(rate >= 100  ? "%.0f"
                                 : rate >= 10 ? "%.1f"
                                              : "%.2f",
                                 rate)});
  }
  if (cells.size() == 1) return {};
  std::vector<std::size_t> width(cells[0].size(), 0);
  for (const auto& line : cells)
    for (std::size_t c = 0; c < line.size(); ++c)
      width[c] = std::max(width[c], line[c].size());
  std::string out =
      "\nfalse verdicts (a live peer declared dead; premature counts as a failure above):\n";
  for (const auto& line : cells) {
    std::string text;
    for (std::size_t c = 0; c < line.size(); ++c) {
      if (c > 0) text += "  ";
      const std::string pad(width[c] - line[c].size(), ' ');
      text += c < 2 ? line[c] + pad : pad + line[c];  // words left, numbers right
    }
    while (!text.empty() && text.back() == ' ')
      text.pop_back();
    out += text + "\n";
  }
  return out;
}

}  // namespace

std::string format_table(const std::vector<summary_row>& rows) {
  const std::vector<std::string> header{"fault",     "configuration", "n",           "p50",
                                        "p95",       "max",           "bound",       "max/bound",
                                        "p50/bound", "over_bound",    "detected_by", "failures",
                                        "wire_diff", "answered"};
  // Numbers are right-aligned, words left-aligned.
  const std::vector<bool> right{false, false, true, true,  true, true, true,
                                true,  true,  true, false, true, true, true};
  auto latency = [](const std::optional<double>& ms) {
    return ms ? format_latency(*ms) : std::string("-");
  };
  std::vector<std::vector<std::string>> cells{header};
  for (const auto& r : rows)
    cells.push_back(
        {r.fault, r.configuration, std::to_string(r.trials), latency(r.p50_ms), latency(r.p95_ms),
         latency(r.max_ms), r.bound_ms ? format_latency(static_cast<double>(*r.bound_ms)) : "none",
         r.max_over_bound ? format_ratio(*r.max_over_bound) : "-",
         r.p50_over_bound ? format_ratio(*r.p50_over_bound) : "-",
         r.bound_ms ? std::to_string(r.over_bound) : "-",
         r.detected_by.empty() ? "-" : r.detected_by, std::to_string(r.failures()),
         r.wire_seen == 0 ? "-"
                          : std::to_string(r.wire_disagree) + "/" + std::to_string(r.wire_seen),
         r.observed == 0
             ? "-"
             : std::to_string(r.answer_read) + "/" + std::to_string(r.observed) +
                   (r.answer_after_error == 0
                        ? ""
                        : " (" + std::to_string(r.answer_after_error) + " after an error)")});
  std::vector<std::size_t> width(header.size(), 0);
  for (const auto& line : cells)
    for (std::size_t c = 0; c < line.size(); ++c)
      width[c] = std::max(width[c], line[c].size());
  std::string out;
  for (const auto& line : cells) {
    std::string text;
    for (std::size_t c = 0; c < line.size(); ++c) {
      if (c > 0) text += "  ";
      const std::string pad(width[c] - line[c].size(), ' ');
      text += right[c] ? pad + line[c] : line[c] + pad;
    }
    while (!text.empty() && text.back() == ' ')
      text.pop_back();
    out += text + "\n";
  }
  return out + false_verdict_table(rows);
}

std::string csv_field(std::string_view text) {
  if (text.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(text);
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + '"';
}

std::string format_csv(const std::vector<summary_row>& rows) {
  auto number = [](const std::optional<double>& v) { return v ? number_text(*v) : std::string(); };
  std::string out =
      "fault,configuration,n,p50_ms,p95_ms,max_ms,bound_ms,max_over_bound,detected_by,failures,"
      "detected,missed,premature,config_key,keepalive,heartbeat_interval_ms,detector,"
      "user_timeout_ms,wire_seen,wire_disagree,p50_over_bound,over_bound,observed,answer_read,"
      "answer_after_error\r\n";
  for (const auto& r : rows) {
    const std::vector<std::string> fields{csv_field(r.fault),
                                          csv_field(r.configuration),
                                          std::to_string(r.trials),
                                          number(r.p50_ms),
                                          number(r.p95_ms),
                                          number(r.max_ms),
                                          r.bound_ms ? std::to_string(*r.bound_ms) : std::string(),
                                          number(r.max_over_bound),
                                          csv_field(r.detected_by),
                                          std::to_string(r.failures()),
                                          std::to_string(r.detected),
                                          std::to_string(r.missed),
                                          std::to_string(r.premature),
                                          csv_field(r.config_key),
                                          csv_field(r.keepalive),
                                          std::to_string(r.heartbeat_interval_ms),
                                          csv_field(r.detector),
                                          std::to_string(r.user_timeout_ms),
                                          std::to_string(r.wire_seen),
                                          std::to_string(r.wire_disagree),
                                          number(r.p50_over_bound),
                                          std::to_string(r.over_bound),
                                          std::to_string(r.observed),
                                          std::to_string(r.answer_read),
                                          std::to_string(r.answer_after_error)};
    for (std::size_t i = 0; i < fields.size(); ++i)
      out += (i > 0 ? "," : "") + fields[i];
    out += "\r\n";
  }
  return out;
}

std::string format_json(const std::vector<summary_row>& rows) {
  auto number = [](const std::optional<double>& v) {
    return v ? boost::json::value(*v) : boost::json::value(nullptr);
  };
  auto count = [](std::size_t n) { return boost::json::value(static_cast<std::uint64_t>(n)); };
  boost::json::array array;
  for (const auto& r : rows) {
    boost::json::object o;
    o["fault"] = r.fault;
    o["configuration"] = r.configuration;
    o["n"] = count(r.trials);
    o["p50_ms"] = number(r.p50_ms);
    o["p95_ms"] = number(r.p95_ms);
    o["max_ms"] = number(r.max_ms);
    o["bound_ms"] = r.bound_ms ? boost::json::value(*r.bound_ms) : boost::json::value(nullptr);
    o["max_over_bound"] = number(r.max_over_bound);
    o["p50_over_bound"] = number(r.p50_over_bound);
    o["over_bound"] = count(r.over_bound);
    o["detected_by"] = r.detected_by;
    o["failures"] = count(r.failures());
    o["detected"] = count(r.detected);
    o["missed"] = count(r.missed);
    o["premature"] = count(r.premature);
    o["config_key"] = r.config_key;
    o["keepalive"] = r.keepalive;
    o["heartbeat_interval_ms"] = r.heartbeat_interval_ms;
    o["detector"] = r.detector;
    o["user_timeout_ms"] = r.user_timeout_ms;
    o["wire_seen"] = count(r.wire_seen);
    o["wire_disagree"] = count(r.wire_disagree);
    o["observed"] = count(r.observed);
    o["answer_read"] = count(r.answer_read);
    o["answer_after_error"] = count(r.answer_after_error);
    o["survived"] = count(r.survived);
    o["trial_time_ms"] = r.false_verdicts_per_hour ? boost::json::value(r.trial_time_ms)
                                                   : boost::json::value(nullptr);
    o["false_verdicts_per_hour"] = number(r.false_verdicts_per_hour);
    array.push_back(std::move(o));
  }
  // Plain numbers (never exponent form), one row per line.
  return deadpeer::json_text(array, deadpeer::json_layout::rows) + "\n";
}

}  // namespace report
}  // namespace probe
