#include <deadpeer/engine.hpp>

#include <catch2/catch.hpp>

#include <deadpeer/clock.hpp>

#include <stdexcept>

// The protocol engine, rule by rule, with a fake clock and no socket: each test feeds
// bytes and instants and checks the frames, deadlines and events that come out.

using namespace std::chrono_literals;
using namespace deadpeer;
using time_point = protocol_engine::time_point;

namespace {

const time_point t0 = time_point{} + 1000s;

std::vector<std::byte> bytes_of(const wire::frame& f) {
  return wire::encode(f);
}

// Every frame in `bytes`, which must hold whole frames only.
std::vector<wire::frame> frames_in(const std::vector<std::byte>& bytes) {
  wire::decoder d(UINT32_MAX);
  d.feed(bytes);
  std::vector<wire::frame> out;
  for (;;) {
    auto next = d.next();
    if (std::holds_alternative<std::monostate>(next)) break;
    REQUIRE(std::holds_alternative<wire::frame>(next));
    out.push_back(std::get<wire::frame>(next));
  }
  REQUIRE(d.buffered() == 0);
  return out;
}

struct recorder : engine_observer {
  std::vector<session_established> established;
  std::vector<std::vector<std::byte>> data;
  std::vector<std::chrono::nanoseconds> rtts;
  int admitted = 0;
  int finished = 0;
  std::optional<wire::error> refusal;
  bool throw_on_data = false;

  void on_established(const session_established& e) override { established.push_back(e); }
  void on_data(std::span<const std::byte> d) override {
    if (throw_on_data) throw std::runtime_error("boom");
    data.emplace_back(d.begin(), d.end());
  }
  void on_rtt(std::chrono::nanoseconds rtt) override { rtts.push_back(rtt); }
  void on_peer_finished() override { ++finished; }
  std::optional<wire::error> admit(const wire::hello&) override {
    ++admitted;
    return refusal;
  }
};

engine_config server_config() {
  engine_config c;
  c.role = session_role::server;
  c.min_interval = 100ms;
  c.max_interval = 60s;
  c.default_interval = 1s;
  c.detector = fixed_detector_config{.interval = 1s, .multiplier = 3.0, .timeout = 0ms};
  return c;
}

engine_config client_config() {
  engine_config c;
  c.role = session_role::client;
  c.client_id = "phone-1";
  c.requested_interval = 1s;
  return c;
}

wire::hello hello_for(std::uint32_t interval_ms = 1000) {
  return wire::hello{.version = wire::protocol_version,
                     .client_id = "phone-1",
                     .requested_interval_ms = interval_ms,
                     .auth_token = ""};
}

// A server engine that has received HELLO at t0 and answered.
struct established_server {
  engine_config config = server_config();
  engine_output out;
  recorder events;
  protocol_engine engine;

  explicit established_server(std::uint32_t interval_ms = 1000,
                              std::function<void(engine_config&)> adjust = {},
                              std::uint32_t jitter_seed = 7)
      : engine(config, t0, 42, jitter_seed, out) {
    if (adjust) adjust(config);
    engine.receive(bytes_of(hello_for(interval_ms)), t0, out, events);
    REQUIRE(engine.established());
    out.clear();
  }
  void feed(const wire::frame& f, time_point now) { engine.receive(bytes_of(f), now, out, events); }
};

const wire::error& only_error(const engine_output& out) {
  static std::vector<wire::frame> frames;
  frames = frames_in(out.ordered);
  REQUIRE(frames.size() == 1);
  REQUIRE(std::holds_alternative<wire::error>(frames[0]));
  return std::get<wire::error>(frames[0]);
}

}  // namespace

TEST_CASE("engine: a client says HELLO first and a server waits for it") {
  engine_output out;
  const auto client = client_config();
  protocol_engine c(client, t0, 0, 1, out);
  const auto frames = frames_in(out.ordered);
  REQUIRE(frames.size() == 1);
  const auto& hello = std::get<wire::hello>(frames[0]);
  CHECK(hello.client_id == "phone-1");
  CHECK(hello.requested_interval_ms == 1000);

  engine_output server_out;
  const auto server = server_config();
  protocol_engine s(server, t0, 0, 1, server_out);
  CHECK(server_out.empty());
  CHECK_FALSE(s.established());
}

TEST_CASE("engine: the server clamps the requested interval and answers WELCOME") {
  const auto config = server_config();
  for (const auto& [requested, granted] : std::vector<std::pair<std::uint32_t, std::uint32_t>>{
           {0, 1000}, {50, 100}, {250, 250}, {90000, 60000}}) {
    engine_output out;
    recorder events;
    protocol_engine s(config, t0, 42, 1, out);
    s.receive(bytes_of(hello_for(requested)), t0 + 3ms, out, events);
    const auto frames = frames_in(out.ordered);
    REQUIRE(frames.size() == 1);
    const auto& w = std::get<wire::welcome>(frames[0]);
    CHECK(w.interval_ms == granted);
    CHECK(w.dead_after_ms == 3 * granted);
    CHECK(w.session_id == 42);
    CHECK(w.max_frame == wire::default_max_frame);
    REQUIRE(events.established.size() == 1);
    CHECK(events.established[0].client_id == "phone-1");
    CHECK(events.established[0].interval == std::chrono::milliseconds(granted));
  }
}

TEST_CASE("engine: the handshake timeout fires at its value, not before") {
  auto config = server_config();
  config.handshake_timeout = 500ms;
  engine_output out;
  protocol_engine s(config, t0, 1, 1, out);
  CHECK(s.next_timeout() == t0 + 500ms);
  s.on_timeout(t0 + 499ms, out);
  CHECK_FALSE(s.ended());
  s.on_timeout(t0 + 500ms, out);
  REQUIRE(s.ended());
  CHECK(only_error(out).code == wire::error_code::handshake_timeout);
  CHECK(s.end().cause == cause::handshake_timeout);
  CHECK(s.end().detected_by == detected_by::reaper);
  CHECK(s.end_mode() == close_mode::graceful);
  CHECK(s.end().decided_ns == to_monotonic_ns(t0 + 500ms));

  auto client = client_config();
  client.handshake_timeout = 2s;
  engine_output cout;
  protocol_engine c(client, t0, 0, 1, cout);
  cout.clear();
  c.on_timeout(t0 + 2s, cout);
  REQUIRE(c.ended());
  CHECK(only_error(cout).code == wire::error_code::handshake_timeout);
  CHECK(c.end().detected_by == detected_by::application);
}

TEST_CASE("engine: HELLO is validated in the documented order before capacity") {
  const auto config = server_config();
  auto refused_with = [&](std::vector<std::byte> hello_bytes, std::optional<wire::error> refusal,
                          int& admitted) {
    engine_output out;
    recorder events;
    events.refusal = std::move(refusal);
    protocol_engine s(config, t0, 1, 1, out);
    s.receive(hello_bytes, t0, out, events);
    REQUIRE(s.ended());
    admitted = events.admitted;
    return only_error(out).code;
  };
  const wire::error full{wire::error_code::server_full, "connection limit reached"};
  int admitted = 0;

  auto bad_magic = bytes_of(hello_for());
  bad_magic[5] = std::byte{'X'};
  CHECK(refused_with(bad_magic, full, admitted) == wire::error_code::unsupported_version);
  CHECK(admitted == 0);

  auto bad_version = hello_for();
  bad_version.version = 9;
  CHECK(refused_with(bytes_of(bad_version), full, admitted) ==
        wire::error_code::unsupported_version);
  CHECK(admitted == 0);

  auto bad_id = bytes_of(hello_for());
  bad_id[10] = std::byte{0};  // id length 0
  CHECK(refused_with(bad_id, full, admitted) == wire::error_code::invalid_client_id);
  CHECK(admitted == 0);

  CHECK(refused_with(bytes_of(hello_for()), full, admitted) == wire::error_code::server_full);
  CHECK(admitted == 1);
  CHECK(refused_with(bytes_of(hello_for()),
                     wire::error{wire::error_code::auth_failed, "wrong token"},
                     admitted) == wire::error_code::auth_failed);
}

TEST_CASE("engine: anything but HELLO first is unexpected_frame") {
  const auto config = server_config();
  engine_output out;
  recorder events;
  protocol_engine s(config, t0, 1, 1, out);
  s.receive(bytes_of(wire::ping{1, 2}), t0, out, events);
  REQUIRE(s.ended());
  CHECK(only_error(out).code == wire::error_code::unexpected_frame);
  CHECK(s.end().cause == cause::protocol_error);
}

TEST_CASE("engine: max_frame is 1024 before WELCOME and the negotiated value after") {
  const auto config = server_config();
  {
    engine_output out;
    recorder events;
    protocol_engine s(config, t0, 1, 1, out);
    std::vector<std::byte> big{std::byte{0}, std::byte{0}, std::byte{0x04}, std::byte{0x01}};
    s.receive(big, t0, out, events);  // length 1025, header only
    REQUIRE(s.ended());
    CHECK(only_error(out).code == wire::error_code::frame_too_large);
  }
  established_server s;
  const std::vector<std::byte> payload(5000, std::byte{7});
  s.feed(wire::data{payload}, t0 + 10ms);
  CHECK_FALSE(s.engine.ended());
  REQUIRE(s.events.data.size() == 1);
  CHECK(s.events.data[0] == payload);
}

TEST_CASE("engine: a frame arriving one byte at a time is whole, and every byte is life") {
  established_server s;
  const auto ping = bytes_of(wire::ping{5, 6});
  for (std::size_t i = 0; i < ping.size(); ++i) {
    const auto at = t0 + std::chrono::milliseconds(100 * (i + 1));
    s.engine.receive(std::span(ping).subspan(i, 1), at, s.out, s.events);
    CHECK(s.engine.last_heard() == at);
    if (i + 1 < ping.size()) CHECK(s.engine.buffered() == i + 1);
  }
  CHECK(s.engine.buffered() == 0);
  const auto frames = frames_in(s.out.urgent);
  REQUIRE(frames.size() == 1);
  CHECK(std::get<wire::pong>(frames[0]) == wire::pong{5, 6});
}

TEST_CASE("engine: PONG echoes the PING, goes ahead of data, and only our PINGs give RTT") {
  established_server s;
  s.engine.send_data(std::vector<std::byte>(10, std::byte{1}), t0 + 1ms, s.out);
  s.feed(wire::ping{9, 123456}, t0 + 2ms);
  CHECK(frames_in(s.out.urgent).size() == 1);
  CHECK(std::holds_alternative<wire::data>(frames_in(s.out.ordered).at(0)));

  // Our own PING at its due time, answered 5 ms later.
  s.out.clear();
  const auto due = s.engine.next_timeout();
  s.engine.on_timeout(due, s.out);
  const auto ping = std::get<wire::ping>(frames_in(s.out.ordered).at(0));
  CHECK(ping.timestamp_ns == static_cast<std::uint64_t>(to_monotonic_ns(due)));
  s.feed(wire::pong{ping.sequence, ping.timestamp_ns}, due + 5ms);
  REQUIRE(s.events.rtts.size() == 1);
  CHECK(s.events.rtts[0] == 5ms);
  // A PONG for a PING we never sent is not trusted.
  s.feed(wire::pong{ping.sequence + 10, 0}, due + 6ms);
  CHECK(s.events.rtts.size() == 1);
}

TEST_CASE("engine: PINGs come after a jittered interval of sending nothing") {
  established_server s;
  // WELCOME is an answer: the server leaves the pinging to the client, due in [1.1 I, 1.2 I].
  auto due = s.engine.next_timeout();
  CHECK(due >= t0 + 1100ms);
  CHECK(due <= t0 + 1200ms);
  s.engine.on_timeout(due - 1ns, s.out);
  CHECK(s.out.empty());
  // A PONG is an answer too: at 800 ms it moves the next PING to [1.9 s, 2.0 s].
  s.feed(wire::ping{1, 1}, t0 + 800ms);
  due = s.engine.next_timeout();
  CHECK(due >= t0 + 800ms + 1100ms);
  CHECK(due <= t0 + 800ms + 1200ms);
  s.out.clear();
  s.engine.on_timeout(due, s.out);
  REQUIRE(frames_in(s.out.ordered).size() == 1);
  // The client fell silent, so the server pings now, after waits jittered over the whole
  // ±10% range (PONGs keep the client alive and are not answers from the server).
  std::chrono::milliseconds lowest = 10s, highest = 0s;
  auto now = due;
  for (int i = 0; i < 200; ++i) {
    const auto next = s.engine.next_timeout();
    if (next >= now + 3s) break;
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next - now);
    lowest = std::min(lowest, wait);
    highest = std::max(highest, wait);
    now = next;
    s.feed(wire::pong{1, 0}, now);
    s.engine.on_timeout(now, s.out);
  }
  CHECK(lowest >= 900ms);
  CHECK(highest <= 1100ms);
  CHECK(highest - lowest >= 150ms);
}

TEST_CASE("engine: a side that answers PINGs never pings while its peer does") {
  // The client pings at the longest wait it may draw (1.1 I); each PONG pushes the
  // server's own PING to at least 1.1 I later, so it never comes first.
  established_server s;
  auto now = t0;
  for (int i = 0; i < 100; ++i) {
    now += 1100ms;
    REQUIRE(s.engine.next_timeout() >= now);
    s.engine.on_timeout(now - 1ns, s.out);
    CHECK(frames_in(s.out.ordered).empty());
    s.feed(wire::ping{static_cast<std::uint64_t>(i + 1), 1}, now);
    const auto sent = frames_in(s.out.urgent);
    REQUIRE(sent.size() == 1);
    CHECK(std::holds_alternative<wire::pong>(sent.front()));
    s.out.clear();
  }
}

TEST_CASE("engine: the fifth PING strike gets ERROR too_many_pings, not a PONG") {
  established_server s;
  auto now = t0;
  s.feed(wire::ping{1, 0}, now);  // the first is never a strike
  for (std::uint64_t i = 2; i <= 5; ++i) {
    now += 100ms;  // < I/2
    s.feed(wire::ping{i, 0}, now);
    CHECK_FALSE(s.engine.ended());
  }
  CHECK(frames_in(s.out.urgent).size() == 5);  // every PING up to the limit is answered
  // A PING at I/2 or more resets the count.
  now += 500ms;
  s.feed(wire::ping{6, 0}, now);
  for (std::uint64_t i = 7; i <= 10; ++i) {
    now += 100ms;
    s.feed(wire::ping{i, 0}, now);
  }
  CHECK_FALSE(s.engine.ended());
  s.out.clear();
  now += 100ms;
  s.feed(wire::ping{11, 0}, now);
  REQUIRE(s.engine.ended());
  CHECK(s.out.urgent.empty());
  CHECK(only_error(s.out).code == wire::error_code::too_many_pings);
  CHECK(s.engine.end_mode() == close_mode::graceful);
}

TEST_CASE("engine: silence of dead_after ends the connection abortively, at that instant") {
  established_server s;
  s.feed(wire::ping{1, 0}, t0 + 700ms);
  const auto dead_at = t0 + 700ms + 3s;
  auto now = t0 + 700ms;
  while (!s.engine.ended()) {
    now = s.engine.next_timeout();
    REQUIRE(now <= dead_at);
    s.engine.on_timeout(now, s.out);
  }
  CHECK(now == dead_at);
  CHECK(s.engine.end().cause == cause::heartbeat_timeout);
  CHECK(s.engine.end().detected_by == detected_by::heartbeat);
  CHECK(s.engine.end_mode() == close_mode::abortive);
  CHECK(s.engine.end().last_heard_ns == to_monotonic_ns(t0 + 700ms));
  CHECK(s.engine.next_timeout() == time_point::max());
}

TEST_CASE("engine: heartbeat off sends no PING and never times out, but answers PINGs") {
  established_server s(1000, [](engine_config& c) { c.heartbeat = false; });
  CHECK(s.engine.next_timeout() == time_point::max());
  s.engine.on_timeout(t0 + 1h, s.out);
  CHECK(s.out.empty());
  CHECK_FALSE(s.engine.ended());
  s.feed(wire::ping{1, 2}, t0 + 1h);
  CHECK(frames_in(s.out.urgent).size() == 1);
}

TEST_CASE("engine: BYE, ERROR and EOF from the peer end the connection with their cause") {
  {
    established_server s;
    s.feed(wire::bye{wire::bye_reason::superseded}, t0 + 1ms);
    REQUIRE(s.engine.ended());
    CHECK(s.engine.end().cause == cause::superseded);
    CHECK(s.engine.end().bye == wire::bye_reason::superseded);
    CHECK(s.engine.end_mode() == close_mode::graceful);
    CHECK(s.out.empty());  // nothing is answered to a BYE
  }
  {
    established_server s;
    s.feed(wire::error{wire::error_code::server_full, "full"}, t0 + 1ms);
    REQUIRE(s.engine.ended());
    CHECK(s.engine.end().cause == cause::server_full);
    CHECK(s.engine.end().protocol_error == wire::error_code::server_full);
  }
  {
    established_server s;
    s.engine.receive_eof(t0 + 5ms, s.events);
    REQUIRE(s.engine.ended());
    CHECK(s.engine.end().cause == cause::peer_closed);
    CHECK(s.engine.end().detected_by == detected_by::eof);
    CHECK(s.engine.end_mode() == close_mode::plain);
  }
  {
    established_server s(1000, [](engine_config& c) { c.end_on_eof = false; });
    s.engine.receive_eof(t0 + 5ms, s.events);
    CHECK_FALSE(s.engine.ended());
    CHECK(s.events.finished == 1);
  }
}

TEST_CASE("engine: a local close sends BYE, then the engine ignores everything") {
  established_server s;
  s.engine.close(wire::bye_reason::going_away, cause::local_close, t0 + 1ms, s.out);
  REQUIRE(s.engine.ended());
  const auto frames = frames_in(s.out.ordered);
  REQUIRE(frames.size() == 1);
  CHECK(std::get<wire::bye>(frames[0]).reason == wire::bye_reason::going_away);
  CHECK(s.engine.end_mode() == close_mode::graceful);
  s.out.clear();
  s.feed(wire::ping{1, 1}, t0 + 2ms);
  s.engine.on_timeout(t0 + 1h, s.out);
  CHECK(s.out.empty());
  CHECK(s.engine.end().decided_ns == to_monotonic_ns(t0 + 1ms));
}

TEST_CASE("engine: a client holds DATA until WELCOME and uses the server's interval") {
  auto config = client_config();
  config.requested_interval = 200ms;
  engine_output out;
  recorder events;
  protocol_engine c(config, t0, 0, 3, out);
  out.clear();
  c.send_data(std::vector<std::byte>(3, std::byte{9}), t0 + 1ms, out);
  CHECK(out.empty());
  c.receive(bytes_of(wire::welcome{.version = 1,
                                   .interval_ms = 500,
                                   .dead_after_ms = 1500,
                                   .session_id = 77,
                                   .max_frame = 65536,
                                   .min_interval_ms = 500,
                                   .max_interval_ms = 60000}),
            t0 + 10ms, out, events);
  REQUIRE(c.established());
  REQUIRE(events.established.size() == 1);
  CHECK(events.established[0].interval == 500ms);
  CHECK(events.established[0].session_id == 77);
  CHECK(std::holds_alternative<wire::data>(frames_in(out.ordered).at(0)));
  CHECK(c.next_timeout() <= t0 + 10ms + 550ms);
  CHECK(c.next_timeout() >= t0 + 10ms + 450ms);
}

TEST_CASE("engine: a client that gets anything but WELCOME first ends it") {
  const auto config = client_config();
  engine_output out;
  recorder events;
  protocol_engine c(config, t0, 0, 3, out);
  out.clear();
  c.receive(bytes_of(wire::ping{1, 1}), t0 + 1ms, out, events);
  REQUIRE(c.ended());
  CHECK(only_error(out).code == wire::error_code::unexpected_frame);
}

TEST_CASE("engine: a throwing observer ends the connection with internal_error") {
  established_server s;
  s.events.throw_on_data = true;
  s.feed(wire::data{std::vector<std::byte>(4, std::byte{1})}, t0 + 1ms);
  REQUIRE(s.engine.ended());
  CHECK(only_error(s.out).code == wire::error_code::internal_error);
}

TEST_CASE("engine: a phi detector decides by its own dead_at") {
  established_server s(1000, [](engine_config& c) { c.detector = phi_detector_config{}; });
  auto now = t0;
  for (int i = 0; i < 20; ++i) {
    now += 1s;
    s.feed(wire::ping{static_cast<std::uint64_t>(i + 1), 0}, now);
  }
  while (!s.engine.ended())
    s.engine.on_timeout(now = s.engine.next_timeout(), s.out);
  CHECK(s.engine.end().cause == cause::heartbeat_timeout);
  // Akka's defaults: the acceptable pause of 3 s plus the mean and a few std devs.
  CHECK(now - (t0 + 20s) > 3s);
  CHECK(now - (t0 + 20s) < 10s);
}

TEST_CASE("engine: the adaptive detector, learned inline, decides as the detector object does") {
  using deadpeer::adaptive_detector_config;
  established_server s(1000, [](engine_config& c) { c.detector = adaptive_detector_config{}; });
  auto reference = deadpeer::make_detector(adaptive_detector_config{}, t0);
  // A fresh connection announces the cap in WELCOME; the verdict itself comes much sooner.
  CHECK(deadpeer::dead_after_for(adaptive_detector_config{}, 1000ms) == 10000ms);
  auto now = t0;
  const int gaps_ms[] = {1000, 950, 1080, 1020, 1400, 990, 1010, 1050, 970, 1000};
  for (int i = 0; i < 10; ++i) {
    now += std::chrono::milliseconds(gaps_ms[i]);
    s.feed(wire::ping{static_cast<std::uint64_t>(i + 1), 0}, now);
    reference->record_arrival(now);
  }
  const auto learned = s.engine.learned();
  REQUIRE(learned);
  CHECK(learned->longest_gap_ms == Approx(1400));
  CHECK(learned->timeout_ms == Approx(reference->estimate()->timeout_ms));
  while (!s.engine.ended())
    s.engine.on_timeout(now = s.engine.next_timeout(), s.out);
  CHECK(s.engine.end().cause == cause::heartbeat_timeout);
  // Decided at the reference's instant (to the clock tick the conversions round to).
  CHECK(std::chrono::abs(now - reference->dead_at()) <= 1us);
  CHECK(now - (t0 + 10470ms) > 1400ms);  // it allows more than the longest silence seen
  // Ten seconds into the link the start floor (3.5 s, fading) still rules; far below the cap.
  CHECK(now - (t0 + 10470ms) < 3500ms);
  CHECK(now - (t0 + 10470ms) < 10000ms);
}

TEST_CASE("engine: two engines wired together heartbeat for an hour without a verdict") {
  const auto sc = server_config();
  auto cc = client_config();
  engine_output sout, cout;
  recorder sev, cev;
  protocol_engine server(sc, t0, 5, 11, sout);
  protocol_engine client(cc, t0, 0, 13, cout);
  auto now = t0;
  const auto latency = 2ms;  // each direction
  std::uint64_t frames_on_wire = 0;
  // Deliver whatever each side produced, one direction at a time, `latency` later.
  auto pump = [&] {
    for (int round = 0; round < 4; ++round) {
      if (!cout.empty()) {
        std::vector<std::byte> b = cout.urgent;
        b.insert(b.end(), cout.ordered.begin(), cout.ordered.end());
        cout.clear();
        frames_on_wire += frames_in(b).size();
        server.receive(b, now + latency, sout, sev);
      }
      if (!sout.empty()) {
        std::vector<std::byte> b = sout.urgent;
        b.insert(b.end(), sout.ordered.begin(), sout.ordered.end());
        sout.clear();
        frames_on_wire += frames_in(b).size();
        client.receive(b, now + latency, cout, cev);
      }
    }
  };
  pump();
  REQUIRE(server.established());
  REQUIRE(client.established());
  const auto end = t0 + 1h;
  while (now < end && !server.ended() && !client.ended()) {
    now = std::min(server.next_timeout(), client.next_timeout());
    server.on_timeout(now, sout);
    client.on_timeout(now, cout);
    pump();
  }
  CHECK_FALSE(server.ended());
  CHECK_FALSE(client.ended());
  // One PING and one PONG per interval (the waits average I), all PINGs from the client:
  // the server only answers.
  CHECK(frames_on_wire > 2 * 3600 * 95 / 100);
  CHECK(frames_on_wire < 2 * 3600 * 105 / 100);
  CHECK(sev.rtts.empty());
  CHECK(cev.rtts.size() > 3400);
  for (const auto rtt : cev.rtts)
    CHECK((rtt > 0ns && rtt <= 2 * latency));
}

TEST_CASE("engine: with a coalescing grid PINGs fall due on it, within the allowed wait") {
  int on_grid = 0;
  for (std::uint32_t seed = 1; seed <= 200; ++seed) {
    established_server s(1000, [](engine_config& c) { c.ping_coalesce = 16ms; }, seed);
    const auto due = s.engine.next_timeout();  // after WELCOME: [1.1 I, 1.2 I]
    CHECK(due >= t0 + 1100ms);
    CHECK(due <= t0 + 1200ms);
    on_grid += due.time_since_epoch() % std::chrono::milliseconds(16) == 0ns ? 1 : 0;
    s.engine.on_timeout(due - 1ns, s.out);
    CHECK(s.out.empty());
    s.engine.on_timeout(due, s.out);
    CHECK(frames_in(s.out.ordered).size() == 1);
  }
  // Only a wait drawn within 16 ms of the longest one is clamped off the grid.
  CHECK(on_grid >= 150);
}

TEST_CASE("engine: a frame trickled in byte by byte must be complete within dead_after") {
  established_server s;  // interval 1 s, fixed 3x: dead_after 3 s
  // A DATA frame of 100 payload bytes; its header and one byte a second after that: every
  // byte is life, so silence alone would never end it.
  const auto frame = bytes_of(wire::data{.payload = std::vector<std::byte>(100, std::byte{7})});
  auto now = t0 + 10ms;
  s.engine.receive(std::span(frame).first(6), now, s.out, s.events);
  const auto first_byte = now;
  std::size_t sent = 6;
  while (!s.engine.ended() && sent < frame.size()) {
    now += 900ms;
    if (now >= s.engine.next_timeout()) s.engine.on_timeout(s.engine.next_timeout(), s.out);
    if (s.engine.ended()) break;
    s.engine.receive(std::span(frame).subspan(sent++, 1), now, s.out, s.events);
    s.out.urgent.clear();
    s.out.ordered.erase(s.out.ordered.begin(), s.out.ordered.end());
  }
  REQUIRE(s.engine.ended());
  CHECK(s.engine.end().cause == cause::protocol_error);
  CHECK(s.engine.end().decided_ns == to_monotonic_ns(first_byte + 3s));
  CHECK(sent < 10);
  CHECK(s.events.data.empty());
}

TEST_CASE("engine: a slow frame completed in time resets the bound for the next one") {
  established_server s;
  const auto frame = bytes_of(wire::data{.payload = std::vector<std::byte>(10, std::byte{1})});
  // First frame: header at t0+10ms, the rest 2.5 s later together with the next frame's
  // first 3 bytes, which then have their own 3 s.
  s.engine.receive(std::span(frame).first(5), t0 + 10ms, s.out, s.events);
  std::vector<std::byte> rest(frame.begin() + 5, frame.end());
  rest.insert(rest.end(), frame.begin(), frame.begin() + 3);
  s.engine.receive(rest, t0 + 2510ms, s.out, s.events);
  CHECK(s.events.data.size() == 1);
  s.engine.on_timeout(t0 + 3100ms, s.out);  // past the first frame's bound, not the second's
  CHECK_FALSE(s.engine.ended());
  s.engine.receive(std::span(frame).subspan(3), t0 + 4s, s.out, s.events);
  CHECK(s.events.data.size() == 2);
  CHECK(s.engine.buffered() == 0);
  CHECK_FALSE(s.engine.ended());
}

TEST_CASE("engine: a PONG's timestamp is the peer's bytes: none overflows the RTT or is taken") {
  established_server s;
  s.engine.on_timeout(s.engine.next_timeout(), s.out);  // our PING, sequence 1
  const auto now = s.engine.next_timeout() - 1ms;
  for (const std::uint64_t bogus : {std::uint64_t{1} << 63, (std::uint64_t{1} << 63) + 318'935'400'800u,
                                    ~std::uint64_t{0},
                                    static_cast<std::uint64_t>(to_monotonic_ns(now)) + 1}) {
    s.feed(wire::pong{.sequence = 1, .timestamp_ns = bogus}, now);
    CHECK(s.events.rtts.empty());
  }
  s.feed(wire::pong{.sequence = 1, .timestamp_ns = static_cast<std::uint64_t>(to_monotonic_ns(now - 2ms))},
         now);
  REQUIRE(s.events.rtts.size() == 1);
  CHECK(s.events.rtts[0] == 2ms);
}
