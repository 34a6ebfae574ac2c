// The preload library on a real program it was not built for (Python's http.server), on
// loopback: the server's accepted socket gets the keepalive timer only when wrapped.
#include "../probe/child_process.hpp"
#include "../probe/lab.hpp"

#include <deadpeer/keepalive.hpp>
#include <deadpeer/sock_diag.hpp>

#include <catch2/catch.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/json.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A Python HTTP server on an ephemeral loopback port, maybe under probe wrap; the kernel's
// view of its side of one client connection.
struct served_connection {
  fs::path log;
  std::unique_ptr<probe::child_process> server;
  asio::io_context io;
  tcp::socket client{io};
  std::optional<deadpeer::socket_entry> server_side;

  // `wrap`: the words before the program ({} for none); `announces`: the preload library
  // will say what it applied (then its line is waited for, as proof it ran).
  served_connection(std::vector<std::string> wrap, bool announces) {
    static int n = 0;
    log = fs::temp_directory_path() /
          ("deadpeer-preload-" + std::to_string(::getpid()) + "-" + std::to_string(n++) + ".log");
    wrap.insert(wrap.end(), {"/usr/bin/python3", "-u", "-m", "http.server", "--bind", "127.0.0.1", "0"});
    server = std::make_unique<probe::child_process>(wrap, log.string());
    unsigned short port = 0;
    const auto until = std::chrono::steady_clock::now() + 20s;
    while (port == 0 && std::chrono::steady_clock::now() < until) {
      const auto text = read_file(log);
      if (const auto at = text.find(" port "); at != std::string::npos)
        port = static_cast<unsigned short>(std::atoi(text.c_str() + at + 6));
      else
        std::this_thread::sleep_for(20ms);
    }
    INFO(read_file(log));
    REQUIRE(port != 0);
    client.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    deadpeer::sock_diag diag;
    const tcp::endpoint server_end(asio::ip::make_address("127.0.0.1"), port);
    // The server accepts in its own time: wait for its side to exist.
    const auto accepted_by = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < accepted_by) {
      // Wrapped, the library writes its line after its setsockopt calls on the first accept:
      // read the log first, so the socket's snapshot is taken after the options were set.
      const bool announced = !announces || read_file(log).find("deadpeer-preload") != std::string::npos;
      server_side = diag.find(server_end, client.local_endpoint());
      // Until the program accepts, its side waits in the listener's queue with no inode: no
      // process holds it yet, so doctor could not attribute it to the server.
      if (server_side && server_side->inode != 0 && announced) break;
      std::this_thread::sleep_for(20ms);
    }
  }
  ~served_connection() {
    server.reset();
    std::error_code ignored;
    fs::remove(log, ignored);
  }
};

bool python_available() {
  if (fs::exists("/usr/bin/python3")) return true;
  WARN("SKIPPED: /usr/bin/python3 is not installed (scripts/setup installs it)");
  return false;
}

}  // namespace

TEST_CASE("preload: a wrapped server's accepted sockets get the keepalive, and it says so") {
  if (!python_available()) return;
  served_connection c({DEADPEER_PROBE_BINARY, "wrap", "--keepalive", "2s:1s:4", "--"}, true);
  REQUIRE(c.server_side);
  CHECK(c.server_side->timer == deadpeer::socket_timer::keepalive);
  CHECK(c.server_side->timer_expires <= 2000ms);
  const auto log = read_file(c.log);
  CHECK_THAT(log, Catch::Contains("keepalive idle 2s, interval 1s, count 4"));
  CHECK_THAT(log, Catch::Contains("noticed after 6.0s nominally"));
  // probe wrap states the bound as this kernel's timers run it: never below the nominal.
  CHECK_THAT(log, Catch::Contains("python3 with keepalive 2s:1s:4; a dead idle peer is noticed within 6."));

  // probe doctor, reading the options from the socket of a program it did not start,
  // reports the port covered with the wrapped setting's bound, and no ghost.
  const auto doctor = probe::lab::run({DEADPEER_PROBE_BINARY, "doctor", "--pid",
                                       std::to_string(c.server->pid()), "--idle-over", "0s", "--json"},
                                      30s);
  INFO(doctor.out << doctor.err);
  CHECK(doctor.exit_code == 0);
  const auto report = boost::json::parse(doctor.out).as_object();
  CHECK(report.at("findings").as_array().empty());
  REQUIRE(report.at("groups").as_array().size() == 1);
  const auto& k = report.at("groups").as_array()[0].as_object().at("keepalive").as_object();
  CHECK(k.at("options_read").as_int64() == 1);
  CHECK(k.at("keepalive_on").as_int64() == 1);
  CHECK(k.at("worst").as_string() == "2s:1s:4");
  const auto kernel = deadpeer::read_kernel_defaults();
  CHECK(k.at("bound").as_object().at("idle_ms").as_int64() ==
        deadpeer::compute_bound(deadpeer::resolve(deadpeer::parse_keepalive("2s:1s:4"), kernel), kernel)
            .idle->count());
}

TEST_CASE("preload: unwrapped, or filtered to another port, the socket has no keepalive") {
  if (!python_available()) return;
  served_connection plain({}, false);
  REQUIRE(plain.server_side);
  CHECK(plain.server_side->timer == deadpeer::socket_timer::none);
  // Doctor calls its accepted socket a ghost candidate: nothing will notice a dead client.
  const auto doctor = probe::lab::run({DEADPEER_PROBE_BINARY, "doctor", "--pid",
                                       std::to_string(plain.server->pid()), "--idle-over", "0s"},
                                      30s);
  CHECK(doctor.exit_code == 1);
  CHECK_THAT(doctor.out, Catch::Contains("[idle-without-keepalive] 1 ESTABLISHED socket in PID " +
                                         std::to_string(plain.server->pid()) + " (python3)"));
  served_connection other_port({DEADPEER_PROBE_BINARY, "wrap", "--keepalive", "2s:1s:4", "--only-port",
                                "1", "--"},
                                false);
  REQUIRE(other_port.server_side);
  CHECK(other_port.server_side->timer == deadpeer::socket_timer::none);
}

TEST_CASE("probe wrap refuses what it cannot apply, with exit 2") {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"wrap", "--keepalive", "1s:1s:3"},                 // no program
           {"wrap", "--", "true"},                             // nothing to apply
           {"wrap", "--keepalive", "1s:1s", "--", "true"},     // incomplete spec
           {"wrap", "--keepalive", "1s:1s:300", "--", "true"}}) {
    std::vector<std::string> argv{DEADPEER_PROBE_BINARY};
    argv.insert(argv.end(), args.begin(), args.end());
    probe::child_process p(argv);
    const auto status = p.wait(10s);
    REQUIRE(status.has_value());
    CHECK(WIFEXITED(*status));
    CHECK(WEXITSTATUS(*status) == 2);
  }
}
