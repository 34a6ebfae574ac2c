#include "../probe/greeting.hpp"

#include "../probe/cli.hpp"

#include <catch2/catch.hpp>

#include <string>

using probe::answer_reader;
using probe::greeting;
using namespace std::chrono_literals;

namespace {

std::string text_of(const std::vector<std::byte>& bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

}  // namespace

TEST_CASE("greeting: every form parses, and bad ones say what is wrong") {
  CHECK(greeting::parse("raw").kind == greeting::protocol::raw);
  const auto send = greeting::parse("send:HELLO\\r\\n");
  CHECK(send.kind == greeting::protocol::send);
  CHECK(send.text == "HELLO\r\n");
  CHECK(greeting::parse("mqtt:keepalive=5s").interval == 5s);
  CHECK(greeting::parse("http").interval == 5s);
  CHECK(greeting::parse("redis:interval=250ms").interval == 250ms);

  CHECK_THROWS_AS(greeting::parse("ftp"), probe::usage_error);
  CHECK_THROWS_WITH(greeting::parse("mqtt"), Catch::Contains("keepalive=DURATION"));
  CHECK_THROWS_WITH(greeting::parse("mqtt:keepalive=5"), Catch::Contains("keepalive"));
  CHECK_THROWS_WITH(greeting::parse("http:every=1s"), Catch::Contains("interval=DURATION"));
  CHECK_THROWS_WITH(greeting::parse("redis:interval=1ms"), Catch::Contains("flood"));
  CHECK_THROWS_WITH(greeting::parse("send:"), Catch::Contains("needs bytes"));
  CHECK_THROWS_WITH(greeting::parse("send:a\\qb"), Catch::Contains("unknown escape"));
  CHECK_THROWS_AS(greeting::parse("raw:x"), probe::usage_error);
}

TEST_CASE("greeting: MQTT says CONNECT with the keep alive rounded up, then PINGREQ") {
  const auto g = greeting::parse("mqtt:keepalive=2500ms");
  const auto connect = g.opening("victim-1");
  REQUIRE(connect.size() > 12);
  CHECK(connect[0] == std::byte{0x10});
  // Variable header: protocol name "MQTT", level 4, flags, then keep alive (big endian).
  const auto text = text_of(connect);
  const auto at = text.find("MQTT");
  REQUIRE(at != std::string::npos);
  CHECK(static_cast<int>(connect[at + 6]) == 0);
  CHECK(static_cast<int>(connect[at + 7]) == 3);  // 2.5 s -> 3 s
  CHECK(text.find("victim-1") != std::string::npos);
  CHECK(text_of(g.request("h")) == std::string("\xC0\x00", 2));
}

TEST_CASE("greeting: answers are counted whole, however the bytes are split") {
  const auto mqtt = greeting::parse("mqtt:keepalive=1s");
  answer_reader r(mqtt);
  CHECK(r.feed(std::string("\x20\x02\x00", 3)) == 0);
  CHECK(r.feed(std::string("\x00\xD0", 2)) == 1);  // CONNACK done, PINGRESP begun
  CHECK(r.feed(std::string("\x00", 1)) == 1);
  CHECK(r.error().empty());

  answer_reader refused(mqtt);
  CHECK(refused.feed(std::string("\x20\x02\x00\x05", 4)) == 0);
  CHECK_THAT(refused.error(), Catch::Contains("did not accept CONNECT"));

  const auto http = greeting::parse("http");
  answer_reader h(http);
  CHECK(h.feed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel") == 0);
  CHECK(h.feed("loHTTP/1.0 204 No Content\r\n\r\n") == 2);
  CHECK(h.feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n") == 0);
  CHECK(h.feed("0\r\n\r\n") == 1);
  answer_reader not_http(http);
  CHECK(not_http.feed("SSH-2.0-OpenSSH\r\n\r\n") == 0);
  CHECK_FALSE(not_http.error().empty());

  const auto redis = greeting::parse("redis");
  answer_reader rd(redis);
  CHECK(rd.feed("+PO") == 0);
  CHECK(rd.feed("NG\r\n+PONG\r\n") == 2);
  CHECK(rd.feed("$5\r\n") == 0);
  CHECK_FALSE(rd.error().empty());

  answer_reader raw(greeting::parse("raw"));
  CHECK(raw.feed("anything at all\r\n") == 0);
  CHECK(raw.error().empty());
}
