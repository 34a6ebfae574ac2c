#include <deadpeer/server.hpp>

#include "loopback.hpp"

#include <deadpeer/clock.hpp>
#include <deadpeer/config_error.hpp>
#include <deadpeer/session.hpp>

#include "../probe/qos.hpp"

#include <sqlite3.h>
#include <boost/asio/post.hpp>
#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <sys/socket.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

using namespace std::chrono_literals;
using namespace deadpeer;
using deadpeer::test::http_get;
using deadpeer::test::io_thread;
using deadpeer::test::raw_peer;
namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

template <typename Predicate>
bool eventually(Predicate p, std::chrono::milliseconds limit = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!p()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// A server on ephemeral ports with a temporary database, run on its own thread.
class server_fixture {
 public:
  explicit server_fixture(std::function<void(server_options&)> adjust = {}) {
    dir_ = fs::temp_directory_path() / ("deadpeer-server-test-" + std::to_string(::getpid()) + "-" +
                                        std::to_string(counter_++));
    fs::create_directories(dir_);
    server_options o;
    o.listen = {boost::asio::ip::make_address("127.0.0.1"), 0};
    o.control = boost::asio::ip::tcp::endpoint{boost::asio::ip::make_address("127.0.0.1"), 0};
    o.db_path = (dir_ / "server.db").string();
    o.min_interval = 10ms;
    o.default_interval = 100ms;
    o.detector = fixed_detector_config{.interval = 100ms, .multiplier = 3.0, .timeout = 0ms};
    o.handshake_timeout = 500ms;
    o.reap_interval = 50ms;
    if (adjust) adjust(o);
    options_ = o;
    on_io([&] {
      server_ = std::make_unique<server>(io_.context(), o);
      server_->start();
    });
  }

  ~server_fixture() {
    std::promise<void> stopped;
    on_io([&] { server_->stop([&] { stopped.set_value(); }); });
    (void)stopped.get_future().wait_for(10s);
    on_io([&] { server_.reset(); });
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  // Runs `fn` on the server's thread and waits for it.
  template <typename F>
  void on_io(F fn) {
    std::promise<void> done;
    boost::asio::post(io_.context(), [&] {
      fn();
      done.set_value();
    });
    done.get_future().wait();
  }

  std::vector<std::string> reconfigure(const server_options& next) {
    std::vector<std::string> said;
    std::exception_ptr refused;
    on_io([&] {
      try {
        said = server_->reconfigure(next);
      } catch (...) {
        refused = std::current_exception();
      }
    });
    if (refused) std::rethrow_exception(refused);
    return said;
  }
  const server_options& options() const { return options_; }

  unsigned short port() {
    unsigned short p = 0;
    on_io([&] { p = server_->local_endpoint().port(); });
    return p;
  }
  unsigned short control_port() {
    unsigned short p = 0;
    on_io([&] { p = server_->control_endpoint()->port(); });
    return p;
  }
  json::value get_json(const std::string& target) {
    const auto r = http_get(control_port(), target);
    REQUIRE(r.status == 200);
    return json::parse(r.body);
  }
  json::object status() { return get_json("/status").as_object(); }
  std::int64_t live() { return status().at("live").as_int64(); }

  // Waits for the next connection-end event after `since` through the long-poll.
  json::object next_event(std::uint64_t& since) {
    const auto body = get_json("/events?since=" + std::to_string(since) + "&wait=10000");
    const auto& events = body.at("events").as_array();
    REQUIRE_FALSE(events.empty());
    const auto event = events.front().as_object();
    since = static_cast<std::uint64_t>(event.at("id").as_int64());
    return event;
  }

  // Rows of the store for `sql`, after flushing, as text (NULL as "").
  std::vector<std::vector<std::string>> rows(const std::string& sql) {
    on_io([&] { server_->flush_store(); });
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open_v2((dir_ / "server.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) ==
            SQLITE_OK);
    sqlite3_stmt* stmt = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK);
    std::vector<std::vector<std::string>> out;
    while (sqlite3_step(stmt) == SQLITE_ROW) {
      auto& row = out.emplace_back();
      for (int i = 0; i < sqlite3_column_count(stmt); ++i) {
        const auto* text = sqlite3_column_text(stmt, i);
        row.emplace_back(text ? reinterpret_cast<const char*>(text) : "");
      }
    }
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return out;
  }

  // Cause and detected_by of every row, in order.
  std::vector<std::pair<std::string, std::string>> stored_causes() {
    std::vector<std::pair<std::string, std::string>> out;
    for (auto& row : rows("SELECT cause, detected_by FROM connections ORDER BY id"))
      out.emplace_back(row[0], row[1]);
    return out;
  }

  bool send(const std::string& client_id, std::vector<std::byte> payload) {
    return server_->send(client_id, std::move(payload));
  }

  std::string db_path() const { return (dir_ / "server.db").string(); }
  void flush_store() {
    on_io([&] { server_->flush_store(); });
  }

 private:
  static inline int counter_ = 0;
  fs::path dir_;
  io_thread io_;
  std::unique_ptr<server> server_;
  server_options options_;
};

std::string str(const json::value& v) {
  return std::string(v.as_string());
}

// A client that stays connected and answers PINGs through the whole test: the server
// must keep serving it whatever the others do.
class bystander {
 public:
  explicit bystander(unsigned short port) : socket_(io_.context()) {
    socket_.connect({boost::asio::ip::make_address("127.0.0.1"), port});
    session_config c;
    c.client_id = "bystander";
    c.requested_interval = 50ms;
    session_handlers h;
    h.on_established = [this](const session_established&) { established_ = true; };
    // Either side may be the one pinging (protocol §6): every frame heard from the server
    // (a PONG to our PING, or its own PING) is the heartbeat going on.
    h.on_heard = [this](std::int64_t) { ++heard_; };
    h.on_end = [this](const session_end&) { ended_ = true; };
    session_ = session::start(std::move(socket_), c, std::move(h));
    REQUIRE(eventually([&] { return established_.load(); }));
  }
  ~bystander() { session_->close(); }
  bool healthy() {
    const int before = heard_;
    return !ended_ && eventually([&] { return heard_ > before + 2; }, 5s);
  }

 private:
  io_thread io_;
  boost::asio::ip::tcp::socket socket_;
  std::shared_ptr<session> session_;
  std::atomic<bool> established_{false}, ended_{false};
  std::atomic<int> heard_{0};
};

int open_fds() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/self/fd"))
    ++n;
  return n;
}

}  // namespace

TEST_CASE("server: a closed client is recorded as peer_closed in /events and in SQL") {
  server_fixture f;
  std::uint64_t since = 0;
  {
    // A 5 s interval: no server PING is in flight when the client closes, so its close
    // sends FIN. (Closing with an unread PING sends RST: the crash-rst case.)
    raw_peer client(f.port());
    const auto welcome = client.handshake("crashy", 5s);
    CHECK(welcome.interval_ms == 5000);
    CHECK(f.live() == 1);
    const auto connections = f.get_json("/connections").as_array();
    REQUIRE(connections.size() == 1);
    CHECK(str(connections[0].at("client_id")) == "crashy");
    CHECK(str(connections[0].at("kernel").at("state")) == "ESTABLISHED");
  }  // closed: FIN
  const auto event = f.next_event(since);
  CHECK(str(event.at("cause")) == "peer_closed");
  CHECK(str(event.at("detected_by")) == "eof");
  CHECK(str(event.at("client_id")) == "crashy");
  CHECK(event.at("durable").is_bool());  // true once its row is committed
  CHECK(f.stored_causes() ==
        std::vector<std::pair<std::string, std::string>>{{"peer_closed", "eof"}});
  // After the commit (stored_causes flushed the store), the same event says so.
  std::uint64_t again = 0;
  CHECK(f.next_event(again).at("durable").as_bool());
  CHECK(f.live() == 0);
}

TEST_CASE("server: a silent client is declared dead by its heartbeat detector") {
  server_fixture f;
  std::uint64_t since = 0;
  raw_peer client(f.port());
  client.handshake("silent", 100ms);
  const auto event = f.next_event(since);
  CHECK(str(event.at("cause")) == "heartbeat_timeout");
  CHECK(str(event.at("detected_by")) == "heartbeat");
  const double silence = event.at("silence_ms").to_number<double>();
  CHECK(silence >= 300.0);
  CHECK(silence <= 400.0);
}

TEST_CASE("server: the adaptive detector (the default) learns the link, shows it, and decides") {
  // A floor of 3 intervals: a busy machine that stretches the test's own 100 ms pacing must
  // not end the connection before it is inspected.
  deadpeer::adaptive_detector_config adaptive;
  adaptive.min_multiplier = 3.0;
  server_fixture f([&](server_options& o) { o.detector = adaptive; });
  CHECK(std::holds_alternative<deadpeer::adaptive_detector_config>(server_options{}.detector));
  std::uint64_t since = 0;
  raw_peer client(f.port());
  const auto welcome = client.handshake("learner", 100ms);
  CHECK(welcome.dead_after_ms == 1000);  // the cap: 10 intervals
  // Ten PINGs about 100 ms apart (a wait on the clock is the heartbeat itself here).
  for (std::uint64_t i = 1; i <= 10; ++i) {
    std::this_thread::sleep_for(100ms);
    client.send_frame(wire::ping{i, 0});
  }
  const auto connections = f.get_json("/connections").as_array();
  REQUIRE(connections.size() == 1);
  const auto& learned = connections[0].at("detector").as_object();
  CHECK(learned.at("longest_gap_ms").to_number<double>() >= 100.0);
  CHECK(learned.at("timeout_ms").to_number<double>() >= 300.0);    // the floor at least
  CHECK(learned.at("timeout_ms").to_number<double>() <= 1000.0);   // the cap at most
  // Silent from now on: the verdict comes after the learned timeout, well before the cap.
  const auto event = f.next_event(since);
  CHECK(str(event.at("cause")) == "heartbeat_timeout");
  CHECK(str(event.at("detected_by")) == "heartbeat");
  const double silence = event.at("silence_ms").to_number<double>();
  CHECK(silence >= 300.0);
  CHECK(silence <= 1100.0);
}

TEST_CASE("server: the same client id supersedes the old session") {
  server_fixture f;
  raw_peer first(f.port());
  first.handshake("phone-1", 100ms);
  raw_peer second(f.port());
  second.handshake("phone-1", 100ms);
  // The first connection is told why, then closed gracefully.
  bool superseded = false;
  for (int i = 0; i < 20 && !superseded; ++i) {
    const auto r = first.read_frame();
    if (r.eof || r.error) break;
    for (const auto& frame : r.frames)
      if (const auto* bye = std::get_if<wire::bye>(&frame))
        superseded = bye->reason == wire::bye_reason::superseded;
  }
  CHECK(superseded);
  first.close();
  REQUIRE(eventually([&] { return f.live() == 1; }));
  const auto s = f.status();
  CHECK(s.at("superseded").as_int64() == 1);
  CHECK(s.at("ended_by_cause").at("superseded").as_int64() == 1);
}

TEST_CASE("server: 1000 reconnects of one id leave one session and no leaked sockets") {
  server_fixture f;
  const auto port = f.port();
  const int fds_before = open_fds();
  auto previous = std::make_unique<raw_peer>(port);
  previous->handshake("storm", 100ms);
  for (int i = 0; i < 1000; ++i) {
    auto next = std::make_unique<raw_peer>(port);
    next->handshake("storm", 100ms);
    previous->close();  // the old link is gone (a cable pull, a NAT rebinding)
    previous = std::move(next);
  }
  REQUIRE(eventually([&] { return f.live() == 1; }));
  const auto connections = f.get_json("/connections").as_array();
  REQUIRE(connections.size() == 1);
  CHECK(str(connections[0].at("client_id")) == "storm");
  CHECK(f.status().at("superseded").as_int64() == 1000);
  // One live connection: our client end and the server's end, nothing else left over.
  CHECK(eventually([&] { return open_fds() <= fds_before + 2; }));
}

TEST_CASE("server: bad clients are ended with the right cause while others are served") {
  server_fixture f;
  const auto port = f.port();
  bystander b(port);
  std::uint64_t since = 0;

  SECTION("garbage bytes") {
    raw_peer bad(port);
    const std::string garbage = "GET / HTTP/1.1\r\n\r\n";
    REQUIRE_FALSE(bad.send_bytes(std::as_bytes(std::span(garbage.data(), garbage.size()))));
    const auto r = bad.read_to_end();
    REQUIRE(r.frames.size() == 1);
    CHECK(std::get<wire::error>(r.frames[0]).code == wire::error_code::frame_too_large);
    CHECK(r.eof);
    bad.close();
    CHECK(str(f.next_event(since).at("protocol_error")) == "frame_too_large");
  }
  SECTION("no HELLO within the handshake timeout (slowloris)") {
    raw_peer slow(port);
    const auto started = monotonic_ns();
    const auto r = slow.read_to_end();
    REQUIRE(r.frames.size() == 1);
    CHECK(std::get<wire::error>(r.frames[0]).code == wire::error_code::handshake_timeout);
    const auto waited_ms = (monotonic_ns() - started) / 1'000'000;
    CHECK(waited_ms >= 500);
    CHECK(waited_ms <= 500 + 2 * 50 + 200);  // timeout + ring granularity + slack
    slow.close();
    const auto event = f.next_event(since);
    CHECK(str(event.at("cause")) == "handshake_timeout");
    CHECK(str(event.at("detected_by")) == "reaper");
    CHECK(f.status().at("reaped").at("handshake").as_int64() == 1);
  }
  SECTION("a ping flood") {
    raw_peer flood(port);
    flood.handshake("flood", 100ms);
    for (std::uint64_t i = 1; i <= 10; ++i)
      flood.send_frame(wire::ping{.sequence = i, .timestamp_ns = i});
    const auto r = flood.read_to_end();
    bool got_error = false;
    for (const auto& frame : r.frames)
      if (const auto* e = std::get_if<wire::error>(&frame))
        got_error = e->code == wire::error_code::too_many_pings;
    CHECK(got_error);
    flood.close();
    CHECK(str(f.next_event(since).at("protocol_error")) == "too_many_pings");
  }
  SECTION("a reset in the middle of a frame") {
    raw_peer resetter(port);
    resetter.handshake("resetter", 100ms);
    const std::array<std::byte, 3> half_header{std::byte{0}, std::byte{0}, std::byte{0}};
    REQUIRE_FALSE(resetter.send_bytes(half_header));
    resetter.close_with_reset();
    const auto event = f.next_event(since);
    CHECK(str(event.at("cause")) == "peer_reset");
    CHECK(str(event.at("detected_by")) == "reset");
  }
  SECTION("a half-close is a FIN: peer_closed by default") {
    raw_peer half(port);
    half.handshake("half", 100ms);
    half.shutdown_send();
    const auto event = f.next_event(since);
    CHECK(str(event.at("cause")) == "peer_closed");
    CHECK(str(event.at("detected_by")) == "eof");
  }
  CHECK(b.healthy());
}

TEST_CASE("server: with --on-eof reap, a half-closed client is reaped as CLOSE_WAIT") {
  server_fixture f([](server_options& o) {
    o.end_on_eof = false;
    o.reap_interval = 100ms;
    o.detector = fixed_detector_config{.interval = 1s, .multiplier = 3.0, .timeout = 0ms};
    o.default_interval = 1s;
  });
  std::uint64_t since = 0;
  raw_peer half(f.port());
  half.handshake("half", 1s);
  const auto closed_at = monotonic_ns();
  half.shutdown_send();
  const auto event = f.next_event(since);
  CHECK(str(event.at("cause")) == "reaped");
  CHECK(str(event.at("detected_by")) == "reaper");
  // Within about one sweep, long before the 3 s heartbeat deadline.
  const auto latency_ms =
      (static_cast<std::int64_t>(event.at("decided_mono_ns").as_int64()) - closed_at) / 1'000'000;
  INFO("reaped " << latency_ms << " ms after the half-close");
  CHECK(latency_ms <= 2 * 100 + 100);
  CHECK(f.status().at("reaped").at("close_wait").as_int64() == 1);
}

TEST_CASE("server: --max-connections refuses newcomers with ERROR server_full") {
  server_fixture f([](server_options& o) { o.max_connections = 2; });
  raw_peer a(f.port()), b(f.port());
  a.handshake("a", 100ms);
  b.handshake("b", 100ms);
  raw_peer c(f.port());
  c.send_frame(wire::hello{.version = 1, .client_id = "c", .requested_interval_ms = 100,
                           .auth_token = ""});
  const auto r = c.read_to_end();
  REQUIRE(r.frames.size() == 1);
  CHECK(std::get<wire::error>(r.frames[0]).code == wire::error_code::server_full);
  CHECK(r.eof);  // a graceful close, not a silent drop or a reset
  CHECK(f.status().at("rejected").at("server_full").as_int64() == 1);

  // Full or not, a HELLO is validated in the order of protocol.md §5 first.
  raw_peer d(f.port());
  d.send_frame(wire::hello{.version = 9, .client_id = "d", .requested_interval_ms = 100,
                           .auth_token = ""});
  const auto old_version = d.read_to_end();
  REQUIRE(old_version.frames.size() == 1);
  CHECK(std::get<wire::error>(old_version.frames[0]).code ==
        wire::error_code::unsupported_version);
  // A takeover replaces a connection and is admitted even when the server is full.
  raw_peer a_again(f.port());
  a_again.handshake("a", 100ms);
  CHECK(f.status().at("superseded").as_int64() == 1);
}

TEST_CASE("server: with an auth token, only clients that prove it get in or take over") {
  server_fixture f([](server_options& o) { o.auth_token = "s3cret"; });
  raw_peer owner(f.port());
  owner.send_frame(wire::hello{
      .version = 1, .client_id = "meter-7", .requested_interval_ms = 100, .auth_token = "s3cret"});
  REQUIRE(owner.read_frame().frames.size() == 1);
  raw_peer intruder(f.port());
  intruder.send_frame(wire::hello{
      .version = 1, .client_id = "meter-7", .requested_interval_ms = 100, .auth_token = "guess"});
  const auto r = intruder.read_to_end();
  REQUIRE(r.frames.size() == 1);
  CHECK(std::get<wire::error>(r.frames[0]).code == wire::error_code::auth_failed);
  CHECK(f.status().at("superseded").as_int64() == 0);
  const auto connections = f.get_json("/connections").as_array();
  CHECK(connections.size() == 2);  // the owner, and the intruder until its close completes
  // The refusal's end names the id that was tried, so an operator sees who was targeted.
  // (The owner, a raw peer that never pings, ends too: by heartbeat timeout.)
  std::uint64_t since = 0;
  std::optional<json::object> refused;
  for (int i = 0; i < 2 && !refused; ++i)
    if (const auto e = f.next_event(since); str(e.at("cause")) == "auth_failed") refused = e;
  REQUIRE(refused);
  CHECK(str(refused->at("client_id")) == "meter-7");
  CHECK(f.rows("SELECT client_id FROM connections WHERE cause = 'auth_failed'") ==
        std::vector<std::vector<std::string>>{{"meter-7"}});
}

TEST_CASE("server: /metrics is valid Prometheus text with the documented families") {
  server_fixture f;
  std::uint64_t since = 0;
  {
    raw_peer client(f.port());
    client.handshake("metrics", 5s);
  }
  (void)f.next_event(since);
  const auto r = http_get(f.control_port(), "/metrics");
  REQUIRE(r.status == 200);
  CHECK_THAT(r.content_type, Catch::StartsWith("text/plain; version=0.0.4"));
  const std::string& text = r.body;
  INFO(text);
  for (const char* family :
       {"deadpeer_live_connections", "deadpeer_detections_total",
        "deadpeer_detection_latency_seconds", "deadpeer_heartbeat_rtt_seconds"})
    CHECK_THAT(text, Catch::Contains(std::string("# TYPE ") + family));
  CHECK_THAT(text, Catch::Contains(
                       "deadpeer_detections_total{cause=\"peer_closed\",detected_by=\"eof\"} 1"));
  // Exposition rules: every sample belongs to a family declared once with TYPE before
  // it; histogram buckets are cumulative and end with +Inf equal to _count.
  std::set<std::string> declared;
  std::string current;
  std::istringstream lines(text);
  std::string line;
  double last_bucket = -1;
  while (std::getline(lines, line)) {
    REQUIRE_FALSE(line.empty());
    if (line.rfind("# TYPE ", 0) == 0) {
      current = line.substr(7, line.find(' ', 7) - 7);
      CHECK(declared.insert(current).second);
      last_bucket = -1;
      continue;
    }
    if (line.rfind("# HELP ", 0) == 0) continue;
    const auto name = line.substr(0, line.find_first_of("{ "));
    CHECK(name.rfind(current, 0) == 0);
    const auto value = std::stod(line.substr(line.rfind(' ') + 1));
    if (name == current + "_bucket") {
      CHECK(value >= last_bucket);
      last_bucket = value;
    }
    if (name == current + "_count") {
      CHECK(value == last_bucket);
      last_bucket = -1;  // the next label set's buckets start again
    }
  }
}

TEST_CASE("server: /metrics writes known series from the start, exact le labels, detections "
          "apart from agreed ends, and passes promtool") {
  server_fixture f;
  const auto metrics = [&] {
    const auto r = http_get(f.control_port(), "/metrics");
    REQUIRE(r.status == 200);
    return r.body;
  };
  const auto before = metrics();
  INFO(before);
  // Before any connection: the series alerts are written against already exist, at 0.
  for (const char* series :
       {"deadpeer_detections_total{cause=\"heartbeat_timeout\",detected_by=\"heartbeat\"} 0\n",
        "deadpeer_detections_total{cause=\"keepalive_timeout\",detected_by=\"keepalive\"} 0\n",
        "deadpeer_agreed_ends_total{cause=\"peer_closed\"} 0\n",
        "deadpeer_rejected_total{reason=\"server_full\"} 0\n",
        "deadpeer_reaped_total{reason=\"close_wait\"} 0\n",
        "deadpeer_superseded_total 0\n", "deadpeer_established_connections 0\n",
        // A bucket bound is written as people type it, so {le="0.005"} matches.
        "deadpeer_detection_latency_seconds_bucket{detected_by=\"heartbeat\",le=\"0.005\"} 0\n",
        "deadpeer_heartbeat_rtt_seconds_bucket{le=\"0.00025\"} 0\n",
        "deadpeer_build_info{version=\"", "process_open_fds ", "process_resident_memory_bytes ",
        "process_cpu_seconds_total ", "process_start_time_seconds "})
    CHECK_THAT(before, Catch::Contains(series));
  // No bound rendered at 17 digits (0.0050000000000000001): every le value is short.
  for (std::size_t at = before.find("le=\""); at != std::string::npos;
       at = before.find("le=\"", at + 4)) {
    const auto end = before.find('"', at + 4);
    INFO(before.substr(at, end - at + 1));
    CHECK(end - (at + 4) <= 7);
  }
  CHECK_THAT(before, Catch::Contains("deadpeer_store_queue_depth 0\n") &&
                         Catch::Contains("deadpeer_store_failing 0\n"));

  std::uint64_t since = 0;
  {
    raw_peer polite(f.port());
    polite.handshake("polite", 5s);
    polite.send_frame(wire::bye{});
    (void)polite.read_to_end();
  }
  (void)f.next_event(since);
  {
    raw_peer vanishing(f.port());
    vanishing.handshake("vanishing", 5s);
  }  // closed without BYE: the server detects the FIN
  (void)f.next_event(since);
  const auto after = metrics();
  INFO(after);
  CHECK_THAT(after, Catch::Contains("deadpeer_agreed_ends_total{cause=\"peer_closed\"} 1\n"));
  CHECK_THAT(after, Catch::Contains(
                        "deadpeer_detections_total{cause=\"peer_closed\",detected_by=\"eof\"} 1\n"));
  // Only the detection is in the latency histogram, under its mechanism.
  CHECK_THAT(after, Catch::Contains("deadpeer_detection_latency_seconds_count{detected_by=\"eof\"} 1\n"));
  CHECK_THAT(after, Catch::Contains(
                        "deadpeer_detection_latency_seconds_count{detected_by=\"heartbeat\"} 0\n"));
  CHECK_THAT(after, Catch::Contains("deadpeer_accepted_connections_total 2\n"));

  // Prometheus' own linter, when installed (scripts/setup installs it).
  if (!std::filesystem::exists("/usr/bin/promtool")) {
    WARN("SKIPPED: promtool is not installed (Debian package prometheus; scripts/setup installs it)");
    return;
  }
  const auto dir = std::filesystem::temp_directory_path() /
                   ("deadpeer-metrics-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  {
    std::ofstream(dir / "metrics.txt") << after;
  }
  const auto command = "/usr/bin/promtool check metrics < '" + (dir / "metrics.txt").string() +
                       "' > '" + (dir / "promtool.txt").string() + "' 2>&1";
  const int status = std::system(command.c_str());
  std::ifstream verdict(dir / "promtool.txt");
  const std::string said((std::istreambuf_iterator<char>(verdict)), std::istreambuf_iterator<char>());
  std::filesystem::remove_all(dir);
  INFO("promtool said: " << said);
  CHECK(status == 0);
  CHECK(said.empty());  // no lint complaints either
}

TEST_CASE("server: /events long-poll answers when an end happens") {
  server_fixture f;
  raw_peer client(f.port());
  client.handshake("poller", 1s);
  auto poll = std::async(std::launch::async,
                         [&] { return http_get(f.control_port(), "/events?since=0&wait=10000"); });
  CHECK(poll.wait_for(200ms) == std::future_status::timeout);  // nothing ended yet
  client.close();
  REQUIRE(poll.wait_for(5s) == std::future_status::ready);
  const auto body = json::parse(poll.get().body);
  CHECK(body.at("events").as_array().size() == 1);
}

TEST_CASE("server: bad control API requests get 404 and 400 with JSON errors") {
  server_fixture f;
  CHECK(http_get(f.control_port(), "/nope").status == 404);
  const auto bad = http_get(f.control_port(), "/events?since=abc");
  CHECK(bad.status == 400);
  CHECK(json::parse(bad.body).as_object().contains("error"));
}

TEST_CASE("server: arrival recording options are validated") {
  server_options o;
  o.record_arrivals = max_record_arrivals;
  CHECK_NOTHROW(validate(o));
  o.record_arrivals = max_record_arrivals + 1;
  CHECK_THROWS_WITH(validate(o), Catch::Contains("record arrivals 1000001"));
  o.record_arrivals = 10;
  o.record_sample = 0;
  CHECK_THROWS_WITH(validate(o), Catch::Contains("record sample must be at least 1"));
}

TEST_CASE("server: options that would declare clients dead between heartbeats are refused") {
  server_options o;
  o.max_interval = 5s;
  o.detector = fixed_detector_config{.interval = 1s, .multiplier = 3.0, .timeout = 2s};
  CHECK_THROWS_WITH(validate(o), Catch::Contains("dead-after 2s") && Catch::Contains("5s"));
  o.detector = fixed_detector_config{.interval = 1s, .multiplier = 1.0, .timeout = 0ms};
  CHECK_THROWS_WITH(validate(o), Catch::Contains("multiplier"));
  o.detector = fixed_detector_config{.interval = 1s, .multiplier = 1.5, .timeout = 0ms};
  CHECK_NOTHROW(validate(o));
}

TEST_CASE("server: an embedding backend exchanges DATA by client id and gets typed ends") {
  std::mutex m;
  std::vector<std::pair<std::string, std::string>> received;  // client id, payload
  std::vector<connection_end> ends;
  server_fixture f([&](server_options& o) {
    o.max_interval = 1s;
    o.detector = fixed_detector_config{.interval = 100ms, .multiplier = 3, .timeout = 5000ms};
    o.on_data = [&](const std::string& id, std::span<const std::byte> payload) {
      std::lock_guard lock(m);
      received.emplace_back(id, std::string(reinterpret_cast<const char*>(payload.data()),
                                            payload.size()));
    };
    o.on_end = [&](const connection_end& e) {
      std::lock_guard lock(m);
      ends.push_back(e);
    };
  });
  raw_peer app(f.port());
  app.handshake("app-1", 1000ms);
  const std::string hello_text = "to the device";
  const auto* bytes = reinterpret_cast<const std::byte*>(hello_text.data());
  CHECK_FALSE(f.send("nobody", {bytes, bytes + hello_text.size()}));
  REQUIRE(f.send("app-1", {bytes, bytes + hello_text.size()}));
  // The DATA arrives (possibly after one of the server's PINGs).
  std::optional<wire::data> got;
  for (int i = 0; i < 5 && !got; ++i) {
    const auto r = app.read_frame();
    REQUIRE(r.frames.size() == 1);
    if (const auto* d = std::get_if<wire::data>(&r.frames[0])) got = *d;
  }
  REQUIRE(got);
  CHECK(std::string(reinterpret_cast<const char*>(got->payload.data()), got->payload.size()) ==
        hello_text);

  const std::string report = "from the device";
  const auto* up = reinterpret_cast<const std::byte*>(report.data());
  app.send_frame(wire::data{{up, up + report.size()}});
  REQUIRE(eventually([&] {
    std::lock_guard lock(m);
    return !received.empty();
  }));
  {
    std::lock_guard lock(m);
    CHECK(received[0] == std::pair<std::string, std::string>("app-1", report));
  }
  app.close();
  REQUIRE(eventually([&] {
    std::lock_guard lock(m);
    return !ends.empty();
  }));
  std::lock_guard lock(m);
  CHECK(ends[0].client_id == "app-1");
  CHECK(ends[0].end.cause == cause::peer_closed);
  CHECK(ends[0].end.detected_by == detected_by::eof);
  CHECK(ends[0].peer.address().to_string() == "127.0.0.1");
  CHECK(ends[0].session_id > 0);
}

namespace {

// A real client (the library's session) that heartbeats at `interval` until closed.
class heartbeating_client {
 public:
  heartbeating_client(unsigned short port, const std::string& id, std::chrono::milliseconds interval)
      : socket_(io_.context()) {
    socket_.connect({boost::asio::ip::make_address("127.0.0.1"), port});
    session_config c;
    c.client_id = id;
    c.requested_interval = interval;
    session_handlers h;
    h.on_established = [this](const session_established& e) {
      interval_ms_ = e.interval.count();
      established_ = true;
    };
    h.on_end = [this](const session_end&) { ended_ = true; };
    session_ = session::start(std::move(socket_), c, std::move(h));
    REQUIRE(eventually([&] { return established_.load(); }));
  }
  ~heartbeating_client() { close(); }
  void close() {
    session_->close();
    REQUIRE(eventually([&] { return ended_.load(); }));
  }
  std::int64_t interval_ms() const { return interval_ms_; }

 private:
  io_thread io_;
  boost::asio::ip::tcp::socket socket_;
  std::shared_ptr<session> session_;
  std::atomic<bool> established_{false}, ended_{false};
  std::atomic<std::int64_t> interval_ms_{0};
};

// Recording at a short interval: a generous detector, so a slow (sanitized) build never
// declares the client dead.
void record_fast(server_options& o, std::size_t arrivals) {
  o.record_arrivals = arrivals;
  o.detector = fixed_detector_config{.interval = 100ms, .multiplier = 20.0, .timeout = 0ms};
}

// The recorded live connection of `client_id` in GET /arrivals, or null.
json::value recorded(server_fixture& f, const std::string& client_id) {
  const auto listed = f.get_json("/arrivals");
  for (const auto& c : listed.at("connections").as_array())
    if (str(c.at("client_id")) == client_id) return c;
  return nullptr;
}

struct stored_arrivals {
  std::int64_t connection_id = 0;
  std::int64_t interval_ms = 0;
  std::int64_t count = 0;
  std::int64_t seen = 0;
  std::int64_t first_mono_ns = 0;
  std::int64_t ended_mono_ns = 0;
  std::vector<std::int64_t> times_us;
};

std::vector<stored_arrivals> read_arrivals(const std::string& path) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(db,
                             "SELECT a.connection_id, a.interval_ms, a.count, a.seen, "
                             "a.first_mono_ns, c.ended_mono_ns, a.times_us FROM arrivals a "
                             "JOIN connections c ON c.id = a.connection_id ORDER BY a.id",
                             -1, &stmt, nullptr) == SQLITE_OK);
  std::vector<stored_arrivals> rows;
  while (sqlite3_step(stmt) == SQLITE_ROW) {
    stored_arrivals r;
    r.connection_id = sqlite3_column_int64(stmt, 0);
    r.interval_ms = sqlite3_column_int64(stmt, 1);
    r.count = sqlite3_column_int64(stmt, 2);
    r.seen = sqlite3_column_int64(stmt, 3);
    r.first_mono_ns = sqlite3_column_int64(stmt, 4);
    r.ended_mono_ns = sqlite3_column_int64(stmt, 5);
    const auto* bytes = static_cast<const unsigned char*>(sqlite3_column_blob(stmt, 6));
    const int size = sqlite3_column_bytes(stmt, 6);
    for (int i = 0; i + 8 <= size; i += 8) {
      std::uint64_t v = 0;
      for (int b = 0; b < 8; ++b) v |= static_cast<std::uint64_t>(bytes[i + b]) << (8 * b);
      r.times_us.push_back(static_cast<std::int64_t>(v));
    }
    rows.push_back(std::move(r));
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return rows;
}

}  // namespace

TEST_CASE("server: --record-arrivals keeps a connection's last N arrivals and stores them") {
  server_fixture f([](server_options& o) { record_fast(o, 50); });
  std::uint64_t since = 0;
  {
    heartbeating_client client(f.port(), "recorded", 20ms);
    REQUIRE(client.interval_ms() == 20);
    // More than 50 arrivals, seen live through the control API.
    REQUIRE(eventually([&] {
      const auto c = recorded(f, "recorded");
      return !c.is_null() && c.at("seen").to_number<std::int64_t>() > 60;
    }));
    const auto live = recorded(f, "recorded");
    CHECK(live.at("count").to_number<std::int64_t>() == 50);  // the ring is full
    CHECK(live.at("interval_ms").to_number<std::int64_t>() == 20);
  }  // BYE, then FIN
  const auto event = f.next_event(since);
  CHECK(str(event.at("client_id")) == "recorded");
  f.flush_store();

  const auto rows = read_arrivals(f.db_path());
  REQUIRE(rows.size() == 1);
  const auto& a = rows[0];
  CHECK(a.interval_ms == 20);
  CHECK(a.count == 50);
  CHECK(a.seen > 60);
  REQUIRE(a.times_us.size() == 50);
  CHECK(a.times_us.front() == 0);
  for (std::size_t i = 1; i < a.times_us.size(); ++i) {
    INFO("arrival " << i);
    CHECK(a.times_us[i] > a.times_us[i - 1]);
  }
  // One PING an interval (jittered ±10%): the mean gap is about 20 ms. The last arrival is
  // the BYE, a moment after the last PING, so it is left out of the mean.
  const double mean_gap_ms =
      static_cast<double>(a.times_us[48] - a.times_us[0]) / 48.0 / 1000.0;
  INFO("mean gap " << mean_gap_ms << " ms");
  CHECK(mean_gap_ms > 14.0);
  CHECK(mean_gap_ms < 30.0);
  // The last N: the trace ends at the connection's end, not at its 50th arrival.
  const std::int64_t last_ns = a.first_mono_ns + a.times_us.back() * 1000;
  CHECK(last_ns <= a.ended_mono_ns + 1000);
  CHECK(a.ended_mono_ns - last_ns < 100'000'000);

  // probe qos --from-db reads the same trace back.
  const auto traces = probe::qos::read_traces_from_db(f.db_path());
  REQUIRE(traces.size() == 1);
  const auto& t = traces[0];
  CHECK_THAT(t.name, Catch::StartsWith("connection " + std::to_string(a.connection_id) +
                                       " (recorded, 127.0.0.1:"));
  CHECK(t.interval == 20ms);
  REQUIRE(t.arrival_ms.size() == 50);
  for (std::size_t i = 0; i < 50; ++i)
    CHECK(t.arrival_ms[i] == static_cast<double>(a.times_us[i]) / 1000.0);
  CHECK(probe::qos::read_traces_from_db(f.db_path(), 51).empty());
}

TEST_CASE("server: GET /arrivals serves a recorded live connection's times") {
  server_fixture f([](server_options& o) { record_fast(o, 1000); });
  heartbeating_client client(f.port(), "live", 20ms);
  REQUIRE(eventually([&] {
    const auto c = recorded(f, "live");
    return !c.is_null() && c.at("count").to_number<std::int64_t>() >= 12;
  }));
  const auto listed = f.get_json("/arrivals").as_object();
  CHECK(listed.at("record_arrivals").to_number<std::int64_t>() == 1000);
  CHECK(listed.at("record_sample").to_number<std::int64_t>() == 1);
  const auto row = recorded(f, "live");
  const auto id = row.at("session_id").to_number<std::uint64_t>();
  CHECK_THAT(str(row.at("peer")), Catch::StartsWith("127.0.0.1:"));

  const auto all = f.get_json("/arrivals?session_id=" + std::to_string(id)).as_object();
  CHECK(str(all.at("client_id")) == "live");
  CHECK(all.at("interval_ms").to_number<std::int64_t>() == 20);
  CHECK(all.at("first").to_number<std::int64_t>() == 1);
  const auto& times = all.at("times_ms").as_array();
  REQUIRE(times.size() >= 12);
  CHECK(all.at("next").to_number<std::uint64_t>() == times.size());
  CHECK(times[0].to_number<double>() == 0.0);
  for (std::size_t i = 1; i < times.size(); ++i) {
    const double gap = times[i].to_number<double>() - times[i - 1].to_number<double>();
    INFO("gap " << i << ": " << gap << " ms");
    CHECK(gap > 0.0);
    CHECK(gap < 200.0);
  }
  // Paging: what follows arrival 5, with the same origin.
  const auto rest = f.get_json("/arrivals?session_id=" + std::to_string(id) + "&since=5").as_object();
  CHECK(rest.at("first").to_number<std::int64_t>() == 6);
  CHECK(rest.at("times_ms").as_array().at(0).to_number<double>() == times[5].to_number<double>());

  // The API's conventions: a missing connection is 404, a bad parameter 400 naming it.
  const auto missing = http_get(f.control_port(), "/arrivals?session_id=999999");
  CHECK(missing.status == 404);
  CHECK_THAT(str(json::parse(missing.body).at("error")), Catch::Contains("999999"));
  const auto bad = http_get(f.control_port(), "/arrivals?session_id=x");
  CHECK(bad.status == 400);
  CHECK_THAT(str(json::parse(bad.body).at("error")), Catch::Contains("session_id"));
  CHECK(http_get(f.control_port(), "/arrivals?since=3").status == 400);
  CHECK(http_get(f.control_port(), "/arrivals?wait=3").status == 400);
}

TEST_CASE("server: --record-sample K records one established connection in K") {
  server_fixture f([](server_options& o) {
    record_fast(o, 100);
    o.record_sample = 2;
  });
  heartbeating_client first(f.port(), "first", 20ms);
  heartbeating_client second(f.port(), "second", 20ms);
  heartbeating_client third(f.port(), "third", 20ms);
  std::set<std::string> ids;
  const auto listed = f.get_json("/arrivals");
  for (const auto& c : listed.at("connections").as_array())
    ids.insert(str(c.at("client_id")));
  CHECK(ids == std::set<std::string>{"first", "third"});
}

TEST_CASE("server: with recording off nothing is kept or written") {
  server_fixture f([](server_options& o) {
    o.detector = fixed_detector_config{.interval = 100ms, .multiplier = 20.0, .timeout = 0ms};
  });
  std::uint64_t since = 0;
  {
    heartbeating_client client(f.port(), "unrecorded", 20ms);
    const auto listed = f.get_json("/arrivals").as_object();
    CHECK(listed.at("record_arrivals").to_number<std::int64_t>() == 0);
    CHECK(listed.at("connections").as_array().empty());
    REQUIRE(eventually([&] {
      const auto c = f.get_json("/connections").as_array();
      return c.size() == 1 && c[0].at("age_ms").to_number<double>() > 200.0;  // 10 PINGs
    }));
  }
  CHECK(str(f.next_event(since).at("client_id")) == "unrecorded");
  CHECK(f.stored_causes().size() == 1);
  CHECK(read_arrivals(f.db_path()).empty());
  CHECK(probe::qos::read_traces_from_db(f.db_path()).empty());
}

TEST_CASE("server: a reload changes limits at once and settings for new connections only, "
          "with two loops running") {
  server_fixture f([](server_options& o) {
    o.threads = 2;
    o.max_connections = 1;
  });
  raw_peer first(f.port());
  first.handshake("first", 5s);
  auto next = f.options();
  next.max_connections = 4;
  next.keepalive = parse_keepalive("7s:2s:3");
  next.detector = fixed_detector_config{.interval = 100ms, .multiplier = 4.0, .timeout = 0ms};
  next.threads = 3;
  const auto said = f.reconfigure(next);
  const auto line = [&](const std::string& text) {
    return std::any_of(said.begin(), said.end(),
                       [&](const std::string& s) { return s.find(text) != std::string::npos; });
  };
  CHECK(line("max connections 1 -> 4"));
  CHECK(line("keepalive (new connections)"));
  CHECK(line("detector (new connections)"));
  CHECK(line("threads changes only on restart"));
  CHECK(f.reconfigure(next).empty() == false);  // still differs in threads, nothing else
  CHECK(f.reconfigure(next).size() == 1);

  // Three newcomers on whichever loop takes them: all admitted now, all with the new
  // keepalive; the first connection keeps the system's.
  std::vector<std::unique_ptr<raw_peer>> later;
  for (int i = 0; i < 3; ++i) {
    later.push_back(std::make_unique<raw_peer>(f.port()));
    later.back()->handshake("later-" + std::to_string(i), 5s);
  }
  CHECK(f.status().at("established").as_int64() == 4);
  CHECK_THAT(std::string(f.status().at("keepalive").as_string()), Catch::Contains("7s"));
  std::uint64_t since = 0;
  later.clear();
  first.close();
  for (int i = 0; i < 4; ++i)
    (void)f.next_event(since);
  const auto stored = f.rows("SELECT client_id, keepalive, detector FROM connections ORDER BY client_id");
  REQUIRE(stored.size() == 4);
  INFO(stored[0][1] << " / " << stored[0][2] << "; " << stored[1][1] << " / " << stored[1][2]);
  CHECK_THAT(stored[0][1], !Catch::Contains("7s"));  // "first"
  CHECK_THAT(stored[0][2], Catch::Contains("3"));   // the fixture's fixed 3x
  for (std::size_t i = 1; i < 4; ++i) {
    CHECK_THAT(stored[i][1], Catch::StartsWith("7s"));
    CHECK_THAT(stored[i][2], Catch::Contains("4"));
  }

  // Bad values are refused whole.
  auto bad = next;
  bad.min_interval = 0ms;
  CHECK_THROWS_AS(f.reconfigure(bad), deadpeer::config_error);
}
