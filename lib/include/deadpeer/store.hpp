// The SQLite store: every connection's end (server) and every experiment trial (probe)
// written to one documented schema (docs/results-schema.md) that users query with plain
// sqlite3. Writes go through a queue to a writer thread that commits in batches, so the
// event loop never waits on the disk; a crash loses at most the last batch window and
// never corrupts the file (WAL mode).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace deadpeer {

/// The database could not be opened, migrated or written. what() names the file.
class store_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Schema version kept in PRAGMA user_version.
inline constexpr int store_schema_version = 4;

/// Round-trip times seen on one connection, in milliseconds.
struct rtt_summary {
  std::uint64_t samples = 0;
  double min_ms = 0;
  double mean_ms = 0;
  double max_ms = 0;
};

/// The heartbeat arrivals recorded on one connection (server_options::record_arrivals),
/// written with its connection row to the `arrivals` table.
struct arrival_trace {
  std::int64_t interval_ms = 0;  ///< heartbeat interval agreed for the connection; 0: off
  std::uint64_t seen = 0;        ///< arrivals seen on the connection; the last ones are kept
  std::vector<std::int64_t> mono_ns;  ///< CLOCK_MONOTONIC ns of each kept arrival, oldest first
};

/// One ended connection, as the server saw it. Times: *_mono_ns are CLOCK_MONOTONIC
/// nanoseconds, *_unix_ms wall-clock milliseconds since the epoch.
struct connection_record {
  std::uint64_t session_id = 0;
  std::string client_id;     ///< empty if the handshake never completed
  std::string peer_address;  ///< "127.0.0.1:54321"
  std::int64_t opened_mono_ns = 0;
  std::int64_t ended_mono_ns = 0;  ///< when the end was decided (detection time)
  std::int64_t last_heard_mono_ns = 0;
  std::int64_t opened_unix_ms = 0;
  std::int64_t ended_unix_ms = 0;
  std::string cause;           ///< to_string(cause)
  std::string detected_by;     ///< to_string(detected_by)
  int error_number = 0;        ///< errno of the socket error, 0 if none
  std::string error_name;      ///< "ETIMEDOUT", empty if none
  std::string protocol_error;  ///< wire error code name, empty if none
  std::string close_mode;      ///< "graceful", "abortive" or "plain"
  rtt_summary rtt;
  std::string keepalive;                   ///< keepalive spec in force ("1s:1s:3:0s", "off")
  std::int64_t heartbeat_interval_ms = 0;  ///< 0: no heartbeat
  std::int64_t dead_after_ms = 0;
  std::string detector;  ///< failure_detector::describe()
  std::uint64_t frames_received = 0;
  std::uint64_t frames_sent = 0;
  /// A recorded connection's arrivals (nullopt: not recorded). The store writes them in the
  /// same transaction as the row; when they cannot be written (the file is full, the trace
  /// too big) it drops them and keeps the row, saying so in last_error().
  std::optional<arrival_trace> arrivals;
};

/// One probe invocation.
struct run_record {
  std::int64_t started_unix_ms = 0;
  std::string version;      ///< deadpeer version
  std::string host;         ///< hostname and kernel release
  std::string command;      ///< the command line
  std::string config_json;  ///< the full configuration as JSON
};

/// One fault injected and its measured detection.
struct trial_record {
  std::int64_t run_id = 0;
  int trial = 0;           ///< 1-based index within its configuration
  std::string fault;       ///< "crash", "cable-pull", ...
  std::string config_key;  ///< canonical configuration string, used to resume sweeps
  std::string keepalive;   ///< spec or "off"
  std::int64_t heartbeat_interval_ms = 0;  ///< 0: heartbeat off
  std::string detector;                    ///< describe() or "" when off
  std::int64_t user_timeout_ms = 0;
  std::int64_t bound_ms = -1;         ///< promised worst case; -1: no finite bound
  std::int64_t fault_mono_ns = 0;     ///< t0
  std::int64_t detected_mono_ns = 0;  ///< 0 if not detected
  std::int64_t latency_ms = -1;  ///< detected - t0, -1 if not detected (fractional part dropped)
  double latency_ms_exact = -1;  ///< with sub-millisecond precision
  std::string detected_by;
  std::string cause;
  int error_number = 0;
  std::string error_name;
  /// "detected", "missed", "premature", "interrupted", "survived" (a live peer never
  /// declared dead through the whole trial) or "observed" (a fault that records what a
  /// client saw rather than a detection)
  std::string outcome;
  std::string note;  ///< free text: why missed, what was observed
  /// The detecting side's FIN or RST for the connection as seen on the wire (CLOCK_MONOTONIC);
  /// 0 when none was seen or the wire was not observed (wire_segment says which).
  std::int64_t wire_mono_ns = 0;
  std::string wire_segment;  ///< "FIN", "RST", "none" (observed, nothing sent) or "" (not observed)
  /// The fault's own figures as a JSON object ("{}" when it has none): e.g. for lossy the
  /// verdicts and the frames lost, for early-reject what the client read and wrote.
  std::string details;
};

/// Batched, asynchronous writer over one SQLite file.
class event_store {
 public:
  struct options {
    std::string path;                            ///< created if missing
    std::chrono::milliseconds batch_window{50};  ///< longest a record waits in memory
    std::size_t max_batch = 2000;                ///< records per transaction at most
    /// A cap on the file's size in pages (PRAGMA max_page_count); 0: SQLite's own. Past it a
    /// write fails as on a full disk.
    std::int64_t max_page_count = 0;
  };

  /// Opens or creates the file, sets WAL, creates or checks the schema. Throws
  /// store_error naming the file on failure (unwritable directory, not a database,
  /// a newer schema version than this code knows).
  explicit event_store(options o);
  /// Flushes everything queued, then closes.
  ~event_store();
  event_store(const event_store&) = delete;
  event_store& operator=(const event_store&) = delete;

  /// Queue a record; never waits for the disk. Safe from any thread. Returns its sequence
  /// number (1, 2, ... over every record() of this store, trials included).
  std::uint64_t record(connection_record r);
  /// Records are settled in sequence order: every record numbered up to this one has been
  /// committed (or, rarely, refused or given up, which not_written() counts and stderr
  /// says). Compare a record()'s number with it to know whether that row is in the file.
  std::uint64_t settled_through() const;
  /// As above; throws std::invalid_argument (nothing queued) if outcome is not "detected",
  /// "missed" or "premature", or run_id is not positive.
  void record(trial_record r);
  /// Inserts a run synchronously and returns its id (runs are rare; trials need the id).
  /// Throws store_error if the insert fails.
  std::int64_t begin_run(const run_record& r);

  /// Blocks until everything queued before the call is committed. Throws store_error if
  /// five write attempts fail while it waits (the records stay queued and are retried).
  void flush();

  /// Records committed so far, and still queued.
  std::uint64_t written() const;
  std::uint64_t queued() const;
  /// Arrival traces dropped so that their connection rows could be written (a full file, a
  /// trace SQLite refuses); each is also reported on stderr.
  std::uint64_t arrivals_dropped() const;
  /// The first write error seen by the writer thread, if any (records are then kept
  /// queued and retried on the next batch, never silently dropped).
  std::optional<std::string> last_error() const;
  /// The error while writes are failing now (a full disk, a locked file); nullopt once a
  /// batch commits again. The start and the end of a failing spell are said on stderr.
  std::optional<std::string> failing() const;
  /// Records that will never be in the file: refused by SQLite one by one, or given up
  /// when the writer stopped or shutdown's retries ran out.
  std::uint64_t not_written() const;

  const std::string& path() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace deadpeer
