#include "metrics.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>
#include <sstream>
#include <stdexcept>

#include <sys/resource.h>
#include <unistd.h>

namespace deadpeer::metrics {

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  char buffer[64];
  const auto [end, error] = std::to_chars(buffer, buffer + sizeof buffer, v);
  return error == std::errc{} ? std::string(buffer, end) : std::string("NaN");
}

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
  write_samples(out, name, "");
}

void histogram::write_samples(std::string& out, std::string_view name,
                              std::string_view labels) const {
  const std::string before_le = labels.empty() ? std::string() : std::string(labels) + ",";
  std::uint64_t cumulative = 0;
  const std::string bucket = std::string(name) + "_bucket";
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    write_sample(out, bucket, before_le + "le=\"" + number(bounds_[i]) + "\"",
                 static_cast<double>(cumulative));
  }
  cumulative += counts_.back();
  write_sample(out, bucket, before_le + "le=\"+Inf\"", static_cast<double>(cumulative));
  write_sample(out, std::string(name) + "_sum", labels, sum_);
  write_sample(out, std::string(name) + "_count", labels, static_cast<double>(count_));
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

namespace {

// Fields of /proc/self/stat after the command name (which may hold spaces): field 3 first.
std::vector<std::string> own_stat_fields() {
  std::ifstream in("/proc/self/stat");
  const std::string line((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto after_name = line.rfind(')');
  std::vector<std::string> fields;
  if (after_name == std::string::npos) return fields;
  std::istringstream rest(line.substr(after_name + 1));
  for (std::string f; rest >> f;)
    fields.push_back(f);
  return fields;
}

std::optional<double> boot_time_seconds() {
  std::ifstream in("/proc/stat");
  for (std::string key; in >> key;) {
    if (key == "btime") {
      double t = 0;
      if (in >> t) return t;
      return std::nullopt;
    }
    in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return std::nullopt;
}

}  // namespace

void write_process_metrics(std::string& out) {
  rusage usage{};
  if (::getrusage(RUSAGE_SELF, &usage) == 0) {
    const auto seconds = [](const timeval& t) {
      return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
    };
    write_header(out, "process_cpu_seconds_total", "counter",
                 "User and system CPU time spent by the process, in seconds.");
    write_sample(out, "process_cpu_seconds_total", "", seconds(usage.ru_utime) + seconds(usage.ru_stime));
  }
  const auto fields = own_stat_fields();  // fields[0] is field 3 (state)
  const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  if (fields.size() > 21) {
    write_header(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    write_sample(out, "process_resident_memory_bytes", "", std::stod(fields[21]) * page);
    write_header(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    write_sample(out, "process_virtual_memory_bytes", "", std::stod(fields[20]));
    if (const auto boot = boot_time_seconds(); boot && ticks > 0) {
      write_header(out, "process_start_time_seconds", "gauge",
                   "Start time of the process since the Unix epoch, in seconds.");
      write_sample(out, "process_start_time_seconds", "", *boot + std::stod(fields[19]) / ticks);
    }
  }
  std::error_code error;
  std::size_t open = 0;
  for (std::filesystem::directory_iterator it("/proc/self/fd", error), end; !error && it != end;
       it.increment(error))
    ++open;
  if (!error) {
    write_header(out, "process_open_fds", "gauge", "Number of open file descriptors.");
    write_sample(out, "process_open_fds", "", static_cast<double>(open));
  }
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    write_header(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
    write_sample(out, "process_max_fds", "", static_cast<double>(limit.rlim_cur));
  }
}

}  // namespace deadpeer::metrics
