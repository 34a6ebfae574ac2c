// The engine of `probe load`: many heartbeating clients held by one process, to measure
// what a server pays per idle connection. It decides how the clients behave (ramp, PING
// timing, reconnect storm, graceful close) and what is counted; the command decides how
// many processes run it and what is done with the numbers.
//
// One epoll loop drives every connection: non-blocking sockets, a flat vector of small
// records and one min-heap of deadlines (stale entries are skipped when popped), so
// ~19k connections cost a few MB and no thread, coroutine or timer object each. Timing
// follows docs/protocol.md §6 (a PING when nothing was sent for a wait drawn from
// [0.9 I, 1.1 I]) with two limits that keep a lagging server from being punished for
// its own queue: at most one PING outstanding, and none sooner than 0.55 I after the
// last PONG, so the server never sees two PINGs less than I/2 apart (ping strikes).
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/json/object.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace probe::load {

enum class protocol { deadpeer, mqtt };
std::string_view to_string(protocol p);

/// True for 127.0.0.0/8, ::1 and ::ffff:127.x.y.z: the only targets probe load talks to.
bool is_loopback(const boost::asio::ip::address& address);

/// IPv4 addresses, host byte order, from "A-B" ranges and single addresses separated by
/// commas ("127.0.1.1-127.0.1.8,127.0.2.1"). Every address must lie in 127.0.0.0/8.
/// Throws deadpeer::config_error quoting the input otherwise.
std::vector<std::uint32_t> parse_source_addresses(std::string_view text);
std::string format_ipv4(std::uint32_t host_order);

/// Round-trip times on a log scale (2% wide buckets), so percentiles from several
/// processes merge exactly as if one process had seen every sample.
class rtt_histogram {
 public:
  void add(std::int64_t rtt_ns);
  void merge(const rtt_histogram& other);
  std::uint64_t samples() const { return samples_; }
  double max_ms() const { return static_cast<double>(max_ns_) / 1e6; }
  /// The q-quantile (0..1) in milliseconds, within 1%; 0 without samples.
  double quantile_ms(double q) const;
  boost::json::object to_json() const;
  static rtt_histogram from_json(const boost::json::object& o);

 private:
  static constexpr std::size_t bucket_count = 1200;
  std::vector<std::uint64_t> buckets_ = std::vector<std::uint64_t>(bucket_count);
  std::uint64_t samples_ = 0;
  std::int64_t max_ns_ = 0;
};

struct engine_config {
  boost::asio::ip::tcp::endpoint server;
  protocol proto = protocol::deadpeer;
  std::size_t connections = 0;
  std::size_t first_index = 0;  ///< client ids are id_prefix + (first_index + i)
  std::string id_prefix = "load-";
  std::chrono::milliseconds interval{10'000};
  double ramp_per_s = 2000;
  double storm_per_s = 0;
  /// The storm burst: when the storm starts, this many established clients are dropped at
  /// once (reset, no BYE) and each connects again at an instant drawn uniformly from
  /// [0, burst_window] after the drop, without the handshake cap: clients that all lost
  /// their connection together do not queue for each other.
  std::size_t burst = 0;
  std::chrono::milliseconds burst_window{0};
  std::vector<std::uint32_t> source_addresses;  ///< bound round-robin before connect
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds handshake_timeout{5000};
  std::chrono::milliseconds close_timeout{3000};  ///< graceful close bound (protocol §8.1: 2 s)
  std::size_t max_handshakes_in_flight = 512;
  std::int64_t hard_deadline_ns =
      0;  ///< monotonic; past it every socket is reset and run() returns
};

/// What one process saw; merge() adds another process's.
struct process_result {
  std::uint64_t requested = 0;
  std::uint64_t attempts = 0;     ///< sockets opened, storm reconnects included
  std::uint64_t established = 0;  ///< first-time handshakes completed
  std::uint64_t established_in_ramp = 0;
  std::int64_t ramp_start_ns = 0;
  std::int64_t ramp_end_ns = 0;
  std::uint64_t storm_disconnects = 0;
  std::uint64_t reconnects = 0;         ///< storm reconnects that completed the handshake
  std::uint64_t burst_dropped = 0;      ///< clients the storm burst dropped at once
  std::uint64_t burst_back = 0;         ///< of which connected again (handshake completed)
  std::int64_t burst_start_ns = 0;      ///< the drop (monotonic); 0: no burst
  std::int64_t burst_last_back_ns = 0;  ///< the last of them back
  /// Burst reconnects that failed, by cause.
  std::map<std::string, std::uint64_t> burst_failures;
  std::uint64_t held_at_end = 0;        ///< established when the hold ended
  std::uint64_t closed_gracefully = 0;  ///< BYE/DISCONNECT, then the server's FIN in time
  std::uint64_t close_timeouts = 0;     ///< reset after the close bound
  std::uint64_t pings_sent = 0;
  std::uint64_t pongs_received = 0;
  std::uint64_t server_pings_answered = 0;
  std::map<std::string, std::uint64_t> handshake_failures;  ///< by errno name or reason
  std::map<std::string, std::uint64_t> verdicts;            ///< ERROR code, BYE reason, eof, errno
  rtt_histogram rtt;
  bool deadline_hit = false;

  std::uint64_t handshake_failures_total() const;
  std::uint64_t verdicts_total() const;
  /// Burst reconnects completed per second from the drop to the last one back; 0 if none.
  double burst_rate_per_s() const;
  /// From the drop until every dropped client was back, in ms; -1 if some never came back.
  double burst_all_back_ms() const;
  /// Connections established per second during the ramp; 0 if it took no time.
  double handshake_rate_per_s() const;
  void merge(const process_result& other);
  boost::json::object to_json() const;
  static process_result from_json(const boost::json::object& o);
};

/// A live view for progress lines and the coordinator's decisions.
struct progress {
  std::uint64_t opened = 0;       ///< initial connections attempted so far
  std::uint64_t established = 0;  ///< first-time handshakes completed
  std::uint64_t held = 0;         ///< established right now
  std::uint64_t failed = 0;       ///< handshake failures so far
  std::uint64_t verdicts = 0;
  std::uint64_t pongs = 0;
  bool ramp_finished = false;
};

class engine {
 public:
  explicit engine(engine_config config);
  ~engine();
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  /// Calls `on_readable` from run() whenever `fd` is readable (a command pipe, a signalfd).
  void watch(int fd, std::function<void()> on_readable);
  /// Called from run() once, when every initial connection has been established or failed.
  void on_ramp_finished(std::function<void(const progress&, std::int64_t now_ns)> f);
  /// Called from run() about every 100 ms.
  void on_tick(std::function<void(const progress&, std::int64_t now_ns)> f);

  /// Starts reconnecting storm_per_s clients per second (abortive close, same id at once).
  void start_storm();
  /// Ends the hold: every established client says goodbye and closes gracefully; run()
  /// returns when all are closed or close_timeout has passed.
  void stop();

  /// Runs the ramp, the hold and the close. Throws std::system_error if epoll fails.
  process_result run();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// The server's resource use from /proc/PID, for per-connection costs.
struct server_sample {
  bool valid = false;
  std::int64_t mono_ns = 0;
  std::int64_t rss_kb = 0;
  std::int64_t private_dirty_kb = 0;  ///< smaps_rollup: user-space memory the process wrote
  std::int64_t cpu_ticks = 0;         ///< utime + stime, in clock ticks
  std::int64_t fds = 0;
  boost::json::object to_json() const;
};
/// Reads /proc/PID; valid = false if the process is gone or unreadable.
server_sample sample_server(int pid);
/// CPU used between two samples as % of one core.
double cpu_percent(const server_sample& from, const server_sample& to);

}  // namespace probe::load
