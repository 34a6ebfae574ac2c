// The control API's decisions: what it serves, how strictly it reads requests, and how a
// long-poll waits. Everything (acceptor, connections, long-poll waiters, every call into the
// control_source) runs on one strand of the given executor: the API is a small loopback
// service, so one strand costs nothing and lets the connection list and the waiters go
// without locks. The one lock guards the source pointer, so that after stop() returns, from
// any thread, the source is never called again and its owner may destroy it.
//
// Requests are read strictly (8 KiB of header, 1 KiB of body, 10 s to arrive in full, the
// idle time between keep-alive requests included) so a slow or hostile client cannot hold a
// connection or memory; a parse error is answered 400 and the connection is closed, since
// the byte stream cannot be resynchronised. Query parameters are exact non-negative
// integers; anything else is a 400 that names the parameter, never a silent default.
// Responses are bounded as well: /events returns at most 1000 events and /arrivals at most
// 10000 arrival times, each with a `next` to ask again from (since=NEXT).
//
// Long-polls: the API keeps at most one on_next_event registration outstanding and fans
// the notification out to every waiting request itself, so the source's callback list stays
// bounded however many clients poll how often. A waiting request also watches its socket
// and gives up when the client goes away (EOF or error), as nginx does.
#include <deadpeer/control_api.hpp>
#include <deadpeer/log.hpp>

#include "constant_time.hpp"
#include "dashboard_page.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <exception>
#include <iostream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string_view>
#include <type_traits>
#include <utility>

namespace deadpeer {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using namespace asio::experimental::awaitable_operators;
using asio::ip::tcp;
using std::chrono::steady_clock;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

constexpr auto read_timeout = std::chrono::seconds(10);   // one whole request, idle included
constexpr auto write_timeout = std::chrono::seconds(10);  // one whole response
constexpr auto linger_timeout = std::chrono::seconds(1);  // draining before a graceful close
constexpr std::size_t linger_max_bytes = 64 * 1024;
constexpr std::uint32_t max_header_bytes = 8 * 1024;
constexpr std::uint64_t max_body_bytes = 1024;
constexpr std::size_t max_buffer_bytes = 16 * 1024;
constexpr std::uint64_t max_wait_ms = 60000;
constexpr std::size_t max_events = 1000;
constexpr std::size_t max_arrival_times = 10000;  // per GET /arrivals?session_id= response
constexpr std::string_view json_type = "application/json";
constexpr std::string_view metrics_type = "text/plain; version=0.0.4; charset=utf-8";
constexpr std::string_view html_type = "text/html; charset=utf-8";
// The page may run its own inline script and style and talk to this API, nothing else.
constexpr std::string_view page_policy =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

using request = http::request<http::string_body>;
using response = http::response<http::string_body>;

void log_exception(std::string_view what, const std::exception_ptr& e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    log_line(log_level::error) << "deadpeer control_api: " << what
                               << ": unexpected exception: " << x.what();
  } catch (...) {
    log_line(log_level::error) << "deadpeer control_api: " << what << ": unexpected exception";
  }
}

// Client bytes echoed in an error message: printable ASCII only and short, so the JSON is
// valid UTF-8 whatever the client sent.
std::string printable(std::string_view raw) {
  constexpr std::size_t max_echo = 100;
  std::string out;
  for (const char c : raw.substr(0, max_echo))
    out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (raw.size() > max_echo) out += "...";
  return out;
}

std::string error_json(std::string_view message) {
  return boost::json::serialize(boost::json::object{{"error", message}});
}

response make_response(http::status status, std::string_view content_type, std::string body,
                       unsigned version, bool keep_alive) {
  response res{status, version};
  res.set(http::field::server, "deadpeer");
  res.set(http::field::content_type, content_type);
  res.set(http::field::cache_control, "no-store");
  res.keep_alive(keep_alive);
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

response make_error(http::status status, std::string_view message, unsigned version,
                    bool keep_alive) {
  return make_response(status, json_type, error_json(message), version, keep_alive);
}

enum class route { page, status, connections, metrics, events, arrivals };

std::optional<route> route_for(std::string_view path) {
  if (path == "/") return route::page;
  if (path == "/status") return route::status;
  if (path == "/connections") return route::connections;
  if (path == "/metrics") return route::metrics;
  if (path == "/events") return route::events;
  if (path == "/arrivals") return route::arrivals;
  return std::nullopt;
}

struct route_query {
  std::uint64_t since = 0;                  ///< /events, /arrivals
  std::uint64_t wait_ms = 0;                ///< /events
  std::optional<std::uint64_t> session_id;  ///< /arrivals: one connection's times
};

// Parses the query of a known route; returns the 400 message on error.
std::optional<std::string> parse_query(std::string_view query, route r, route_query& out) {
  bool seen_since = false;
  bool seen_wait = false;
  bool seen_session = false;
  while (!query.empty()) {
    const auto amp = query.find('&');
    const auto item = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    const auto eq = item.find('=');
    const auto name = item.substr(0, eq);
    const bool has_value = eq != std::string_view::npos;
    const auto value = has_value ? item.substr(eq + 1) : std::string_view{};
    const bool is_since = (r == route::events || r == route::arrivals) && name == "since";
    const bool is_wait = r == route::events && name == "wait";
    const bool is_session = r == route::arrivals && name == "session_id";
    if (!is_since && !is_wait && !is_session) {
      if (name.empty()) return std::string("malformed query: empty parameter name");
      return "unknown parameter: " + printable(name);
    }
    bool& seen = is_since ? seen_since : is_wait ? seen_wait : seen_session;
    if (seen) return std::string(name) + " given more than once";
    seen = true;
    const bool digits_only = !value.empty() && std::all_of(value.begin(), value.end(), [](char c) {
      return c >= '0' && c <= '9';
    });
    std::uint64_t number = 0;
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), number);
    if (!digits_only || ec != std::errc{} || end != value.data() + value.size()) {
      if (digits_only) return std::string(name) + " is out of range: " + printable(value);
      return std::string(name) + " must be a non-negative integer, got \"" + printable(value) +
             "\"";
    }
    if (is_session)
      out.session_id = number;
    else
      (is_since ? out.since : out.wait_ms) = number;
  }
  if (r == route::arrivals && seen_since && !seen_session)
    return std::string("since needs session_id (it pages through one connection's arrivals)");
  out.wait_ms = std::min(out.wait_ms, max_wait_ms);
  return std::nullopt;
}

std::string events_body(const std::vector<control_event>& events, std::uint64_t since) {
  std::string body = "{\"events\":[";
  for (std::size_t i = 0; i < events.size(); ++i) {
    if (i != 0) body += ',';
    body += events[i].json;  // the source's JSON, spliced verbatim
  }
  body += "],\"next\":";
  body += std::to_string(events.empty() ? since : events.back().id);
  body += '}';
  return body;
}

// The status for a read error that deserves an answer; nullopt: just close.
std::optional<http::status> status_for_read_error(const beast::error_code& ec) {
  if (ec.category() != http::make_error_code(http::error::end_of_stream).category())
    return std::nullopt;  // socket error, timeout, cancellation
  if (ec == http::error::end_of_stream || ec == http::error::partial_message) return std::nullopt;
  if (ec == http::error::header_limit) return http::status::request_header_fields_too_large;
  if (ec == http::error::body_limit) return http::status::payload_too_large;
  return http::status::bad_request;
}

struct connection {
  explicit connection(tcp::socket socket) : stream(std::move(socket)) {}
  beast::tcp_stream stream;
};

// One waiting long-poll. Waking moves the expiry to the past rather than cancelling, so a
// wake that lands before the wait is issued is not lost.
struct poll_waiter {
  explicit poll_waiter(const asio::any_io_executor& executor) : timer(executor) {}
  void wake() {
    woken = true;
    timer.expires_at(steady_clock::time_point::min());
  }
  asio::steady_timer timer;
  bool woken = false;
};

// Why a request may not be answered (403 or 401), or nullopt.
// The page (GET /) holds no data, so it needs no token: its script sends the one in the
// address's fragment with every request.
std::optional<std::pair<http::status, std::string>> refusal(const request& req,
                                                            const control_access& access,
                                                            bool needs_token) {
  const auto host = req.find(http::field::host);
  if (host == req.end()) {
    // Browsers always send Host; HTTP/1.1 requires it.
    if (req.version() >= 11)
      return std::pair{http::status::bad_request, std::string("HTTP/1.1 request without Host")};
  } else if (!host_allowed(host->value(), access)) {
    return std::pair{http::status::forbidden,
                     "Host \"" + printable(host->value()) +
                         "\" is not this API's: ask by IP address or localhost, or start the "
                         "server with --control-host NAME to allow that name"};
  }
  if (access.bearer_token.empty() || !needs_token) return std::nullopt;
  const auto given = req.find(http::field::authorization);
  constexpr std::string_view scheme = "Bearer ";
  if (given == req.end() || !given->value().starts_with(scheme) ||
      !detail::same_secret(given->value().substr(scheme.size()), access.bearer_token))
    return std::pair{http::status::unauthorized,
                     std::string("this API needs \"Authorization: Bearer TOKEN\" (the server's "
                                 "--control-token-file)")};
  return std::nullopt;
}

}  // namespace

struct control_api::impl : std::enable_shared_from_this<impl> {
  impl(asio::any_io_executor executor, const tcp::endpoint& listen, control_source& source,
       control_access access)
      : strand_(asio::make_strand(executor)),
        acceptor_(strand_),
        source_(&source),
        access_(std::move(access)) {
    beast::error_code ec;
    auto fail = [&](const char* what) {
      std::ostringstream where;
      where << "control API: cannot " << what << " " << listen;
      throw boost::system::system_error(ec, where.str());
    };
    if (acceptor_.open(listen.protocol(), ec)) fail("open a socket for");
    if (acceptor_.set_option(asio::socket_base::reuse_address(true), ec)) fail("configure");
    if (acceptor_.bind(listen, ec)) fail("bind");
    if (acceptor_.listen(asio::socket_base::max_listen_connections, ec)) fail("listen on");
    local_ = acceptor_.local_endpoint(ec);
    if (ec) fail("read the address of");
  }

  void start() {
    if (stopped_ || started_.exchange(true)) return;
    asio::co_spawn(strand_, accept_loop(shared_from_this()),
                   [](const std::exception_ptr& e) { log_exception("accept loop", e); });
  }

  void stop() {
    if (stopped_.exchange(true)) return;
    {
      const std::lock_guard lock(source_mutex_);
      source_ = nullptr;
    }
    asio::dispatch(strand_, [self = shared_from_this()] { self->close_all(); });
  }

  // On the strand.
  void close_all() {
    beast::error_code ignored;
    acceptor_.close(ignored);
    for (const auto& weak : connections_)
      if (const auto c = weak.lock()) c->stream.close();
    connections_.clear();
    wake_waiters();
  }

  void wake_waiters() {
    for (const auto& weak : waiters_)
      if (const auto w = weak.lock()) w->wake();
    waiters_.clear();
  }

  // Calls the source under the lock; nullopt once stopped.
  template <class F>
  auto call_source(F&& f) -> std::optional<std::invoke_result_t<F, control_source&>> {
    const std::lock_guard lock(source_mutex_);
    if (source_ == nullptr) return std::nullopt;
    return std::forward<F>(f)(*source_);
  }

  // Registers for the next event unless a registration is already outstanding; false once
  // stopped. The callback may run on any thread: it only posts onto the strand.
  bool arm() {
    if (armed_) return true;
    const std::lock_guard lock(source_mutex_);
    if (source_ == nullptr) return false;
    armed_ = true;
    try {
      source_->on_next_event([weak = weak_from_this()] {
        if (const auto self = weak.lock())
          asio::post(self->strand_, [self] {
            self->armed_ = false;
            self->wake_waiters();
          });
      });
    } catch (...) {
      armed_ = false;
      throw;
    }
    return true;
  }

  static asio::awaitable<void> accept_loop(std::shared_ptr<impl> self) {
    asio::steady_timer backoff(self->strand_);
    while (!self->stopped_) {
      auto [ec, socket] = co_await self->acceptor_.async_accept(use_tuple);
      if (self->stopped_ || ec == asio::error::operation_aborted) co_return;
      if (ec) {
        // Out of descriptors and the like: say so and retry a little later, not in a spin.
        if (ec != asio::error::connection_aborted)
          log_line(log_level::warning) << "deadpeer control_api: accept: " << ec.message();
        backoff.expires_after(std::chrono::milliseconds(100));
        co_await backoff.async_wait(use_tuple);
        continue;
      }
      auto conn = std::make_shared<connection>(std::move(socket));
      std::erase_if(self->connections_, [](const auto& w) { return w.expired(); });
      self->connections_.push_back(conn);
      asio::co_spawn(self->strand_, serve(self, std::move(conn)),
                     [](const std::exception_ptr& e) { log_exception("connection", e); });
    }
  }

  static asio::awaitable<void> serve(std::shared_ptr<impl> self, std::shared_ptr<connection> c) {
    beast::flat_buffer buffer(max_buffer_bytes);
    while (!self->stopped_) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(max_header_bytes);
      parser.body_limit(max_body_bytes);
      c->stream.expires_after(read_timeout);
      const auto [ec, n] = co_await http::async_read(c->stream, buffer, parser, use_tuple);
      if (self->stopped_) break;
      if (ec) {
        if (const auto status = status_for_read_error(ec)) {
          auto res = make_error(*status, "bad request: " + ec.message(), 11, false);
          if (co_await write(c, res) && !self->stopped_) co_await close_gracefully(c);
        }
        break;
      }
      const request req = parser.release();
      auto res = co_await respond(self, c, req);
      if (!res || self->stopped_) break;  // stopped, or the long-poll's client went away
      if (!co_await write(c, *res) || self->stopped_) break;
      if (!res->keep_alive()) {
        co_await close_gracefully(c);
        break;
      }
    }
    c->stream.close();
  }

  static asio::awaitable<bool> write(const std::shared_ptr<connection>& c, response& res) {
    c->stream.expires_after(write_timeout);
    const auto [ec, n] = co_await http::async_write(c->stream, res, use_tuple);
    co_return !ec;
  }

  // Half-closes, then drains what the client still sends for a moment, so that closing with
  // unread data does not turn into a RST that destroys the response in flight.
  static asio::awaitable<void> close_gracefully(const std::shared_ptr<connection>& c) {
    beast::error_code ignored;
    c->stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
    c->stream.expires_after(linger_timeout);
    std::array<char, 4096> scratch{};
    std::size_t drained = 0;
    while (drained < linger_max_bytes) {
      const auto [ec, n] = co_await c->stream.async_read_some(asio::buffer(scratch), use_tuple);
      if (ec) break;
      drained += n;
    }
    c->stream.close();
  }

  // The response to a complete request; nullopt means close without one.
  static asio::awaitable<std::optional<response>> respond(std::shared_ptr<impl> self,
                                                          std::shared_ptr<connection> c,
                                                          const request& req) {
    const unsigned version = req.version();
    const bool keep_alive = req.keep_alive();
    const std::string_view target = req.target();
    const auto question = target.find('?');
    const auto path = target.substr(0, question);
    const auto query =
        question == std::string_view::npos ? std::string_view{} : target.substr(question + 1);

    if (auto refused = refusal(req, self->access_, path != "/")) {
      auto res = make_error(refused->first, refused->second, version, keep_alive);
      if (refused->first == http::status::unauthorized)
        res.set(http::field::www_authenticate, "Bearer");
      co_return res;
    }
    const auto r = route_for(path);
    if (!r)
      co_return make_error(http::status::not_found, "no such path: " + printable(path), version,
                           keep_alive);
    if (req.method() != http::verb::get) {
      auto res =
          make_error(http::status::method_not_allowed,
                     "method not allowed: " + printable(req.method_string()), version, keep_alive);
      res.set(http::field::allow, "GET");
      co_return res;
    }
    route_query q;
    if (const auto bad = parse_query(query, *r, q))
      co_return make_error(http::status::bad_request, *bad, version, keep_alive);

    std::optional<std::string> body;
    std::string_view type = json_type;
    try {
      switch (*r) {
        case route::page:
          body = std::string(detail::dashboard_page);
          type = html_type;
          break;
        case route::status:
          body = self->call_source([](control_source& s) { return s.status_json(); });
          break;
        case route::connections:
          body = self->call_source([](control_source& s) { return s.connections_json(); });
          break;
        case route::metrics:
          body = self->call_source([](control_source& s) { return s.metrics_text(); });
          type = metrics_type;
          break;
        case route::events:
          if (auto events = co_await wait_for_events(self, c, q))
            body = events_body(*events, q.since);
          break;
        case route::arrivals:
          if (!q.session_id) {
            body = self->call_source([](control_source& s) { return s.arrivals_json(); });
            break;
          }
          if (auto times = self->call_source([&](control_source& s) {
                return s.arrival_times_json(*q.session_id, q.since, max_arrival_times);
              })) {
            if (!*times)
              co_return make_error(
                  http::status::not_found,
                  "no recorded live connection has session_id " + std::to_string(*q.session_id),
                  version, keep_alive);
            body = std::move(**times);
          }
          break;
      }
    } catch (const std::exception& e) {
      log_line(log_level::error) << "deadpeer control_api: " << path
                                 << ": source failed: " << e.what();
      co_return make_error(http::status::internal_server_error,
                           std::string("source failed: ") + e.what(), version, keep_alive);
    }
    if (!body) co_return std::nullopt;
    auto res = make_response(http::status::ok, type, std::move(*body), version, keep_alive);
    if (*r == route::page) {
      res.set("Content-Security-Policy", page_policy);
      res.set(http::field::x_frame_options, "DENY");
    }
    co_return res;
  }

  // Events after q.since, waiting up to q.wait_ms for the first; nullopt when stopped or
  // when the client went away.
  static asio::awaitable<std::optional<std::vector<control_event>>> wait_for_events(
      std::shared_ptr<impl> self, std::shared_ptr<connection> c, route_query q) {
    const auto deadline = steady_clock::now() + std::chrono::milliseconds(q.wait_ms);
    const auto fetch = [&] {
      return self->call_source(
          [&](control_source& s) { return s.events_since(q.since, max_events); });
    };
    auto events = fetch();
    while (events && events->empty() && steady_clock::now() < deadline) {
      // Register first, then look again: an event appended in between is not missed.
      if (!self->arm()) co_return std::nullopt;
      events = fetch();
      if (!events || !events->empty()) break;
      auto waiter = std::make_shared<poll_waiter>(self->strand_);
      waiter->timer.expires_at(deadline);
      std::erase_if(self->waiters_, [](const auto& w) { return w.expired(); });
      self->waiters_.push_back(waiter);
      c->stream.expires_never();
      if (!co_await wait_or_client_gone(*waiter, c->stream.socket()) || self->stopped_)
        co_return std::nullopt;
      events = fetch();
    }
    co_return events;
  }

  // Waits for the waiter's timer (deadline or wake); false if the client went away first.
  static asio::awaitable<bool> wait_or_client_gone(poll_waiter& waiter, tcp::socket& socket) {
    bool watch = true;
    while (!waiter.woken) {
      if (!watch) {
        co_await waiter.timer.async_wait(use_tuple);
        co_return true;
      }
      const auto result = co_await (waiter.timer.async_wait(use_tuple) ||
                                    socket.async_wait(tcp::socket::wait_read, use_tuple));
      if (result.index() == 0) co_return true;
      if (std::get<0>(std::get<1>(result))) co_return false;
      char byte = 0;
      const auto n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n > 0)
        watch = false;  // a pipelined request: the client is there; stop watching
      else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        co_return false;
    }
    co_return true;
  }

  asio::strand<asio::any_io_executor> strand_;
  tcp::acceptor acceptor_;
  tcp::endpoint local_;
  std::atomic<bool> started_{false};
  std::atomic<bool> stopped_{false};
  std::mutex source_mutex_;
  control_source* source_;  // guarded by source_mutex_; null once stopped
  const control_access access_;
  // The rest is touched on the strand only.
  bool armed_ = false;
  std::vector<std::weak_ptr<connection>> connections_;
  std::vector<std::weak_ptr<poll_waiter>> waiters_;
};

control_api::control_api(asio::any_io_executor executor, tcp::endpoint listen,
                         control_source& source, control_access access)
    : impl_(std::make_shared<impl>(std::move(executor), listen, source, std::move(access))) {}

control_api::~control_api() {
  impl_->stop();
}

void control_api::start() {
  impl_->start();
}

void control_api::stop() {
  impl_->stop();
}

tcp::endpoint control_api::local_endpoint() const {
  return impl_->local_;
}

}  // namespace deadpeer
