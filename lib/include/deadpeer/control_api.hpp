// The heartbeat-server's HTTP control API (Boost.Beast), loopback by default. It knows
// nothing about sessions: it asks a control_source for JSON and metrics text and for
// connection-end events, so it can be tested against a fake source and reused by any
// embedding server.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace deadpeer {

/// One connection-end event as served by GET /events.
struct control_event {
  std::uint64_t id = 0;  ///< increasing from 1; /events?since=ID returns ids > ID
  std::string json;      ///< the event as a JSON object
};

/// What the control API serves. Called on the API's executor (the server's strand).
class control_source {
 public:
  virtual ~control_source() = default;
  /// GET /status body (JSON object).
  virtual std::string status_json() = 0;
  /// GET /connections body (JSON array).
  virtual std::string connections_json() = 0;
  /// GET /metrics body, Prometheus text exposition format 0.0.4.
  virtual std::string metrics_text() = 0;
  /// Events with id > since, oldest first, at most `limit`.
  virtual std::vector<control_event> events_since(std::uint64_t since, std::size_t limit) = 0;
  /// Calls `notify` once, the next time an event is appended (used for long-polls).
  /// Must be cheap; the API calls it once per waiting request.
  virtual void on_next_event(std::function<void()> notify) = 0;
  /// GET /arrivals body (JSON object): the live connections whose heartbeat arrivals are
  /// recorded. The default says that nothing is recorded.
  virtual std::string arrivals_json() {
    return R"({"record_arrivals":0,"record_sample":1,"connections":[]})";
  }
  /// GET /arrivals?session_id=ID&since=SEQ body (JSON object): the arrivals of that recorded
  /// live connection numbered above `since`, at most `limit`; nullopt when no recorded live
  /// connection has that session id (404). The default records nothing.
  virtual std::optional<std::string> arrival_times_json(std::uint64_t /*session_id*/,
                                                        std::uint64_t /*since*/,
                                                        std::size_t /*limit*/) {
    return std::nullopt;
  }
};

/// Who may ask. The API serves client ids and peer addresses, so a request is answered
/// only when its Host header names this host the way a person or a scraper would (an IP
/// address, "localhost", or a name listed here): a web page that rebinds its own DNS name
/// to 127.0.0.1 (DNS rebinding) sends its own name and is refused with 403. With a token,
/// every request must also carry "Authorization: Bearer TOKEN" (else 401).
struct control_access {
  std::vector<std::string> host_names;  ///< names besides IP addresses and localhost
  std::string bearer_token;             ///< empty: no token asked
};

/// Whether a Host header value ("name", "name:port", "1.2.3.4:80", "[::1]:7701") passes
/// `access`: an IP literal, localhost, or one of its names (any case, any port).
bool host_allowed(std::string_view host_header, const control_access& access);

/// The HTTP listener. Routes:
///   GET /                         (the live view: one HTML page that polls the routes below)
///   GET /status, GET /connections, GET /metrics,
///   GET /events?since=ID&wait=MS  (long-poll: returns at once if events exist, else waits
///                                  up to MS, at most 60000, for the next one)
///   GET /arrivals                 (the live connections whose arrivals are recorded)
///   GET /arrivals?session_id=ID&since=SEQ  (that connection's arrival times, in ms from its
///                                  first arrival, numbered above SEQ, at most 10000)
/// Unknown paths: 404; bad parameters or methods: 400/405; bodies of errors are JSON
/// {"error": "..."}.
class control_api {
 public:
  /// Binds immediately (throws boost::system::system_error with the address on failure).
  control_api(boost::asio::any_io_executor executor, boost::asio::ip::tcp::endpoint listen,
              control_source& source, control_access access = {});
  ~control_api();
  control_api(const control_api&) = delete;
  control_api& operator=(const control_api&) = delete;

  /// Starts accepting.
  void start();
  /// Stops accepting and closes open connections.
  void stop();
  boost::asio::ip::tcp::endpoint local_endpoint() const;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace deadpeer
