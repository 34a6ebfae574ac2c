// probe tune's recipes: every number it prints for sysctl, C, nginx, Go, Java, gRPC, Redis
// and MQTT is the proposal's, and where a framework cannot say the same thing the value
// it picks stays within the requested worst case.
#include "../probe/lab.hpp"
#include "../probe/tune_recipes.hpp"

#include <deadpeer/duration.hpp>
#include <deadpeer/keepalive.hpp>

#include <catch2/catch.hpp>

#include <cctype>
#include <sstream>

using namespace std::chrono_literals;
using std::chrono::milliseconds;

namespace {

std::string text_of(const std::vector<probe::recipe>& recipes, std::string_view name) {
  for (const auto& r : recipes)
    if (r.name == name) return r.text;
  FAIL("no recipe " << name);
  return {};
}

// The whole number printed after `label` (spaces skipped).
long long number_after(const std::string& text, const std::string& label) {
  const auto at = text.find(label);
  REQUIRE(at != std::string::npos);
  auto digits = at + label.size();
  while (digits < text.size() && text[digits] == ' ') ++digits;
  REQUIRE(digits < text.size());
  REQUIRE(std::isdigit(static_cast<unsigned char>(text[digits])));
  return std::stoll(text.substr(digits));
}

// The word after `label` ("--keepalive 1m:20s:3" -> "1m:20s:3").
std::string word_after(const std::string& text, const std::string& label) {
  const auto at = text.find(label);
  REQUIRE(at != std::string::npos);
  std::istringstream rest(text.substr(at + label.size()));
  std::string word;
  rest >> word;
  return word;
}

}  // namespace

TEST_CASE("tune: the recipes print the proposal's own numbers") {
  const auto proposal = deadpeer::tune({.detect_within = 2min, .nat_idle = 5min});
  REQUIRE(proposal.feasible);
  const auto& s = proposal.settings;
  const auto recipes = probe::keepalive_recipes(s, proposal.bound);
  REQUIRE(recipes.size() == probe::recipe_names().size());

  const auto sysctl = text_of(recipes, "sysctl");
  CHECK(number_after(sysctl, "net.ipv4.tcp_keepalive_time =") == s.idle.count());
  CHECK(number_after(sysctl, "net.ipv4.tcp_keepalive_intvl =") == s.interval.count());
  CHECK(number_after(sysctl, "net.ipv4.tcp_keepalive_probes =") == s.count);
  CHECK_THAT(sysctl, Catch::Contains("every socket on the host") &&
                         Catch::Contains("only sockets whose program enabled"));

  const auto c = text_of(recipes, "c");
  CHECK(number_after(c, "idle =") == s.idle.count());
  CHECK(number_after(c, "interval =") == s.interval.count());
  CHECK(number_after(c, "count =") == s.count);
  CHECK(number_after(c, "user_timeout_ms =") == s.user_timeout.count());
  CHECK_THAT(c, Catch::Contains("TCP_KEEPIDLE") && Catch::Contains("TCP_USER_TIMEOUT"));

  CHECK_THAT(text_of(recipes, "nginx"),
             Catch::Contains("so_keepalive=" + std::to_string(s.idle.count()) + ":" +
                             std::to_string(s.interval.count()) + ":" + std::to_string(s.count)));
  const auto go = text_of(recipes, "go");
  CHECK(number_after(go, "Idle:") == s.idle.count());
  CHECK(number_after(go, "Interval:") == s.interval.count());
  CHECK(number_after(go, "Count:") == s.count);
  CHECK(number_after(go, "TCP_USER_TIMEOUT,") == s.user_timeout.count());
  const auto java = text_of(recipes, "java");
  CHECK(number_after(java, "TCP_KEEPIDLE,") == s.idle.count());
  CHECK(number_after(java, "TCP_KEEPINTERVAL,") == s.interval.count());
  CHECK(number_after(java, "TCP_KEEPCOUNT,") == s.count);

  // probe wrap's line, parsed back, is the proposal.
  const auto wrap = text_of(recipes, "wrap");
  auto parsed = deadpeer::parse_keepalive(word_after(wrap, "--keepalive "));
  parsed.user_timeout = deadpeer::parse_duration(word_after(wrap, "--user-timeout "));
  CHECK(deadpeer::resolve(parsed, {}) == s);
  CHECK_THAT(wrap, Catch::Contains("probe doctor --pid"));
}

TEST_CASE("tune: gRPC, Redis and MQTT values stay within the requested worst case, and are the largest that do") {
  for (const milliseconds target : std::vector<milliseconds>{5s, 30s, 2min, 10min, 2h}) {
    const auto proposal = deadpeer::tune({.detect_within = target, .nat_idle = std::nullopt});
    REQUIRE(proposal.feasible);
    REQUIRE(proposal.bound.idle);
    const milliseconds bound = *proposal.bound.idle;
    INFO("target " << deadpeer::format_duration(target) << ", bound " << bound.count() << " ms");
    const auto recipes = probe::keepalive_recipes(proposal.settings, proposal.bound);

    const auto grpc = text_of(recipes, "grpc");
    CHECK(number_after(grpc, "grpc.keepalive_time_ms =") +
              number_after(grpc, "grpc.keepalive_timeout_ms =") ==
          bound.count());

    const auto redis = number_after(text_of(recipes, "redis"), "tcp-keepalive");
    const auto redis_worst = [](long long n) { return n + 3 * std::max(1LL, n / 3); };
    CHECK(redis == probe::redis_tcp_keepalive_for(bound));
    CHECK(std::chrono::seconds(redis_worst(redis)) <= bound);
    CHECK(std::chrono::seconds(redis_worst(redis + 1)) > bound);
    CHECK(number_after(text_of(recipes, "redis"), "worst case") == redis_worst(redis));

    const auto mqtt = number_after(text_of(recipes, "mqtt"), "keep alive =");
    CHECK(milliseconds(mqtt * 1500) <= bound);
    CHECK(milliseconds((mqtt + 1) * 1500) > bound);
  }
}

TEST_CASE("probe tune --for prints only those, and refuses an unknown name") {
  const auto r = probe::lab::run({DEADPEER_PROBE_BINARY, "tune", "--detect-within", "2m", "--for",
                                  "sysctl", "--for", "redis"});
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("net.ipv4.tcp_keepalive_time = ") &&
                        Catch::Contains("tcp-keepalive ") && !Catch::Contains("so_keepalive"));
  const auto bad = probe::lab::run({DEADPEER_PROBE_BINARY, "tune", "--detect-within", "2m", "--for", "cobol"});
  CHECK(bad.exit_code == 2);
  CHECK_THAT(bad.err, Catch::Contains("--for cobol"));
  CHECK(bad.out.empty());
}
