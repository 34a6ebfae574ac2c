// See log.hpp: timestamps in UTC from the real-time clock (the one people compare with
// other logs), the whole line in one write() so that concurrent lines stay whole.
#include <deadpeer/log.hpp>

#include <chrono>
#include <cstdio>
#include <ctime>

#include <unistd.h>

namespace deadpeer {

std::string_view to_string(log_level level) {
  switch (level) {
    case log_level::error:
      return "error";
    case log_level::warning:
      return "warning";
    case log_level::info:
      return "info";
  }
  return "info";
}

std::string log_prefix(log_level level) {
  const auto now = std::chrono::system_clock::now();
  const auto seconds = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm utc{};
  ::gmtime_r(&seconds, &utc);
  char text[40];
  const auto n = std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &utc);
  std::snprintf(text + n, sizeof text - n, ".%03dZ ", static_cast<int>(ms));
  return std::string(text) + std::string(to_string(level)) + " ";
}

void write_log_line(log_level level, std::string_view text, int fd) {
  std::string line = log_prefix(level);
  line += text;
  line += '\n';
  const char* at = line.data();
  std::size_t left = line.size();
  while (left > 0) {
    const auto n = ::write(fd, at, left);
    if (n <= 0) return;  // a log that cannot be written is not worth failing for
    at += n;
    left -= static_cast<std::size_t>(n);
  }
}

}  // namespace deadpeer
