#include <deadpeer/store.hpp>

#include "temp_dir.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using deadpeer::connection_record;
using deadpeer::event_store;
using deadpeer::run_record;
using deadpeer::store_error;
using deadpeer::trial_record;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

using deadpeer::test::temp_dir;

/// A plain sqlite3 connection, the way a user's own tools see the file.
class raw_db {
 public:
  explicit raw_db(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
        SQLITE_OK)
      throw std::runtime_error(path + ": " + sqlite3_errmsg(db_));
    sqlite3_busy_timeout(db_, 5000);
  }
  ~raw_db() { sqlite3_close_v2(db_); }
  raw_db(const raw_db&) = delete;
  raw_db& operator=(const raw_db&) = delete;

  void exec(const std::string& sql) {
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK)
      throw std::runtime_error(sql + ": " + sqlite3_errmsg(db_));
  }

  /// Every row of a query, every column as text ("NULL" for NULL).
  std::vector<std::vector<std::string>> rows(const std::string& sql) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) != SQLITE_OK)
      throw std::runtime_error(sql + ": " + sqlite3_errmsg(db_));
    std::vector<std::vector<std::string>> out;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      std::vector<std::string> row;
      for (int i = 0; i < sqlite3_column_count(s); ++i) {
        const auto* t = sqlite3_column_text(s, i);
        row.emplace_back(t ? reinterpret_cast<const char*>(t) : "NULL");
      }
      out.push_back(std::move(row));
    }
    std::string error = sqlite3_errmsg(db_);
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) throw std::runtime_error(sql + ": " + error);
    return out;
  }

  std::string text(const std::string& sql) {
    auto r = rows(sql);
    if (r.empty() || r.front().empty()) throw std::runtime_error(sql + ": no result");
    return r.front().front();
  }
  std::int64_t integer(const std::string& sql) { return std::stoll(text(sql)); }
  sqlite3* get() { return db_; }

 private:
  sqlite3* db_ = nullptr;
};

std::int64_t count_rows(const std::string& path) {
  raw_db db(path);
  return db.integer("SELECT (SELECT count(*) FROM connections) + (SELECT count(*) FROM trials)");
}

connection_record make_connection(int i) {
  connection_record r;
  r.session_id = static_cast<std::uint64_t>(i) + 1;
  r.client_id = "client-" + std::to_string(i % 50);
  r.peer_address = "127.0.0.1:" + std::to_string(40000 + i % 20000);
  r.opened_mono_ns = 1'000'000'000LL * i;
  r.last_heard_mono_ns = r.opened_mono_ns + 5'000'000'000LL;
  r.ended_mono_ns = r.last_heard_mono_ns + 3'000'000'000LL;
  r.opened_unix_ms = 1'700'000'000'000LL + i;
  r.ended_unix_ms = r.opened_unix_ms + 8000;
  r.cause = "heartbeat_timeout";
  r.detected_by = "heartbeat";
  r.close_mode = "abortive";
  r.rtt = {.samples = 5, .min_ms = 0.1, .mean_ms = 0.2, .max_ms = 0.4};
  r.keepalive = "1s:1s:3:0s";
  r.heartbeat_interval_ms = 1000;
  r.dead_after_ms = 3000;
  r.detector = "fixed 3000ms";
  r.frames_received = 10;
  r.frames_sent = 11;
  return r;
}

trial_record make_trial(std::int64_t run_id, int i) {
  trial_record r;
  r.run_id = run_id;
  r.trial = i;
  r.fault = "cable-pull";
  r.config_key = "ka=1s:1s:3 hb=off";
  r.keepalive = "1s:1s:3";
  r.bound_ms = 4000;
  r.fault_mono_ns = 1'000'000'000LL * i;
  r.detected_mono_ns = r.fault_mono_ns + 3'500'000'000LL;
  r.latency_ms = 3500;
  r.latency_ms_exact = 3500.25;
  r.detected_by = "keepalive";
  r.cause = "keepalive_timeout";
  r.error_number = 110;
  r.error_name = "ETIMEDOUT";
  r.outcome = "detected";
  return r;
}

run_record make_run() {
  run_record r;
  r.started_unix_ms = 1'700'000'000'000LL;
  r.version = "0.1.0";
  r.host = "testhost 6.1.0";
  r.command = "probe sweep --faults cable-pull";
  r.config_json = R"({"faults":["cable-pull"]})";
  return r;
}

event_store::options options_for(const std::string& path) {
  event_store::options o;
  o.path = path;
  return o;
}

/// The message of the store_error that opening throws; fails the test if none is thrown.
std::string open_error(const std::string& path) {
  try {
    event_store store(options_for(path));
  } catch (const store_error& e) {
    return e.what();
  }
  FAIL("opening " << path << " did not throw store_error");
  return {};
}

std::vector<std::string> column_names(raw_db& db, const std::string& table) {
  std::vector<std::string> names;
  for (auto& row : db.rows("SELECT name FROM pragma_table_info('" + table + "') ORDER BY cid"))
    names.push_back(row.at(0));
  return names;
}

/// Redirects file descriptor 2 into a file while alive.
class capture_stderr {
 public:
  explicit capture_stderr(const std::string& file) : file_(file) {
    std::fflush(stderr);
    saved_ = ::dup(2);
    const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, 2);
    ::close(fd);
  }
  ~capture_stderr() { restore(); }
  capture_stderr(const capture_stderr&) = delete;
  capture_stderr& operator=(const capture_stderr&) = delete;
  std::string finish() {
    restore();
    std::ifstream in(file_);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    std::fflush(stderr);
    ::dup2(saved_, 2);
    ::close(saved_);
    saved_ = -1;
  }
  std::string file_;
  int saved_ = -1;
};

}  // namespace

TEST_CASE("a new file gets the current schema in WAL mode") {
  temp_dir dir;
  const auto path = dir.file("deadpeer.db");
  event_store store(options_for(path));
  CHECK(store.path() == path);

  raw_db db(path);
  CHECK(db.integer("PRAGMA user_version") == deadpeer::store_schema_version);
  CHECK(db.integer("PRAGMA user_version") == 4);
  CHECK(db.text("PRAGMA journal_mode") == "wal");
  CHECK(db.rows("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name") ==
        std::vector<std::vector<std::string>>{{"arrivals"}, {"connections"}, {"runs"}, {"trials"}});
  CHECK(db.rows("SELECT name FROM sqlite_schema WHERE type = 'index' ORDER BY name") ==
        std::vector<std::vector<std::string>>{{"arrivals_connection_id"},
                                              {"connections_cause"},
                                              {"connections_client_id"},
                                              {"trials_config_key_fault"},
                                              {"trials_run_id"}});
  // The column lists are the documented ones (docs/results-schema.md).
  CHECK(column_names(db, "connections") == std::vector<std::string>{"id",
                                                                    "session_id",
                                                                    "client_id",
                                                                    "peer_address",
                                                                    "opened_mono_ns",
                                                                    "ended_mono_ns",
                                                                    "last_heard_mono_ns",
                                                                    "opened_unix_ms",
                                                                    "ended_unix_ms",
                                                                    "ended_at",
                                                                    "cause",
                                                                    "detected_by",
                                                                    "error_number",
                                                                    "error_name",
                                                                    "protocol_error",
                                                                    "close_mode",
                                                                    "rtt_samples",
                                                                    "rtt_min_ms",
                                                                    "rtt_mean_ms",
                                                                    "rtt_max_ms",
                                                                    "keepalive",
                                                                    "heartbeat_interval_ms",
                                                                    "dead_after_ms",
                                                                    "detector",
                                                                    "frames_received",
                                                                    "frames_sent"});
  CHECK(column_names(db, "runs") == std::vector<std::string>{"id", "started_unix_ms", "started_at",
                                                             "version", "host", "command",
                                                             "config_json"});
  CHECK(column_names(db, "trials") == std::vector<std::string>{"id",
                                                               "run_id",
                                                               "trial",
                                                               "fault",
                                                               "config_key",
                                                               "keepalive",
                                                               "heartbeat_interval_ms",
                                                               "detector",
                                                               "user_timeout_ms",
                                                               "bound_ms",
                                                               "fault_mono_ns",
                                                               "detected_mono_ns",
                                                               "latency_ms",
                                                               "latency_ms_exact",
                                                               "detected_by",
                                                               "cause",
                                                               "error_number",
                                                               "error_name",
                                                               "outcome",
                                                               "note", "wire_mono_ns", "wire_segment", "details"});
  CHECK(column_names(db, "arrivals") ==
        std::vector<std::string>{"id", "connection_id", "session_id", "client_id", "peer_address",
                                 "interval_ms", "first_mono_ns", "count", "seen", "times_us"});
  CHECK(store.written() == 0);
  CHECK(store.queued() == 0);
  CHECK_FALSE(store.last_error());
}

TEST_CASE("records round-trip column by column") {
  temp_dir dir;
  const auto path = dir.file("deadpeer.db");
  event_store store(options_for(path));

  run_record run = make_run();
  const std::int64_t run_id = store.begin_run(run);
  CHECK(run_id > 0);
  CHECK(store.begin_run(run) > run_id);

  connection_record c;
  c.session_id = 0xFFFF'FFFF'FFFF'FFFEULL;  // above INT64_MAX: stored as its bit pattern
  c.client_id = "sensor-17";
  c.peer_address = "127.0.0.1:54321";
  c.opened_mono_ns = 1'000'000'001;
  c.ended_mono_ns = 9'000'000'003;
  c.last_heard_mono_ns = 6'000'000'002;
  c.opened_unix_ms = 1'700'000'000'000;
  c.ended_unix_ms = 1'700'000'000'123;
  c.cause = "keepalive_timeout";
  c.detected_by = "keepalive";
  c.error_number = 110;
  c.error_name = "ETIMEDOUT";
  c.protocol_error = "bad_frame";
  c.close_mode = "plain";
  c.rtt = {.samples = 42, .min_ms = 0.25, .mean_ms = 1.5, .max_ms = 12.75};
  c.keepalive = "1s:1s:3:0s";
  c.heartbeat_interval_ms = 500;
  c.dead_after_ms = 1500;
  c.detector = "phi 8";
  c.frames_received = 1234;
  c.frames_sent = 5678;
  store.record(c);

  trial_record t;
  t.run_id = run_id;
  t.trial = 3;
  t.fault = "hang";
  t.config_key = "ka=off hb=250ms";
  t.keepalive = "off";
  t.heartbeat_interval_ms = 250;
  t.detector = "fixed 750ms";
  t.user_timeout_ms = 2500;
  t.bound_ms = 1000;
  t.fault_mono_ns = 5'000'000'000;
  t.detected_mono_ns = 5'812'345'678;
  t.latency_ms = 812;
  t.latency_ms_exact = 812.345678;
  t.detected_by = "heartbeat";
  t.cause = "heartbeat_timeout";
  t.error_number = 0;
  t.error_name = "";
  t.outcome = "detected";
  t.note = "it's \"quoted\"";
  store.record(t);

  store.flush();
  CHECK(store.written() == 2);
  CHECK(store.queued() == 0);
  CHECK_FALSE(store.last_error());

  raw_db db(path);
  sqlite3_stmt* s = nullptr;
  REQUIRE(sqlite3_prepare_v2(db.get(),
                             "SELECT session_id, client_id, peer_address, opened_mono_ns, "
                             "ended_mono_ns, last_heard_mono_ns, opened_unix_ms, ended_unix_ms, "
                             "ended_at, cause, detected_by, error_number, error_name, "
                             "protocol_error, close_mode, rtt_samples, rtt_min_ms, rtt_mean_ms, "
                             "rtt_max_ms, keepalive, heartbeat_interval_ms, dead_after_ms, "
                             "detector, frames_received, frames_sent, id FROM connections",
                             -1, &s, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(s) == SQLITE_ROW);
  auto text = [&](int i) {
    return std::string(reinterpret_cast<const char*>(sqlite3_column_text(s, i)));
  };
  CHECK(static_cast<std::uint64_t>(sqlite3_column_int64(s, 0)) == c.session_id);
  CHECK(sqlite3_column_int64(s, 0) == -2);
  CHECK(text(1) == c.client_id);
  CHECK(text(2) == c.peer_address);
  CHECK(sqlite3_column_int64(s, 3) == c.opened_mono_ns);
  CHECK(sqlite3_column_int64(s, 4) == c.ended_mono_ns);
  CHECK(sqlite3_column_int64(s, 5) == c.last_heard_mono_ns);
  CHECK(sqlite3_column_int64(s, 6) == c.opened_unix_ms);
  CHECK(sqlite3_column_int64(s, 7) == c.ended_unix_ms);
  CHECK(text(8) == "2023-11-14T22:13:20.123Z");
  CHECK(text(9) == c.cause);
  CHECK(text(10) == c.detected_by);
  CHECK(sqlite3_column_int(s, 11) == c.error_number);
  CHECK(text(12) == c.error_name);
  CHECK(text(13) == c.protocol_error);
  CHECK(text(14) == c.close_mode);
  CHECK(static_cast<std::uint64_t>(sqlite3_column_int64(s, 15)) == c.rtt.samples);
  CHECK(sqlite3_column_type(s, 16) == SQLITE_FLOAT);
  CHECK(sqlite3_column_double(s, 16) == c.rtt.min_ms);
  CHECK(sqlite3_column_double(s, 17) == c.rtt.mean_ms);
  CHECK(sqlite3_column_double(s, 18) == c.rtt.max_ms);
  CHECK(text(19) == c.keepalive);
  CHECK(sqlite3_column_int64(s, 20) == c.heartbeat_interval_ms);
  CHECK(sqlite3_column_int64(s, 21) == c.dead_after_ms);
  CHECK(text(22) == c.detector);
  CHECK(static_cast<std::uint64_t>(sqlite3_column_int64(s, 23)) == c.frames_received);
  CHECK(static_cast<std::uint64_t>(sqlite3_column_int64(s, 24)) == c.frames_sent);
  CHECK(sqlite3_column_int64(s, 25) == 1);
  CHECK(sqlite3_step(s) == SQLITE_DONE);
  sqlite3_finalize(s);

  REQUIRE(sqlite3_prepare_v2(db.get(),
                             "SELECT run_id, trial, fault, config_key, keepalive, "
                             "heartbeat_interval_ms, detector, user_timeout_ms, bound_ms, "
                             "fault_mono_ns, detected_mono_ns, latency_ms, latency_ms_exact, "
                             "detected_by, cause, error_number, error_name, outcome, note "
                             "FROM trials",
                             -1, &s, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(s) == SQLITE_ROW);
  CHECK(sqlite3_column_int64(s, 0) == t.run_id);
  CHECK(sqlite3_column_int(s, 1) == t.trial);
  CHECK(text(2) == t.fault);
  CHECK(text(3) == t.config_key);
  CHECK(text(4) == t.keepalive);
  CHECK(sqlite3_column_int64(s, 5) == t.heartbeat_interval_ms);
  CHECK(text(6) == t.detector);
  CHECK(sqlite3_column_int64(s, 7) == t.user_timeout_ms);
  CHECK(sqlite3_column_int64(s, 8) == t.bound_ms);
  CHECK(sqlite3_column_int64(s, 9) == t.fault_mono_ns);
  CHECK(sqlite3_column_int64(s, 10) == t.detected_mono_ns);
  CHECK(sqlite3_column_int64(s, 11) == t.latency_ms);
  CHECK(sqlite3_column_double(s, 12) == t.latency_ms_exact);
  CHECK(text(13) == t.detected_by);
  CHECK(text(14) == t.cause);
  CHECK(sqlite3_column_int(s, 15) == t.error_number);
  CHECK(sqlite3_column_type(s, 16) == SQLITE_TEXT);
  CHECK(text(16) == t.error_name);
  CHECK(text(17) == t.outcome);
  CHECK(text(18) == t.note);
  CHECK(sqlite3_step(s) == SQLITE_DONE);
  sqlite3_finalize(s);

  CHECK(db.rows("SELECT id, started_unix_ms, started_at, version, host, command, config_json "
                "FROM runs WHERE id = " +
                std::to_string(run_id)) ==
        std::vector<std::vector<std::string>>{{std::to_string(run_id), "1700000000000",
                                               "2023-11-14T22:13:20.000Z", run.version, run.host,
                                               run.command, run.config_json}});
}

TEST_CASE("flush makes everything visible to a second connection without waiting the window") {
  temp_dir dir;
  const auto path = dir.file("deadpeer.db");
  auto o = options_for(path);
  o.batch_window = 60s;  // flush must not wait for it
  event_store store(o);
  const auto run_id = store.begin_run(make_run());
  for (int i = 0; i < 100; ++i) {
    store.record(make_connection(i));
    store.record(make_trial(run_id, i));
  }
  const auto start = std::chrono::steady_clock::now();
  store.flush();
  CHECK(std::chrono::steady_clock::now() - start < 10s);
  CHECK(store.written() == 200);
  CHECK(store.queued() == 0);

  raw_db db(path);
  CHECK(db.integer("SELECT count(*) FROM connections") == 100);
  CHECK(db.integer("SELECT count(*) FROM trials") == 100);
  CHECK(db.integer("SELECT count(*) FROM trials WHERE run_id = " + std::to_string(run_id)) == 100);
  store.flush();  // nothing queued: returns at once
}

TEST_CASE("many records are written and counted") {
  temp_dir dir;
  const auto path = dir.file("deadpeer.db");
  constexpr int n = 20000;
  auto o = options_for(path);
  event_store store(o);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i)
    store.record(make_connection(i));
  store.flush();
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  CHECK(store.written() == n);
  CHECK(store.queued() == 0);
  CHECK(count_rows(path) == n);
  WARN(n << " connection records in " << took.count()
         << " s: " << static_cast<long long>(n / took.count()) << " rows/s (max_batch "
         << o.max_batch << ", batch_window " << o.batch_window.count() << " ms, " << path << ")");
}

TEST_CASE("reopening an existing file keeps its rows, and the destructor flushes") {
  temp_dir dir;
  const auto path = dir.file("deadpeer.db");
  {
    auto o = options_for(path);
    o.batch_window = 60s;  // only the destructor's flush can write these in time
    event_store store(o);
    for (int i = 0; i < 10; ++i)
      store.record(make_connection(i));
  }
  CHECK(count_rows(path) == 10);
  {
    event_store store(options_for(path));
    const auto run_id = store.begin_run(make_run());
    for (int i = 0; i < 5; ++i)
      store.record(make_trial(run_id, i));
  }
  CHECK(count_rows(path) == 15);
  raw_db db(path);
  CHECK(db.integer("PRAGMA user_version") == 4);
}

TEST_CASE("a schema 2 file is upgraded in place: its trials kept, new outcomes and details allowed") {
  temp_dir dir;
  const auto path = dir.file("v2.db");
  {
    // What a schema 2 build left: its trials table (the other tables are unchanged since).
    event_store store(options_for(path));
    const auto run_id = store.begin_run(make_run());
    store.record(make_trial(run_id, 1));
    store.flush();
  }
  {
    raw_db db(path);
    db.exec("ALTER TABLE trials DROP COLUMN details");
    db.exec("DROP TABLE arrivals");
    db.exec("PRAGMA user_version = 2");
    CHECK(column_names(db, "trials").back() == "wire_segment");
  }
  {
    event_store store(options_for(path));
    auto t = make_trial(1, 2);
    t.outcome = "survived";
    t.details = R"({"verdicts":0})";
    store.record(t);
    t.outcome = "observed";
    t.details.clear();
    store.record(t);
  }
  raw_db db(path);
  CHECK(db.integer("PRAGMA user_version") == 4);
  CHECK(db.rows("SELECT outcome, details FROM trials ORDER BY id") ==
        std::vector<std::vector<std::string>>{
            {"detected", "{}"}, {"survived", R"({"verdicts":0})"}, {"observed", "{}"}});
}

namespace {

// The times_us BLOB as docs/results-schema.md defines it: little-endian int64 microseconds.
std::vector<std::int64_t> decode_times_us(const void* blob, int bytes) {
  std::vector<std::int64_t> out;
  const auto* p = static_cast<const unsigned char*>(blob);
  for (int i = 0; i + 8 <= bytes; i += 8) {
    std::uint64_t v = 0;
    for (int b = 0; b < 8; ++b) v |= static_cast<std::uint64_t>(p[i + b]) << (8 * b);
    out.push_back(static_cast<std::int64_t>(v));
  }
  return out;
}

std::vector<std::int64_t> stored_times_us(raw_db& db, std::int64_t connection_id) {
  sqlite3_stmt* s = nullptr;
  REQUIRE(sqlite3_prepare_v2(db.get(), "SELECT times_us FROM arrivals WHERE connection_id = ?", -1,
                             &s, nullptr) == SQLITE_OK);
  sqlite3_bind_int64(s, 1, connection_id);
  std::vector<std::int64_t> out;
  if (sqlite3_step(s) == SQLITE_ROW)
    out = decode_times_us(sqlite3_column_blob(s, 0), sqlite3_column_bytes(s, 0));
  sqlite3_finalize(s);
  return out;
}

}  // namespace

TEST_CASE("a recorded connection's arrivals are stored with its row, in microseconds") {
  temp_dir dir;
  const auto path = dir.file("deadpeer.db");
  {
    event_store store(options_for(path));
    store.record(make_connection(1));  // not recorded: no arrivals row
    auto c = make_connection(2);
    c.arrivals = deadpeer::arrival_trace{
        .interval_ms = 1000,
        .seen = 7,
        .mono_ns = {5'000'000'000, 6'000'000'400, 7'000'001'600, 8'000'000'000'000}};
    store.record(c);
    auto empty = make_connection(3);
    empty.arrivals = deadpeer::arrival_trace{.interval_ms = 1000, .seen = 0, .mono_ns = {}};
    store.record(empty);  // recorded, but nothing arrived: no row either
    store.flush();
    CHECK(store.written() == 3);
    CHECK(store.arrivals_dropped() == 0);
  }
  raw_db db(path);
  CHECK(db.rows("SELECT a.connection_id, c.session_id, a.session_id, a.client_id, a.peer_address, "
                "a.interval_ms, a.first_mono_ns, a.count, a.seen, length(a.times_us) "
                "FROM arrivals a JOIN connections c ON c.id = a.connection_id") ==
        std::vector<std::vector<std::string>>{{"2", "3", "3", "client-2", "127.0.0.1:40002",
                                               "1000", "5000000000", "4", "7", "32"}});
  // Rounded to the nearest microsecond, from the first kept arrival.
  CHECK(stored_times_us(db, 2) == std::vector<std::int64_t>{0, 1'000'000, 2'000'002, 7'995'000'000});
  CHECK(db.rows("PRAGMA foreign_key_check").empty());
}

TEST_CASE("a schema 3 file gains the arrivals table, its rows kept") {
  temp_dir dir;
  const auto path = dir.file("v3.db");
  {
    event_store store(options_for(path));
    store.record(make_connection(1));
  }
  {
    raw_db db(path);
    db.exec("DROP TABLE arrivals");
    db.exec("PRAGMA user_version = 3");
  }
  {
    event_store store(options_for(path));
    auto c = make_connection(2);
    c.arrivals = deadpeer::arrival_trace{.interval_ms = 500, .seen = 2, .mono_ns = {10, 500'010}};
    store.record(c);
  }
  raw_db db(path);
  CHECK(db.integer("PRAGMA user_version") == 4);
  CHECK(db.integer("SELECT count(*) FROM connections") == 2);
  CHECK(db.rows("SELECT connection_id, count FROM arrivals") ==
        std::vector<std::vector<std::string>>{{"2", "2"}});
  CHECK(stored_times_us(db, 2) == std::vector<std::int64_t>{0, 500});
}

TEST_CASE("a full file keeps every connection row and drops arrival traces instead") {
  temp_dir dir;
  const auto path = dir.file("full.db");
  { event_store store(options_for(path)); }  // the schema, before the cap
  std::int64_t pages = 0;
  {
    raw_db db(path);
    pages = db.integer("PRAGMA page_count");
  }
  capture_stderr captured(dir.file("stderr.txt"));
  std::uint64_t dropped = 0;
  {
    auto o = options_for(path);
    // Room for the rows (a few hundred bytes each), none for a 400 kB trace.
    o.max_page_count = pages + 8;
    o.batch_window = 10ms;
    event_store store(o);
    std::vector<std::int64_t> big(50'000);
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::int64_t>(i) * 1'000'000;
    for (int i = 0; i < 6; ++i) {
      auto c = make_connection(i);
      c.arrivals = deadpeer::arrival_trace{.interval_ms = 1, .seen = big.size(), .mono_ns = big};
      store.record(std::move(c));
    }
    store.flush();
    CHECK(store.written() == 6);
    dropped = store.arrivals_dropped();
    REQUIRE(store.last_error());
    CHECK_THAT(*store.last_error(), Catch::Contains("full"));
    // The file is not given up on: a trace that fits is written with its row.
    auto small = make_connection(6);
    small.arrivals = deadpeer::arrival_trace{.interval_ms = 1000, .seen = 3,
                                             .mono_ns = {0, 1'000'000'000, 2'000'000'000}};
    store.record(std::move(small));
    store.flush();
    CHECK(store.written() == 7);
    CHECK(store.arrivals_dropped() == dropped);
  }
  const auto messages = captured.finish();
  INFO(messages);
  CHECK(dropped == 6);
  CHECK_THAT(messages, Catch::Contains("the connection row is kept") ||
                           Catch::Contains("without their"));
  raw_db db(path);
  CHECK(db.integer("SELECT count(*) FROM connections") == 7);
  CHECK(db.rows("SELECT connection_id, count FROM arrivals") ==
        std::vector<std::vector<std::string>>{{"7", "3"}});
}

TEST_CASE("a file that is not a database is refused, naming the file") {
  temp_dir dir;
  const auto path = dir.file("garbage.db");
  {
    std::ofstream out(path, std::ios::binary);
    std::mt19937 random(42);
    for (int i = 0; i < 8192; ++i)
      out.put(static_cast<char>(random()));
  }
  const auto message = open_error(path);
  CHECK_THAT(message, Catch::Contains(path));
  CHECK_THAT(message, Catch::Contains("not a database"));
}

TEST_CASE("a file from a newer schema is refused") {
  temp_dir dir;
  const auto path = dir.file("future.db");
  {
    raw_db db(path);
    db.exec("PRAGMA user_version = 99");
  }
  const auto message = open_error(path);
  CHECK_THAT(message, Catch::Contains(path));
  CHECK_THAT(message, Catch::Contains("newer"));
  CHECK_THAT(message, Catch::Contains("schema 99, this build knows 4"));
  raw_db db(path);
  CHECK(db.integer("PRAGMA user_version") == 99);  // left untouched
}

TEST_CASE("a schema 1 file is upgraded in place: its trials kept, interrupted and wire allowed") {
  temp_dir dir;
  const auto path = dir.file("v1.db");
  { event_store store(options_for(path)); }  // today's schema, then taken back to 1:
  {
    // the trials table exactly as schema 1 wrote it, with one trial.
    raw_db db(path);
    db.exec(R"sql(
DROP TABLE arrivals;
DROP TABLE trials;
CREATE TABLE trials (
  id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id), trial INTEGER NOT NULL,
  fault TEXT NOT NULL, config_key TEXT NOT NULL, keepalive TEXT NOT NULL,
  heartbeat_interval_ms INTEGER NOT NULL, detector TEXT NOT NULL, user_timeout_ms INTEGER NOT NULL,
  bound_ms INTEGER NOT NULL, fault_mono_ns INTEGER NOT NULL, detected_mono_ns INTEGER NOT NULL,
  latency_ms INTEGER NOT NULL, latency_ms_exact REAL, detected_by TEXT NOT NULL,
  cause TEXT NOT NULL, error_number INTEGER NOT NULL, error_name TEXT NOT NULL,
  outcome TEXT NOT NULL CHECK(outcome IN ('detected','missed','premature')), note TEXT NOT NULL);
INSERT INTO runs (id, started_unix_ms, version, host, command, config_json)
  VALUES (1, 0, '0.1.0', 'h', 'probe run', '{}');
INSERT INTO trials VALUES (7, 1, 1, 'crash', 'k', 'system', 500, 'fixed', 0, 20, 100, 200, 0,
  0.0001, 'eof', 'peer_closed', 0, '', 'detected', 'old row');
PRAGMA user_version = 1;
)sql");
  }
  {
    event_store store(options_for(path));
    auto t = make_trial(1, 2);
    t.outcome = "interrupted";
    t.wire_mono_ns = 12345;
    t.wire_segment = "FIN";
    store.record(std::move(t));
  }
  raw_db db(path);
  CHECK(db.integer("PRAGMA user_version") == deadpeer::store_schema_version);
  CHECK(db.rows("SELECT id, note, wire_mono_ns, wire_segment FROM trials ORDER BY id") ==
        std::vector<std::vector<std::string>>{{"7", "old row", "0", ""},
                                              {"8", make_trial(1, 2).note, "12345", "FIN"}});
}

TEST_CASE("a file in a directory that does not exist is refused, naming the file") {
  temp_dir dir;
  const auto path = dir.file("no/such/dir/deadpeer.db");
  const auto message = open_error(path);
  CHECK_THAT(message, Catch::Contains(path));
}

TEST_CASE("record() refuses invalid trials before they reach the writer") {
  temp_dir dir;
  const auto path = dir.file("deadpeer.db");
  event_store store(options_for(path));
  const auto run_id = store.begin_run(make_run());

  auto bad_outcome = make_trial(run_id, 1);
  bad_outcome.outcome = "maybe";
  CHECK_THROWS_AS(store.record(bad_outcome), std::invalid_argument);
  auto no_run = make_trial(0, 1);
  CHECK_THROWS_AS(store.record(no_run), std::invalid_argument);
  CHECK(store.queued() == 0);
  for (const char* outcome : {"detected", "missed", "premature"}) {
    auto t = make_trial(run_id, 2);
    t.outcome = outcome;
    store.record(t);
  }
  store.flush();
  CHECK(store.written() == 3);
  CHECK_FALSE(store.last_error());
  raw_db db(path);
  CHECK(db.integer("SELECT count(*) FROM trials WHERE outcome = 'maybe'") == 0);
  // The schema refuses it too, for writers other than this code.
  CHECK_THROWS(
      db.exec("INSERT INTO trials (run_id, trial, fault, config_key, keepalive, "
              "heartbeat_interval_ms, detector, user_timeout_ms, bound_ms, "
              "fault_mono_ns, detected_mono_ns, latency_ms, latency_ms_exact, "
              "detected_by, cause, error_number, error_name, outcome, note) VALUES (" +
              std::to_string(run_id) +
              ", 1, 'f', 'k', 'off', 0, '', 0, -1, 0, 0, -1, -1, '', '', 0, '', "
              "'maybe', '')"));
}

TEST_CASE("a trial of an unknown run is rejected loudly, the rest of its batch is written") {
  temp_dir dir;
  const auto path = dir.file("deadpeer.db");
  event_store store(options_for(path));
  const auto run_id = store.begin_run(make_run());
  capture_stderr err(dir.file("stderr.txt"));
  store.record(make_trial(run_id, 1));
  store.record(make_trial(run_id + 1000, 2));
  store.record(make_connection(3));
  store.flush();
  const auto printed = err.finish();
  CHECK(store.written() == 2);
  CHECK(store.queued() == 0);
  REQUIRE(store.last_error());
  CHECK_THAT(*store.last_error(), Catch::Contains("FOREIGN KEY"));
  CHECK_THAT(printed, Catch::Contains("FOREIGN KEY"));
  CHECK_THAT(printed, Catch::Contains(path));
  CHECK(count_rows(path) == 2);
}

TEST_CASE("a batch that meets a locked database is kept and retried") {
  temp_dir dir;
  const auto path = dir.file("deadpeer.db");
  capture_stderr err(dir.file("stderr.txt"));
  event_store store(options_for(path));
  raw_db blocker(path);
  blocker.exec("BEGIN IMMEDIATE");  // holds the write lock past the store's busy timeout

  for (int i = 0; i < 3; ++i)
    store.record(make_connection(i));
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!store.last_error() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  REQUIRE(store.last_error());
  CHECK_THAT(*store.last_error(), Catch::Contains("locked"));
  CHECK(store.queued() == 3);
  CHECK(store.written() == 0);
  REQUIRE(store.failing());  // failing now, not only once
  CHECK_THAT(*store.failing(), Catch::Contains("locked"));

  blocker.exec("COMMIT");
  store.flush();
  CHECK(store.queued() == 0);
  CHECK(store.written() == 3);
  CHECK(count_rows(path) == 3);
  // Recovered: the failing state is cleared (the first error stays as history), nothing
  // was lost, and the log says when the spell began and when it ended, once each.
  CHECK_FALSE(store.failing());
  CHECK(store.last_error());
  CHECK(store.not_written() == 0);
  const auto printed = err.finish();
  INFO(printed);
  CHECK_THAT(printed, Catch::Contains("cannot write (") && Catch::Contains("3 record(s) kept"));
  CHECK_THAT(printed, Catch::Contains("writing again after"));
  CHECK(printed.find("cannot write (") == printed.rfind("cannot write ("));
}

TEST_CASE("the destructor gives up on a database that stays locked, and says so") {
  temp_dir dir;
  const auto path = dir.file("deadpeer.db");
  raw_db blocker(path);
  std::string printed;
  std::chrono::duration<double> took{};
  {
    auto store = std::make_unique<event_store>(options_for(path));
    blocker.exec("BEGIN IMMEDIATE");
    store->record(make_connection(1));
    store->record(make_connection(2));
    capture_stderr err(dir.file("stderr.txt"));
    const auto start = std::chrono::steady_clock::now();
    store.reset();
    took = std::chrono::steady_clock::now() - start;
    printed = err.finish();
  }
  blocker.exec("ROLLBACK");
  CHECK(took < 20s);
  CHECK_THAT(printed, Catch::Contains("records not written: 2"));
  CHECK_THAT(printed, Catch::Contains(path));
  CHECK_THAT(printed, !Catch::Contains("writing again"));
  CHECK(count_rows(path) == 0);
}

TEST_CASE("kill -9 during writes leaves a consistent file with the committed rows") {
  temp_dir dir;
  const auto path = dir.file("deadpeer.db");
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  std::fflush(nullptr);

  // Every store of earlier cases has been destroyed and its thread joined, so this process
  // has one thread and the child is an ordinary copy of it. The child touches neither
  // Catch2 nor inherited stdio buffers, and leaves with _exit().
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::close(ready[0]);
    int code = 0;
    try {
      event_store store(options_for(path));
      const auto run_id = store.begin_run(make_run());
      store.record(make_connection(0));
      store.flush();
      const char byte = 1;
      if (::write(ready[1], &byte, 1) != 1) ::_exit(3);
      const auto start = std::chrono::steady_clock::now();
      for (int i = 1; i < 200000 && std::chrono::steady_clock::now() - start < 5s; ++i) {
        if (i % 2 == 0)
          store.record(make_connection(i));
        else
          store.record(make_trial(run_id, i));
        while (store.queued() > 4000)
          std::this_thread::sleep_for(1ms);
      }
    } catch (...) {
      code = 2;
    }
    ::_exit(code);
  }

  struct reaper {
    pid_t pid;
    ~reaper() {
      if (pid > 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
      }
    }
  } guard{child};

  ::close(ready[1]);
  pollfd p{ready[0], POLLIN, 0};
  REQUIRE(::poll(&p, 1, 20000) == 1);
  char byte = 0;
  REQUIRE(::read(ready[0], &byte, 1) == 1);
  ::close(ready[0]);

  // Wait until the child has committed many batches after its first flush (past at least
  // one WAL auto-checkpoint), then let it go on for a random few milliseconds, so the kill
  // lands at a different point of its writing each run.
  std::int64_t first = 0;
  std::int64_t seen = 0;
  {
    raw_db reader(path);
    const auto rows = [&] {
      return reader.integer(
          "SELECT (SELECT count(*) FROM connections) + (SELECT count(*) FROM trials)");
    };
    first = rows();
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while ((seen = rows()) <= first + 20000 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(5ms);
  }
  std::this_thread::sleep_for(std::chrono::microseconds(std::random_device{}() % 25000));
  REQUIRE(first > 0);
  REQUIRE(seen > first);
  REQUIRE(::kill(child, SIGKILL) == 0);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  guard.pid = -1;
  CHECK(WIFSIGNALED(status));
  if (WIFSIGNALED(status)) CHECK(WTERMSIG(status) == SIGKILL);
  CHECK(fs::exists(path + "-wal"));  // the killed writer never checkpointed

  {
    event_store store(options_for(path));  // recovers the WAL
    store.record(make_connection(1));
    store.flush();
    CHECK(store.written() == 1);
  }
  raw_db db(path);
  CHECK(db.rows("PRAGMA integrity_check") == std::vector<std::vector<std::string>>{{"ok"}});
  CHECK(db.rows("PRAGMA foreign_key_check").empty());
  const auto after =
      db.integer("SELECT (SELECT count(*) FROM connections) + (SELECT count(*) FROM trials)");
  CHECK(after > 0);
  CHECK(after >= seen + 1);  // every commit the reader saw survived the kill
  WARN("killed the writer after " << seen << " committed rows were seen; " << after - 1
                                  << " survived");
}

TEST_CASE("trial_summary answers the common question in one line of SQL") {
  temp_dir dir;
  const auto path = dir.file("deadpeer.db");
  {
    event_store store(options_for(path));
    const auto run_id = store.begin_run(make_run());
    // 20 detected trials at 3001..3020 ms (bound 4000; the last two over a bound of 3018),
    // one missed, and another configuration with a single trial.
    for (int i = 1; i <= 20; ++i) {
      auto t = make_trial(run_id, i);
      t.latency_ms_exact = 3000.0 + i;
      t.latency_ms = 3000 + i;
      if (i >= 19) t.bound_ms = 3018;
      store.record(std::move(t));
    }
    auto missed = make_trial(run_id, 21);
    missed.outcome = "missed";
    missed.latency_ms = -1;
    missed.latency_ms_exact = -1;
    missed.detected_mono_ns = 0;
    store.record(std::move(missed));
    auto other = make_trial(run_id, 1);
    other.config_key = "ka=2s:1s:3 hb=off";
    other.latency_ms_exact = 5000.5;
    store.record(std::move(other));
    store.flush();
  }
  raw_db db(path);
  // Nearest rank, as probe report: n = 20 gives p50 = x[10] and p95 = x[19].
  CHECK(db.rows("SELECT trials, detected, p50_ms, p95_ms, max_ms, bound_ms, failures, over_bound "
                "FROM trial_summary WHERE config_key = 'ka=1s:1s:3 hb=off'") ==
        std::vector<std::vector<std::string>>{
            {"21", "20", "3010.0", "3019.0", "3020.0", "4000", "1", "2"}});
  CHECK(db.rows("SELECT trials, p50_ms, p95_ms FROM trial_summary WHERE config_key = 'ka=2s:1s:3 hb=off'") ==
        std::vector<std::vector<std::string>>{{"1", "5000.5", "5000.5"}});
}
