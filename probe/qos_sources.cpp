// Where probe qos gets real traces (qos.hpp: read_trace_file, read_traces_from_db). What
// this module decides:
// - A trace file is read strictly: a line that is not one finite number, or a time that goes
//   back, stops the read with "FILE:LINE: ..." rather than being skipped, because a trace
//   silently missing arrivals would show gaps that never happened, i.e. false verdicts.
// - A database trace is the `arrivals` table (schema 4, docs/results-schema.md): times_us is
//   a BLOB of little-endian int64 microseconds from the trace's first arrival, `count`
//   values. A row whose BLOB disagrees with its count, or whose times go back, is refused
//   naming the file and the connection: it is damage, not data.
// - A connection recorded with heartbeats off has interval_ms 0; its trace takes the median
//   gap between its arrivals (whole ms, at least 1) as the interval the detectors are built
//   with, since nothing else says how often the peer spoke.
// - The database is opened read-only with a busy timeout, so reading a live server's file
//   neither blocks the server's writer nor fails on its commits.
#include "qos.hpp"
#include "sqlite_reader.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <system_error>

namespace probe {
namespace qos {
namespace {

using std::chrono::milliseconds;

std::string_view trimmed(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  const auto last = s.find_last_not_of(" \t\r\n");
  return s.substr(first, last - first + 1);
}

std::string quoted_excerpt(std::string_view s) {
  constexpr std::size_t max_shown = 40;
  std::string out = "\"";
  out += s.substr(0, max_shown);
  if (s.size() > max_shown) out += "...";
  out += '"';
  return out;
}

std::string format_ms(double value_ms) {
  char text[64];
  std::snprintf(text, sizeof text, "%.3f", value_ms);
  std::string s = text;
  while (!s.empty() && s.back() == '0') s.pop_back();
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s + " ms";
}

using sqlite::column_text;
using sqlite::prepare;


// The median gap of a trace in whole milliseconds, at least 1 (interval_ms 0: heartbeats off).
milliseconds median_gap(const std::vector<double>& arrival_ms) {
  std::vector<double> gaps_ms;
  for (std::size_t i = 1; i < arrival_ms.size(); ++i)
    gaps_ms.push_back(arrival_ms[i] - arrival_ms[i - 1]);
  if (gaps_ms.empty()) return milliseconds(1);
  const auto middle = gaps_ms.begin() + static_cast<std::ptrdiff_t>(gaps_ms.size() / 2);
  std::nth_element(gaps_ms.begin(), middle, gaps_ms.end());
  return milliseconds(std::max<std::int64_t>(1, std::llround(*middle)));
}

}  // namespace

trace read_trace_file(const std::string& path, milliseconds interval) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw std::runtime_error(path + " is a directory; give a file of arrival times in ms, one a line");
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot be read");
  trace t;
  t.name = path;
  t.interval = interval;
  std::string line;
  std::size_t line_number = 0;
  std::size_t previous_line = 0;
  while (std::getline(in, line)) {
    ++line_number;
    const auto text = trimmed(line);
    if (text.empty() || text.front() == '#') continue;
    const std::string where = path + ":" + std::to_string(line_number) + ": ";
    double value_ms = 0;
    const auto* end = text.data() + text.size();
    const auto [stop, error] = std::from_chars(text.data(), end, value_ms);
    if (error != std::errc() || stop != end || !std::isfinite(value_ms))
      throw std::runtime_error(where + quoted_excerpt(text) +
                               " is not an arrival time (one number of milliseconds a line, "
                               "e.g. 1000.25; '#' starts a comment)");
    if (!t.arrival_ms.empty() && value_ms < t.arrival_ms.back())
      throw std::runtime_error(where + format_ms(value_ms) + " comes before " +
                               format_ms(t.arrival_ms.back()) + " on line " +
                               std::to_string(previous_line) + "; arrival times must not decrease");
    t.arrival_ms.push_back(value_ms);
    previous_line = line_number;
  }
  if (in.bad()) throw std::runtime_error(path + ": read error after line " + std::to_string(line_number));
  if (t.arrival_ms.size() < 3)
    throw std::runtime_error(path + ":" + std::to_string(line_number) + ": " +
                             std::to_string(t.arrival_ms.size()) +
                             " arrival time(s) in the file; a trace needs at least 3");
  return t;
}

std::vector<trace> read_traces_from_db(const std::string& path, std::size_t min_arrivals) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    throw std::runtime_error(path + ": no such file (a database written by heartbeat-server "
                                    "--record-arrivals or by probe run)");
  const auto db = sqlite::open_read_only(path);

  {
    // The first statement that reads the file is where "file is not a database" shows up.
    auto has_table = prepare(db.get(), path,
                             "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                             "name = 'arrivals'");
    if (sqlite3_step(has_table.get()) != SQLITE_ROW)
      throw std::runtime_error("cannot read " + path + ": " + sqlite3_errmsg(db.get()));
    if (sqlite3_column_int(has_table.get(), 0) == 0)
      throw std::runtime_error(path + " holds no recorded arrivals (no arrivals table: a deadpeer "
                                      "database before schema 4, or not one); record some with "
                                      "heartbeat-server --record-arrivals N or probe run");
  }

  auto rows = prepare(db.get(), path,
                      "SELECT connection_id, client_id, peer_address, interval_ms, count, times_us "
                      "FROM arrivals ORDER BY connection_id, id");
  std::vector<trace> out;
  int step = SQLITE_ROW;
  while ((step = sqlite3_step(rows.get())) == SQLITE_ROW) {
    const auto connection_id = sqlite3_column_int64(rows.get(), 0);
    const auto client_id = column_text(rows.get(), 1);
    const auto peer = column_text(rows.get(), 2);
    const auto interval_ms = sqlite3_column_int64(rows.get(), 3);
    const auto count = sqlite3_column_int64(rows.get(), 4);
    const auto* blob = static_cast<const unsigned char*>(sqlite3_column_blob(rows.get(), 5));
    const auto bytes = static_cast<std::size_t>(sqlite3_column_bytes(rows.get(), 5));
    const std::string name = "connection " + std::to_string(connection_id) + " (" +
                             (client_id.empty() ? std::string("no client id") : client_id) + ", " +
                             peer + ")";
    if (count < 0 || bytes != static_cast<std::size_t>(count) * 8)
      throw std::runtime_error(path + ": arrivals of " + name + ": times_us holds " +
                               std::to_string(bytes) + " bytes, expected count " +
                               std::to_string(count) + " x 8");
    if (static_cast<std::size_t>(count) < min_arrivals) continue;
    trace t;
    t.name = name;
    t.arrival_ms.reserve(static_cast<std::size_t>(count));
    for (std::size_t i = 0; i < static_cast<std::size_t>(count); ++i) {
      std::uint64_t bits = 0;
      for (int b = 7; b >= 0; --b) bits = (bits << 8) | blob[i * 8 + static_cast<std::size_t>(b)];
      const auto offset_us = static_cast<std::int64_t>(bits);
      const double value_ms = static_cast<double>(offset_us) / 1000.0;
      if (!t.arrival_ms.empty() && value_ms < t.arrival_ms.back())
        throw std::runtime_error(path + ": arrivals of " + name + ": arrival " +
                                 std::to_string(i + 1) + " (" + format_ms(value_ms) +
                                 ") comes before the one ahead of it (" +
                                 format_ms(t.arrival_ms.back()) + ")");
      t.arrival_ms.push_back(value_ms);
    }
    t.interval = interval_ms > 0 ? milliseconds(interval_ms) : median_gap(t.arrival_ms);
    out.push_back(std::move(t));
  }
  if (step != SQLITE_DONE)
    throw std::runtime_error("cannot read the arrivals of " + path + ": " + sqlite3_errmsg(db.get()));
  return out;
}

}  // namespace qos
}  // namespace probe
