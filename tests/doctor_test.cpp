// probe doctor on situations planted on this host's loopback (and in the lab for a pulled
// cable): the findings a user would read, checked through the real command (JSON and
// table), its exit status, and the pure diagnosis on snapshots for what cannot be planted
// cheaply (thousands of TIME_WAIT sockets).
#include "../probe/doctor.hpp"
#include "../probe/child_process.hpp"
#include "../probe/lab.hpp"

#include "loopback.hpp"

#include <deadpeer/keepalive.hpp>
#include <deadpeer/sock_diag.hpp>

#include <catch2/catch.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/json.hpp>

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

using namespace std::chrono_literals;
namespace asio = boost::asio;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using probe::doctor::finding_kind;

namespace {

struct doctor_answer {
  int exit_code = -1;
  std::string out, err;
  json::object report;  // when --json was given
};

doctor_answer run_doctor(std::vector<std::string> args, std::vector<std::string> prefix = {}) {
  prefix.push_back(DEADPEER_PROBE_BINARY);
  prefix.push_back("doctor");
  prefix.insert(prefix.end(), args.begin(), args.end());
  const auto r = probe::lab::run(prefix, 30s);
  doctor_answer a{r.exit_code, r.out, r.err, {}};
  if (std::find(args.begin(), args.end(), "--json") != args.end()) {
    INFO(r.out << r.err);
    a.report = json::parse(r.out).as_object();
  }
  return a;
}

std::string pid_text() { return std::to_string(::getpid()); }

// The findings of one kind in a --json report.
std::vector<json::object> findings_of(const json::object& report, std::string_view kind) {
  std::vector<json::object> found;
  for (const auto& f : report.at("findings").as_array())
    if (f.as_object().at("kind").as_string() == kind) found.push_back(f.as_object());
  return found;
}

const json::object* group_where(const json::object& report, const std::string& where) {
  for (const auto& g : report.at("groups").as_array())
    if (g.as_object().at("where").as_string() == where) return &g.as_object();
  return nullptr;
}

// Scans this process's sockets (in the calling thread's network namespace) until `kind`
// is found, at most `limit`: the kernel's ages and states change on its own schedule.
bool until_found(finding_kind kind, const probe::doctor::thresholds& limits,
                 std::chrono::seconds limit = 15s) {
  const probe::doctor::scope mine{.pid = ::getpid(), .port = std::nullopt};
  const auto until = std::chrono::steady_clock::now() + limit;
  do {
    const auto r = probe::doctor::diagnose(probe::doctor::scan(mine), mine, limits);
    for (const auto& f : r.findings)
      if (f.kind == kind) return true;
    std::this_thread::sleep_for(20ms);
  } while (std::chrono::steady_clock::now() < until);
  return false;
}

}  // namespace

TEST_CASE("doctor: a process that never closes after the peer's FIN leaks CLOSE_WAIT") {
  deadpeer::test::loopback_pair p;
  const auto port = p.acceptor.local_endpoint().port();
  p.client.close();  // the peer goes; this process keeps p.server open: the leak
  REQUIRE(until_found(finding_kind::close_wait_leak, {.idle_over = 10min, .close_wait_over = 0ms}));

  const auto a = run_doctor({"--pid", pid_text(), "--close-wait-over", "0s", "--json"});
  CHECK(a.exit_code == 1);
  const auto leaks = findings_of(a.report, "close-wait-leak");
  REQUIRE(leaks.size() == 1);
  CHECK(leaks[0].at("pid").as_int64() == ::getpid());
  CHECK(leaks[0].at("where").as_string() == "on port " + std::to_string(port));
  CHECK(leaks[0].at("count").as_int64() == 1);
  const auto* g = group_where(a.report, "on port " + std::to_string(port));
  REQUIRE(g);
  CHECK(g->at("states").as_object().at("CLOSE_WAIT").as_int64() == 1);

  // The table says it in words, and a threshold above its age keeps it quiet.
  const auto table = run_doctor({"--pid", pid_text(), "--close-wait-over", "0s"});
  CHECK(table.exit_code == 1);
  CHECK_THAT(table.out, Catch::Contains("1 CLOSE_WAIT socket in PID " + pid_text()) &&
                            Catch::Contains("on port " + std::to_string(port)) &&
                            Catch::Contains("no keepalive will help"));
  const auto patient = run_doctor({"--pid", pid_text(), "--close-wait-over", "1h", "--json"});
  CHECK(findings_of(patient.report, "close-wait-leak").empty());
}

TEST_CASE("doctor: idle connections without keepalive are ghost candidates, covered ones get their bound") {
  deadpeer::test::loopback_pair bare;
  deadpeer::test::loopback_pair kept;
  const deadpeer::keepalive_options options = deadpeer::parse_keepalive("1s:1s:3:2500ms");
  REQUIRE_FALSE(deadpeer::apply_keepalive(kept.server.native_handle(), options));
  REQUIRE(until_found(finding_kind::idle_without_keepalive, {.idle_over = 1s, .close_wait_over = 1min}));

  const auto a = run_doctor({"--pid", pid_text(), "--idle-over", "1s", "--json"});
  CHECK(a.exit_code == 1);
  const auto bare_port = "on port " + std::to_string(bare.acceptor.local_endpoint().port());
  const auto kept_port = "on port " + std::to_string(kept.acceptor.local_endpoint().port());
  std::vector<std::string> ghosts;
  for (const auto& f : findings_of(a.report, "idle-without-keepalive")) {
    ghosts.emplace_back(f.at("where").as_string());
    CHECK(f.at("worst_ms").as_int64() >= 1000);
  }
  // Both ends of the bare pair (the accepted side and the client's) and the kept pair's
  // client side; never the side with keepalive.
  CHECK(std::count(ghosts.begin(), ghosts.end(), bare_port) == 1);
  CHECK(std::count(ghosts.begin(), ghosts.end(), kept_port) == 0);
  CHECK(ghosts.size() == 3);

  const auto* covered = group_where(a.report, kept_port);
  REQUIRE(covered);
  const auto& k = covered->at("keepalive").as_object();
  CHECK(k.at("options_read").as_int64() == 1);
  CHECK(k.at("keepalive_on").as_int64() == 1);
  CHECK(k.at("worst").as_string() == deadpeer::to_string(options));
  const auto kernel = deadpeer::read_kernel_defaults();
  const auto bound = deadpeer::compute_bound(deadpeer::resolve(options, kernel), kernel);
  CHECK(k.at("bound").as_object().at("idle_ms").as_int64() == bound.idle->count());
  CHECK(k.at("bound").as_object().at("busy_ms").as_int64() == bound.busy.count());
  const auto* uncovered = group_where(a.report, bare_port);
  REQUIRE(uncovered);
  CHECK(uncovered->at("keepalive").as_object().at("bound").as_object().at("idle_ms").is_null());
}

TEST_CASE("doctor: a peer cable-pulled while data is unacknowledged, with the time left") {
  if (const auto why = probe::lab::unavailable_reason()) {
    WARN("SKIPPED: the network lab is not available here: " << *why);
    return;
  }
  probe::lab::network net;
  asio::io_context io;
  std::optional<tcp::acceptor> acceptor;
  tcp::socket server(io), victim(io);
  const auto server_address = asio::ip::make_address(net.topo().server_addr);
  net.in_server_ns([&] { acceptor.emplace(io, tcp::endpoint(server_address, 0)); });
  net.in_victim_ns([&] { victim.connect(acceptor->local_endpoint()); });
  acceptor->accept(server);
  deadpeer::keepalive_options user_timeout;
  user_timeout.enabled = false;
  user_timeout.user_timeout = 30s;
  REQUIRE_FALSE(deadpeer::apply_keepalive(server.native_handle(), user_timeout));

  net.cable_pull();
  const std::string data(2000, 'x');
  asio::write(server, asio::buffer(data));
  bool found = false;
  net.in_server_ns([&] {
    found = until_found(finding_kind::retransmitting, {.idle_over = 10min, .close_wait_over = 1min});
  });
  REQUIRE(found);

  const auto a = run_doctor({"--pid", pid_text(), "--json"}, net.server_exec_prefix());
  CHECK(a.exit_code == 1);
  const auto stuck = findings_of(a.report, "retransmitting");
  REQUIRE(stuck.size() == 1);
  CHECK(stuck[0].at("count").as_int64() == 1);
  // The user timeout read from the socket bounds it: less than 30 s left, and not spent.
  CHECK(stuck[0].at("worst_ms").as_int64() <= 30000);
  CHECK(stuck[0].at("worst_ms").as_int64() > 15000);
  CHECK_THAT(std::string(stuck[0].at("verdict").as_string()),
             Catch::Contains("the peer went silent while we were sending"));
}

TEST_CASE("doctor: exit 0 when nothing is found, 2 for what it cannot do") {
  // This test's process holds no socket.
  const auto quiet = run_doctor({"--pid", pid_text()});
  CHECK(quiet.exit_code == 0);
  CHECK_THAT(quiet.out, Catch::Contains("No findings"));
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--pid", "0"},
           {"--pid", "2147483647"},
           {"--port", "0"},
           {"--port", "70000"},
           {"--all", "--pid", "1"},
           {"--idle-over", "soon"},
           {"--close-wait-over", "-1s"},
           {"stray"}}) {
    const auto a = run_doctor(args);
    INFO(args.front() << " " << (args.size() > 1 ? args[1] : ""));
    CHECK(a.exit_code == 2);
    CHECK_FALSE(a.err.empty());
  }
}

TEST_CASE("doctor: TIME_WAIT toward one destination against the port range, options assumed from timers") {
  // Pure diagnosis on a snapshot: a small port range stands in for thousands of sockets.
  probe::doctor::host_snapshot host;
  host.port_range_first = 50000;
  host.port_range_last = 50009;  // 10 ports
  const tcp::endpoint web(asio::ip::make_address("192.0.2.7"), 443);
  for (unsigned short port = 50000; port < 50006; ++port) {
    deadpeer::socket_entry tw;
    tw.state = deadpeer::tcp_state::time_wait;
    tw.local = tcp::endpoint(asio::ip::make_address("192.0.2.1"), port);
    tw.remote = web;
    host.sockets.push_back(tw);
  }
  deadpeer::socket_entry kept;  // an outgoing connection showing the keepalive timer
  kept.state = deadpeer::tcp_state::established;
  kept.timer = deadpeer::socket_timer::keepalive;
  kept.local = tcp::endpoint(asio::ip::make_address("192.0.2.1"), 50007);
  kept.remote = web;
  kept.inode = 77;
  host.sockets.push_back(kept);
  host.owners[77] = {4242, "client"};
  host.settings_unreadable = "not permitted";

  const auto r = probe::doctor::diagnose(host, {}, {});
  REQUIRE(r.findings.size() == 1);
  CHECK(r.findings[0].kind == finding_kind::time_wait_ports);
  CHECK(r.findings[0].count == 6);
  CHECK_THAT(r.findings[0].verdict, Catch::Contains("192.0.2.7:443") && Catch::Contains("10 local ports"));
  CHECK(r.closing.time_wait == 6);
  REQUIRE(r.groups.size() == 1);
  const auto& k = r.groups[0].keepalive;
  CHECK(k.settings_read == 0);
  CHECK(k.worst.enabled);
  CHECK(k.worst.idle == host.defaults.idle);
  CHECK_FALSE(k.user_timeout_known);
  CHECK_THAT(k.basis, Catch::Contains("assumed") && Catch::Contains("not permitted"));

  // Four sockets of the ten leave room: no finding.
  host.sockets.erase(host.sockets.begin(), host.sockets.begin() + 2);
  CHECK(probe::doctor::diagnose(host, {}, {}).findings.empty());
}

TEST_CASE("doctor: probe speak --never-close reproduces a CLOSE_WAIT leak against a server that closes") {
  // The incident: a program that never closes after its peer's FIN holds CLOSE_WAIT sockets
  // until it runs out. Here the server (this test) closes at once; the leaking program is
  // probe speak --never-close, another process, which doctor must name.
  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const auto server = "127.0.0.1:" + std::to_string(acceptor.local_endpoint().port());
  probe::child_process leaker({DEADPEER_PROBE_BINARY, "speak", "--server", server, "--never-close"});
  REQUIRE(leaker.wait_for_line("connected", 10s));
  tcp::socket accepted = acceptor.accept();  // queued already: the client said it connected
  accepted.close();                          // the server closes: FIN to the leaker
  REQUIRE(leaker.wait_for_line("end eof", 10s));
  REQUIRE(leaker.wait_for_line("holding pid=" + std::to_string(leaker.pid()), 10s));

  const auto pid = std::to_string(leaker.pid());
  const auto a = run_doctor({"--pid", pid, "--close-wait-over", "0s", "--json"});
  INFO(a.out << a.err);
  CHECK(a.exit_code == 1);
  const auto leaks = findings_of(a.report, "close-wait-leak");
  REQUIRE(leaks.size() == 1);
  CHECK(leaks[0].at("pid").as_int64() == leaker.pid());
  CHECK(leaks[0].at("where").as_string() == "to " + server);
  CHECK(leaks[0].at("count").as_int64() == 1);
  const auto table = run_doctor({"--pid", pid, "--close-wait-over", "0s"});
  CHECK_THAT(table.out, Catch::Contains("1 CLOSE_WAIT socket in PID " + pid));

  leaker.signal(SIGKILL);
  CHECK(leaker.wait(5s).has_value());
}
