// The store decides three things: how results reach the disk, what a crash may cost, and
// who may touch the SQLite connection.
//
// Durability. The file is in WAL mode with synchronous=NORMAL. In WAL mode a commit is
// complete once its frames are written to the -wal file (the OS page cache), so a process
// crash, including kill -9, loses nothing that was committed and never corrupts the file;
// only an OS crash or power loss can roll back the last commits since a checkpoint.
// synchronous=FULL would add an fsync per commit for that case, which a results store
// does not need. Opening checks that WAL really took: where WAL is impossible SQLite does
// not fail, it answers with the journal mode it kept.
//
// Writes. record() only appends to an in-memory queue, so neither the server's event loop
// nor the probe waits on the disk. One writer thread gathers what arrives within
// batch_window of the first record (or max_batch records, or less when someone flushes)
// and commits it as one transaction with statements prepared once. A batch that fails as
// a whole (SQLITE_BUSY after busy_timeout, I/O error, disk full) is rolled back and kept;
// the writer backs off (50 ms doubling to 1 s) and retries the same records, so nothing is
// dropped silently; last_error() keeps the first error seen. flush() waits through retries
// but throws store_error after five failed attempts instead of hanging; the records stay
// queued. A single record the schema refuses (a trial whose run does not exist) can never
// succeed: it is skipped inside the transaction, reported on stderr and in last_error(), and
// the rest of the batch commits. Invalid outcomes and run ids are refused earlier, in
// record(), so the caller hears about them. The destructor drains the queue; if the
// database still fails after three attempts at shutdown (1 s busy timeout each, so the
// destructor returns within ~8 s) it says on stderr how many records were lost and returns,
// because a process that cannot exit is worse. The queue itself is unbounded: the rates
// here (one row per connection end or trial) are far below what one SQLite file absorbs.
//
// Threads. One sqlite3 connection, opened SQLITE_OPEN_NOMUTEX, used only while holding
// db_mutex: by the writer thread for batches and by begin_run() on the caller's thread.
// The queue has its own mutex, never held while touching the database, so record() never
// waits behind a commit. begin_run() may wait for the batch in progress; runs are rare.
//
// Schema. PRAGMA user_version holds the schema version. It is read and, for a new file,
// the schema created inside one BEGIN IMMEDIATE transaction, so a server and a probe
// opening the same new file at once cannot both create it. Values are stored as in the
// structs, sentinels included (-1 latency, 0 for "none"); uint64 counters are stored as
// the same 64-bit pattern in SQLite's signed INTEGER. See docs/results-schema.md.
//
// Arrivals. A recorded connection's heartbeat arrivals travel inside its connection_record
// and are inserted right after its row, in the same transaction, so the `arrivals` row can
// name the row's id and a reader never sees one without the other. A trace can be large
// (8 bytes an arrival), so it must never cost the row: when its insert fails on its own (a
// trace SQLite refuses, or SQLITE_FULL that undid only that statement) only the trace is
// dropped; when a full file rolls back the whole batch, which is what SQLite usually does on
// SQLITE_FULL, the batch is retried without any of its traces. Each dropped trace is
// counted, said on stderr and in last_error().
#include <deadpeer/log.hpp>
#include <deadpeer/store.hpp>

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <iostream>
#include <mutex>
#include <thread>
#include <utility>
#include <variant>

namespace deadpeer {
namespace {

using namespace std::chrono_literals;
using std::chrono::steady_clock;

constexpr int busy_timeout_ms = 5000;
// At shutdown each retry waits less for a lock, and only this many are made.
constexpr int shutdown_busy_timeout_ms = 1000;
constexpr int shutdown_attempts = 3;
// flush() gives up (throws) after this many failed attempts while it waits.
constexpr std::uint64_t flush_attempts = 5;
constexpr auto first_backoff = 50ms;
constexpr auto max_backoff = 1000ms;

constexpr const char* schema_v1 = R"sql(
CREATE TABLE connections (
  id                    INTEGER PRIMARY KEY,
  session_id            INTEGER NOT NULL,
  client_id             TEXT    NOT NULL,
  peer_address          TEXT    NOT NULL,
  opened_mono_ns        INTEGER NOT NULL,
  ended_mono_ns         INTEGER NOT NULL,
  last_heard_mono_ns    INTEGER NOT NULL,
  opened_unix_ms        INTEGER NOT NULL,
  ended_unix_ms         INTEGER NOT NULL,
  ended_at              TEXT,
  cause                 TEXT    NOT NULL,
  detected_by           TEXT    NOT NULL,
  error_number          INTEGER NOT NULL,
  error_name            TEXT    NOT NULL,
  protocol_error        TEXT    NOT NULL,
  close_mode            TEXT    NOT NULL,
  rtt_samples           INTEGER NOT NULL,
  rtt_min_ms            REAL,
  rtt_mean_ms           REAL,
  rtt_max_ms            REAL,
  keepalive             TEXT    NOT NULL,
  heartbeat_interval_ms INTEGER NOT NULL,
  dead_after_ms         INTEGER NOT NULL,
  detector              TEXT    NOT NULL,
  frames_received       INTEGER NOT NULL,
  frames_sent           INTEGER NOT NULL
);
CREATE INDEX connections_cause ON connections(cause);
CREATE INDEX connections_client_id ON connections(client_id);

CREATE TABLE runs (
  id              INTEGER PRIMARY KEY,
  started_unix_ms INTEGER NOT NULL,
  started_at      TEXT,
  version         TEXT    NOT NULL,
  host            TEXT    NOT NULL,
  command         TEXT    NOT NULL,
  config_json     TEXT    NOT NULL
);

CREATE TABLE trials (
  id                    INTEGER PRIMARY KEY,
  run_id                INTEGER NOT NULL REFERENCES runs(id),
  trial                 INTEGER NOT NULL,
  fault                 TEXT    NOT NULL,
  config_key            TEXT    NOT NULL,
  keepalive             TEXT    NOT NULL,
  heartbeat_interval_ms INTEGER NOT NULL,
  detector              TEXT    NOT NULL,
  user_timeout_ms       INTEGER NOT NULL,
  bound_ms              INTEGER NOT NULL,
  fault_mono_ns         INTEGER NOT NULL,
  detected_mono_ns      INTEGER NOT NULL,
  latency_ms            INTEGER NOT NULL,
  latency_ms_exact      REAL,
  detected_by           TEXT    NOT NULL,
  cause                 TEXT    NOT NULL,
  error_number          INTEGER NOT NULL,
  error_name            TEXT    NOT NULL,
  outcome               TEXT    NOT NULL CHECK(outcome IN ('detected','missed','premature')),
  note                  TEXT    NOT NULL
);
CREATE INDEX trials_run_id ON trials(run_id);
CREATE INDEX trials_config_key_fault ON trials(config_key, fault);
)sql";

// Version 2: a trial cut short by Ctrl-C is stored as 'interrupted', and every trial has
// the wire's instant of the detecting side's FIN or RST. SQLite cannot change a CHECK
// constraint in place, so the table is copied into one that allows both.
constexpr const char* migrate_v1_to_v2 = R"sql(
CREATE TABLE trials_v2 (
  id                    INTEGER PRIMARY KEY,
  run_id                INTEGER NOT NULL REFERENCES runs(id),
  trial                 INTEGER NOT NULL,
  fault                 TEXT    NOT NULL,
  config_key            TEXT    NOT NULL,
  keepalive             TEXT    NOT NULL,
  heartbeat_interval_ms INTEGER NOT NULL,
  detector              TEXT    NOT NULL,
  user_timeout_ms       INTEGER NOT NULL,
  bound_ms              INTEGER NOT NULL,
  fault_mono_ns         INTEGER NOT NULL,
  detected_mono_ns      INTEGER NOT NULL,
  latency_ms            INTEGER NOT NULL,
  latency_ms_exact      REAL,
  detected_by           TEXT    NOT NULL,
  cause                 TEXT    NOT NULL,
  error_number          INTEGER NOT NULL,
  error_name            TEXT    NOT NULL,
  outcome               TEXT    NOT NULL CHECK(outcome IN ('detected','missed','premature','interrupted')),
  note                  TEXT    NOT NULL,
  wire_mono_ns          INTEGER NOT NULL DEFAULT 0,
  wire_segment          TEXT    NOT NULL DEFAULT ''
);
INSERT INTO trials_v2 (id, run_id, trial, fault, config_key, keepalive, heartbeat_interval_ms,
  detector, user_timeout_ms, bound_ms, fault_mono_ns, detected_mono_ns, latency_ms,
  latency_ms_exact, detected_by, cause, error_number, error_name, outcome, note)
SELECT id, run_id, trial, fault, config_key, keepalive, heartbeat_interval_ms, detector,
  user_timeout_ms, bound_ms, fault_mono_ns, detected_mono_ns, latency_ms, latency_ms_exact,
  detected_by, cause, error_number, error_name, outcome, note FROM trials;
DROP TABLE trials;
ALTER TABLE trials_v2 RENAME TO trials;
CREATE INDEX trials_run_id ON trials(run_id);
CREATE INDEX trials_config_key_fault ON trials(config_key, fault);
)sql";

// Version 3: faults that measure something other than a detection store it too. A trial
// in which a live peer was never declared dead (lossy, stall) is 'survived'; one that
// records what a client saw (early-reject) is 'observed'; `details` holds each fault's own
// figures as a JSON object. The CHECK changes, so the table is copied once more.
constexpr const char* migrate_v2_to_v3 = R"sql(
CREATE TABLE trials_v3 (
  id                    INTEGER PRIMARY KEY,
  run_id                INTEGER NOT NULL REFERENCES runs(id),
  trial                 INTEGER NOT NULL,
  fault                 TEXT    NOT NULL,
  config_key            TEXT    NOT NULL,
  keepalive             TEXT    NOT NULL,
  heartbeat_interval_ms INTEGER NOT NULL,
  detector              TEXT    NOT NULL,
  user_timeout_ms       INTEGER NOT NULL,
  bound_ms              INTEGER NOT NULL,
  fault_mono_ns         INTEGER NOT NULL,
  detected_mono_ns      INTEGER NOT NULL,
  latency_ms            INTEGER NOT NULL,
  latency_ms_exact      REAL,
  detected_by           TEXT    NOT NULL,
  cause                 TEXT    NOT NULL,
  error_number          INTEGER NOT NULL,
  error_name            TEXT    NOT NULL,
  outcome               TEXT    NOT NULL CHECK(outcome IN
                          ('detected','missed','premature','interrupted','survived','observed')),
  note                  TEXT    NOT NULL,
  wire_mono_ns          INTEGER NOT NULL DEFAULT 0,
  wire_segment          TEXT    NOT NULL DEFAULT '',
  details               TEXT    NOT NULL DEFAULT '{}'
);
INSERT INTO trials_v3 (id, run_id, trial, fault, config_key, keepalive, heartbeat_interval_ms,
  detector, user_timeout_ms, bound_ms, fault_mono_ns, detected_mono_ns, latency_ms,
  latency_ms_exact, detected_by, cause, error_number, error_name, outcome, note, wire_mono_ns,
  wire_segment)
SELECT id, run_id, trial, fault, config_key, keepalive, heartbeat_interval_ms, detector,
  user_timeout_ms, bound_ms, fault_mono_ns, detected_mono_ns, latency_ms, latency_ms_exact,
  detected_by, cause, error_number, error_name, outcome, note, wire_mono_ns, wire_segment
  FROM trials;
DROP TABLE trials;
ALTER TABLE trials_v3 RENAME TO trials;
CREATE INDEX trials_run_id ON trials(run_id);
CREATE INDEX trials_config_key_fault ON trials(config_key, fault);
)sql";

// Version 4: heartbeat arrival traces of recorded connections (server_options::
// record_arrivals). A new table beside the others: nothing is copied.
constexpr const char* migrate_v3_to_v4 = R"sql(
CREATE TABLE arrivals (
  id            INTEGER PRIMARY KEY,
  connection_id INTEGER NOT NULL REFERENCES connections(id),
  session_id    INTEGER NOT NULL,
  client_id     TEXT    NOT NULL,
  peer_address  TEXT    NOT NULL,
  interval_ms   INTEGER NOT NULL,
  first_mono_ns INTEGER NOT NULL,
  count         INTEGER NOT NULL,
  seen          INTEGER NOT NULL,
  times_us      BLOB    NOT NULL
);
CREATE INDEX arrivals_connection_id ON arrivals(connection_id);
)sql";

// A view, not a table: it holds nothing, so it is created anew on every open for writing,
// without a schema version of its own, and a file written by an older deadpeer gains it.
// Percentiles are nearest-rank over the detected trials, as probe report computes them:
// x[ceil(P/100 * n)] of the n sorted latencies.
constexpr const char* trial_summary_view = R"sql(
CREATE VIEW IF NOT EXISTS trial_summary AS
WITH detected AS (
  SELECT fault, config_key, latency_ms_exact AS ms,
         ROW_NUMBER() OVER (PARTITION BY fault, config_key ORDER BY latency_ms_exact) AS rank,
         COUNT(*) OVER (PARTITION BY fault, config_key) AS n
  FROM trials WHERE outcome = 'detected'),
percentiles AS (
  SELECT fault, config_key,
         MAX(CASE WHEN rank = (50 * n + 99) / 100 THEN ms END) AS p50_ms,
         MAX(CASE WHEN rank = (95 * n + 99) / 100 THEN ms END) AS p95_ms,
         MAX(ms) AS max_ms
  FROM detected GROUP BY fault, config_key)
SELECT t.fault, t.config_key, COUNT(*) AS trials,
       SUM(t.outcome = 'detected') AS detected,
       p.p50_ms, p.p95_ms, p.max_ms,
       MAX(t.bound_ms) AS bound_ms,
       SUM(t.outcome IN ('missed', 'premature')) AS failures,
       SUM(t.outcome = 'detected' AND t.bound_ms >= 0 AND t.latency_ms_exact > t.bound_ms)
         AS over_bound
FROM trials t LEFT JOIN percentiles p ON p.fault = t.fault AND p.config_key = t.config_key
GROUP BY t.fault, t.config_key;
)sql";

constexpr const char* insert_arrivals_sql =
    "INSERT INTO arrivals (connection_id, session_id, client_id, peer_address, interval_ms, "
    "first_mono_ns, count, seen, times_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";

constexpr const char* insert_connection_sql =
    "INSERT INTO connections (session_id, client_id, peer_address, opened_mono_ns, "
    "ended_mono_ns, last_heard_mono_ns, opened_unix_ms, ended_unix_ms, ended_at, cause, "
    "detected_by, error_number, error_name, protocol_error, close_mode, rtt_samples, rtt_min_ms, "
    "rtt_mean_ms, rtt_max_ms, keepalive, heartbeat_interval_ms, dead_after_ms, detector, "
    "frames_received, frames_sent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
    "?, ?, ?, ?, ?, ?, ?)";

constexpr const char* insert_trial_sql =
    "INSERT INTO trials (run_id, trial, fault, config_key, keepalive, heartbeat_interval_ms, "
    "detector, user_timeout_ms, bound_ms, fault_mono_ns, detected_mono_ns, latency_ms, "
    "latency_ms_exact, detected_by, cause, error_number, error_name, outcome, note, "
    "wire_mono_ns, wire_segment, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
    "?, ?, ?, ?, ?, ?)";

// Bound by reference (SQLITE_STATIC) like every string here, so it must outlive the step.
const std::string no_details = "{}";

constexpr const char* insert_run_sql =
    "INSERT INTO runs (started_unix_ms, started_at, version, host, command, config_json) "
    "VALUES (?, ?, ?, ?, ?, ?)";

struct db_closer {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
struct stmt_finalizer {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using db_ptr = std::unique_ptr<sqlite3, db_closer>;
using stmt_ptr = std::unique_ptr<sqlite3_stmt, stmt_finalizer>;

/// "2023-11-14T22:13:20.123Z"; nullopt for 0 (the structs' "not set").
std::optional<std::string> iso_utc(std::int64_t unix_ms) {
  if (unix_ms == 0) return std::nullopt;
  std::int64_t seconds = unix_ms / 1000;
  std::int64_t millis = unix_ms % 1000;
  if (millis < 0) {
    millis += 1000;
    seconds -= 1;
  }
  const auto t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  if (gmtime_r(&t, &tm) == nullptr) return std::nullopt;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(millis));
  return std::string(buf);
}

/// Binds parameters left to right; remembers the first failure.
class binder {
 public:
  explicit binder(sqlite3_stmt* s) : stmt_(s) {}
  binder& operator()(std::int64_t v) { return check(sqlite3_bind_int64(stmt_, ++index_, v)); }
  // Stored as the same 64-bit pattern: values above INT64_MAX read back negative.
  binder& operator()(std::uint64_t v) { return (*this)(static_cast<std::int64_t>(v)); }
  binder& operator()(int v) { return check(sqlite3_bind_int(stmt_, ++index_, v)); }
  // SQLite has no NaN: a NaN becomes NULL.
  binder& operator()(double v) { return check(sqlite3_bind_double(stmt_, ++index_, v)); }
  // The strings outlive the step that reads them, so SQLite need not copy them.
  binder& operator()(const std::string& v) {
    return check(
        sqlite3_bind_text64(stmt_, ++index_, v.data(), v.size(), SQLITE_STATIC, SQLITE_UTF8));
  }
  // The bytes outlive the step, as the strings do.
  binder& operator()(const std::vector<unsigned char>& v) {
    return check(sqlite3_bind_blob64(stmt_, ++index_, v.data(), v.size(), SQLITE_STATIC));
  }
  binder& operator()(const std::optional<std::string>& v) {
    if (!v) return check(sqlite3_bind_null(stmt_, ++index_));
    return check(
        sqlite3_bind_text64(stmt_, ++index_, v->data(), v->size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  }
  int result() const {
    assert(rc_ != SQLITE_OK || index_ == sqlite3_bind_parameter_count(stmt_));
    return rc_;
  }

 private:
  binder& check(int rc) {
    if (rc_ == SQLITE_OK) rc_ = rc;
    return *this;
  }
  sqlite3_stmt* stmt_;
  int index_ = 0;
  int rc_ = SQLITE_OK;
};

int bind(sqlite3_stmt* s, const connection_record& r) {
  binder b(s);
  b(r.session_id)(r.client_id)(r.peer_address)(r.opened_mono_ns)(r.ended_mono_ns)(
      r.last_heard_mono_ns)(r.opened_unix_ms)(r.ended_unix_ms)(iso_utc(r.ended_unix_ms))(r.cause)(
      r.detected_by)(r.error_number)(r.error_name)(r.protocol_error)(r.close_mode)(r.rtt.samples)(
      r.rtt.min_ms)(r.rtt.mean_ms)(r.rtt.max_ms)(r.keepalive)(r.heartbeat_interval_ms)(
      r.dead_after_ms)(r.detector)(r.frames_received)(r.frames_sent);
  return b.result();
}

int bind(sqlite3_stmt* s, const trial_record& r) {
  binder b(s);
  b(r.run_id)(r.trial)(r.fault)(r.config_key)(r.keepalive)(r.heartbeat_interval_ms)(r.detector)(
      r.user_timeout_ms)(r.bound_ms)(r.fault_mono_ns)(r.detected_mono_ns)(r.latency_ms)(
      r.latency_ms_exact)(r.detected_by)(r.cause)(r.error_number)(r.error_name)(r.outcome)(r.note)(
      r.wire_mono_ns)(r.wire_segment)(r.details.empty() ? no_details : r.details);
  return b.result();
}

int bind(sqlite3_stmt* s, const run_record& r) {
  binder b(s);
  b(r.started_unix_ms)(iso_utc(r.started_unix_ms))(r.version)(r.host)(r.command)(r.config_json);
  return b.result();
}

// times_us of the arrivals table: each arrival in microseconds after the first (to the
// nearest), as a little-endian int64, 8 bytes an arrival.
std::vector<unsigned char> encode_offsets_us(const std::vector<std::int64_t>& mono_ns) {
  std::vector<unsigned char> out(mono_ns.size() * 8);
  const std::int64_t first_ns = mono_ns.empty() ? 0 : mono_ns.front();
  for (std::size_t i = 0; i < mono_ns.size(); ++i) {
    const std::int64_t offset_us = (mono_ns[i] - first_ns + 500) / 1000;
    const auto bits = static_cast<std::uint64_t>(offset_us);
    for (std::size_t b = 0; b < 8; ++b)
      out[i * 8 + b] = static_cast<unsigned char>((bits >> (8 * b)) & 0xffu);
  }
  return out;
}

std::string describe(const connection_record& r) {
  return "connection record (session " + std::to_string(r.session_id) + ", client \"" +
         r.client_id + "\")";
}
std::string describe(const trial_record& r) {
  return "trial record (run " + std::to_string(r.run_id) + ", " + r.config_key + " " + r.fault +
         " #" + std::to_string(r.trial) + ")";
}

/// Errors that belong to one record and will fail the same way on every retry.
bool record_error(int rc) {
  const int primary = rc & 0xff;
  return primary == SQLITE_CONSTRAINT || primary == SQLITE_TOOBIG || primary == SQLITE_MISMATCH;
}

}  // namespace

struct event_store::impl {
  using item = std::variant<connection_record, trial_record>;

  struct batch_result {
    bool committed = false;
    std::size_t written = 0;
    std::string error;  // whole-batch failure
    bool full = false;  // the failure was SQLITE_FULL (disk full, max_page_count)
    std::vector<std::string> rejected;
    std::vector<std::string> dropped_arrivals;  // traces left out, their rows written
  };

  options opts;
  db_ptr db;
  stmt_ptr insert_connection, insert_trial, insert_run, insert_arrivals, begin, commit, rollback;
  std::mutex db_mutex;  // every use of db and the statements

  std::mutex mutex;  // everything below, except the atomics
  std::condition_variable wake_writer;
  std::condition_variable progress;  // a batch finished, failed, or the writer ended
  std::deque<item> queue;
  std::uint64_t enqueued = 0;         // records ever accepted by record()
  std::uint64_t resolved = 0;         // of those, committed, rejected or given up
  std::uint64_t flush_target = 0;     // highest sequence a flush() waits for
  std::uint64_t failed_attempts = 0;  // whole-batch failures, ever
  std::uint64_t lost = 0;             // records given up (writer stopped or shutdown)
  std::uint64_t rejected_count = 0;   // records SQLite refused one by one
  bool stopping = false;
  bool writer_done = false;
  std::optional<std::string> first_error;
  std::optional<std::string> failing_now;  // the error of the failing streak, until a commit
  std::uint64_t streak_attempts = 0;       // failed attempts in that streak
  std::atomic<std::uint64_t> written_count{0};
  std::atomic<std::uint64_t> queued_count{0};
  std::atomic<std::uint64_t> arrivals_dropped_count{0};

  std::thread writer;

  explicit impl(options o) : opts(std::move(o)) {
    opts.max_batch = std::max<std::size_t>(opts.max_batch, 1);
    opts.batch_window = std::max(opts.batch_window, std::chrono::milliseconds{0});
    open();
    writer = std::thread([this] { run_writer(); });
  }

  ~impl() {
    {
      std::lock_guard lock(mutex);
      stopping = true;
    }
    wake_writer.notify_all();
    writer.join();
  }

  // "cannot open /x/deadpeer.db: file is not a database"
  [[noreturn]] void fail(const std::string& what) const {
    throw store_error(what + " " + opts.path + ": " + sqlite3_errmsg(db.get()));
  }

  void exec(const char* sql, const char* what) {
    if (sqlite3_exec(db.get(), sql, nullptr, nullptr, nullptr) != SQLITE_OK) fail(what);
  }

  std::string pragma_text(const char* sql, const char* what) {
    sqlite3_stmt* raw = nullptr;
    if (sqlite3_prepare_v2(db.get(), sql, -1, &raw, nullptr) != SQLITE_OK) fail(what);
    stmt_ptr s(raw);
    const int rc = sqlite3_step(s.get());
    if (rc != SQLITE_ROW) fail(what);
    const auto* text = sqlite3_column_text(s.get(), 0);
    return text ? reinterpret_cast<const char*>(text) : "";
  }

  stmt_ptr prepare(const char* sql) {
    sqlite3_stmt* raw = nullptr;
    if (sqlite3_prepare_v3(db.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, &raw, nullptr) !=
        SQLITE_OK)
      fail("cannot prepare statements (is it a deadpeer database?) for");
    return stmt_ptr(raw);
  }

  void open() {
    if (sqlite3_threadsafe() == 0)
      throw store_error("cannot open " + opts.path +
                        ": the SQLite library was built without thread support");
    sqlite3* raw = nullptr;
    const int rc =
        sqlite3_open_v2(opts.path.c_str(), &raw,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    db.reset(raw);
    if (rc != SQLITE_OK) {
      std::string msg = raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc);
      throw store_error("cannot open " + opts.path + ": " + msg +
                        " (does the directory exist, and may we write there?)");
    }
    sqlite3_extended_result_codes(db.get(), 1);
    sqlite3_busy_timeout(db.get(), busy_timeout_ms);

    // The first statement that reads the file is where "not a database" shows up.
    const std::string mode = pragma_text("PRAGMA journal_mode=WAL", "cannot open");
    if (mode != "wal")
      throw store_error("cannot open " + opts.path +
                        ": SQLite refused WAL journal mode (it stayed \"" + mode + "\")");
    exec("PRAGMA synchronous=NORMAL", "cannot set synchronous=NORMAL on");
    exec("PRAGMA foreign_keys=ON", "cannot enable foreign keys on");

    exec("BEGIN IMMEDIATE", "cannot lock");
    try {
      const int version =
          std::stoi(pragma_text("PRAGMA user_version", "cannot read the schema version of"));
      if (version > store_schema_version)
        throw store_error(opts.path + " was written by a newer deadpeer (schema " +
                          std::to_string(version) + ", this build knows " +
                          std::to_string(store_schema_version) + ")");
      // The view goes first and comes back last: the migrations rebuild the tables it reads,
      // and a newer deadpeer may define it differently.
      exec("DROP VIEW IF EXISTS trial_summary", "cannot replace the trial_summary view in");
      if (version == 0) exec(schema_v1, "cannot create the schema in");
      if (version < 2) {
        exec(migrate_v1_to_v2, "cannot upgrade the trials table (schema 2) of");
        exec("PRAGMA user_version=2", "cannot set the schema version of");
      }
      if (version < 3) {
        exec(migrate_v2_to_v3, "cannot upgrade the trials table (schema 3) of");
        exec("PRAGMA user_version=3", "cannot set the schema version of");
      }
      if (version < 4) {
        exec(migrate_v3_to_v4, "cannot add the arrivals table (schema 4) to");
        exec("PRAGMA user_version=4", "cannot set the schema version of");
      }
      exec(trial_summary_view, "cannot create the trial_summary view in");
      exec("COMMIT", "cannot commit the schema of");
    } catch (...) {
      sqlite3_exec(db.get(), "ROLLBACK", nullptr, nullptr, nullptr);
      throw;
    }

    insert_connection = prepare(insert_connection_sql);
    insert_trial = prepare(insert_trial_sql);
    insert_run = prepare(insert_run_sql);
    insert_arrivals = prepare(insert_arrivals_sql);
    if (opts.max_page_count > 0)
      exec(("PRAGMA max_page_count=" + std::to_string(opts.max_page_count)).c_str(),
           "cannot set max_page_count on");
    begin = prepare("BEGIN IMMEDIATE");
    commit = prepare("COMMIT");
    rollback = prepare("ROLLBACK");
  }

  std::uint64_t push(item it) {
    std::uint64_t sequence = 0;
    {
      std::lock_guard lock(mutex);
      queue.push_back(std::move(it));
      sequence = ++enqueued;
      queued_count.fetch_add(1, std::memory_order_relaxed);
    }
    wake_writer.notify_one();
    return sequence;
  }

  // Steps a statement without arguments (BEGIN, COMMIT, ROLLBACK); on failure keeps
  // SQLite's message in *error.
  int step_once(sqlite3_stmt* s, std::string* error) {
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) rc = SQLITE_OK;
    if (rc != SQLITE_OK && error) *error = sqlite3_errmsg(db.get());
    sqlite3_reset(s);
    return rc;
  }

  // Called with db_mutex held.
  batch_result write_batch(const std::vector<item>& batch) {
    batch_result result;
    std::string error;
    int rc = step_once(begin.get(), &error);
    for (std::size_t i = 0; rc == SQLITE_OK && i < batch.size(); ++i) {
      sqlite3_stmt* s = std::holds_alternative<connection_record>(batch[i])
                            ? insert_connection.get()
                            : insert_trial.get();
      rc = std::visit([s](const auto& r) { return bind(s, r); }, batch[i]);
      if (rc == SQLITE_OK) {
        rc = sqlite3_step(s);
        if (rc == SQLITE_DONE) rc = SQLITE_OK;
      }
      if (rc != SQLITE_OK && record_error(rc)) {
        // SQLite undid this statement only; the transaction goes on without the record.
        result.rejected.push_back(std::visit([](const auto& r) { return describe(r); }, batch[i]) +
                                  ": " + sqlite3_errmsg(db.get()));
        rc = SQLITE_OK;
      } else if (rc == SQLITE_OK) {
        ++result.written;
        if (const auto* c = std::get_if<connection_record>(&batch[i]))
          rc = write_arrivals(*c, result, error);
      } else {
        error = sqlite3_errmsg(db.get());
      }
      sqlite3_reset(s);
      sqlite3_clear_bindings(s);  // no pointer into a record outlives the batch
    }
    if (rc == SQLITE_OK) rc = step_once(commit.get(), &error);
    if (rc == SQLITE_OK) {
      result.committed = true;
      return result;
    }
    if ((rc & 0xff) == SQLITE_FULL) result.full = true;
    result.error = "writing " + std::to_string(batch.size()) + " records to " + opts.path +
                   " failed: " + error;
    // Some errors (disk full, I/O) roll back on their own; otherwise undo it ourselves.
    if (sqlite3_get_autocommit(db.get()) == 0) step_once(rollback.get(), nullptr);
    return result;
  }

  // Called with db_mutex held, right after r's row was inserted (its id is the last rowid).
  // SQLITE_OK when the trace was written or dropped with the row kept; otherwise the error
  // that fails the whole batch (its message in `error`).
  int write_arrivals(const connection_record& r, batch_result& result, std::string& error) {
    if (!r.arrivals || r.arrivals->mono_ns.empty()) return SQLITE_OK;
    const auto& a = *r.arrivals;
    const std::int64_t connection_id = sqlite3_last_insert_rowid(db.get());
    const auto times_us = encode_offsets_us(a.mono_ns);
    sqlite3_stmt* s = insert_arrivals.get();
    binder b(s);
    b(connection_id)(r.session_id)(r.client_id)(r.peer_address)(a.interval_ms)(a.mono_ns.front())(
        static_cast<std::int64_t>(a.mono_ns.size()))(a.seen)(times_us);
    int rc = b.result();
    if (rc == SQLITE_OK) {
      rc = sqlite3_step(s);
      if (rc == SQLITE_DONE) rc = SQLITE_OK;
    }
    const std::string message = rc == SQLITE_OK ? "" : sqlite3_errmsg(db.get());
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (rc == SQLITE_OK) return rc;
    const bool full = (rc & 0xff) == SQLITE_FULL;
    // SQLite undid the statement only: the transaction goes on with the row, without the trace.
    if (sqlite3_get_autocommit(db.get()) == 0 && (full || record_error(rc))) {
      result.dropped_arrivals.push_back("arrivals of " + describe(r) + ": " + message);
      return SQLITE_OK;
    }
    error = message;
    return rc;
  }

  // Called with mutex held: leaves the batch's traces out (the file is full); returns how many.
  std::size_t drop_arrivals(std::vector<item>& batch) {
    std::size_t dropped = 0;
    for (auto& it : batch)
      if (auto* c = std::get_if<connection_record>(&it); c && c->arrivals) {
        c->arrivals.reset();
        ++dropped;
      }
    arrivals_dropped_count.fetch_add(dropped, std::memory_order_relaxed);
    return dropped;
  }

  void run_writer() {
    std::vector<item> batch;
    auto backoff = std::chrono::milliseconds(first_backoff);
    int shutdown_failures = 0;
    std::unique_lock lock(mutex);
    try {
      for (;;) {
        if (batch.empty()) {
          wake_writer.wait(lock, [&] { return !queue.empty() || stopping; });
          if (queue.empty()) break;  // stopping, and everything is written
          const auto deadline = steady_clock::now() + opts.batch_window;
          wake_writer.wait_until(lock, deadline, [&] {
            return queue.size() >= opts.max_batch || stopping || flush_target > resolved;
          });
          const std::size_t n = std::min(queue.size(), opts.max_batch);
          batch.reserve(n);
          for (std::size_t i = 0; i < n; ++i) {
            batch.push_back(std::move(queue.front()));
            queue.pop_front();
          }
        }
        const bool at_shutdown = stopping;
        lock.unlock();
        batch_result result;
        {
          std::lock_guard db_lock(db_mutex);
          if (at_shutdown) sqlite3_busy_timeout(db.get(), shutdown_busy_timeout_ms);
          result = write_batch(batch);
        }
        for (const auto& r : result.rejected)
          log_line(log_level::warning) << "deadpeer store: " << opts.path << ": rejected " << r;
        // A batch that failed is retried whole: nothing of it was dropped yet.
        if (!result.committed) result.dropped_arrivals.clear();
        for (const auto& r : result.dropped_arrivals)
          log_line(log_level::warning) << "deadpeer store: " << opts.path << ": dropped the " << r
                                       << " (the connection row is kept)";
        lock.lock();

        if (!result.rejected.empty() && !first_error) first_error = result.rejected.front();
        rejected_count += result.rejected.size();
        if (!result.dropped_arrivals.empty()) {
          arrivals_dropped_count.fetch_add(result.dropped_arrivals.size(),
                                           std::memory_order_relaxed);
          if (!first_error) first_error = "dropped the " + result.dropped_arrivals.front();
        }
        if (result.committed) {
          if (failing_now) {
            // Said once when it ends, as when it started: an operator sees both in the log.
            log_line(log_level::info) << "deadpeer store: " << opts.path << ": writing again after "
                                      << streak_attempts << " failed attempt(s); nothing was lost";
            failing_now.reset();
            streak_attempts = 0;
          }
          written_count.fetch_add(result.written, std::memory_order_relaxed);
          finish(batch.size());
          batch.clear();
          backoff = first_backoff;
          continue;
        }

        ++failed_attempts;
        ++streak_attempts;
        if (!first_error) first_error = result.error;
        if (!failing_now) {
          log_line(log_level::warning) << "deadpeer store: " << opts.path << ": cannot write ("
                                       << result.error << "); " << batch.size() + queue.size()
                                       << " record(s) kept in memory and retried until it can";
          failing_now = result.error;
        }
        if (result.full) {
          // The file is full: the rows go first; their traces would only keep them out.
          if (const std::size_t n = drop_arrivals(batch))
            log_line(log_level::warning)
                << "deadpeer store: " << opts.path << ": the file is full; retrying "
                << batch.size() << " records without their " << n << " arrival trace(s)";
        }
        progress.notify_all();
        if (stopping && ++shutdown_failures >= shutdown_attempts) {
          const std::size_t n = batch.size() + queue.size();
          log_line(log_level::error) << "deadpeer store: " << opts.path
                                     << ": giving up at shutdown; records not written: " << n
                                     << " (" << result.error << ")";
          queue.clear();
          batch.clear();
          give_up(n);
          break;
        }
        // A stop request cuts the back-off short; shutdown retries are then bounded above.
        wake_writer.wait_for(lock, stopping ? first_backoff : backoff,
                             [&] { return stopping && !at_shutdown; });
        backoff = std::min(backoff * 2, std::chrono::milliseconds(max_backoff));
      }
    } catch (const std::exception& x) {
      if (lock.owns_lock()) lock.unlock();
      {
        // Leave no transaction open under begin_run().
        std::lock_guard db_lock(db_mutex);
        if (sqlite3_get_autocommit(db.get()) == 0) step_once(rollback.get(), nullptr);
      }
      lock.lock();
      const std::size_t n = batch.size() + queue.size();
      log_line(log_level::error) << "deadpeer store: " << opts.path
                                 << ": writer stopped; records not written: " << n << " ("
                                 << x.what() << ")";
      if (!first_error) first_error = std::string("writer stopped: ") + x.what();
      queue.clear();
      give_up(n);
    }
    writer_done = true;
    progress.notify_all();
  }

  // Called with mutex held: n more records are committed, rejected or given up.
  void finish(std::size_t n) {
    resolved += n;
    queued_count.fetch_sub(n, std::memory_order_relaxed);
    progress.notify_all();
  }

  void give_up(std::size_t n) {
    lost += n;
    finish(n);
  }

  void flush() {
    std::unique_lock lock(mutex);
    const std::uint64_t target = enqueued;
    if (resolved >= target) return;
    flush_target = std::max(flush_target, target);
    wake_writer.notify_one();
    const std::uint64_t failures_before = failed_attempts;
    const std::uint64_t lost_before = lost;
    progress.wait(lock, [&] {
      return resolved >= target || writer_done ||
             failed_attempts - failures_before >= flush_attempts;
    });
    if (resolved >= target && lost == lost_before) return;
    const std::string what =
        writer_done ? "the writer has stopped and records were lost"
                    : std::to_string(flush_attempts) + " attempts failed; the records stay queued";
    throw store_error("cannot flush " + opts.path + ": " + what +
                      ". First error: " + first_error.value_or("none"));
  }

  std::int64_t begin_run(const run_record& r) {
    std::lock_guard lock(db_mutex);
    sqlite3_stmt* s = insert_run.get();
    int rc = bind(s, r);
    if (rc == SQLITE_OK) rc = sqlite3_step(s);
    const std::int64_t id = sqlite3_last_insert_rowid(db.get());
    std::string error = rc == SQLITE_DONE ? "" : sqlite3_errmsg(db.get());
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (rc != SQLITE_DONE)
      throw store_error("cannot insert a run into " + opts.path + ": " + error);
    return id;
  }
};

namespace {

void validate(const trial_record& r) {
  if (r.outcome != "detected" && r.outcome != "missed" && r.outcome != "premature" &&
      r.outcome != "interrupted" && r.outcome != "survived" && r.outcome != "observed")
    throw std::invalid_argument(
        "trial outcome must be detected, missed, premature, interrupted, survived or observed, "
        "not \"" +
        r.outcome + "\"");
  if (!r.details.empty() && r.details.front() != '{')
    throw std::invalid_argument("trial details must be a JSON object, not \"" + r.details + "\"");
  if (r.run_id <= 0)
    throw std::invalid_argument("trial run_id must be an id returned by begin_run(), not " +
                                std::to_string(r.run_id));
}

}  // namespace

event_store::event_store(options o) : impl_(std::make_unique<impl>(std::move(o))) {}

event_store::~event_store() = default;

std::uint64_t event_store::record(connection_record r) {
  return impl_->push(std::move(r));
}

std::uint64_t event_store::settled_through() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->resolved;
}

void event_store::record(trial_record r) {
  validate(r);
  impl_->push(std::move(r));
}

std::int64_t event_store::begin_run(const run_record& r) {
  return impl_->begin_run(r);
}

void event_store::flush() {
  impl_->flush();
}

std::uint64_t event_store::written() const {
  return impl_->written_count.load(std::memory_order_relaxed);
}

std::uint64_t event_store::arrivals_dropped() const {
  return impl_->arrivals_dropped_count.load(std::memory_order_relaxed);
}

std::uint64_t event_store::queued() const {
  return impl_->queued_count.load(std::memory_order_relaxed);
}

std::optional<std::string> event_store::last_error() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->first_error;
}

std::optional<std::string> event_store::failing() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->failing_now;
}

std::uint64_t event_store::not_written() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->lost + impl_->rejected_count;
}

const std::string& event_store::path() const {
  return impl_->opts.path;
}

}  // namespace deadpeer
