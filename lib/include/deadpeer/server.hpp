// The heartbeat server as a library: an embeddable deadpeer::server that accepts
// heartbeat clients, holds one live session per client id, reaps ghosts, records every
// connection's end in SQLite and serves its state over the HTTP control API.
//
// Threading: everything (acceptor, sessions, reaper, control API) runs on the one
// io_context given, and that io_context must be run by a single thread. Only the store's
// writer has a thread of its own. This keeps the registry free of locks.
//
// Takeover: a HELLO with a client id that is already live supersedes the old session
// (BYE superseded, cause superseded), as MQTT does; with an auth token configured only a
// client that proves it gets in at all, so nobody can kick a client off by reusing its id.
//
// Reaper: each connection has one deadline in a deadline_ring, moved in O(1) whenever
// bytes arrive (last heard + dead_after + one reap interval; the handshake deadline
// before HELLO; "now" when the peer half-closes). The sweep visits only due buckets,
// never every connection. A connection that comes due is examined: still handshaking ->
// ERROR handshake_timeout (the reaper owns this deadline, so a slowloris flood costs no
// timer per connection); kernel state CLOSE_WAIT -> reaped (the peer sent FIN and nobody
// closed); silent while heartbeats are on -> reaped (a backstop: the session's own
// detector normally ends it first). Every reason is counted.
#pragma once

#include <deadpeer/control_api.hpp>
#include <deadpeer/detector.hpp>
#include <deadpeer/keepalive.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace deadpeer {

struct server_options {
  boost::asio::ip::tcp::endpoint listen{boost::asio::ip::make_address("127.0.0.1"), 7700};
  /// HTTP control API address; nullopt: no API.
  std::optional<boost::asio::ip::tcp::endpoint> control =
      boost::asio::ip::tcp::endpoint{boost::asio::ip::make_address("127.0.0.1"), 7701};
  /// SQLite file for connection ends; empty: nothing stored.
  std::string db_path = "deadpeer.db";

  std::optional<keepalive_options> keepalive;
  bool heartbeat = true;  ///< off: no PINGs or detector; kernel detection only
  std::chrono::milliseconds min_interval{100};
  std::chrono::milliseconds max_interval{60000};
  std::chrono::milliseconds default_interval{1000};
  detector_config detector = fixed_detector_config{};
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
  /// Called (on the io_context) with each connection-end event as a JSON object, the same
  /// text GET /events serves. For logging; may be empty.
  std::function<void(const std::string& event_json)> on_event;
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

  boost::asio::ip::tcp::endpoint local_endpoint() const;
  std::optional<boost::asio::ip::tcp::endpoint> control_endpoint() const;
  std::size_t live_connections() const;
  /// Blocks until the store has committed every end recorded so far.
  void flush_store();

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace deadpeer
