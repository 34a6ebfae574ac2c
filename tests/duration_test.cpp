#include <deadpeer/duration.hpp>

#include <deadpeer/config_error.hpp>

#include <catch2/catch.hpp>

using namespace std::chrono_literals;
using deadpeer::config_error;
using deadpeer::format_duration;
using deadpeer::parse_duration;

TEST_CASE("durations parse with their unit") {
  CHECK(parse_duration("250ms") == 250ms);
  CHECK(parse_duration("1.5s") == 1500ms);
  CHECK(parse_duration("30s") == 30s);
  CHECK(parse_duration("5m") == 5min);
  CHECK(parse_duration("2h") == 2h);
  CHECK(parse_duration("0s") == 0ms);
  CHECK(parse_duration("0.25s") == 250ms);
  CHECK(parse_duration(".5s") == 500ms);
  CHECK(parse_duration("1.0000s") == 1s);
  CHECK(parse_duration("0.001s") == 1ms);
  CHECK(parse_duration("1.5m") == 90s);
}

TEST_CASE("durations print canonically and round-trip") {
  CHECK(format_duration(250ms) == "250ms");
  CHECK(format_duration(1500ms) == "1.5s");
  CHECK(format_duration(30s) == "30s");
  CHECK(format_duration(5min) == "5m");
  CHECK(format_duration(2h) == "2h");
  CHECK(format_duration(90s) == "90s");
  CHECK(format_duration(0ms) == "0s");
  CHECK(format_duration(1001ms) == "1.001s");
  for (const std::chrono::milliseconds d :
       {1ms, 999ms, 1000ms, 1010ms, 60000ms, 61000ms, 3601000ms, 7200000ms, 924600ms, 2147483647ms})
    CHECK(parse_duration(format_duration(d)) == d);
}

TEST_CASE("bad durations are refused with the input quoted") {
  for (const char* bad :
       {"", "5", "abc", "-5s", "+5s", "5 s", "5sec", "1.s", ".s", "s", "1.5", "0.0001s", "1.2345s",
        "99999999999999999999ms", "9223372036854775807s", "1e3ms", "5s5", "5ms "}) {
    INFO("input: \"" << bad << "\"");
    try {
      (void)parse_duration(bad);
      FAIL("accepted");
    } catch (const config_error& e) {
      CHECK_THAT(e.what(), Catch::Contains("\"" + std::string(bad) + "\""));
    }
  }
  CHECK_THROWS_WITH(parse_duration("-5s"), Catch::Contains("negative"));
  CHECK_THROWS_WITH(parse_duration("5"), Catch::Contains("missing unit"));
  CHECK_THROWS_WITH(parse_duration("99999999999999999999ms"), Catch::Contains("too large"));
  CHECK_THROWS_WITH(parse_duration("0.0001s"), Catch::Contains("finer than one millisecond"));
}

TEST_CASE("the largest representable duration parses, one more does not") {
  CHECK(parse_duration("9223372036854775807ms").count() == 9223372036854775807);
  CHECK_THROWS_AS(parse_duration("9223372036854775808ms"), config_error);
  CHECK_THROWS_AS(parse_duration("9223372036854775.808s"), config_error);
  CHECK(parse_duration("9223372036854775.807s").count() == 9223372036854775807);
}

TEST_CASE("durations print for people in hours, minutes and seconds") {
  CHECK(deadpeer::format_duration_hms(7875s) == "2h11m15s");
  CHECK(deadpeer::format_duration_hms(390s) == "6m30s");
  CHECK(deadpeer::format_duration_hms(924600ms) == "15m24.6s");
  CHECK(deadpeer::format_duration_hms(1500ms) == "1.5s");
  CHECK(deadpeer::format_duration_hms(2h) == "2h");
}

TEST_CASE("the non-throwing parser gives the reason without the input") {
  std::string why;
  CHECK_FALSE(deadpeer::try_parse_duration("5", why).has_value());
  CHECK(why == "missing unit");
  CHECK(deadpeer::try_parse_duration("5s", why) == 5s);
}
