// One event loop of the server: a thread that owns a listener (SO_REUSEPORT: the kernel
// spreads new connections over the loops), an epoll set, a slab of flat connection
// records and one timing wheel, and drives a protocol engine per connection.
//
// Why this shape (issue: a connection must cost a few hundred bytes and a heartbeat one
// recv and one send): no per-connection coroutine, strand, timer or std::function. The
// loop waits for readiness, reads into one buffer shared by all its connections, and the
// engine answers into one shared output that is written inline when nothing is queued; a
// connection keeps only a partial frame or unsent bytes when it has them. Every deadline
// (handshake, PING due, dead-after, reap, close drain) is the connection's one entry in
// the wheel, moved in O(1).
//
// Nothing here is shared with other threads except through loop_host (admission, the
// registry, counters, the store) and post(), which queues a task for the loop thread and
// wakes it through an eventfd. A takeover across loops, a stop, a snapshot for the control
// API and an embedder's send() are such tasks.
//
// Arrival recording (server_options::record_arrivals) lives beside the slab, in a map keyed
// by slot that holds an arrival_ring only for the connections chosen for recording: the
// connection record itself does not change, so a server that records nothing pays nothing
// per connection, and one that samples pays only for the sampled ones.
#pragma once

#include <deadpeer/engine.hpp>
#include <deadpeer/keepalive.hpp>
#include <deadpeer/server.hpp>
#include <deadpeer/store.hpp>
#include <deadpeer/timing_wheel.hpp>

#include "arrival_ring.hpp"
#include "metrics.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/json/array.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace deadpeer::detail {

/// Where a live connection is: its loop, its slot there and the slot's generation (a
/// slot is reused; a stale reference never reaches the new occupant).
struct connection_ref {
  std::uint32_t loop = 0;
  std::uint32_t slot = 0;
  std::uint32_t generation = 0;
  friend bool operator==(const connection_ref&, const connection_ref&) = default;
};

/// What the loops share, implemented by the server. Every method is thread-safe.
class loop_host {
 public:
  virtual ~loop_host() = default;
  /// A HELLO that passed the wire's checks: token, capacity, then takeover. On admission
  /// returns nullopt and sets `superseded` to the connection this one replaces, if any.
  virtual std::optional<wire::error> admit(const wire::hello& hello,
                                           const boost::asio::ip::tcp::endpoint& peer,
                                           connection_ref self,
                                           std::optional<connection_ref>& superseded) = 0;
  /// Ends the replaced connection on its own loop (another loop's: a posted task).
  virtual void supersede(connection_ref old) = 0;
  /// An admitted connection is gone: free its place in the registry and the limits.
  virtual void release(const std::string& client_id, const boost::asio::ip::tcp::endpoint& peer,
                       connection_ref self) = 0;
  /// A connection ended and was closed: record it (store, events, counters, callbacks).
  virtual void ended(connection_record record, const connection_end& end) = 0;
  /// DATA from an established client.
  virtual void data(const std::string& client_id, std::span<const std::byte> payload) = 0;
  /// Counters: "accepted", "rejected:REASON", "reaped:REASON".
  virtual void count(std::string_view what) = 0;
  virtual std::uint64_t next_session_id() = 0;
};

/// What a connection is accepted with. A reload (SIGHUP) makes a new one for the
/// connections accepted after it; those accepted before keep theirs (their engines point
/// at its engine_config), so the server keeps every one until it ends.
struct connection_settings {
  engine_config engine;
  std::optional<keepalive_options> keepalive;  ///< nullopt: the system's settings
  std::string keepalive_spec;                  ///< as stored with each connection's end
  std::string detector_description;
};

/// Settings every loop reads (immutable while loops run; a reload reaches a loop as a
/// posted task, see server_loop::accept_with).
struct loop_settings {
  const server_options* options = nullptr;
  const connection_settings* first = nullptr;  ///< what the first connections get
  /// Connections all loops together may hold before newcomers are refused at accept
  /// (the descriptor limit less a reserve for the control API, the store and logs).
  std::size_t descriptor_budget = 0;
  std::atomic<std::size_t>* held = nullptr;  ///< descriptors held by all loops
  /// Connections established by all loops while recording arrivals: every record_sample-th
  /// is recorded (the first included).
  std::atomic<std::uint64_t>* record_candidates = nullptr;
};

/// A recorded live connection's arrivals, copied out of its loop for the control API.
struct arrival_snapshot {
  std::uint64_t session_id = 0;
  std::string client_id;
  std::string peer;
  std::int64_t interval_ms = 0;  ///< 0: heartbeats off
  std::uint64_t seen = 0;        ///< arrivals seen on the connection
  std::size_t count = 0;         ///< of those, kept
  std::uint64_t first = 0;       ///< sequence number of mono_ns[0] (the first arrival is 1)
  std::int64_t origin_ns = 0;    ///< the connection's first arrival
  std::vector<std::int64_t> mono_ns;
};

class server_loop {
 public:
  server_loop(loop_host& host, const loop_settings& settings, std::uint32_t index, int listener);
  ~server_loop();
  server_loop(const server_loop&) = delete;
  server_loop& operator=(const server_loop&) = delete;

  /// The thread body: returns when a stop has closed every connection.
  void run();
  /// Queues `task` for the loop thread. False when the loop has finished (task dropped).
  bool post(std::function<void(server_loop&)> task);

  // Loop thread only (through post).
  /// Stops accepting and closes every connection with BYE going_away; run() returns
  /// when all are closed or `grace` has passed (the rest are then closed at once).
  /// Stops accepting and closes every connection with BYE going_away; what has not closed
  /// `grace` later is cut. Called again (a second signal), it only shortens the grace.
  void begin_stop(std::chrono::milliseconds grace);
  /// Connections accepted from now on get `settings`, which must outlive them.
  void accept_with(const connection_settings& settings);
  void supersede(connection_ref ref);
  /// Sends DATA to the connection; false if it is gone or not established.
  bool send_data(connection_ref ref, std::span<const std::byte> payload);
  boost::json::array connections_json() const;
  /// The recorded live connections (GET /arrivals).
  boost::json::array arrivals_json() const;
  /// The arrivals of the recorded connection `session_id` numbered above `since`, at most
  /// `limit`; nullopt when this loop holds no such recorded connection.
  std::optional<arrival_snapshot> arrivals_of(std::uint64_t session_id, std::uint64_t since,
                                              std::size_t limit) const;
  metrics::histogram rtt_histogram() const { return rtt_histogram_; }
  std::size_t established() const { return established_.load(std::memory_order_relaxed); }
  std::size_t held() const { return live_; }

 private:
  struct connection;
  struct observer;
  enum class phase : std::uint8_t { free, open, draining };

  connection& at(std::uint32_t slot) const;
  std::uint32_t allocate();
  template <typename F>
  void guarded(std::uint32_t slot, F&& handle);
  void accept_ready();
  void refuse_now(int fd, std::string_view text);
  void on_readable(std::uint32_t slot);
  void on_writable(std::uint32_t slot);
  void on_deadline(std::uint32_t slot);
  void after_engine(std::uint32_t slot);
  void run_deferred();
  void flush(std::uint32_t slot);
  bool write_unsent(connection& c);
  void watch(connection& c, std::uint32_t slot);
  void start_close(std::uint32_t slot);
  void finish(std::uint32_t slot);
  void free_slot(std::uint32_t slot);
  void reschedule(std::uint32_t slot);
  void fail(std::uint32_t slot, int error, connection_context::operation op);
  void start_recording(std::uint32_t slot);
  void run_tasks();
  std::uint64_t tag(std::uint32_t slot) const;

  loop_host& host_;
  const loop_settings& settings_;
  std::uint32_t index_;
  int listener_;
  int epoll_ = -1;
  int wake_ = -1;     ///< eventfd for posted tasks
  int reserve_ = -1;  ///< a spare descriptor, given up to answer a newcomer at EMFILE
  timing_wheel wheel_;
  std::vector<std::unique_ptr<connection[]>> chunks_;
  std::uint32_t free_head_;
  std::uint32_t slots_ = 0;
  std::size_t live_ = 0;
  std::atomic<std::size_t> established_{0};
  std::vector<std::byte> read_buffer_;
  engine_output out_;
  std::unique_ptr<observer> observer_;
  std::vector<connection_ref> deferred_supersede_;
  keepalive_settings keepalive_in_force_;
  bool keepalive_known_ = false;
  // What new connections get, and every setting this loop's connections were made with
  // (a handful: one per reload), to name a connection's own at its end.
  const connection_settings* current_;
  std::vector<const connection_settings*> generations_;
  metrics::histogram rtt_histogram_;
  std::unordered_map<std::uint32_t, arrival_ring> recordings_;  ///< by slot; recorded only

  bool stopping_ = false;
  std::int64_t stop_deadline_ns_ = 0;
  std::int64_t last_limit_log_ns_ = 0;
  std::uint64_t refused_since_log_ = 0;

  std::mutex tasks_mutex_;
  std::vector<std::function<void(server_loop&)>> tasks_;
  bool finished_ = false;  ///< guarded by tasks_mutex_
};

}  // namespace deadpeer::detail
