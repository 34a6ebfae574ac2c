// probe report: the trials table as a summary per (fault, configuration), in a table for
// people, CSV or JSON for tools, and optionally a PNG drawn by gnuplot.
//
// Decisions:
// - Percentiles are nearest-rank (see nearest_rank): every figure printed is a latency
//   that was actually measured, never an interpolation between two trials, and p95 of a
//   small group is simply its worst or second-worst trial, which is the honest answer.
// - Latency figures cover the detected trials only; missed and premature trials have no
//   meaningful latency and are counted as failures instead of being averaged in.
// - The database is opened read-only: a report never changes results, and it can run
//   while a sweep is still writing (WAL mode).
// - Plots are drawn by the gnuplot program rather than a plotting library: it is one
//   Debian package, and the data and script it was given can be kept and rerun by hand.
#include "report.hpp"

#include "cli.hpp"

#include <deadpeer/duration.hpp>

#include <sqlite3.h>
#include <boost/json.hpp>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <utility>

extern char** environ;

namespace probe {
namespace report {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

std::string no_results(const std::string& path) {
  return "no results in " + path + ": run probe --simulate-crash first";
}

/// Shortest text that reads back as the same double ("842.123456", "1.5", "4000").
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

/// max/bound with two decimals; a ratio too small for them (an instant crash against a
/// keepalive bound) prints as "<0.01" rather than a misleading 0.00.
std::string format_ratio(double ratio) {
  return ratio < 0.005 ? std::string("<0.01") : printf_text("%.2f", ratio);
}

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

// --- JSON ------------------------------------------------------------------------------

/// Boost.JSON prints doubles in exponent form (8.42E2); this writer prints them shortest
/// ("842"), one array element per line, which reads better and parses the same.
void write_json(std::string& out, const boost::json::value& v) {
  switch (v.kind()) {
    case boost::json::kind::double_: {
      const double d = v.get_double();
      out += std::isfinite(d) ? number_text(d) : std::string("null");
      break;
    }
    case boost::json::kind::object: {
      out += '{';
      bool first = true;
      for (const auto& [key, value] : v.get_object()) {
        if (!first) out += ", ";
        first = false;
        out += boost::json::serialize(boost::json::value(key));
        out += ": ";
        write_json(out, value);
      }
      out += '}';
      break;
    }
    case boost::json::kind::array: {
      out += '[';
      bool first = true;
      for (const auto& element : v.get_array()) {
        out += first ? "\n  " : ",\n  ";
        first = false;
        write_json(out, element);
      }
      out += first ? "]" : "\n]";
      break;
    }
    default:
      out += boost::json::serialize(v);
  }
}

// --- SQLite ----------------------------------------------------------------------------

struct db_closer {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
struct stmt_finalizer {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using db_ptr = std::unique_ptr<sqlite3, db_closer>;
using stmt_ptr = std::unique_ptr<sqlite3_stmt, stmt_finalizer>;

stmt_ptr prepare(sqlite3* db, const std::string& path, const char* sql) {
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &s, nullptr) != SQLITE_OK) {
    const std::string why = sqlite3_errmsg(db);
    sqlite3_finalize(s);
    throw usage_error("cannot read " + path + ": " + why);
  }
  return stmt_ptr(s);
}

std::string column_text(sqlite3_stmt* s, int column) {
  const auto* text = sqlite3_column_text(s, column);
  return text == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(text));
}

/// The single integer a one-row query returns (0 for NULL).
std::int64_t query_integer(sqlite3* db, const std::string& path, const char* sql) {
  const auto s = prepare(db, path, sql);
  const int rc = sqlite3_step(s.get());
  if (rc != SQLITE_ROW) throw std::runtime_error("cannot read " + path + ": " + sqlite3_errmsg(db));
  return sqlite3_column_int64(s.get(), 0);
}

// --- processes and files for the plot ---------------------------------------------------

/// A fresh private directory, removed with its contents when this object ends.
class temp_directory {
 public:
  temp_directory() {
    std::error_code ec;
    auto base = fs::temp_directory_path(ec);
    if (ec) base = "/tmp";
    std::string name = (base / "deadpeer-report-XXXXXX").string();
    if (::mkdtemp(name.data()) == nullptr)
      throw plot_error("cannot create a temporary directory in " + base.string() + ": " +
                       std::strerror(errno));
    path_ = name;
  }
  ~temp_directory() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  temp_directory(const temp_directory&) = delete;
  temp_directory& operator=(const temp_directory&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

/// Runs `program` with `args`, stdin from /dev/null, stdout and stderr into `log`.
/// Returns true when it exited with status 0.
bool run_program(const std::string& program, const std::vector<std::string>& args,
                 const fs::path& log) {
  std::vector<std::string> words{program};
  words.insert(words.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& word : words)
    argv.push_back(word.data());
  argv.push_back(nullptr);
  const std::string log_path = log.string();

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, program.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw plot_error("cannot run " + program + ": " + std::strerror(rc));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) throw plot_error("waiting for " + program + ": " + std::strerror(errno));
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

std::string read_text(const fs::path& file) {
  std::ifstream in(file);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_text(const fs::path& file, const std::string& text) {
  std::ofstream out(file);
  out << text;
  if (!out.flush()) throw plot_error("cannot write " + file.string());
}

/// A gnuplot double-quoted string (escapes work, "\n" breaks the line).
std::string gp_quoted(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + '"';
}

/// A gnuplot single-quoted string, for file names (no escapes; '' is a quote).
std::string gp_path(const fs::path& path) {
  std::string out = "'";
  for (const char c : path.string()) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + '\'';
}

/// The configuration one setting per line, for a tic label: splits at the spaces that
/// separate settings, not at those inside "(fixed 3s)".
std::vector<std::string> label_lines(std::string_view configuration) {
  std::vector<std::string> lines(1);
  int depth = 0;
  for (const char c : configuration) {
    if (c == '(') ++depth;
    if (c == ')' && depth > 0) --depth;
    if (c == ' ' && depth == 0) {
      if (!lines.back().empty()) lines.emplace_back();
      continue;
    }
    lines.back() += c;
  }
  return lines;
}

std::string join_lines(const std::vector<std::string>& lines) {
  std::string text;
  for (const auto& line : lines)
    text += (text.empty() ? "" : "\n") + line;
  return text;
}

/// Spreads the points of one column sideways so equal latencies do not hide each other:
/// the golden-ratio sequence fills [-0.25, 0.25) evenly and is the same on every run.
double jitter(std::size_t k) {
  const double golden = 0.6180339887498949;
  const double f = static_cast<double>(k) * golden;
  return (f - std::floor(f) - 0.5) * 0.5;
}

/// A latency in seconds for a log axis (a 0 ms latency would vanish: shown as 1 µs).
double plot_seconds(double ms) {
  return std::max(ms, 0.001) / 1000.0;
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
    if (row.outcome == "detected") {
      ++s.detected;
      if (row.latency_ms) g.latencies.push_back(*row.latency_ms);
      if (row.wire_gap_ms && row.latency_ms) {
        ++s.wire_seen;
        if (wire_disagrees(*row.wire_gap_ms, *row.latency_ms)) ++s.wire_disagree;
      }
      ++g.layers[row.detected_by.empty() ? std::string("unknown") : row.detected_by];
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
    if (s.max_ms && s.bound_ms && *s.bound_ms > 0)
      s.max_over_bound = *s.max_ms / static_cast<double>(*s.bound_ms);
    s.detected_by = join_layers(g.layers);
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

std::string format_table(const std::vector<summary_row>& rows) {
  const std::vector<std::string> header{"fault",       "configuration", "n",     "p50",
                                        "p95",         "max",           "bound", "max/bound",
                                        "detected_by", "failures",      "wire_diff"};
  // Numbers are right-aligned, words left-aligned.
  const std::vector<bool> right{false, false, true, true, true, true, true, true, false, true, true};
  auto latency = [](const std::optional<double>& ms) {
    return ms ? format_latency(*ms) : std::string("-");
  };
  std::vector<std::vector<std::string>> cells{header};
  for (const auto& r : rows)
    cells.push_back({r.fault, r.configuration, std::to_string(r.trials), latency(r.p50_ms),
                     latency(r.p95_ms), latency(r.max_ms),
                     r.bound_ms ? format_latency(static_cast<double>(*r.bound_ms)) : "none",
                     r.max_over_bound ? format_ratio(*r.max_over_bound) : "-",
                     r.detected_by.empty() ? "-" : r.detected_by, std::to_string(r.failures()),
                     r.wire_seen == 0 ? "-"
                                      : std::to_string(r.wire_disagree) + "/" +
                                            std::to_string(r.wire_seen)});
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
  return out;
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
      "user_timeout_ms,wire_seen,wire_disagree\r\n";
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
                                          std::to_string(r.wire_disagree)};
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
    array.push_back(std::move(o));
  }
  std::string out;
  write_json(out, array);
  return out + "\n";
}

// --- database --------------------------------------------------------------------------

run_selection parse_run_selection(std::string_view text) {
  if (text == "all") return {};
  if (text == "last") return {run_selection::kind::last, 0};
  std::int64_t id = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (ec != std::errc{} || end != text.data() + text.size() || id <= 0)
    throw usage_error("--run \"" + std::string(text) +
                      "\" is not a run: give a run id (a positive number), last or all");
  return {run_selection::kind::id, id};
}

std::vector<trial_row> load_trials(const std::string& path, const run_selection& selection,
                                   std::string& description) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw usage_error(no_results(path));
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr);
  db_ptr db(raw);
  if (rc != SQLITE_OK)
    throw usage_error("cannot read " + path + ": " +
                      (raw != nullptr ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
  sqlite3_busy_timeout(db.get(), 5000);

  if (query_integer(db.get(), path,
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = "
                    "'trials'") == 0)
    throw usage_error(no_results(path));

  std::int64_t run_id = 0;
  switch (selection.which) {
    case run_selection::kind::all:
      description = "all runs";
      break;
    case run_selection::kind::id:
      run_id = selection.id;
      description = "run " + std::to_string(run_id);
      break;
    case run_selection::kind::last:
      // The newest run, even if it has no trials yet: "last" never silently means an
      // older run.
      run_id = query_integer(db.get(), path, "SELECT coalesce(max(id), 0) FROM runs");
      if (run_id == 0) {
        description = "the last run (there is none)";
        return {};
      }
      description = "the last run (" + std::to_string(run_id) + ")";
      break;
  }

  // Schema 1 files (read-only here, so not upgraded) have no wire columns: 0 stands in.
  const bool has_wire = query_integer(db.get(), path,
                                      "SELECT count(*) FROM pragma_table_info('trials') "
                                      "WHERE name = 'wire_mono_ns'") == 1;
  const std::string query =
      std::string("SELECT run_id, fault, config_key, keepalive, heartbeat_interval_ms, detector, "
                  "user_timeout_ms, bound_ms, latency_ms, latency_ms_exact, detected_by, "
                  "outcome, detected_mono_ns, ") +
      (has_wire ? "wire_mono_ns" : "0") + " FROM trials " +
      (selection.which == run_selection::kind::all ? "" : "WHERE run_id = ? ") + "ORDER BY id";
  const auto s = prepare(db.get(), path, query.c_str());
  if (selection.which != run_selection::kind::all) sqlite3_bind_int64(s.get(), 1, run_id);

  std::vector<trial_row> rows;
  int step = SQLITE_OK;
  while ((step = sqlite3_step(s.get())) == SQLITE_ROW) {
    trial_row r;
    r.run_id = sqlite3_column_int64(s.get(), 0);
    r.fault = column_text(s.get(), 1);
    r.config_key = column_text(s.get(), 2);
    r.keepalive = column_text(s.get(), 3);
    r.heartbeat_interval_ms = sqlite3_column_int64(s.get(), 4);
    r.detector = column_text(s.get(), 5);
    r.user_timeout_ms = sqlite3_column_int64(s.get(), 6);
    r.bound_ms = sqlite3_column_int64(s.get(), 7);
    // latency_ms_exact is NULL when the program produced NaN: fall back to whole ms.
    const double latency = sqlite3_column_type(s.get(), 9) == SQLITE_NULL
                               ? static_cast<double>(sqlite3_column_int64(s.get(), 8))
                               : sqlite3_column_double(s.get(), 9);
    if (latency >= 0) r.latency_ms = latency;
    r.detected_by = column_text(s.get(), 10);
    r.outcome = column_text(s.get(), 11);
    const auto decided_ns = sqlite3_column_int64(s.get(), 12);
    const auto wire_ns = sqlite3_column_int64(s.get(), 13);
    if (decided_ns > 0 && wire_ns > 0) r.wire_gap_ms = static_cast<double>(wire_ns - decided_ns) / 1e6;
    rows.push_back(std::move(r));
  }
  if (step != SQLITE_DONE)
    throw std::runtime_error("cannot read " + path + ": " + sqlite3_errmsg(db.get()));
  return rows;
}

// --- plot ------------------------------------------------------------------------------

std::optional<std::string> find_gnuplot() {
  const char* path = std::getenv("PATH");
  std::string_view dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  while (true) {
    const auto colon = dirs.find(':');
    std::string dir(dirs.substr(0, colon));
    if (dir.empty()) dir = ".";
    const auto candidate = fs::path(dir) / "gnuplot";
    std::error_code ec;
    if (fs::is_regular_file(candidate, ec) && ::access(candidate.c_str(), X_OK) == 0)
      return candidate.string();
    if (colon == std::string_view::npos) return std::nullopt;
    dirs.remove_prefix(colon + 1);
  }
}

void write_plot(const std::string& gnuplot, const std::vector<trial_row>& trials,
                const std::vector<summary_row>& rows, const std::string& png_path,
                std::string_view title) {
  std::map<std::pair<std::string, std::string>, std::size_t> column_of;
  for (std::size_t i = 0; i < rows.size(); ++i)
    column_of[{rows[i].fault, rows[i].config_key}] = i;

  // Panel 1 data: x = the configuration's column (plus jitter), y = latency in seconds.
  std::string points;
  std::vector<std::size_t> placed(rows.size(), 0);
  std::map<std::string, std::vector<double>> by_layer;
  for (const auto& t : trials) {
    if (t.outcome != "detected" || !t.latency_ms) continue;
    const auto found = column_of.find({t.fault, t.config_key});
    if (found == column_of.end()) continue;
    const auto column = found->second;
    points += number_text(static_cast<double>(column) + jitter(placed[column]++)) + " " +
              number_text(plot_seconds(*t.latency_ms)) + "\n";
    by_layer[t.detected_by.empty() ? std::string("unknown") : t.detected_by].push_back(
        plot_seconds(*t.latency_ms));
  }
  if (by_layer.empty())
    throw plot_error("nothing to plot: no trial in the selection detected its fault");

  std::string bounds;
  for (std::size_t i = 0; i < rows.size(); ++i)
    if (rows[i].bound_ms && *rows[i].bound_ms > 0)
      bounds += std::to_string(i) + " " +
                number_text(static_cast<double>(*rows[i].bound_ms) / 1000.0) + "\n";

  // Panel 2 data: one block per detecting layer (gnuplot "index i"), y and jitter.
  std::string layers;
  std::vector<std::string> layer_names;
  for (const auto& [name, values] : by_layer) {
    if (!layer_names.empty()) layers += "\n\n";
    layer_names.push_back(name);
    for (std::size_t k = 0; k < values.size(); ++k)
      layers += number_text(values[k]) + " " + number_text(jitter(k)) + "\n";
  }

  temp_directory dir;
  const auto points_file = dir.path() / "trials.dat";
  const auto bounds_file = dir.path() / "bounds.dat";
  const auto layers_file = dir.path() / "layers.dat";
  const auto script_file = dir.path() / "plot.gp";
  const auto log_file = dir.path() / "gnuplot.log";
  const auto image_file = dir.path() / "plot.png";
  write_text(points_file, points);
  write_text(bounds_file, bounds);
  write_text(layers_file, layers);

  // pngcairo draws antialiased text; the libgd png terminal is the fallback.
  run_program(gnuplot, {"-e", "set terminal"}, log_file);
  const bool cairo = read_text(log_file).find("pngcairo") != std::string::npos;

  std::string config_tics;
  std::size_t label_height = 1;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    auto lines = label_lines(rows[i].configuration);
    lines.insert(lines.begin(), rows[i].fault);
    if (rows[i].failures() > 0)
      lines.push_back("(" + std::to_string(rows[i].failures()) + " failed)");
    label_height = std::max(label_height, lines.size());
    config_tics += (i > 0 ? ", " : "") + gp_quoted(join_lines(lines)) + " " + std::to_string(i);
  }
  std::string layer_tics;
  for (std::size_t i = 0; i < layer_names.size(); ++i)
    layer_tics += (i > 0 ? ", " : "") +
                  gp_quoted(layer_names[i] +
                            "\n(n=" + std::to_string(by_layer[layer_names[i]].size()) + ")") +
                  " " + std::to_string(i + 1);

  const std::size_t width = std::clamp<std::size_t>(160 * rows.size() + 200, 1000, 8000);
  std::ostringstream gp;
  gp << "set terminal " << (cairo ? "pngcairo" : "png") << " size " << width << ",1100"
     << (cairo ? " font \"sans,10\"" : "") << " noenhanced\n"
     << "set output " << gp_path(image_file) << "\n"
     << "set multiplot layout 2,1 title " << gp_quoted(title) << "\n"
     << "set logscale y\n"
     << "set format y \"%g\"\n"
     << "set ylabel \"detection latency (s)\"\n"
     << "set grid ytics\n"
     << "set key outside top center horizontal\n"
     << "set bmargin " << label_height + 2 << "\n"
     << "set title \"latency per configuration: points are detected trials, bars the bound "
        "the settings promise\"\n"
     << "set xrange [-0.5:" << static_cast<double>(rows.size()) - 0.5 << "]\n"
     << "set xtics (" << config_tics << ")\n"
     << "plot ";
  // Bounds first, so the trials' points are drawn on top of their bar.
  if (!bounds.empty())
    gp << gp_path(bounds_file)
       << " using ($1-0.4):2:(0.8):(0) with vectors nohead linewidth 3 linecolor rgb "
          "\"#d62728\" title \"promised bound\", ";
  gp << gp_path(points_file)
     << " using 1:2 with points pointtype 7 pointsize 0.7 linecolor rgb \"#1f77b4\" title "
        "\"detected trial\"\n";
  gp << "set title \"latency distribution per detecting layer (all configurations)\"\n"
     << "set bmargin 4\n"
     << "set xrange [0.3:" << static_cast<double>(layer_names.size()) + 0.7 << "]\n"
     << "set xtics (" << layer_tics << ")\n"
     << "set style fill solid 0.25 border -1\n"
     << "set style boxplot nooutliers\n"
     << "unset key\n"
     << "plot for [i=0:" << layer_names.size() - 1 << "] " << gp_path(layers_file)
     << " index i using (i+1):1:(0.5) with boxplot linecolor i+1, \\\n"
     << "     for [i=0:" << layer_names.size() - 1 << "] " << gp_path(layers_file)
     << " index i using (i+1+$2):1 with points pointtype 7 pointsize 0.6 linecolor i+1\n"
     << "unset multiplot\n";
  write_text(script_file, gp.str());

  if (!run_program(gnuplot, {script_file.string()}, log_file))
    throw plot_error("gnuplot failed to draw " + png_path + ":\n" + read_text(log_file));
  std::error_code ec;
  if (!fs::exists(image_file, ec) || fs::file_size(image_file, ec) == 0)
    throw plot_error("gnuplot drew nothing for " + png_path + ":\n" + read_text(log_file));
  fs::copy_file(image_file, png_path, fs::copy_options::overwrite_existing, ec);
  if (ec) throw plot_error("cannot write " + png_path + ": " + ec.message());
}

}  // namespace report

// --- the command -----------------------------------------------------------------------

namespace po = boost::program_options;

int command_report(const std::vector<std::string>& args) {
  po::options_description options("Options");
  options.add_options()  //
      ("db", po::value<std::string>()->value_name("FILE")->default_value("results.db"),
       "the results database written by probe")  //
      ("format,f", po::value<std::string>()->value_name("FORMAT")->default_value("table"),
       "table (for people), csv (RFC 4180, numbers in ms) or json (an array of objects)")  //
      ("plot", po::value<std::string>()->value_name("FILE.png"),
       "also draw latency per configuration against its bound, and per detecting layer, "
       "with gnuplot")  //
      ("run", po::value<std::string>()->value_name("ID|last|all")->default_value("all"),
       "which runs to include: one run id, the last run, or all");
  po::variables_map vm;
  if (!parse_command_line(
          args, options, {},
          "Usage: probe report [--db FILE] [--format table|csv|json] [--plot FILE.png]\n"
          "                    [--run ID|last|all]\n\n"
          "Summarizes the trials in the results database per fault and configuration: the\n"
          "number of trials n; p50, p95 and max detection latency over the detected trials\n"
          "(nearest-rank percentiles: always a measured value); the bound the settings\n"
          "promise (none: no finite bound) and max/bound; the layers that detected the\n"
          "fault, most common first (eof+reset: both did); failures, the trials that\n"
          "missed the fault or declared the peer dead too early; and wire_diff, of the\n"
          "trials whose closing FIN or RST was seen on the wire, how many disagree with the\n"
          "application's decision by more than 5 ms or 2% of the latency.",
          vm, std::cout))
    return exit_ok;

  const auto& db = vm["db"].as<std::string>();
  const auto& format = vm["format"].as<std::string>();
  if (format != "table" && format != "csv" && format != "json")
    throw usage_error("--format \"" + format + "\" is not one of table, csv, json");
  const auto selection = report::parse_run_selection(vm["run"].as<std::string>());
  std::optional<std::string> plot;
  if (vm.count("plot") != 0) {
    plot = vm["plot"].as<std::string>();
    if (plot->empty()) throw usage_error("--plot needs a file name, e.g. --plot results.png");
  }

  std::string description;
  const auto trials = report::load_trials(db, selection, description);
  if (trials.empty()) {
    std::cerr << "probe: no trials for " << description << " in " << db << "\n";
    return exit_negative;
  }
  const auto rows = report::summarize(trials);
  if (format == "csv") {
    std::cout << report::format_csv(rows);
  } else if (format == "json") {
    std::cout << report::format_json(rows);
  } else {
    std::cout << report::format_table(rows) << "(" << trials.size() << " trials, " << description
              << "; latencies over "
              << "detected trials; failures = missed + premature; wire_diff = trials whose "
              << "wire instant disagrees / trials with one)\n";
  }
  std::cout.flush();

  if (!plot) return exit_ok;
  // The plot's note goes where it does not corrupt machine-readable output.
  std::ostream& note = format == "table" ? std::cout : std::cerr;
  const auto gnuplot = report::find_gnuplot();
  if (!gnuplot) {
    std::cerr << "probe: cannot draw " << *plot
              << ": gnuplot not found; install gnuplot-nox (scripts/setup does)\n";
    return exit_negative;
  }
  try {
    report::write_plot(*gnuplot, trials, rows, *plot,
                       "deadpeer detection latency: " + db + ", " + description);
  } catch (const report::plot_error& e) {
    std::cerr << "probe: " << e.what() << "\n";
    return exit_negative;
  }
  note << "plot written to " << *plot << "\n";
  return exit_ok;
}

}  // namespace probe
