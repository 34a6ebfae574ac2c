#include <deadpeer/keepalive.hpp>

#include "loopback.hpp"

#include <boost/asio.hpp>
#include <catch2/catch.hpp>

#include <array>
#include <cstdio>
#include <memory>
#include <string>

using namespace std::chrono_literals;
using namespace deadpeer;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

using deadpeer::test::loopback_pair;

std::string run(const std::string& command) {
  std::string out;
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(command.c_str(), "r"), ::pclose);
  if (!pipe) return out;
  std::array<char, 4096> buf{};
  while (std::fgets(buf.data(), static_cast<int>(buf.size()), pipe.get()) != nullptr)
    out += buf.data();
  return out;
}

}  // namespace

TEST_CASE("options applied to a socket are read back unchanged") {
  loopback_pair p;
  const auto options = parse_keepalive("60s:10s:5:30s");
  REQUIRE_FALSE(apply_keepalive(p.server.native_handle(), options));
  std::error_code ec;
  const auto back = read_keepalive(p.server.native_handle(), ec);
  REQUIRE_FALSE(ec);
  CHECK(back ==
        keepalive_settings{
            .enabled = true, .idle = 60s, .interval = 10s, .count = 5, .user_timeout = 30s});
}

TEST_CASE("unset fields keep the system defaults on the socket") {
  loopback_pair p;
  REQUIRE_FALSE(apply_keepalive(p.client.native_handle(), parse_keepalive("::4")));
  std::error_code ec;
  const auto back = read_keepalive(p.client.native_handle(), ec);
  REQUIRE_FALSE(ec);
  const auto defaults = read_kernel_defaults();
  CHECK(back.enabled);
  CHECK(back.idle == defaults.idle);
  CHECK(back.interval == defaults.interval);
  CHECK(back.count == 4);
  CHECK(back.user_timeout == 0ms);
}

TEST_CASE("every preset applies cleanly and reads back as configured") {
  for (const auto& preset : keepalive_presets()) {
    INFO(preset.name);
    loopback_pair p;
    REQUIRE_FALSE(apply_keepalive(p.server.native_handle(), preset.options));
    std::error_code ec;
    CHECK(read_keepalive(p.server.native_handle(), ec) == resolve(preset.options, {}));
    CHECK_FALSE(ec);
  }
}

TEST_CASE("keepalive off clears SO_KEEPALIVE") {
  loopback_pair p;
  REQUIRE_FALSE(apply_keepalive(p.server.native_handle(), parse_keepalive("1s:1s:3")));
  REQUIRE_FALSE(apply_keepalive(p.server.native_handle(), parse_keepalive("off")));
  std::error_code ec;
  CHECK_FALSE(read_keepalive(p.server.native_handle(), ec).enabled);
}

TEST_CASE("a closed descriptor gives an error, not a crash") {
  std::error_code ec;
  CHECK(apply_keepalive(-1, parse_keepalive("1s:1s:3")));
  (void)read_keepalive(-1, ec);
  CHECK(ec == std::errc::bad_file_descriptor);
}

TEST_CASE("the kernel arms a keepalive timer on the socket (ss -tino)") {
  if (run("command -v ss").empty()) {
    WARN("SKIPPED: ss (iproute2) is not installed; run scripts/setup");
    return;
  }
  loopback_pair p;
  REQUIRE_FALSE(apply_keepalive(p.server.native_handle(), parse_keepalive("600s:10s:5")));
  const auto port = p.server.local_endpoint().port();
  const auto peer_port = p.server.remote_endpoint().port();
  // Only our own socket: local port and peer port identify it uniquely.
  const auto out = run("ss -tinoH state established '( sport = :" + std::to_string(port) +
                       " and dport = :" + std::to_string(peer_port) + " )'");
  INFO(out);
  CHECK_THAT(out, Catch::Contains("timer:(keepalive,"));
  // The timer's remaining time is below the idle we set and well above zero.
  const auto at = out.find("timer:(keepalive,");
  REQUIRE(at != std::string::npos);
  const auto remaining = out.substr(at + 17, out.find(',', at + 17) - (at + 17));
  INFO("remaining " << remaining);
  CHECK((remaining.starts_with("9min") || remaining.starts_with("10min")));
}
