// The heartbeat server as a library: an embeddable deadpeer::server that accepts
// heartbeat clients, holds one live session per client id, reaps ghosts, records every
// connection's end in SQLite and serves its state over the HTTP control API.
//
// Threading: `threads` event loops (default: one per core), each a thread with its own
// SO_REUSEPORT listener, epoll set, timing wheel and slab of connections, each driving
// the protocol engine (engine.hpp) for its connections. The io_context given to the
// constructor runs the control API and the completion of stop(); it must be run by one
// thread. The store's writer has a thread of its own. Loops never block on each other,
// the API or the disk: the API asks each loop for a snapshot, the store takes records
// through a queue.
//
// Takeover: a HELLO with a client id that is already live supersedes the old session
// (BYE superseded, cause superseded), as MQTT does. The registry of client ids is shared
// under one lock taken only at admission and at the end of an admitted connection; the
// old session is ended by its own loop (a posted task when that is another loop). With
// an auth token configured only a client that proves it gets in at all, so nobody can
// kick a client off by reusing its id.
//
// Admission follows protocol.md §5: the HELLO's version and id are checked first, then
// the token, then capacity (max_connections, max_per_ip: ERROR server_full).
//
// Ghosts: each connection's engine owns its deadlines (handshake timeout: ERROR
// handshake_timeout, recorded as detected by the reaper; silence: the detector). With
// end_on_eof = false a half-closed peer leaves a CLOSE_WAIT connection that is reaped at
// the next reap_interval tick (cause reaped, detected by reaper).
//
// The descriptor limit: the loops hold at most the process's RLIMIT_NOFILE less a
// reserve, so the control API and the store always have descriptors; a newcomer past
// that is accepted, told ERROR server_full and closed, never left unanswered in the
// accept queue, and the condition is logged once per 10 s.
#pragma once

#include <deadpeer/control_api.hpp>
#include <deadpeer/detector.hpp>
#include <deadpeer/engine.hpp>
#include <deadpeer/keepalive.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace deadpeer {

/// A connection's end as an embedding backend sees it.
struct connection_end {
  session_end end;
  std::string client_id;  ///< empty if the handshake never completed
  boost::asio::ip::tcp::endpoint peer;
  std::uint64_t session_id = 0;
};

/// The largest server_options::record_arrivals: 8 MB of arrivals per recorded connection.
inline constexpr std::size_t max_record_arrivals = 1'000'000;

struct server_options {
  boost::asio::ip::tcp::endpoint listen{boost::asio::ip::make_address("127.0.0.1"), 7700};
  /// HTTP control API address; nullopt: no API.
  std::optional<boost::asio::ip::tcp::endpoint> control =
      boost::asio::ip::tcp::endpoint{boost::asio::ip::make_address("127.0.0.1"), 7701};
  /// Who may use the control API: Host names besides IP addresses and localhost, and a
  /// bearer token (empty: none). See control_access.
  control_access control_api_access;
  /// SQLite file for connection ends; empty: nothing stored.
  std::string db_path = "deadpeer.db";

  std::optional<keepalive_options> keepalive;
  bool heartbeat = true;  ///< off: no PINGs or detector; kernel detection only
  std::chrono::milliseconds min_interval{100};
  std::chrono::milliseconds max_interval{60000};
  std::chrono::milliseconds default_interval{1000};
  detector_config detector = adaptive_detector_config{};  ///< docs/detectors.md
  std::chrono::milliseconds handshake_timeout{5000};
  std::chrono::milliseconds reap_interval{1000};
  /// A FIN without BYE: true ends the connection at once (peer_closed, detected by eof:
  /// how a crash is noticed within a round trip); false treats it as a half-close and
  /// leaves the CLOSE_WAIT connection to the reaper (reaped, detected by reaper).
  bool end_on_eof = true;
  std::size_t max_connections = 10000;
  std::size_t max_per_ip = 1000;
  std::string auth_token;              ///< empty: no authentication
  std::size_t event_history = 100000;  ///< connection ends kept for GET /events
  /// Heartbeat arrival traces, to tune a failure detector on real links (probe qos
  /// --from-db): a recorded connection keeps the instants of its last `record_arrivals`
  /// reads that brought bytes after the handshake (one per read, as the detectors see them:
  /// any byte is life), served live by GET /arrivals and written to the store's `arrivals`
  /// table with the connection's end. 0: off, and nothing is kept per connection. At most
  /// max_record_arrivals; each kept arrival costs 8 bytes.
  std::size_t record_arrivals = 0;
  /// Record one established connection in `record_sample` (1: all), counted over every
  /// loop: the 1st, the (K+1)th, ... Must be at least 1.
  std::size_t record_sample = 1;
  /// Event loops (threads); 0: one per core.
  unsigned threads = 0;
  /// Let other processes listen on the same port (SO_REUSEPORT), to hold more connections
  /// than one process's descriptor limit allows. The loops of one server always share.
  bool reuse_port = false;
  /// Graceful close: how long and how much we read and discard waiting for the peer's FIN.
  std::chrono::milliseconds close_drain_time{2000};
  std::size_t close_drain_bytes = 16 * 1024 * 1024;
  /// Called (on the io_context) with each connection-end event as a JSON object, the same
  /// text GET /events serves. For logging; may be empty.
  std::function<void(const std::string& event_json)> on_event;
  /// Called on the connection's event loop thread when a connection has ended and is
  /// closed; different loops may call it at the same time. Must not block. May be empty.
  std::function<void(const connection_end&)> on_end;
  /// Called on the connection's event loop thread with each DATA payload from a client;
  /// different loops may call it at the same time. Must not block. May be empty.
  std::function<void(const std::string& client_id, std::span<const std::byte> payload)> on_data;
};

/// Checks option values; throws config_error naming the bad one.
void validate(const server_options& options);

class server {
 public:
  /// Binds the listener and control API, opens the store. Throws config_error for bad
  /// options, store_error for the database, boost::system::system_error for addresses.
  server(boost::asio::io_context& io, server_options options);
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  void start();
  /// Stops accepting, ends every session with BYE going_away, stops the API, flushes the
  /// store, then calls `done` (on the io_context).
  void stop(std::function<void()> done = {});
  /// After stop(): cut the graceful close short (a second signal). Every connection still
  /// open is closed now and recorded; the store is still flushed before `done`.
  void hurry_stop();
  /// Applies `next` where it can while connections live (a reload): limits, the auth
  /// token, and for connections accepted from now on keepalive, detector, intervals and
  /// handshake timeout; connections already open keep theirs. Returns what changed, one
  /// line each, including what differs but needs a restart (addresses, database, threads,
  /// heartbeat on/off, arrival recording). Throws config_error (nothing applied) for bad
  /// values. Call it on the io_context's thread (a signal handler, a posted task).
  std::vector<std::string> reconfigure(const server_options& next);
  /// Connection ends that will never be in the database (written off at shutdown after
  /// the disk refused them, or refused by SQLite one by one).
  std::uint64_t records_not_written() const;

  boost::asio::ip::tcp::endpoint local_endpoint() const;
  std::optional<boost::asio::ip::tcp::endpoint> control_endpoint() const;
  /// Connections held (handshaking, established or closing), all loops together.
  std::size_t live_connections() const;
  /// The number of event loops.
  unsigned threads() const;
  /// Sends DATA to the live session of `client_id`, from any thread. False when no such
  /// session is live (the payload is dropped). Throws std::length_error past the frame limit.
  bool send(const std::string& client_id, std::vector<std::byte> payload);
  /// Blocks until the store has committed every end recorded so far.
  void flush_store();

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace deadpeer
