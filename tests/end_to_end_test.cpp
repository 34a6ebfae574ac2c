// The real programs as separate processes: heartbeat-server and several `probe connect`
// clients, faults injected with signals, results read back through /events and SQL.
#include "../probe/child_process.hpp"
#include "../probe/qos.hpp"
#include "loopback.hpp"

#include <deadpeer/clock.hpp>

#include <sqlite3.h>
#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

using namespace std::chrono_literals;
using deadpeer::test::http_get;
using probe::child_process;
namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

struct running_server {
  static inline int instances = 0;
  fs::path dir;
  std::unique_ptr<child_process> process;
  unsigned short port = 0;
  unsigned short control_port = 0;

  // `prefix` runs the server under another program (prlimit); `extra` adds flags.
  explicit running_server(std::vector<std::string> prefix = {},
                          const std::vector<std::string>& extra = {},
                          const std::string& listen = "127.0.0.1:0") {
    dir = fs::temp_directory_path() /
          ("deadpeer-e2e-" + std::to_string(::getpid()) + "-" + std::to_string(instances++));
    fs::create_directories(dir);
    auto argv = std::move(prefix);
    for (const auto& a : {std::string(DEADPEER_SERVER_BINARY), std::string("--listen"),
                          listen, std::string("--control"),
                          std::string("127.0.0.1:0"), std::string("--db"),
                          (dir / "e2e.db").string(), std::string("--interval-default"),
                          std::string("200ms"), std::string("--reap-interval"),
                          std::string("100ms")})
      argv.push_back(a);
    argv.insert(argv.end(), extra.begin(), extra.end());
    process = std::make_unique<child_process>(argv);
    const auto line = process->wait_for_line("listening on", 10s);
    REQUIRE(line.has_value());
    // "heartbeat-server listening on 127.0.0.1:P, control API on http://127.0.0.1:C"
    const auto listen_at = line->find("on 127.0.0.1:");
    const auto control_at = line->find("http://127.0.0.1:");
    REQUIRE(listen_at != std::string::npos);
    REQUIRE(control_at != std::string::npos);
    port = static_cast<unsigned short>(std::stoi(line->substr(listen_at + 13)));
    control_port = static_cast<unsigned short>(std::stoi(line->substr(control_at + 17)));
  }
  ~running_server() {
    process.reset();
    std::error_code ignored;
    fs::remove_all(dir, ignored);
  }

  json::object status() { return json::parse(http_get(control_port, "/status").body).as_object(); }

  // Next connection end after `since` (long-poll, bounded).
  json::object next_event(std::uint64_t& since) {
    const auto body = json::parse(
        http_get(control_port, "/events?since=" + std::to_string(since) + "&wait=10000").body);
    const auto& events = body.at("events").as_array();
    REQUIRE_FALSE(events.empty());
    auto event = events.front().as_object();
    since = static_cast<std::uint64_t>(event.at("id").as_int64());
    return event;
  }
};

std::unique_ptr<child_process> client(unsigned short port, const std::string& id) {
  auto c = std::make_unique<child_process>(std::vector<std::string>{
      DEADPEER_PROBE_BINARY, "connect", "--server", "127.0.0.1:" + std::to_string(port), "--id", id,
      "--heartbeat", "200ms"});
  REQUIRE(c->wait_for_line("connected to", 10s).has_value());
  return c;
}

std::string str(const json::value& v) {
  return std::string(v.as_string());
}

double ms_since(std::int64_t from_ns, const json::value& to_ns) {
  return static_cast<double>(to_ns.as_int64() - from_ns) / 1e6;
}

}  // namespace

TEST_CASE("end to end: crash, hang, half-close and takeover against heartbeat-server") {
  running_server server;
  auto crash = client(server.port, "crash");
  auto hang = client(server.port, "hang");
  auto twin = client(server.port, "twin");
  REQUIRE(server.status().at("established").as_int64() == 3);
  std::uint64_t since = 0;

  // kill -9: the kernel closes the socket for the dead process (FIN, or RST if a PING
  // was unread); either way the server knows within milliseconds.
  const auto killed_at = deadpeer::monotonic_ns();
  crash->signal(SIGKILL);
  auto event = server.next_event(since);
  CHECK(str(event.at("client_id")) == "crash");
  CHECK((str(event.at("cause")) == "peer_closed" || str(event.at("cause")) == "peer_reset"));
  const double crash_ms = ms_since(killed_at, event.at("decided_mono_ns"));
  INFO("crash noticed after " << crash_ms << " ms");
  CHECK(crash_ms < 100.0);

  // SIGSTOP: the kernel still ACKs, only the heartbeat can tell.
  hang->signal(SIGSTOP);
  event = server.next_event(since);
  CHECK(str(event.at("client_id")) == "hang");
  CHECK(str(event.at("cause")) == "heartbeat_timeout");
  CHECK(str(event.at("detected_by")) == "heartbeat");
  const double silence = event.at("silence_ms").to_number<double>();
  INFO("hang noticed after " << silence << " ms of silence");
  // The default detector is adaptive: never before 1.1 intervals (the protocol's sending
  // promise), never after its cap of 10 intervals (+ one interval of timer slack).
  CHECK(silence >= 220.0);
  CHECK(silence <= 2200.0);
  hang->signal(SIGCONT);
  // The server closed abortively: the woken client sees the reset and exits non-zero.
  const auto hang_status = hang->wait(10s);
  REQUIRE(hang_status.has_value());
  CHECK(WEXITSTATUS(*hang_status) == 1);

  // Half-close from a raw socket: FIN without BYE.
  {
    deadpeer::test::raw_peer half(server.port);
    half.handshake("half", 5s);
    half.shutdown_send();
    event = server.next_event(since);
    CHECK(str(event.at("client_id")) == "half");
    CHECK(str(event.at("cause")) == "peer_closed");
    CHECK(str(event.at("detected_by")) == "eof");
  }

  // The same id connects again: the old process is told it was superseded.
  auto twin2 = client(server.port, "twin");
  event = server.next_event(since);
  CHECK(str(event.at("client_id")) == "twin");
  CHECK(str(event.at("cause")) == "superseded");
  CHECK(twin->wait_for_line("ended: superseded", 10s).has_value());

  // SIGTERM: clean exit, every end flushed to the database.
  twin2.reset();  // SIGKILL: one more end for the server to record while stopping
  server.process->signal(SIGTERM);
  const auto server_status = server.process->wait(15s);
  REQUIRE(server_status.has_value());
  CHECK(WIFEXITED(*server_status));
  CHECK(WEXITSTATUS(*server_status) == 0);

  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2((server.dir / "e2e.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) ==
          SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "SELECT client_id, cause FROM connections ORDER BY id", -1, &stmt,
                             nullptr) == SQLITE_OK);
  std::multimap<std::string, std::string> rows;
  while (sqlite3_step(stmt) == SQLITE_ROW)
    rows.emplace(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0)),
                 reinterpret_cast<const char*>(sqlite3_column_text(stmt, 1)));
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  INFO("rows: " << rows.size());
  CHECK(rows.size() == 5);  // crash, hang, half, twin (superseded), twin2
  REQUIRE(rows.count("hang") == 1);
  REQUIRE(rows.count("half") == 1);
  CHECK(rows.find("hang")->second == "heartbeat_timeout");
  CHECK(rows.find("half")->second == "peer_closed");
  CHECK(rows.count("twin") == 2);
}

TEST_CASE("end to end: at its descriptor limit the server answers newcomers and recovers") {
  // 160 descriptors: the server keeps a reserve for its API and store and holds ~88.
  running_server server({"prlimit", "--nofile=160:160", "--"},
                        {"--threads", "2", "--max-per-ip", "100000", "--max-connections",
                         "100000"});
  const auto hello = [](int i) {
    return deadpeer::wire::hello{.version = 1,
                                 .client_id = "fd-" + std::to_string(i),
                                 .requested_interval_ms = 30000,
                                 .auth_token = ""};
  };
  std::vector<std::unique_ptr<deadpeer::test::raw_peer>> welcomed;
  int refused = 0;
  for (int i = 0; i < 140; ++i) {
    auto peer = std::make_unique<deadpeer::test::raw_peer>(server.port);
    peer->send_frame(hello(i));
    const auto r = peer->read_frame();
    REQUIRE(r.frames.size() == 1);
    if (std::holds_alternative<deadpeer::wire::welcome>(r.frames[0])) {
      welcomed.push_back(std::move(peer));
    } else {
      CHECK(std::get<deadpeer::wire::error>(r.frames[0]).code ==
            deadpeer::wire::error_code::server_full);
      CHECK(peer->read_to_end().eof);  // answered and closed with FIN, never left hanging
      ++refused;
    }
  }
  INFO(welcomed.size() << " welcomed, " << refused << " refused");
  CHECK(welcomed.size() >= 60);
  CHECK(refused >= 20);
  CHECK(welcomed.size() + static_cast<std::size_t>(refused) == 140);
  // The control API still answers at the limit.
  auto status = server.status();
  CHECK(status.at("live").as_int64() == static_cast<std::int64_t>(welcomed.size()));
  CHECK(status.at("rejected").at("server_full").as_int64() == refused);

  // Connections leave: the server takes newcomers again by itself.
  const auto held = welcomed.size();
  for (int i = 0; i < 10; ++i)
    welcomed.pop_back();
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (server.status().at("live").as_int64() != static_cast<std::int64_t>(held - 10) &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  deadpeer::test::raw_peer again(server.port);
  again.send_frame(hello(1000));
  const auto r = again.read_frame();
  REQUIRE(r.frames.size() == 1);
  CHECK(std::holds_alternative<deadpeer::wire::welcome>(r.frames[0]));
}

TEST_CASE("end to end: two heartbeat-server processes share one port with --reuse-port") {
  running_server first({}, {"--reuse-port", "--threads", "1"});
  running_server second({}, {"--reuse-port", "--threads", "1"},
                        "127.0.0.1:" + std::to_string(first.port));
  REQUIRE(second.port == first.port);
  std::vector<std::unique_ptr<deadpeer::test::raw_peer>> peers;
  for (int i = 0; i < 40; ++i) {
    peers.push_back(std::make_unique<deadpeer::test::raw_peer>(first.port));
    peers.back()->handshake("shared-" + std::to_string(i), 10000ms);
  }
  const auto a = first.status().at("live").as_int64();
  const auto b = second.status().at("live").as_int64();
  INFO("first holds " << a << ", second " << b);
  CHECK(a + b == 40);
  // The kernel spreads connections by their addresses: 40 all on one side is a 1 in 5e11 event.
  CHECK(a > 0);
  CHECK(b > 0);
}

TEST_CASE("end to end: a server starved past dead-after reads its clients' PINGs before judging them") {
  // SIGSTOP models a starved host (a busy CPU, a swap storm). While it lasts, 400 clients
  // go on pinging: on waking, the server has more ready sockets than one epoll batch
  // (256) and every connection's deadline has passed. PINGs waiting in a socket are life,
  // whatever order the loop handles its wake-up in.
  running_server server({}, {"--threads", "1", "--interval-max", "1s", "--detector", "fixed",
                             "--dead-after", "1500ms"});
  std::vector<std::unique_ptr<deadpeer::test::raw_peer>> peers;
  std::uint64_t sequence = 0;
  int refused_sends = 0;  // a connection the server ended answers our next PING with RST
  auto last_round = std::chrono::steady_clock::now();
  // Every client PINGs every 800 ms: between I/2 and I, so no ping strike (protocol §6);
  // the 3 or so PINGs queued during the stop are read at once, 2 strikes of the 5 allowed.
  const auto ping_when_due = [&] {
    if (std::chrono::steady_clock::now() - last_round < 800ms) return;
    last_round = std::chrono::steady_clock::now();
    for (auto& p : peers) {
      try {
        p->send_frame(deadpeer::wire::ping{.sequence = ++sequence, .timestamp_ns = 0});
      } catch (const std::exception&) {
        ++refused_sends;
      }
    }
  };
  for (int i = 0; i < 400; ++i) {
    peers.push_back(std::make_unique<deadpeer::test::raw_peer>(server.port));
    peers.back()->handshake("starved-" + std::to_string(i), 1000ms);
    ping_when_due();
  }
  REQUIRE(server.status().at("live").as_int64() == 400);
  const auto pinging_for = [&](std::chrono::milliseconds span) {
    for (const auto until = std::chrono::steady_clock::now() + span;
         std::chrono::steady_clock::now() < until;) {
      ping_when_due();
      std::this_thread::sleep_for(10ms);
    }
  };
  pinging_for(500ms);
  REQUIRE(::kill(server.process->pid(), SIGSTOP) == 0);
  pinging_for(2500ms);  // beyond dead-after
  REQUIRE(::kill(server.process->pid(), SIGCONT) == 0);
  pinging_for(1s);
  const auto status = server.status();
  INFO(json::serialize(status));
  CHECK(status.at("live").as_int64() == 400);
  CHECK(status.at("ended_by_cause").as_object().empty());
  CHECK(refused_sends == 0);
}

TEST_CASE("end to end: probe measures an external server over IPv6 and labels its real keepalive") {
  const auto dir = fs::temp_directory_path() / ("deadpeer-e2e-v6-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  child_process server({DEADPEER_SERVER_BINARY, "--listen", "[::1]:0", "--control", "[::1]:0",
                        "--db", (dir / "server.db").string(), "--keepalive", "1s:1s:3"});
  const auto banner = server.wait_for_line("listening on", 10s);
  REQUIRE(banner);
  // "heartbeat-server listening on [::1]:P, control API on http://[::1]:C"
  const auto port = banner->substr(banner->find("[::1]:") + 6);
  const auto control = banner->substr(banner->find("http://[::1]:") + 13);
  const auto db = dir / "results.db";
  child_process run({DEADPEER_PROBE_BINARY, "run", "--fault", "crash", "--trials", "1", "--server",
                     "[::1]:" + port.substr(0, port.find(',')), "--control-port",
                     control.substr(0, control.find_first_not_of("0123456789")), "--db",
                     db.string()});
  while (run.read_line(60s)) {
  }
  const auto status = run.wait(60s);
  INFO(run.output());
  REQUIRE(status.has_value());
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
  // The trial is labelled with the keepalive the server runs, not "system".
  CHECK(run.output().find("keepalive=1s:1s:3") != std::string::npos);
  CHECK(run.output().find("trial 1/1: detected") != std::string::npos);
  std::error_code ignored;
  fs::remove_all(dir, ignored);
}

namespace {

// (client_id, count) of every arrivals row of a database, by connection.
std::vector<std::pair<std::string, std::int64_t>> arrivals_rows(const fs::path& path) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(db,
                             "SELECT c.client_id, a.count FROM arrivals a JOIN connections c "
                             "ON c.id = a.connection_id ORDER BY a.connection_id",
                             -1, &stmt, nullptr) == SQLITE_OK);
  std::vector<std::pair<std::string, std::int64_t>> rows;
  while (sqlite3_step(stmt) == SQLITE_ROW)
    rows.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0)),
                      sqlite3_column_int64(stmt, 1));
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return rows;
}

}  // namespace

TEST_CASE("end to end: heartbeat-server --record-arrivals records a client's arrivals") {
  running_server server({}, {"--record-arrivals", "1000", "--record-sample", "1"});
  auto traced = client(server.port, "traced");
  std::optional<std::int64_t> count;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline) {
    const auto listed = json::parse(http_get(server.control_port, "/arrivals").body);
    const auto& connections = listed.at("connections").as_array();
    if (!connections.empty() && connections[0].at("count").to_number<std::int64_t>() >= 5) {
      count = connections[0].at("count").to_number<std::int64_t>();
      break;
    }
    std::this_thread::sleep_for(20ms);
  }
  REQUIRE(count);
  server.process->signal(SIGTERM);  // ends the session, flushes the store
  REQUIRE(server.process->wait(15s).has_value());
  const auto rows = arrivals_rows(server.dir / "e2e.db");
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].first == "traced");
  CHECK(rows[0].second >= *count);
}

TEST_CASE("end to end: probe's lab records its victims' arrivals into the results database") {
  const auto dir = fs::temp_directory_path() / ("deadpeer-e2e-lab-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const auto db = dir / "results.db";
  child_process run({DEADPEER_PROBE_BINARY, "run", "--fault", "crash", "--trials", "2",
                     "--heartbeat", "100ms", "--db", db.string()});
  while (run.read_line(60s)) {
  }
  const auto status = run.wait(60s);
  INFO(run.output());
  REQUIRE(status.has_value());
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
  // One row per victim, each with the arrivals of its warm-up (three answered PINGs at least).
  const auto rows = arrivals_rows(db);
  REQUIRE(rows.size() == 2);
  for (const auto& [client_id, count] : rows) {
    CHECK_THAT(client_id, Catch::StartsWith("victim-"));
    CHECK(count >= 3);
  }
  // What probe qos --from-db replays.
  const auto traces = probe::qos::read_traces_from_db(db.string());
  REQUIRE(traces.size() == 2);
  CHECK(traces[0].interval == 100ms);
  CHECK_THAT(traces[0].name, Catch::Contains("(victim-"));
  std::error_code ignored;
  fs::remove_all(dir, ignored);
}

namespace {

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream(path) << text;
}

std::int64_t rows(const fs::path& db, const std::string& sql) {
  sqlite3* handle = nullptr;
  REQUIRE(sqlite3_open_v2(db.c_str(), &handle, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(handle, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(stmt) == SQLITE_ROW);
  const auto n = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  sqlite3_close(handle);
  return n;
}

}  // namespace

TEST_CASE("end to end: SIGHUP reloads the config file, keeps every connection, and says what changed") {
  const auto config_dir = fs::temp_directory_path() / ("deadpeer-e2e-hup-" + std::to_string(::getpid()));
  fs::create_directories(config_dir);
  const auto config = config_dir / "server.conf";
  write_text(config, "max-connections = 1\n");
  {
    // stderr into the lines read (a refused reload is said there).
    running_server server({"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1"}, {"--config", config.string()});
    // Long intervals: these peers never ping, and must outlive the test's steps.
    deadpeer::test::raw_peer first(server.port);
    first.handshake("first", 30s);
    deadpeer::test::raw_peer refused(server.port);
    refused.send_frame(deadpeer::wire::hello{.version = deadpeer::wire::protocol_version,
                                             .client_id = "second", .requested_interval_ms = 30000,
                                             .auth_token = {}});
    const auto answer = refused.read_to_end();
    REQUIRE(answer.frames.size() == 1);
    CHECK(std::get<deadpeer::wire::error>(answer.frames[0]).code ==
          deadpeer::wire::error_code::server_full);

    // The limit and the keepalive of new connections change; the number of loops cannot.
    write_text(config, "max-connections = 5\nkeepalive = 7s:2s:3\nthreads = 3\n");
    server.process->signal(SIGHUP);
    // One line per change, in this order.
    CHECK(server.process->wait_for_line("keepalive (new connections)", 10s).has_value());
    CHECK(server.process->wait_for_line("max connections 1 -> 5", 10s).has_value());
    CHECK(server.process->wait_for_line("threads changes only on restart", 10s).has_value());
    deadpeer::test::raw_peer second(server.port);
    second.handshake("second", 30s);
    const auto status = server.status();
    CHECK(status.at("established").as_int64() == 2);  // the first connection lived through it
    CHECK_THAT(std::string(status.at("keepalive").as_string()), Catch::Contains("7s"));

    // A bad file is refused whole: the server keeps running on what it had.
    write_text(config, "max-connections = -1\n");
    server.process->signal(SIGHUP);
    CHECK(server.process->wait_for_line("not reloaded, the running settings stay", 10s).has_value());
    CHECK(server.status().at("established").as_int64() == 2);

    // SIGTERM, then SIGTERM again before the peers answer the BYE: closed now, rows kept.
    server.process->signal(SIGTERM);
    REQUIRE(server.process->wait_for_line("with BYE going_away", 10s).has_value());
    server.process->signal(SIGTERM);
    CHECK(server.process->wait_for_line("again: closing every connection now", 10s).has_value());
    const auto status_code = server.process->wait(15s);
    REQUIRE(status_code.has_value());
    CHECK(WIFEXITED(*status_code));
    CHECK(WEXITSTATUS(*status_code) == 0);
    INFO(server.process->output());
    const auto db = server.dir / "e2e.db";
    // Both admitted connections, closed by the stop (the refused attempt has its own row).
    CHECK(rows(db, "SELECT count(*) FROM connections WHERE client_id IN ('first', 'second') AND "
                   "cause = 'local_close'") == 2);
    CHECK(rows(db, "SELECT count(*) FROM connections WHERE client_id = 'second' AND "
                   "cause = 'server_full'") == 1);
    // Each connection's row names the keepalive it was accepted with.
    CHECK(rows(db, "SELECT count(*) FROM connections WHERE client_id = 'second' AND keepalive LIKE '7s%'") == 1);
    CHECK(rows(db, "SELECT count(*) FROM connections WHERE client_id = 'first' AND keepalive NOT LIKE '7s%'") == 1);
  }
  std::error_code ignored;
  fs::remove_all(config_dir, ignored);
}

TEST_CASE("end to end: heartbeat-server --log appends there and SIGHUP reopens it after rotation") {
  const auto dir = fs::temp_directory_path() / ("deadpeer-e2e-log-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const auto log = dir / "server.log";
  child_process server({DEADPEER_SERVER_BINARY, "--listen", "127.0.0.1:0", "--control", "off",
                        "--db", "off", "--log", log.string()});
  const auto read = [](const fs::path& p) {
    std::ifstream in(p);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  const auto wait_in = [&](const fs::path& p, const std::string& text) {
    const auto until = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < until) {
      if (read(p).find(text) != std::string::npos) return true;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  };
  CHECK(wait_in(log, "listening on"));
  // Each line starts with a UTC timestamp to the millisecond and a level.
  const auto first = read(log).substr(0, read(log).find('\n'));
  INFO(first);
  REQUIRE(first.size() > 25);
  CHECK(first[4] == '-');
  CHECK(first[10] == 'T');
  CHECK(first[19] == '.');
  CHECK(first.substr(23, 2) == "Z ");
  CHECK_THAT(first, Catch::Contains("Z info heartbeat-server listening on 127.0.0.1:"));
  fs::rename(log, dir / "server.log.1");  // what logrotate does
  server.signal(SIGHUP);
  CHECK(wait_in(log, "SIGHUP: reloaded; nothing changed"));  // a new file, written again
  server.signal(SIGTERM);
  const auto status = server.wait(15s);
  REQUIRE(status.has_value());
  CHECK(WEXITSTATUS(*status) == 0);
  CHECK(read(log).find("stopped") != std::string::npos);
  CHECK(read(dir / "server.log.1").find("SIGHUP") == std::string::npos);
  std::error_code ignored;
  fs::remove_all(dir, ignored);
}

TEST_CASE("end to end: probe connect takes the auth token from a file or the environment, not argv") {
  const auto dir = fs::temp_directory_path() / ("deadpeer-e2e-token-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  write_text(dir / "token", "s3cret\n");
  running_server server({}, {"--auth-token-file", (dir / "token").string()});
  const auto address = "127.0.0.1:" + std::to_string(server.port);
  {
    child_process from_file({DEADPEER_PROBE_BINARY, "connect", "--server", address, "--id",
                             "from-file", "--auth-token-file", (dir / "token").string()});
    CHECK(from_file.wait_for_line("connected to", 10s).has_value());
  }
  {
    ::setenv("DEADPEER_AUTH_TOKEN", "s3cret", 1);
    child_process from_environment(
        {DEADPEER_PROBE_BINARY, "connect", "--server", address, "--id", "from-env"});
    ::unsetenv("DEADPEER_AUTH_TOKEN");
    CHECK(from_environment.wait_for_line("connected to", 10s).has_value());
  }
  {
    write_text(dir / "wrong", "guess\n");
    child_process wrong({"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1", DEADPEER_PROBE_BINARY,
                         "connect", "--server", address, "--id", "wrong", "--auth-token-file",
                         (dir / "wrong").string()});
    CHECK(wrong.wait_for_line("auth_failed", 10s).has_value());
  }
  std::error_code ignored;
  fs::remove_all(dir, ignored);
}

namespace {

// The page at http://127.0.0.1:PORT/ as headless Chromium renders it after its script has
// run for a few seconds of virtual time (the DOM, serialised). Flags keep Chromium off the
// network (no background services, no QUIC) and in a profile of its own.
std::string rendered_page(unsigned short control_port, const fs::path& profile) {
  child_process browser({"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>/dev/null", "/usr/bin/chromium",
                         "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--user-data-dir=" + profile.string(), "--virtual-time-budget=3000",
                         "--dump-dom", "http://127.0.0.1:" + std::to_string(control_port) + "/"});
  while (browser.read_line(60s)) {
  }
  const auto status = browser.wait(10s);
  REQUIRE(status.has_value());
  return browser.output();
}

}  // namespace

TEST_CASE("end to end: the live view in a real browser shows a client, then its end") {
  if (!fs::exists("/usr/bin/chromium")) {
    WARN("SKIPPED: Chromium is not installed (Debian package chromium; scripts/setup --test installs it)");
    return;
  }
  running_server server;
  const auto profile = server.dir / "chromium-profile";
  auto phone = client(server.port, "phone-42");
  auto page = rendered_page(server.control_port, profile);
  INFO(page);
  // The script ran and reached the API: the status line's text, not the script's source
  // (--dump-dom serialises the <script> too).
  CHECK_THAT(page, Catch::Contains("\">live · updated"));
  CHECK_THAT(page, Catch::Contains("data-client=\"phone-42\""));
  CHECK_THAT(page, Catch::Contains("established"));

  std::uint64_t since = 0;
  phone->signal(SIGKILL);
  const auto end = server.next_event(since);
  REQUIRE(str(end.at("client_id")) == "phone-42");
  page = rendered_page(server.control_port, profile);
  INFO(page);
  CHECK_THAT(page, Catch::Contains("data-ended=\"phone-42\""));
  CHECK_THAT(page, Catch::Contains(str(end.at("cause"))));
  CHECK_THAT(page, !Catch::Contains("data-client=\"phone-42\""));  // no longer live
  // The detection is in the latency histogram, under the mechanism that noticed.
  CHECK_THAT(page, Catch::Contains(str(end.at("detected_by")) + " ≤"));
}
