#include <deadpeer/endpoint.hpp>

#include <deadpeer/config_error.hpp>

#include <catch2/catch.hpp>

using deadpeer::parse_endpoint;

TEST_CASE("numeric endpoints parse, IPv4 and bracketed IPv6") {
  const auto v4 = parse_endpoint("127.0.0.1:7700");
  CHECK(v4.address().to_string() == "127.0.0.1");
  CHECK(v4.port() == 7700);
  const auto v6 = parse_endpoint("[::1]:0");
  CHECK(v6.address().is_v6());
  CHECK(v6.port() == 0);
}

TEST_CASE("bad endpoints are refused with the input quoted") {
  for (const char* bad :
       {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:x", "127.0.0.1:65536", "127.0.0.1:-1",
        "localhost:80", "::1:80", "[::1]", "1.2.3:80", "127.0.0.1:80 "}) {
    INFO(bad);
    CHECK_THROWS_WITH(parse_endpoint(bad), Catch::Contains("\"" + std::string(bad) + "\"") &&
                                               Catch::Contains("HOST:PORT"));
  }
}

TEST_CASE("format_endpoint writes what parse_endpoint reads, IPv6 in brackets") {
  for (const char* text : {"127.0.0.1:7700", "[::1]:7700", "10.231.77.1:0"})
    CHECK(deadpeer::format_endpoint(deadpeer::parse_endpoint(text)) == text);
}
