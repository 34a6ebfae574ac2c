#include <deadpeer/control_api.hpp>

#include <catch2/catch.hpp>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using namespace deadpeer;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using std::chrono::steady_clock;

namespace {

constexpr auto wait_limit = 5s;  // every wait is bounded; tests normally take milliseconds

const std::string status_body = R"({"state":"running","sessions":2})";
const std::string connections_body = R"([{"id":1,"peer":"127.0.0.1:5000"}])";
const std::string metrics_body =
    "# TYPE deadpeer_sessions gauge\n"
    "deadpeer_sessions 2\n";

// The API's source, driven by the test thread; the API calls it on its io thread.
class fake_source : public control_source {
 public:
  std::string status_json() override { return status_body; }
  std::string connections_json() override {
    ++connections_calls_;
    return connections_body;
  }
  int connections_calls() const { return connections_calls_.load(); }
  std::string metrics_text() override { return metrics_body; }

  std::vector<control_event> events_since(std::uint64_t since, std::size_t limit) override {
    const std::lock_guard lock(mutex_);
    ++queries_;
    changed_.notify_all();
    std::vector<control_event> out;
    for (const auto& e : events_)
      if (e.id > since && out.size() < limit) out.push_back(e);
    return out;
  }

  // Session 7 is the one recorded connection; the arguments of the last call are kept.
  std::optional<std::string> arrival_times_json(std::uint64_t session_id, std::uint64_t since,
                                                std::size_t limit) override {
    const std::lock_guard lock(mutex_);
    last_arrivals_query_ = {session_id, since, limit};
    if (session_id != 7) return std::nullopt;
    return R"({"session_id":7,"times_ms":[0.000,1000.250]})";
  }
  std::array<std::uint64_t, 3> last_arrivals_query() {
    const std::lock_guard lock(mutex_);
    return last_arrivals_query_;
  }

  void on_next_event(std::function<void()> notify) override {
    const std::lock_guard lock(mutex_);
    notify_.push_back(std::move(notify));
    ++registrations_;
    changed_.notify_all();
  }

  /// Appends an event with the next id and notifies, on the calling thread, as a real
  /// source on another thread would.
  void append(const std::string& kind) {
    std::vector<std::function<void()>> fire;
    {
      const std::lock_guard lock(mutex_);
      const auto id = events_.size() + 1;
      events_.push_back({id, R"({"id":)" + std::to_string(id) + R"(,"kind":")" + kind + "\"}"});
      fire.swap(notify_);
    }
    for (const auto& f : fire)
      f();
  }

  bool wait_for_registrations(int n) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, wait_limit, [&] { return registrations_ >= n; });
  }
  bool wait_for_queries(int n) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, wait_limit, [&] { return queries_ >= n; });
  }
  int registrations() {
    const std::lock_guard lock(mutex_);
    return registrations_;
  }
  int queries() {
    const std::lock_guard lock(mutex_);
    return queries_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<control_event> events_;
  std::vector<std::function<void()>> notify_;
  int registrations_ = 0;
  int queries_ = 0;
  std::atomic<int> connections_calls_{0};
  std::array<std::uint64_t, 3> last_arrivals_query_{};
};

/// The API on 127.0.0.1:<ephemeral>, its io_context on a background thread. Teardown
/// checks that after stop() the server's work drains by itself (nothing left hanging).
struct api_fixture {
  explicit api_fixture(control_access access = {}) {
    api.emplace(io.get_executor(), tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0), source,
                std::move(access));
    api->start();
    thread = std::thread([this] {
      io.run();
      drained.set_value();
    });
  }
  ~api_fixture() {
    api->stop();
    api.reset();
    guard.reset();
    const bool clean = drained_future.wait_for(wait_limit) == std::future_status::ready;
    if (!clean) io.stop();
    thread.join();
    CHECK(clean);
  }
  api_fixture(const api_fixture&) = delete;
  api_fixture& operator=(const api_fixture&) = delete;

  unsigned short port() const { return api->local_endpoint().port(); }

  fake_source source;
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> guard{io.get_executor()};
  std::optional<control_api> api;
  std::promise<void> drained;
  std::future<void> drained_future = drained.get_future();
  std::thread thread;
};

struct reply {
  beast::error_code ec;
  http::response<http::string_body> res;
  int status() const { return static_cast<int>(res.result_int()); }
  std::string header(http::field f) const { return std::string(res[f]); }
};

/// A blocking HTTP client for tests. It drives its own io_context with every operation
/// bounded by `timeout` (Asio's synchronous calls would ignore SO_RCVTIMEO and block).
class http_client {
 public:
  explicit http_client(unsigned short port, std::chrono::milliseconds timeout = wait_limit)
      : timeout_(timeout) {
    connect_error_ = run([&](auto handler) {
      stream_.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), handler);
    });
  }

  beast::error_code connect_error() const { return connect_error_; }

  reply request(http::verb verb, const std::string& target, unsigned version = 11,
                const std::string& body = {}) {
    http::request<http::string_body> req{verb, target, version};
    req.set(http::field::host, "127.0.0.1");
    if (!body.empty()) {
      req.body() = body;
      req.prepare_payload();
    }
    reply r;
    r.ec = run([&](auto handler) { http::async_write(stream_, req, handler); });
    if (!r.ec) r.ec = read(r.res);
    return r;
  }
  reply get(const std::string& target) { return request(http::verb::get, target); }

  beast::error_code send_raw(const std::string& bytes) {
    return run([&](auto handler) { asio::async_write(stream_, asio::buffer(bytes), handler); });
  }

  beast::error_code read(http::response<http::string_body>& res) {
    return run([&](auto handler) { http::async_read(stream_, buffer_, res, handler); });
  }

  /// Reads and discards until the connection ends; returns how it ended.
  beast::error_code read_to_end() {
    std::array<char, 4096> scratch{};
    for (;;) {
      const auto ec =
          run([&](auto handler) { stream_.async_read_some(asio::buffer(scratch), handler); });
      if (ec) return ec;
    }
  }

  void shutdown_send() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

 private:
  template <class Initiate>
  beast::error_code run(Initiate initiate) {
    std::optional<beast::error_code> result;
    stream_.expires_after(timeout_);
    initiate([&result](beast::error_code ec, auto&&...) { result = ec; });
    io_.restart();
    io_.run_for(timeout_ + 1s);  // the stream's expiry fires first; this is a backstop
    if (!result) {
      stream_.close();
      io_.restart();
      io_.run_for(1s);
      return asio::error::timed_out;
    }
    return *result;
  }

  std::chrono::milliseconds timeout_;
  asio::io_context io_;
  beast::tcp_stream stream_{io_};
  beast::flat_buffer buffer_;
  beast::error_code connect_error_;
};

struct timed_reply {
  reply r;
  steady_clock::time_point sent;
  steady_clock::time_point received;
};

// Issues a GET on its own thread and connection, timing it.
std::future<timed_reply> get_async(unsigned short port, std::string target) {
  return std::async(std::launch::async, [port, target = std::move(target)] {
    http_client client(port, 10s);
    timed_reply t;
    t.sent = steady_clock::now();
    t.r = client.get(target);
    t.received = steady_clock::now();
    return t;
  });
}

std::string event_json(int id, const std::string& kind) {
  return R"({"id":)" + std::to_string(id) + R"(,"kind":")" + kind + "\"}";
}

bool is_connection_end(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == http::error::partial_message;
}

}  // namespace

TEST_CASE_METHOD(api_fixture, "each route returns its body with its content type",
                 "[control_api]") {
  struct expectation {
    std::string target, type, body;
  };
  const std::vector<expectation> routes = {
      {"/status", "application/json", status_body},
      {"/connections", "application/json", connections_body},
      {"/metrics", "text/plain; version=0.0.4; charset=utf-8", metrics_body},
      {"/events", "application/json", R"({"events":[],"next":0})"},
      // The source's default: nothing recorded.
      {"/arrivals", "application/json",
       R"({"record_arrivals":0,"record_sample":1,"connections":[]})"},
  };
  for (const auto& e : routes) {
    SECTION(e.target) {
      http_client client(port());
      const auto r = client.get(e.target);
      REQUIRE_FALSE(r.ec);
      CHECK(r.status() == 200);
      CHECK(r.header(http::field::content_type) == e.type);
      CHECK(r.res.body() == e.body);
      CHECK(r.res.keep_alive());
    }
  }
}

TEST_CASE_METHOD(api_fixture, "/events returns only events newer than since", "[control_api]") {
  source.append("eof");
  source.append("reset");
  source.append("heartbeat");
  http_client client(port());
  const auto all = client.get("/events");
  REQUIRE_FALSE(all.ec);
  CHECK(all.res.body() == R"({"events":[)" + event_json(1, "eof") + "," + event_json(2, "reset") +
                              "," + event_json(3, "heartbeat") + R"(],"next":3})");
  CHECK(client.get("/events?since=0").res.body() == all.res.body());
  CHECK(client.get("/events?since=2").res.body() ==
        R"({"events":[)" + event_json(3, "heartbeat") + R"(],"next":3})");
  CHECK(client.get("/events?since=3").res.body() == R"({"events":[],"next":3})");
  CHECK(client.get("/events?since=17&wait=0").res.body() == R"({"events":[],"next":17})");
  // A wait beyond the maximum is capped, not refused; events exist, so no wait at all.
  CHECK(client.get("/events?wait=70000&since=2").status() == 200);
}

TEST_CASE_METHOD(api_fixture, "/events returns at most 1000 events at a time", "[control_api]") {
  for (int i = 0; i < 1500; ++i)
    source.append("eof");
  http_client client(port());
  const auto first = client.get("/events");
  REQUIRE_FALSE(first.ec);
  const auto count = [](const std::string& body) {
    std::size_t n = 0;
    for (auto at = body.find("\"kind\""); at != std::string::npos;
         at = body.find("\"kind\"", at + 1))
      ++n;
    return n;
  };
  CHECK(count(first.res.body()) == 1000);
  CHECK(first.res.body().ends_with(R"(],"next":1000})"));
  const auto rest = client.get("/events?since=1000");
  CHECK(count(rest.res.body()) == 500);
  CHECK(rest.res.body().ends_with(R"(],"next":1500})"));
}

TEST_CASE_METHOD(api_fixture, "a long-poll returns as soon as an event is appended",
                 "[control_api][long-poll]") {
  auto poll = get_async(port(), "/events?since=0&wait=5000");
  REQUIRE(source.wait_for_registrations(1));  // the request is now waiting
  std::this_thread::sleep_for(200ms);         // a delay the response must not precede
  const auto appended = steady_clock::now();
  source.append("reset");  // from this thread, not the API's
  REQUIRE(poll.wait_for(wait_limit) == std::future_status::ready);
  const auto t = poll.get();
  REQUIRE_FALSE(t.r.ec);
  CHECK(t.r.status() == 200);
  CHECK(t.r.res.body() == R"({"events":[)" + event_json(1, "reset") + R"(],"next":1})");
  CHECK(t.received >= appended);
  CHECK(t.received - t.sent >= 200ms);
  CHECK(t.received - t.sent < 1s);
}

TEST_CASE_METHOD(api_fixture, "concurrent long-polls share one registration with the source",
                 "[control_api][long-poll]") {
  auto first = get_async(port(), "/events?wait=5000");
  auto second = get_async(port(), "/events?since=0&wait=5000");
  // Each waiting request looks twice (before and after registering) and then waits.
  REQUIRE(source.wait_for_queries(4));
  source.append("eof");
  REQUIRE(first.wait_for(wait_limit) == std::future_status::ready);
  REQUIRE(second.wait_for(wait_limit) == std::future_status::ready);
  const auto a = first.get();
  const auto b = second.get();
  CHECK(a.r.res.body() == R"({"events":[)" + event_json(1, "eof") + R"(],"next":1})");
  CHECK(b.r.res.body() == a.r.res.body());
  CHECK(a.received - a.sent < 1s);
  CHECK(b.received - b.sent < 1s);
  CHECK(source.registrations() == 1);
}

TEST_CASE_METHOD(api_fixture, "a long-poll with no event returns an empty list after the wait",
                 "[control_api][long-poll]") {
  http_client client(port());
  const auto sent = steady_clock::now();
  const auto r = client.get("/events?since=0&wait=100");
  const auto elapsed = steady_clock::now() - sent;
  REQUIRE_FALSE(r.ec);
  CHECK(r.status() == 200);
  CHECK(r.res.body() == R"({"events":[],"next":0})");
  CHECK(elapsed >= 100ms);
  CHECK(elapsed < 2s);
  // The connection is still usable after a long-poll.
  CHECK(client.get("/status").res.body() == status_body);
}

TEST_CASE_METHOD(api_fixture, "a pipelined request does not end a waiting long-poll",
                 "[control_api][long-poll]") {
  http_client client(port());
  const auto sent = steady_clock::now();
  REQUIRE_FALSE(client.send_raw(
      "GET /events?wait=300 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  http::response<http::string_body> first;
  REQUIRE_FALSE(client.read(first));
  CHECK(steady_clock::now() - sent >= 300ms);
  CHECK(first.body() == R"({"events":[],"next":0})");
  http::response<http::string_body> second;
  REQUIRE_FALSE(client.read(second));
  CHECK(second.body() == status_body);
}

TEST_CASE_METHOD(api_fixture, "a long-poll whose client half-closes is dropped at once",
                 "[control_api][long-poll]") {
  http_client client(port());
  REQUIRE_FALSE(client.send_raw("GET /events?wait=5000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  REQUIRE(source.wait_for_registrations(1));
  const auto closed = steady_clock::now();
  client.shutdown_send();
  CHECK(is_connection_end(client.read_to_end()));
  CHECK(steady_clock::now() - closed < 1s);
}

TEST_CASE_METHOD(api_fixture, "bad parameters are refused with a JSON error naming them",
                 "[control_api]") {
  struct bad {
    std::string target, names;
  };
  const std::vector<bad> cases = {
      {"/events?since=abc", "since"},
      {"/events?since=12x", "since"},
      {"/events?since=", "since"},
      {"/events?since", "since"},
      {"/events?since=%31", "since"},
      {"/events?since=+1", "since"},
      {"/events?since=1&since=2", "since"},
      {"/events?since=99999999999999999999", "since"},
      {"/events?wait=-1", "wait"},
      {"/events?wait=99999999999999999999", "wait"},
      {"/events?wait=1.5", "wait"},
      {"/events?unknown=1", "unknown"},
      {"/events?since=1&&wait=1", "empty parameter"},
      {"/status?since=1", "since"},
      {"/metrics?x", "x"},
      {"/arrivals?session_id=abc", "session_id"},
      {"/arrivals?session_id=1&session_id=2", "session_id"},
      {"/arrivals?since=1", "since needs session_id"},
      {"/arrivals?session_id=1&wait=1", "wait"},
      {"/events?session_id=1", "session_id"},
  };
  for (const auto& c : cases) {
    SECTION(c.target) {
      http_client client(port());
      const auto r = client.get(c.target);
      REQUIRE_FALSE(r.ec);
      CHECK(r.status() == 400);
      CHECK(r.header(http::field::content_type) == "application/json");
      CHECK(r.res.body().starts_with(R"({"error":")"));
      CHECK(r.res.body().ends_with("\"}"));
      CHECK(r.res.body().find(c.names) != std::string::npos);
      // The request was well-formed HTTP: the connection stays usable.
      CHECK(client.get("/status").status() == 200);
    }
  }
}

TEST_CASE_METHOD(api_fixture, "/arrivals?session_id= asks the source for one connection's times",
                 "[control_api]") {
  http_client client(port());
  const auto r = client.get("/arrivals?session_id=7&since=12");
  REQUIRE_FALSE(r.ec);
  CHECK(r.status() == 200);
  CHECK(r.header(http::field::content_type) == "application/json");
  CHECK(r.res.body() == R"({"session_id":7,"times_ms":[0.000,1000.250]})");
  // At most 10000 times a response: the source is told the limit.
  CHECK(source.last_arrivals_query() == std::array<std::uint64_t, 3>{7, 12, 10000});
  const auto missing = client.get("/arrivals?session_id=8");
  CHECK(missing.status() == 404);
  CHECK(missing.res.body() == R"({"error":"no recorded live connection has session_id 8"})");
  CHECK(client.get("/status").status() == 200);  // the connection stays usable
}

TEST_CASE_METHOD(api_fixture, "other methods on known paths are refused with 405",
                 "[control_api]") {
  http_client client(port());
  const auto post = client.request(http::verb::post, "/status", 11, "x=1");
  REQUIRE_FALSE(post.ec);
  CHECK(post.status() == 405);
  CHECK(post.header(http::field::allow) == "GET");
  CHECK(post.header(http::field::content_type) == "application/json");
  CHECK(post.res.body() == R"({"error":"method not allowed: POST"})");
  const auto del = client.request(http::verb::delete_, "/events?since=1");
  CHECK(del.status() == 405);
  CHECK(del.header(http::field::allow) == "GET");
}

TEST_CASE_METHOD(api_fixture, "unknown paths are 404 with a JSON error", "[control_api]") {
  http_client client(port());
  const auto r = client.get("/nope");
  REQUIRE_FALSE(r.ec);
  CHECK(r.status() == 404);
  CHECK(r.header(http::field::content_type) == "application/json");
  CHECK(r.res.body() == R"({"error":"no such path: /nope"})");
  // The client's bytes are escaped, and anything outside printable ASCII replaced.
  CHECK(client.get(R"(/a"b\c)").res.body() == R"({"error":"no such path: /a\"b\\c"})");
  CHECK(client.get("/\xc3\xa9?since=1").res.body() == R"({"error":"no such path: /??"})");
  CHECK(client.get("/status/").status() == 404);
}

TEST_CASE_METHOD(api_fixture, "garbage on the port is refused and the server carries on",
                 "[control_api]") {
  {
    http_client client(port());
    REQUIRE_FALSE(client.send_raw(std::string("\x00\x01hello\r\n\r\n", 11)));
    http::response<http::string_body> res;
    const auto ec = client.read(res);
    if (ec) {
      CHECK(is_connection_end(ec));
    } else {
      CHECK(res.result_int() == 400);
      CHECK(res.body().starts_with(R"({"error":")"));
      CHECK_FALSE(res.keep_alive());
      CHECK(is_connection_end(client.read_to_end()));
    }
  }
  http_client next(port());
  CHECK(next.get("/status").res.body() == status_body);
}

TEST_CASE_METHOD(api_fixture, "an oversized header is refused with 431", "[control_api]") {
  http_client client(port());
  const auto r = client.get("/status?" + std::string(9000, 'a'));
  REQUIRE_FALSE(r.ec);
  CHECK(r.status() == 431);
  CHECK_FALSE(r.res.keep_alive());
  CHECK(is_connection_end(client.read_to_end()));
}

TEST_CASE_METHOD(api_fixture, "keep-alive serves several requests on one connection",
                 "[control_api]") {
  http_client client(port());
  const auto first = client.get("/status");
  REQUIRE_FALSE(first.ec);
  CHECK(first.res.keep_alive());
  const auto second = client.get("/metrics");
  REQUIRE_FALSE(second.ec);
  CHECK(second.res.body() == metrics_body);
}

TEST_CASE_METHOD(api_fixture, "an HTTP/1.0 request without keep-alive is answered then closed",
                 "[control_api]") {
  http_client client(port());
  const auto r = client.request(http::verb::get, "/status", 10);
  REQUIRE_FALSE(r.ec);
  CHECK(r.res.body() == status_body);
  CHECK_FALSE(r.res.keep_alive());
  const auto closed = steady_clock::now();
  CHECK(is_connection_end(client.read_to_end()));
  CHECK(steady_clock::now() - closed < 1s);
}

TEST_CASE_METHOD(api_fixture, "stop() ends a waiting long-poll promptly and stops accepting",
                 "[control_api][long-poll]") {
  auto poll = get_async(port(), "/events?wait=60000");
  REQUIRE(source.wait_for_registrations(1));
  const auto stopped = steady_clock::now();
  api->stop();  // from a thread that is not the API's
  REQUIRE(poll.wait_for(wait_limit) == std::future_status::ready);
  const auto t = poll.get();
  CHECK(t.received - stopped < 1s);
  if (t.r.ec) {
    CHECK(is_connection_end(t.r.ec));
  } else {
    CHECK(t.r.status() == 200);
  }
  // The source is not called after stop() returned.
  const auto queries = source.queries();
  source.append("eof");
  // The listener is closed (stop's closing runs on the API's thread: allow it a moment).
  const auto deadline = steady_clock::now() + wait_limit;
  beast::error_code refused;
  while (steady_clock::now() < deadline) {
    http_client late(port(), 1s);
    refused = late.connect_error();
    if (refused) break;
    std::this_thread::yield();
  }
  CHECK(refused == asio::error::connection_refused);
  CHECK(source.queries() == queries);
}

// Takes the full 10 s read timeout: run explicitly with [slow].
TEST_CASE_METHOD(api_fixture, "a client trickling a request is cut off by the read timeout",
                 "[.][slow][control_api]") {
  http_client client(port(), 15s);
  const auto start = steady_clock::now();
  REQUIRE_FALSE(client.send_raw("GET /status HTTP/1.1\r\n"));
  beast::error_code ec;
  for (int i = 0; i < 60 && !ec; ++i) {
    std::this_thread::sleep_for(500ms);
    ec = client.send_raw("X");
  }
  const auto end = client.read_to_end();
  const auto elapsed = steady_clock::now() - start;
  CHECK(is_connection_end(end));
  CHECK(elapsed >= 9s);
  CHECK(elapsed < 13s);
}

// --- who may ask ------------------------------------------------------------------------

TEST_CASE("host_allowed: IP addresses, localhost and configured names, any port or case") {
  const control_access access{.host_names = {"deadpeer.internal"}, .bearer_token = {}};
  for (const char* ok : {"127.0.0.1", "127.0.0.1:7701", "10.1.2.3:80", "[::1]:7701", "[::1]",
                         "localhost", "LocalHost:7701", "deadpeer.internal",
                         "DEADPEER.internal:9"})
    CHECK(host_allowed(ok, access));
  // A rebinding page sends its own name; a malformed value is refused too.
  for (const char* refused : {"evil.example", "evil.example:7701", "127.0.0.1.evil.example",
                              "localhost.evil.example", "", ":7701", "[::1", "[::1]x",
                              "deadpeer.internal.evil"})
    CHECK_FALSE(host_allowed(refused, access));
}

namespace {

// A GET with the given extra header lines, on a fresh connection.
reply get_with(unsigned short port, const std::string& target, const std::string& headers) {
  http_client client(port);
  REQUIRE_FALSE(client.connect_error());
  REQUIRE_FALSE(client.send_raw("GET " + target + " HTTP/1.1\r\n" + headers +
                                "Connection: close\r\n\r\n"));
  reply r;
  r.ec = client.read(r.res);
  return r;
}

struct guarded_fixture : api_fixture {
  guarded_fixture()
      : api_fixture(control_access{.host_names = {"deadpeer.internal"}, .bearer_token = "s3cret"}) {}
};

}  // namespace

TEST_CASE_METHOD(api_fixture, "a request naming another host is refused with 403 (DNS rebinding)",
                 "[control_api]") {
  const auto rebinding = get_with(port(), "/connections", "Host: attacker.example:" +
                                                              std::to_string(port()) + "\r\n");
  REQUIRE_FALSE(rebinding.ec);
  CHECK(rebinding.status() == 403);
  CHECK_THAT(rebinding.res.body(), Catch::Contains("attacker.example") &&
                                       Catch::Contains("--control-host"));
  CHECK(source.connections_calls() == 0);  // nothing was read from the source
  const auto local = get_with(port(), "/connections", "Host: localhost:" + std::to_string(port()) + "\r\n");
  CHECK(local.status() == 200);
  const auto missing = get_with(port(), "/status", "");
  CHECK(missing.status() == 400);  // HTTP/1.1 without Host
}

TEST_CASE_METHOD(guarded_fixture, "with a token, only requests that carry it are answered",
                 "[control_api]") {
  const std::string host = "Host: deadpeer.internal\r\n";
  const auto none = get_with(port(), "/metrics", host);
  CHECK(none.status() == 401);
  CHECK(none.header(http::field::www_authenticate) == "Bearer");
  CHECK(get_with(port(), "/metrics", host + "Authorization: Bearer guess\r\n").status() == 401);
  CHECK(get_with(port(), "/metrics", host + "Authorization: Bearer s3cre\r\n").status() == 401);
  CHECK(get_with(port(), "/metrics", host + "Authorization: Basic s3cret\r\n").status() == 401);
  const auto right = get_with(port(), "/metrics", host + "Authorization: Bearer s3cret\r\n");
  CHECK(right.status() == 200);
  // The token does not make a foreign Host acceptable.
  CHECK(get_with(port(), "/metrics", "Host: evil.example\r\nAuthorization: Bearer s3cret\r\n")
            .status() == 403);
}
