// Prometheus text exposition (format 0.0.4), written by hand: a counter, gauge or
// histogram is a few lines of text, and the rules that matter (HELP/TYPE once per
// family, escaped label values, cumulative buckets ending in +Inf, _sum and _count)
// are easier to get right in one small place than through a client library.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace deadpeer::metrics {

/// A histogram with fixed upper bounds (seconds).
class histogram {
 public:
  explicit histogram(std::vector<double> upper_bounds);
  void observe(double value);
  /// Adds another histogram's observations; its bounds must be the same.
  void merge(const histogram& other);
  /// Appends the family (HELP, TYPE, buckets, _sum, _count).
  void write(std::string& out, std::string_view name, std::string_view help) const;
  /// Appends the samples only (buckets, _sum, _count), each with `labels` (k="v",... or
  /// empty) before `le`: one member of a labelled family whose header is already written.
  void write_samples(std::string& out, std::string_view name, std::string_view labels) const;

 private:
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;  // per bucket, not cumulative; last is +Inf
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

/// Escapes a label value: backslash, double quote and newline.
std::string escape_label(std::string_view value);

/// Appends HELP and TYPE lines.
void write_header(std::string& out, std::string_view name, std::string_view type,
                  std::string_view help);

/// Appends `name{labels} value`; labels already formatted as k="v",... or empty.
void write_sample(std::string& out, std::string_view name, std::string_view labels, double value);

/// A sample value or `le` bound as Prometheus reads it: the shortest text that reads back
/// as the same double ("0.005", not "0.0050000000000000001"), "+Inf", "-Inf" or "NaN".
std::string number(double v);

/// Appends the process_* families every Prometheus client exports (CPU seconds, resident
/// memory, open and maximum descriptors, start time), read from /proc/self.
void write_process_metrics(std::string& out);

}  // namespace deadpeer::metrics
