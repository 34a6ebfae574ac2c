// JSON numbers as people read them: no exponent form, whole numbers as integers, and every
// double read back exactly.
#include <deadpeer/json_text.hpp>

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <limits>

namespace json = boost::json;

TEST_CASE("json_text: the numbers Boost writes in exponent form come out plain") {
  const json::object o{{"uptime_ms", 3036.275939}, {"silence_ms", 7.738e-3}, {"live", 3.0},
                       {"decided_mono_ns", 1.234567e12}, {"negative", -0.5}};
  const auto text = deadpeer::json_text(o);
  CHECK(text == R"({"uptime_ms":3036.275939,"silence_ms":0.007738,"live":3,)"
                R"("decided_mono_ns":1234567000000,"negative":-0.5})");
  CHECK(text.find('E') == std::string::npos);  // keys hold a small e; numbers hold none
  CHECK(text.find("e-") == std::string::npos);
  CHECK(text.find("e+") == std::string::npos);
}

TEST_CASE("json_text: every double reads back as itself") {
  for (const double x : {0.1, 1.0 / 3.0, 123456.789012, 1e-9, 9007199254740993.0, 1e20, -2.5e-7}) {
    const auto back = json::parse(deadpeer::json_text(json::value(x)));
    INFO(deadpeer::json_text(json::value(x)));
    CHECK(back.to_number<double>() == x);
  }
}

TEST_CASE("json_text: structure, strings and the values JSON cannot hold") {
  const json::value v{{"a", json::array{1, "x\"y", nullptr, true}},
                      {"inf", std::numeric_limits<double>::infinity()},
                      {"nan", std::numeric_limits<double>::quiet_NaN()},
                      {"big", std::uint64_t{18446744073709551615u}},
                      {"empty", json::object{}}};
  CHECK(deadpeer::json_text(v) ==
        R"({"a":[1,"x\"y",null,true],"inf":null,"nan":null,"big":18446744073709551615,"empty":{}})");
  CHECK(json::parse(deadpeer::json_text(v)).at("a").as_array().size() == 4);
}
