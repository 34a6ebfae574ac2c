#include "metrics.hpp"

#include <stdexcept>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace deadpeer::metrics {
namespace {

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.17g", v);
  return buffer;
}

}  // namespace

histogram::histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {
  std::sort(bounds_.begin(), bounds_.end());
}

void histogram::merge(const histogram& other) {
  if (other.bounds_ != bounds_) throw std::invalid_argument("histogram::merge: different bounds");
  for (std::size_t i = 0; i < counts_.size(); ++i)
    counts_[i] += other.counts_[i];
  sum_ += other.sum_;
  count_ += other.count_;
}

void histogram::observe(double value) {
  const auto at = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  ++counts_[static_cast<std::size_t>(at)];
  sum_ += value;
  ++count_;
}

void histogram::write(std::string& out, std::string_view name, std::string_view help) const {
  write_header(out, name, "histogram", help);
  std::uint64_t cumulative = 0;
  const std::string bucket = std::string(name) + "_bucket";
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    write_sample(out, bucket, "le=\"" + number(bounds_[i]) + "\"", static_cast<double>(cumulative));
  }
  cumulative += counts_.back();
  write_sample(out, bucket, "le=\"+Inf\"", static_cast<double>(cumulative));
  write_sample(out, std::string(name) + "_sum", "", sum_);
  write_sample(out, std::string(name) + "_count", "", static_cast<double>(count_));
}

std::string escape_label(std::string_view value) {
  std::string out;
  for (const char c : value) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

void write_header(std::string& out, std::string_view name, std::string_view type,
                  std::string_view help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

void write_sample(std::string& out, std::string_view name, std::string_view labels, double value) {
  out += name;
  if (!labels.empty()) {
    out += '{';
    out += labels;
    out += '}';
  }
  out += ' ';
  out += number(value);
  out += '\n';
}

}  // namespace deadpeer::metrics
