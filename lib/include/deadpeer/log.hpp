// The lines deadpeer's server side writes for operators: one line per event, on stderr,
// each starting with a UTC timestamp to the millisecond and a level, written with a single
// write() so lines from several threads never interleave:
//   2026-12-07T15:04:05.123Z warning deadpeer store: deadpeer.db: cannot write (...)
// Use: log_line(log_level::warning) << "deadpeer store: " << path << ...; the line is
// written when the temporary ends, with its newline.
#pragma once

#include <sstream>
#include <string>
#include <string_view>

namespace deadpeer {

enum class log_level { error, warning, info };

/// "error", "warning" or "info".
std::string_view to_string(log_level level);

/// The prefix of a line written now: "2026-12-07T15:04:05.123Z info ".
std::string log_prefix(log_level level);

/// Writes `text` as one line, prefixed, to descriptor `fd` (2: stderr).
void write_log_line(log_level level, std::string_view text, int fd = 2);

class log_line {
 public:
  explicit log_line(log_level level, int fd = 2) : level_(level), fd_(fd) {}
  ~log_line() { write_log_line(level_, text_.str(), fd_); }
  log_line(const log_line&) = delete;
  log_line& operator=(const log_line&) = delete;

  template <typename T>
  log_line& operator<<(const T& value) {
    text_ << value;
    return *this;
  }

 private:
  log_level level_;
  int fd_;
  std::ostringstream text_;
};

}  // namespace deadpeer
