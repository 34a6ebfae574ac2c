#include "../probe/wire_observer.hpp"

#include <deadpeer/clock.hpp>

#include "loopback.hpp"

#include <catch2/catch.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/socket_base.hpp>

#include <chrono>
#include <optional>
#include <thread>

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

namespace {

using connected_pair = deadpeer::test::loopback_pair;

std::optional<probe::wire_segment> wait_for_segment(probe::wire_observer& w) {
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < until) {
    if (auto s = w.first_seen()) return s;
    std::this_thread::sleep_for(1ms);
  }
  return std::nullopt;
}

bool wire_available() {
  const auto why = probe::wire_unavailable_reason();
  if (!why.empty()) WARN("SKIPPED: " << why);
  return why.empty();
}

}  // namespace

TEST_CASE("wire observer: the server side's FIN on lo, at the instant it was sent") {
  if (!wire_available()) return;
  probe::wire_observer wire("lo");
  connected_pair other;  // a second connection whose close must not count
  connected_pair p;
  wire.watch(p.server.local_endpoint(), p.server.remote_endpoint());
  other.server.close();
  p.client.close();  // the client's FIN goes the other way: not watched
  std::this_thread::sleep_for(20ms);
  CHECK_FALSE(wire.first_seen());
  const auto before = deadpeer::monotonic_ns();
  p.server.close();
  const auto after = deadpeer::monotonic_ns();
  const auto seen = wait_for_segment(wire);
  REQUIRE(seen);
  CHECK_FALSE(seen->reset);
  // The kernel's timestamp of the segment, within the close() call (plus clock-offset slack).
  CHECK(seen->mono_ns >= before - 1'000'000);
  CHECK(seen->mono_ns <= after + 1'000'000);
}

TEST_CASE("wire observer: an abortive close is an RST") {
  if (!wire_available()) return;
  probe::wire_observer wire("lo");
  connected_pair p;
  wire.watch(p.server.local_endpoint(), p.server.remote_endpoint());
  p.server.set_option(asio::socket_base::linger(true, 0));
  p.server.close();
  const auto seen = wait_for_segment(wire);
  REQUIRE(seen);
  CHECK(seen->reset);
}

TEST_CASE("wire observer: an unknown interface is an error naming it") {
  if (!wire_available()) return;
  CHECK_THROWS_WITH(probe::wire_observer("no-such-if0"), Catch::Contains("no-such-if0"));
}
