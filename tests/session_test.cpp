#include <deadpeer/session.hpp>

#include "loopback.hpp"

#include <deadpeer/clock.hpp>

#include <catch2/catch.hpp>

#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <future>
#include <list>
#include <mutex>
#include <thread>

using namespace std::chrono_literals;
using namespace deadpeer;
using deadpeer::test::io_thread;
using deadpeer::test::listener;
using deadpeer::test::raw_peer;
using tcp = boost::asio::ip::tcp;

namespace {

constexpr auto wait_limit = 10s;  // every wait is bounded; tests normally take milliseconds

// Collects a session's events for the test thread.
struct recorder {
  std::promise<session_established> established_promise;
  std::promise<session_end> end_promise;
  std::future<session_established> established = established_promise.get_future();
  std::future<session_end> ended = end_promise.get_future();
  std::atomic<int> rtt_samples{0};
  std::mutex mutex;
  std::vector<std::string> data;

  session_handlers handlers() {
    session_handlers h;
    h.on_established = [this](const session_established& e) { established_promise.set_value(e); };
    h.on_end = [this](const session_end& e) { end_promise.set_value(e); };
    h.on_rtt = [this](std::chrono::nanoseconds) { ++rtt_samples; };
    h.on_data = [this](std::span<const std::byte> bytes) {
      std::lock_guard lock(mutex);
      data.emplace_back(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    };
    return h;
  }

  session_end wait_end() {
    REQUIRE(ended.wait_for(wait_limit) == std::future_status::ready);
    return ended.get();
  }
};

session_config server_config(std::chrono::milliseconds interval = 100ms) {
  session_config c;
  c.role = session_role::server;
  c.min_interval = 10ms;
  c.default_interval = interval;
  c.detector = fixed_detector_config{.interval = interval, .multiplier = 3.0, .timeout = 0ms};
  c.handshake_timeout = 2s;
  c.session_id = 42;
  return c;
}

session_config client_config(std::chrono::milliseconds interval = 100ms) {
  session_config c;
  c.role = session_role::client;
  c.client_id = "test-client";
  c.requested_interval = interval;
  c.detector = fixed_detector_config{.interval = interval, .multiplier = 3.0, .timeout = 0ms};
  return c;
}

std::chrono::milliseconds ms_between(std::int64_t from_ns, std::int64_t to_ns) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::nanoseconds(to_ns - from_ns));
}

template <typename Frame>
const Frame* find_frame(const deadpeer::test::read_result& r) {
  for (const auto& f : r.frames)
    if (const auto* x = std::get_if<Frame>(&f)) return x;
  return nullptr;
}

// Waits (bounded) until a condition holds, checking every few milliseconds.
template <typename Predicate>
bool eventually(Predicate p, std::chrono::milliseconds limit = wait_limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!p()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

}  // namespace

TEST_CASE("two sessions heartbeat, measure RTT, and close gracefully") {
  io_thread io;
  listener l(io.context());
  tcp::socket client_socket(io.context());
  client_socket.connect({boost::asio::ip::make_address("127.0.0.1"), l.port()});
  // Heartbeats every 50 ms so that ten RTT samples come quickly, but a detector that
  // allows 5 s of silence: this test is about heartbeats flowing and a clean close, not
  // about how soon silence is noticed (the hung-peer tests are). With 3 x 50 ms, "nobody
  // was declared dead" would be a bet that no thread here stalls for 150 ms, which a
  // loaded machine loses.
  const fixed_detector_config generous{.interval = 50ms, .multiplier = 3.0, .timeout = 5s};
  auto server_settings = server_config(50ms);
  server_settings.detector = generous;
  auto client_settings = client_config(50ms);
  client_settings.detector = generous;
  recorder server_events, client_events;
  session::start(l.accept(), server_settings, server_events.handlers());
  auto client = session::start(std::move(client_socket), client_settings, client_events.handlers());

  REQUIRE(client_events.established.wait_for(wait_limit) == std::future_status::ready);
  const auto agreed = client_events.established.get();
  CHECK(agreed.interval == 50ms);
  CHECK(agreed.dead_after == 5s);
  CHECK(agreed.session_id == 42);
  REQUIRE(server_events.established.wait_for(wait_limit) == std::future_status::ready);
  CHECK(server_events.established.get().client_id == "test-client");

  // Ten heartbeats' worth of RTT samples, and nobody declared dead meanwhile. One side
  // pings and the other answers (protocol §6), and which one pings depends on who sent
  // first: the samples of both sides count.
  REQUIRE(eventually([&] { return client_events.rtt_samples + server_events.rtt_samples >= 10; }));
  CHECK(client_events.ended.wait_for(0s) == std::future_status::timeout);
  CHECK(server_events.ended.wait_for(0s) == std::future_status::timeout);

  const std::string hello = "application payload";
  client->send({reinterpret_cast<const std::byte*>(hello.data()),
                reinterpret_cast<const std::byte*>(hello.data()) + hello.size()});
  REQUIRE(eventually([&] {
    std::lock_guard lock(server_events.mutex);
    return !server_events.data.empty();
  }));
  {
    std::lock_guard lock(server_events.mutex);
    CHECK(server_events.data.front() == hello);
  }

  client->close();
  const auto client_end = client_events.wait_end();
  const auto server_end = server_events.wait_end();
  CHECK(client_end.cause == cause::local_close);
  CHECK(client_end.graceful);
  CHECK(client_end.last_rtt.has_value());
  CHECK(server_end.cause == cause::peer_closed);
  CHECK(server_end.bye == wire::bye_reason::normal);
  CHECK(server_end.detected_by == detected_by::application);
}

TEST_CASE("a peer that closes its socket is noticed within milliseconds as EOF") {
  io_thread io;
  listener l(io.context());
  raw_peer peer(l.port());
  recorder events;
  session::start(l.accept(), server_config(1s), events.handlers());
  peer.handshake("closer", 1s);
  const auto closed_at = monotonic_ns();
  peer.close();
  const auto end = events.wait_end();
  CHECK(end.cause == cause::peer_closed);
  CHECK(end.detected_by == detected_by::eof);
  CHECK(ms_between(closed_at, end.decided_ns) < 100ms);
}

TEST_CASE("a peer that resets is noticed as a reset") {
  io_thread io;
  listener l(io.context());
  raw_peer peer(l.port());
  recorder events;
  session::start(l.accept(), server_config(1s), events.handlers());
  peer.handshake("resetter", 1s);
  peer.close_with_reset();
  const auto end = events.wait_end();
  CHECK(end.cause == cause::peer_reset);
  CHECK(end.detected_by == detected_by::reset);
  CHECK(end.error == std::errc::connection_reset);
}

TEST_CASE("a hung peer (socket open, silent) is declared dead by the heartbeat") {
  io_thread io;
  listener l(io.context());
  raw_peer peer(l.port());
  recorder events;
  session::start(l.accept(), server_config(100ms), events.handlers());
  const auto welcome = peer.handshake("hung", 100ms);
  CHECK(welcome.dead_after_ms == 300);
  // The peer now says nothing; its kernel still ACKs the server's PINGs.
  const auto end = events.wait_end();
  CHECK(end.cause == cause::heartbeat_timeout);
  CHECK(end.detected_by == detected_by::heartbeat);
  CHECK(end.abortive);
  const auto silence = ms_between(end.last_heard_ns, end.decided_ns);
  INFO("verdict after " << silence.count() << " ms of silence");
  CHECK(silence >= 300ms);
  CHECK(silence <= 400ms);  // timeout + one interval
  // Abortive close: the peer sees RST, not FIN.
  const auto r = peer.read_to_end();
  CHECK_FALSE(r.eof);
  CHECK(r.error == std::errc::connection_reset);
}

TEST_CASE("a client notices a hung server by its own detector") {
  io_thread io;
  listener l(io.context());
  tcp::socket client_socket(io.context());
  client_socket.connect({boost::asio::ip::make_address("127.0.0.1"), l.port()});
  auto accepted = l.accept();
  raw_peer server(accepted.release(), 5s);
  recorder events;
  session::start(std::move(client_socket), client_config(100ms), events.handlers());
  const auto hello = server.read_frame();
  REQUIRE(find_frame<wire::hello>(hello) != nullptr);
  server.send_frame(wire::welcome{.version = wire::protocol_version,
                                  .interval_ms = 100,
                                  .dead_after_ms = 300,
                                  .session_id = 7,
                                  .max_frame = wire::default_max_frame,
                                  .min_interval_ms = 10,
                                  .max_interval_ms = 1000});
  const auto end = events.wait_end();
  CHECK(end.cause == cause::heartbeat_timeout);
  const auto silence = ms_between(end.last_heard_ns, end.decided_ns);
  CHECK(silence >= 300ms);
  CHECK(silence <= 400ms);
}

TEST_CASE("rejecting a 10 MB upload: graceful close delivers ERROR then EOF but close() resets") {
  // The peer sends HELLO and then starts a 10 MB DATA frame, far above the 64 KiB limit,
  // reading concurrently like any client that can receive an error mid-upload.
  const std::size_t body = 10 * 1024 * 1024;
  std::vector<std::byte> upload(body + 5, std::byte{'x'});
  const auto length = static_cast<std::uint32_t>(body + 1);
  for (int i = 0; i < 4; ++i)
    upload[static_cast<std::size_t>(i)] = static_cast<std::byte>((length >> (24 - 8 * i)) & 0xFF);
  upload[4] = std::byte(wire::frame_type::data);

  // The peer's kernel reports an RST once, to whichever call asks first: the writer's
  // send() or the reader's recv(); a later call sees EPIPE or a plain EOF.
  std::error_code write_error;
  auto run_upload = [&](raw_peer& peer) {
    std::thread writer([&] {
      write_error = peer.send_bytes(upload);
      peer.shutdown_send();
    });
    auto result = peer.read_to_end();
    writer.join();
    return result;
  };

  SECTION("graceful close (the session)") {
    io_thread io;
    listener l(io.context());
    raw_peer peer(l.port());
    recorder events;
    session::start(l.accept(), server_config(1s), events.handlers());
    peer.handshake("uploader", 1s);
    const auto r = run_upload(peer);
    const auto* error = find_frame<wire::error>(r);
    REQUIRE(error != nullptr);
    CHECK(error->code == wire::error_code::frame_too_large);
    CHECK(r.eof);
    CHECK_FALSE(r.error);
    CHECK_FALSE(write_error);  // the whole upload was accepted and discarded, no reset
    const auto end = events.wait_end();
    CHECK(end.cause == cause::protocol_error);
    CHECK(end.protocol_error == wire::error_code::frame_too_large);
    CHECK(end.graceful);
  }

  SECTION("plain close() with the upload unread (what a naive server does)") {
    io_thread io;
    listener l(io.context());
    raw_peer peer(l.port());
    auto accepted = l.accept();
    raw_peer naive(accepted.release(), 5s);
    const auto hello = wire::encode(wire::hello{
        .version = 1, .client_id = "uploader", .requested_interval_ms = 0, .auth_token = {}});
    REQUIRE_FALSE(peer.send_bytes(hello));
    std::thread writer([&] { write_error = peer.send_bytes(upload); });
    // The naive server reads HELLO and the upload's frame header, sees the length is too
    // large, answers ERROR and closes while the body is still arriving, unread.
    std::vector<std::byte> head(hello.size() + 5);
    REQUIRE(::recv(naive.fd(), head.data(), head.size(), MSG_WAITALL) ==
            static_cast<ssize_t>(head.size()));
    pollfd more{.fd = naive.fd(), .events = POLLIN, .revents = 0};
    REQUIRE(::poll(&more, 1, 5000) == 1);  // body bytes are queued, unread
    naive.send_frame(wire::error{wire::error_code::frame_too_large, "too large"});
    naive.close();
    const auto r = peer.read_to_end();
    writer.join();
    INFO("read: eof " << r.eof << ", error " << r.error.message()
                      << "; write: " << write_error.message());
    CHECK((r.error == std::errc::connection_reset || write_error == std::errc::connection_reset));
  }
}

TEST_CASE("protocol violations get the right ERROR code, then a graceful close") {
  struct violation {
    const char* name;
    std::vector<std::byte> bytes;
    wire::error_code expected;
  };
  auto bytes = [](std::string_view s) {
    return std::vector<std::byte>(reinterpret_cast<const std::byte*>(s.data()),
                                  reinterpret_cast<const std::byte*>(s.data()) + s.size());
  };
  std::vector<violation> cases{
      {"HTTP request instead of HELLO", bytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
       wire::error_code::frame_too_large},
      {"length above the handshake limit",
       {std::byte{0}, std::byte{0}, std::byte{0x07}, std::byte{0xD0}, std::byte{1}},
       wire::error_code::frame_too_large},
      {"unknown frame type",
       {std::byte{0}, std::byte{0}, std::byte{0}, std::byte{1}, std::byte{0x7F}},
       wire::error_code::unknown_frame_type},
      {"PING before HELLO", wire::encode(wire::ping{.sequence = 1, .timestamp_ns = 1}),
       wire::error_code::unexpected_frame},
      {"HELLO with a wrong version",
       wire::encode(wire::hello{
           .version = 9, .client_id = "x", .requested_interval_ms = 0, .auth_token = {}}),
       wire::error_code::unsupported_version},
  };
  for (const auto& c : cases) {
    DYNAMIC_SECTION(c.name) {
      io_thread io;
      listener l(io.context());
      raw_peer peer(l.port());
      recorder events;
      session::start(l.accept(), server_config(1s), events.handlers());
      REQUIRE_FALSE(peer.send_bytes(c.bytes));
      const auto r = peer.read_to_end();
      const auto* error = find_frame<wire::error>(r);
      REQUIRE(error != nullptr);
      CHECK(error->code == c.expected);
      CHECK(r.eof);  // FIN after our ERROR, not RST
      peer.close();  // a client closes on EOF; the server stops draining
      const auto end = events.wait_end();
      CHECK(end.protocol_error == c.expected);
      CHECK(end.graceful);
    }
  }
}

TEST_CASE("no HELLO within the handshake timeout ends with handshake_timeout") {
  io_thread io;
  listener l(io.context());
  raw_peer peer(l.port());
  recorder events;
  auto config = server_config(1s);
  config.handshake_timeout = 200ms;
  session::start(l.accept(), config, events.handlers());
  const auto r = peer.read_to_end();
  const auto* error = find_frame<wire::error>(r);
  REQUIRE(error != nullptr);
  CHECK(error->code == wire::error_code::handshake_timeout);
  CHECK(r.eof);
  peer.close();  // a client closes on EOF; the server stops draining
  const auto end = events.wait_end();
  CHECK(end.cause == cause::handshake_timeout);
  CHECK(ms_between(end.opened_ns, end.decided_ns) >= 200ms);
}

TEST_CASE("a ping flood gets ERROR too_many_pings") {
  io_thread io;
  listener l(io.context());
  raw_peer peer(l.port());
  recorder events;
  session::start(l.accept(), server_config(1s), events.handlers());
  peer.handshake("flooder", 1s);
  for (std::uint64_t i = 1; i <= 10; ++i)
    peer.send_frame(wire::ping{.sequence = i, .timestamp_ns = i});
  const auto r = peer.read_to_end();
  const auto* error = find_frame<wire::error>(r);
  REQUIRE(error != nullptr);
  CHECK(error->code == wire::error_code::too_many_pings);
  peer.close();  // a client closes on EOF; the server stops draining
  const auto end = events.wait_end();
  CHECK(end.protocol_error == wire::error_code::too_many_pings);
}

TEST_CASE("the server clamps the requested interval into its range") {
  // The recorders outlive the io thread: each session reports its end after its peer
  // closes, which may be after the loop iteration that created it.
  std::list<recorder> recorders;
  io_thread io;
  listener l(io.context());
  auto config = server_config(1s);
  config.min_interval = 200ms;
  config.max_interval = 5s;
  for (const auto& [requested, accepted] :
       std::vector<std::pair<std::chrono::milliseconds, std::uint32_t>>{
           {10ms, 200}, {100s, 5000}, {0ms, 1000}, {700ms, 700}}) {
    raw_peer peer(l.port());
    auto& events = recorders.emplace_back();
    session::start(l.accept(), config, events.handlers());
    CHECK(peer.handshake("clamp", requested).interval_ms == accepted);
  }
}

TEST_CASE("a BYE superseded reaches the client as cause superseded") {
  io_thread io;
  listener l(io.context());
  tcp::socket client_socket(io.context());
  client_socket.connect({boost::asio::ip::make_address("127.0.0.1"), l.port()});
  recorder server_events, client_events;
  auto server = session::start(l.accept(), server_config(), server_events.handlers());
  session::start(std::move(client_socket), client_config(), client_events.handlers());
  REQUIRE(server_events.established.wait_for(wait_limit) == std::future_status::ready);
  server->close(wire::bye_reason::superseded, cause::superseded);
  CHECK(server_events.wait_end().cause == cause::superseded);
  const auto end = client_events.wait_end();
  CHECK(end.cause == cause::superseded);
  CHECK(end.bye == wire::bye_reason::superseded);
}

TEST_CASE("an ended session does not keep itself alive") {
  io_thread io;
  listener l(io.context());
  raw_peer peer(l.port());
  recorder events;
  std::weak_ptr<session> weak = session::start(l.accept(), server_config(100ms), events.handlers());
  peer.handshake("short-lived", 100ms);
  peer.close();
  (void)events.wait_end();
  CHECK(eventually([&] { return weak.expired(); }));
}

TEST_CASE("keepalive options given to a session are applied to its socket") {
  io_thread io;
  listener l(io.context());
  raw_peer peer(l.port());
  recorder events;
  auto config = server_config(1s);
  config.keepalive = parse_keepalive("7s:3s:4:20s");
  auto accepted = l.accept();
  const int fd = accepted.native_handle();
  session::start(std::move(accepted), config, events.handlers());
  peer.handshake("keepalive", 1s);
  REQUIRE(events.established.wait_for(wait_limit) == std::future_status::ready);
  std::error_code ec;
  const auto applied = read_keepalive(fd, ec);
  REQUIRE_FALSE(ec);
  CHECK(applied ==
        keepalive_settings{
            .enabled = true, .idle = 7s, .interval = 3s, .count = 4, .user_timeout = 20s});
  peer.close();
  (void)events.wait_end();
}

TEST_CASE("an exception from a handler ends the session with internal_error, gracefully") {
  // One thrown where the engine calls the handler (on_established), one where the
  // session itself does (on_heard): both become ERROR internal_error, then FIN.
  for (const bool from_engine : {true, false}) {
    DYNAMIC_SECTION((from_engine ? "on_established" : "on_heard")) {
      io_thread io;
      listener l(io.context());
      raw_peer peer(l.port());
      recorder events;
      auto handlers = events.handlers();
      if (from_engine)
        handlers.on_established = [](const session_established&) {
          throw std::runtime_error("handler failed");
        };
      else
        handlers.on_heard = [](std::int64_t) { throw std::runtime_error("handler failed"); };
      session::start(l.accept(), server_config(1s), std::move(handlers));
      peer.send_frame(wire::hello{.version = wire::protocol_version,
                                  .client_id = "thrower",
                                  .requested_interval_ms = 1000,
                                  .auth_token = {}});
      const auto r = peer.read_to_end();
      const auto* error = find_frame<wire::error>(r);
      REQUIRE(error != nullptr);
      CHECK(error->code == wire::error_code::internal_error);
      CHECK(r.eof);
      peer.close();
      const auto end = events.wait_end();
      CHECK(end.protocol_error == wire::error_code::internal_error);
      CHECK(end.graceful);
    }
  }
}

TEST_CASE("with end_on_eof off, a half-closed peer is reported and the session stays") {
  io_thread io;
  listener l(io.context());
  raw_peer peer(l.port());
  recorder events;
  std::promise<void> finished_promise;
  auto finished = finished_promise.get_future();
  auto handlers = events.handlers();
  handlers.on_peer_finished = [&] { finished_promise.set_value(); };
  auto config = server_config(1s);
  config.end_on_eof = false;
  auto s = session::start(l.accept(), config, std::move(handlers));
  peer.handshake("half", 1s);
  peer.shutdown_send();
  REQUIRE(finished.wait_for(wait_limit) == std::future_status::ready);
  CHECK(events.ended.wait_for(0s) == std::future_status::timeout);
  // The owner decides: a graceful close still reaches the peer, BYE then EOF.
  s->close(wire::bye_reason::normal, cause::reaped);
  const auto end = events.wait_end();
  CHECK(end.cause == cause::reaped);
  CHECK(end.graceful);
  const auto r = peer.read_to_end();
  const auto* bye = find_frame<wire::bye>(r);
  REQUIRE(bye != nullptr);
  CHECK(bye->reason == wire::bye_reason::normal);
  CHECK(r.eof);
}

TEST_CASE("half_close sends FIN and then nothing, not even PONGs, while still reading") {
  io_thread io;
  listener l(io.context());
  tcp::socket client_socket(io.context());
  client_socket.connect({boost::asio::ip::make_address("127.0.0.1"), l.port()});
  auto accepted = l.accept();
  raw_peer server(accepted.release(), 5s);
  recorder events;
  auto client = session::start(std::move(client_socket), client_config(1s), events.handlers());
  REQUIRE(find_frame<wire::hello>(server.read_frame()) != nullptr);
  server.send_frame(wire::welcome{.version = wire::protocol_version,
                                  .interval_ms = 1000,
                                  .dead_after_ms = 3000,
                                  .session_id = 7,
                                  .max_frame = wire::default_max_frame,
                                  .min_interval_ms = 10,
                                  .max_interval_ms = 5000});
  REQUIRE(events.established.wait_for(wait_limit) == std::future_status::ready);
  client->half_close();
  server.send_frame(wire::ping{.sequence = 1, .timestamp_ns = 1});
  const auto r = server.read_to_end();
  CHECK(r.eof);
  CHECK(find_frame<wire::pong>(r) == nullptr);
  // Still reading: a BYE from the server ends it.
  server.send_frame(wire::bye{wire::bye_reason::normal});
  server.close();
  const auto end = events.wait_end();
  CHECK(end.cause == cause::peer_closed);
  CHECK(end.bye == wire::bye_reason::normal);
}
