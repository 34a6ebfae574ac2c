// probe report, reading: the selected rows of the trials table, through a read-only
// connection (a report never changes results and runs beside a sweep that writes).
#include "report.hpp"

#include "cli.hpp"
#include "sqlite_reader.hpp"

#include <boost/json.hpp>
#include <sqlite3.h>

#include <charconv>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace probe {
namespace report {
namespace {

namespace fs = std::filesystem;

std::string no_results(const std::string& path) {
  return "no results in " + path + ": run probe --simulate-crash first";
}

// --- SQLite ----------------------------------------------------------------------------

using sqlite::column_text;
using sqlite::prepare;
using sqlite::stmt_ptr;


/// The single integer a one-row query returns (0 for NULL).
std::int64_t query_integer(sqlite3* db, const std::string& path, const char* sql) {
  const auto s = prepare(db, path, sql);
  const int rc = sqlite3_step(s.get());
  if (rc != SQLITE_ROW) throw std::runtime_error("cannot read " + path + ": " + sqlite3_errmsg(db));
  return sqlite3_column_int64(s.get(), 0);
}

}  // namespace

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
  if (!fs::exists(path, ec))
    throw usage_error(path + " does not exist: no results yet (run probe --simulate-crash first, "
                      "or give the database with --db FILE)");
  const auto db = sqlite::open_read_only(path);

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
  // Schema 2 files have no details: "" stands in.
  const bool has_details = query_integer(db.get(), path,
                                         "SELECT count(*) FROM pragma_table_info('trials') "
                                         "WHERE name = 'details'") == 1;
  const std::string query =
      std::string(
          "SELECT run_id, fault, config_key, keepalive, heartbeat_interval_ms, detector, "
          "user_timeout_ms, bound_ms, latency_ms, latency_ms_exact, detected_by, "
          "outcome, detected_mono_ns, ") +
      (has_wire ? "wire_mono_ns" : "0") + ", " + (has_details ? "details" : "''") +
      " FROM trials " +
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
    if (decided_ns > 0 && wire_ns > 0)
      r.wire_gap_ms = static_cast<double>(wire_ns - decided_ns) / 1e6;
    // early-reject's details say whether the client read the answer; a details text that
    // is not a JSON object leaves it unknown.
    if (const auto details = column_text(s.get(), 14); !details.empty()) {
      boost::system::error_code parse_error;
      const auto parsed = boost::json::parse(details, parse_error);
      if (!parse_error && parsed.is_object())
        if (const auto* read = parsed.as_object().if_contains("answer_read"); read && read->is_bool()) {
          r.answer_read = read->as_bool();
          const auto* first = parsed.as_object().if_contains("answer_before_error");
          r.answer_after_error = r.answer_read == true && first && first->is_bool() && !first->as_bool();
        }
    }
    // lossy and stall: the trial's exposure time, for false verdicts per hour.
    if (const auto details = column_text(s.get(), 14);
        details.find("\"observed_ms\"") != std::string::npos) {
      boost::system::error_code parse_error;
      const auto parsed = boost::json::parse(details, parse_error);
      if (!parse_error && parsed.is_object())
        if (const auto* t = parsed.as_object().if_contains("observed_ms"); t && t->is_number())
          r.trial_time_ms = t->to_number<double>();
    }
    rows.push_back(std::move(r));
  }
  if (step != SQLITE_DONE)
    throw std::runtime_error("cannot read " + path + ": " + sqlite3_errmsg(db.get()));
  return rows;
}

}  // namespace report
}  // namespace probe
