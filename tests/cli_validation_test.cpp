// heartbeat-server and probe as a user runs them: every bad value is refused with exit
// status 2 and a message naming the value and what is accepted, before anything starts;
// --version says what was built, from which commit, against which libraries.
#include "../probe/child_process.hpp"

#include "temp_dir.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using Catch::Contains;
using Catch::Matches;

namespace {

struct answer {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs `program` with `args` and waits for it, bounded: a program that starts serving
// instead of refusing fails the test and is killed by child_process.
answer run(const std::string& program, const std::vector<std::string>& args) {
  std::vector<std::string> argv{"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1", program};
  argv.insert(argv.end(), args.begin(), args.end());
  probe::child_process p(argv);
  while (p.read_line(30s)) {
  }
  const auto status = p.wait(30s);
  INFO(p.output());
  REQUIRE(status.has_value());
  REQUIRE(WIFEXITED(*status));
  return {WEXITSTATUS(*status), p.output()};
}

answer server(std::vector<std::string> args) {
  // Loopback, ephemeral ports and no database unless a test says otherwise: a server that
  // wrongly starts binds nothing that matters and writes nothing.
  for (const auto* flag : {"--listen", "--control", "--db"})
    if (std::find(args.begin(), args.end(), flag) == args.end())
      args.insert(args.end(), {flag, std::string(flag) == "--db" ? "off" : "127.0.0.1:0"});
  return run(DEADPEER_SERVER_BINARY, args);
}

answer probe_cli(const std::vector<std::string>& args) {
  return run(DEADPEER_PROBE_BINARY, args);
}

std::string write_file(const deadpeer::test::temp_dir& dir, const std::string& name,
                       const std::string& text) {
  const auto path = dir.file(name);
  std::ofstream(path) << text;
  return path;
}

}  // namespace

TEST_CASE("heartbeat-server refuses bad command lines with exit 2, naming the value") {
  deadpeer::test::temp_dir dir;

  SECTION("a stray positional argument") {
    const auto a = server({"extra"});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("unexpected argument \"extra\"") && Contains("only options"));
  }
  SECTION("control API access: a bad host name, a token file that is a directory") {
    auto a = server({"--control-host", "evil name"});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("--control-host \"evil name\": expected a host name"));
    a = server({"--control-token-file", dir.path().string()});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("--control-token-file") && Contains("is a directory"));
  }
  SECTION("--max-connections -1 (not read as the largest unsigned number)") {
    const auto a = server({"--max-connections", "-1"});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("--max-connections \"-1\": expected a whole number"));
  }
  SECTION("--dead-after 0s") {
    const auto a = server({"--dead-after", "0s"});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("--dead-after 0s: expected a positive duration"));
  }
  SECTION("phi parameters are checked even when the detector is fixed") {
    auto a = server({"--detector", "fixed", "--phi-threshold", "0"});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("--phi-threshold 0: expected a number above 0"));
    a = server({"--phi-window", "1"});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("--phi-window \"1\": expected a whole number from 2"));
    a = server({"--phi-min-std", "0s"});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("--phi-min-std 0s: expected a positive duration"));
  }
  SECTION("fixed-detector options with another detector, and bad adaptive parameters") {
    auto a = server({"--detector", "adaptive", "--dead-after", "3s"});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("do not apply to --detector adaptive"));
    a = server({"--detector", "phi", "--dead-after-multiplier", "2"});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("do not apply to --detector phi"));
    a = server({"--adaptive-margin", "-1"});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("--adaptive-margin: expected a number of 0 or more"));
    a = server({"--adaptive-memory", "10s"});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("--adaptive-memory 10s: expected at least 1m"));
    a = server({"--adaptive-max", "1"});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("--adaptive-max: expected a number of at least 1.1"));
    a = server({"--detector", "nope"});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("expected adaptive, fixed or phi"));
  }
  SECTION("--db in a directory that does not exist") {
    const auto db = dir.file("no-such-dir/deadpeer.db");
    const auto a = server({"--db", db});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains(dir.file("no-such-dir")) && Contains("does not exist"));
  }
  SECTION("--config naming a directory") {
    const auto a = server({"--config", dir.path().string()});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains(dir.path().string()) && Contains("is a directory"));
  }
  SECTION("a config file that names another config file") {
    const auto other = write_file(dir, "other.conf", "verbose = true\n");
    const auto path = write_file(dir, "server.conf", "config = " + other + "\n");
    const auto a = server({"--config", path});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains(path) && Contains("cannot name another one"));
  }
  SECTION("--record-arrivals and --record-sample out of range or not numbers") {
    auto a = server({"--record-arrivals", "-1"});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output,
               Contains("--record-arrivals \"-1\": expected a whole number from 0 to 1000000"));
    a = server({"--record-arrivals", "lots"});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("--record-arrivals \"lots\""));
    a = server({"--record-arrivals", "1000001"});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("--record-arrivals \"1000001\""));
    a = server({"--record-arrivals", "100", "--record-sample", "0"});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("--record-sample \"0\": expected a whole number of at least 1"));
  }
  SECTION("record-arrivals in a config file") {
    const auto path = write_file(dir, "server.conf", "record-arrivals = -5\n");
    const auto a = server({"--config", path});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("--record-arrivals \"-5\""));
  }
  SECTION("a boolean in a config file that is not one") {
    const auto path = write_file(dir, "server.conf", "verbose = maybe\n");
    const auto a = server({"--config", path});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains(path) && Contains("maybe") && Contains("true|false"));
  }
}

TEST_CASE("heartbeat-server says what to do when it cannot listen, with exit 2") {
  SECTION("the address is in use") {
    boost::asio::io_context io;
    boost::asio::ip::tcp::acceptor holder(
        io, boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
    const auto address = "127.0.0.1:" + std::to_string(holder.local_endpoint().port());
    const auto a = server({"--listen", address, "--threads", "1"});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("--listen " + address) && Contains("in use") &&
                             Contains("choose another port"));
    CHECK_THAT(a.output, !Contains(".hpp") && !Contains(".ipp"));  // no source locations
  }
  SECTION("the address is not this host's") {
    // 192.0.2.1 is TEST-NET-1 (RFC 5737): documentation only, never assigned to a host.
    const auto a = server({"--listen", "192.0.2.1:0"});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("--listen 192.0.2.1:0") && Contains("not one of this host's"));
  }
  SECTION("the control API's address is in use") {
    boost::asio::io_context io;
    boost::asio::ip::tcp::acceptor holder(
        io, boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
    const auto address = "127.0.0.1:" + std::to_string(holder.local_endpoint().port());
    const auto a = server({"--control", address});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("--control " + address) && Contains("in use"));
  }
}

TEST_CASE("probe refuses options that cannot apply, with exit 2") {
  deadpeer::test::temp_dir dir;
  const auto db = dir.file("results.db");

  SECTION("--control-port without --server") {
    const auto a = probe_cli({"run", "--control-port", "7701", "--db", db});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("--control-port") && Contains("--server HOST:PORT"));
  }
  SECTION("--heartbeat off with a detector option") {
    for (const auto& [flag, value] : std::vector<std::pair<std::string, std::string>>{
             {"--detector", "phi"}, {"--dead-after", "1s"}, {"--phi-threshold", "4"}}) {
      const auto a = probe_cli({"run", "--heartbeat", "off", flag, value, "--db", db});
      INFO(flag);
      CHECK(a.exit_code == 2);
      CHECK_THAT(a.output, Contains(flag + " sets the heartbeat's failure detector"));
    }
    const auto a = probe_cli({"sweep", "--heartbeat", "off", "--dead-after", "1s,2s", "--db", db});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("--dead-after sets the heartbeat's failure detector"));
  }
  SECTION("duplicate values in a sweep list") {
    auto a = probe_cli({"sweep", "--keepalive", "1s:1s:3,1s:1s:3", "--db", db});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("--keepalive lists \"1s:1s:3\" twice"));
    a = probe_cli({"sweep", "--heartbeat", "1s,1000ms", "--db", db});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("--heartbeat lists \"1s\" and \"1000ms\", the same setting"));
    a = probe_cli({"sweep", "--dead-after", "2s,1s,2s", "--db", db});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("--dead-after lists \"2s\" twice"));
  }
  SECTION("--limit 0s") {
    const auto a = probe_cli({"run", "--limit", "0s", "--db", db});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("--limit 0s: expected a positive duration"));
  }
  SECTION("report --plot with a name that is neither .png nor .svg") {
    const auto a = probe_cli({"report", "--db", db, "--plot", dir.file("latency.gif")});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains("latency.gif") && Contains(".png") && Contains(".svg"));
  }
  SECTION("report on a missing file says it is missing") {
    const auto a = probe_cli({"report", "--db", db});
    CHECK(a.exit_code == 2);
    CHECK_THAT(a.output, Contains(db + " does not exist"));
  }
  CHECK_FALSE(std::filesystem::exists(db));  // nothing ran, nothing was recorded
}

TEST_CASE("both programs: --version prints the version, the commit and the library versions") {
  for (const auto& [program, name] : std::vector<std::pair<std::string, std::string>>{
           {DEADPEER_SERVER_BINARY, "heartbeat-server"}, {DEADPEER_PROBE_BINARY, "probe"}}) {
    INFO(name);
    const auto a = run(program, {"--version"});
    CHECK(a.exit_code == 0);
    // The commit is a short hash, or "unknown" when built outside a git checkout.
    CHECK_THAT(a.output, Matches(name + " \\d+\\.\\d+\\.\\d+\n"
                                        "commit ([0-9a-f]{4,40}|unknown)\n"
                                        "Boost \\d+_\\d+\n"
                                        "SQLite \\d+\\.\\d+\\.\\d+\n"));
  }
}

TEST_CASE("heartbeat-server warns loudly when its control API is reachable without a token") {
  deadpeer::test::temp_dir dir;
  const auto token = write_file(dir, "token", "s3cret\n");
  for (const bool with_token : {false, true}) {
    std::vector<std::string> argv{"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1", DEADPEER_SERVER_BINARY,
                                  "--listen", "127.0.0.1:0", "--control", "0.0.0.0:0", "--db", "off"};
    if (with_token) argv.insert(argv.end(), {"--control-token-file", token});
    probe::child_process p(argv);
    REQUIRE(p.wait_for_line("event loop(s)", 10s));
    // The warning follows the start-up lines at once; a second later there is nothing more.
    const auto warning = p.wait_for_line("WARNING", with_token ? 1s : 10s);
    INFO(p.output());
    if (with_token) {
      CHECK_FALSE(warning);
    } else {
      REQUIRE(warning);
      CHECK_THAT(*warning, Contains("0.0.0.0") && Contains("--control-token-file"));
    }
    p.signal(SIGTERM);
    CHECK(p.wait(10s).has_value());
  }
}

TEST_CASE("heartbeat-server starts from the shipped example configuration") {
  // The example as an operator would start from it, its addresses and database overridden
  // on the command line (flags win over the file).
  std::vector<std::string> argv{"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1", DEADPEER_SERVER_BINARY,
                                "--config", DEADPEER_SOURCE_DIR "/heartbeat-server/example.conf",
                                "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0", "--db", "off"};
  probe::child_process p(argv);
  const auto started = p.wait_for_line("event loop(s)", 10s);
  INFO(p.output());
  REQUIRE(started);
  p.signal(SIGTERM);
  const auto status = p.wait(10s);
  REQUIRE(status.has_value());
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
}
