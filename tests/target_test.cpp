// Target mode against servers deadpeer did not write: a loopback server of this test
// (crash, no privileges needed), mosquitto from Debian and a Python HTTP server inside
// the lab (network faults; skipped loudly without CAP_NET_ADMIN).
#include "../probe/child_process.hpp"
#include "../probe/lab.hpp"

#include <sqlite3.h>
#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

struct trial_row {
  std::string outcome, detected_by, cause, note, config_key;
  double latency_ms = -1;
};

struct probe_run {
  int exit_code = -1;
  std::string output;
  std::vector<trial_row> rows;
};

probe_run run_probe(const std::vector<std::string>& args) {
  static int counter = 0;
  const auto db = fs::temp_directory_path() / ("deadpeer-target-" + std::to_string(::getpid()) +
                                               "-" + std::to_string(counter++) + ".db");
  // stderr too: usage errors are printed there.
  std::vector<std::string> argv{"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1", DEADPEER_PROBE_BINARY,
                                "run"};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.insert(argv.end(), {"--db", db.string()});
  probe::child_process p(argv);
  while (p.read_line(180s)) {
  }
  probe_run run;
  const auto status = p.wait(180s);
  run.output = p.output();
  INFO(run.output);
  REQUIRE(status.has_value());
  REQUIRE(WIFEXITED(*status));
  run.exit_code = WEXITSTATUS(*status);
  sqlite3* handle = nullptr;
  if (fs::exists(db) &&
      sqlite3_open_v2(db.c_str(), &handle, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(handle,
                           "SELECT outcome, detected_by, cause, note, config_key, latency_ms_exact "
                           "FROM trials ORDER BY id",
                           -1, &stmt, nullptr) == SQLITE_OK) {
      auto text = [&](int column) {
        const auto* value = sqlite3_column_text(stmt, column);
        return value ? std::string(reinterpret_cast<const char*>(value)) : std::string();
      };
      while (sqlite3_step(stmt) == SQLITE_ROW)
        run.rows.push_back(
            {text(0), text(1), text(2), text(3), text(4), sqlite3_column_double(stmt, 5)});
    }
    sqlite3_finalize(stmt);
  }
  sqlite3_close(handle);
  for (const auto& suffix : {"", "-wal", "-shm"})
    fs::remove(db.string() + suffix);
  return run;
}

// A loopback server written here: accepts one client at a time and either closes when the
// client's EOF arrives (well behaved) or never closes it (a CLOSE_WAIT leak).
class loopback_target {
 public:
  explicit loopback_target(bool closes_on_eof) : closes_on_eof_(closes_on_eof) {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(listener_, 8) == 0);
    socklen_t len = sizeof a;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~loopback_target() {
    stop_ = true;
    ::shutdown(listener_, SHUT_RDWR);
    thread_.join();
    ::close(listener_);
    for (const int fd : held_)
      ::close(fd);
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  void serve() {
    while (!stop_) {
      const int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      held_.push_back(fd);
      char buffer[256];
      while (::recv(fd, buffer, sizeof buffer, 0) > 0) {
      }
      if (closes_on_eof_) {
        ::close(fd);
        held_.pop_back();
      }
    }
  }
  bool closes_on_eof_;
  int listener_ = -1;
  unsigned short port_ = 0;
  std::atomic<bool> stop_{false};
  std::vector<int> held_;
  std::thread thread_;
};

bool python_available() {
  if (fs::exists("/usr/bin/python3")) return true;
  WARN("SKIPPED: /usr/bin/python3 is not installed (scripts/setup installs it)");
  return false;
}

bool lab_available() {
  if (const auto why = probe::lab::unavailable_reason()) {
    WARN("SKIPPED: the network lab is not available here: " << *why);
    return false;
  }
  return true;
}

}  // namespace

TEST_CASE("target: a loopback server that closes on EOF is seen closing after a crash") {
  loopback_target target(true);
  const auto run = run_probe({"--fault", "crash", "--target", target.address(), "--trials", "2"});
  INFO(run.output);
  CHECK(run.exit_code == 0);
  REQUIRE(run.rows.size() == 2);
  for (const auto& r : run.rows) {
    CHECK(r.outcome == "detected");
    CHECK(r.detected_by == "target_close");
    CHECK(r.config_key == "target=" + target.address() + " greeting=raw");
    CHECK(r.latency_ms >= 0);
    CHECK(r.latency_ms < 1000);  // EOF on loopback, then close(): milliseconds
  }
}

TEST_CASE("target: a server that never closes after the peer's FIN is a CLOSE_WAIT leak") {
  loopback_target target(false);
  const auto run = run_probe(
      {"--fault", "crash", "--target", target.address(), "--trials", "1", "--limit", "1s"});
  INFO(run.output);
  CHECK(run.exit_code == 1);
  REQUIRE(run.rows.size() == 1);
  CHECK(run.rows[0].outcome == "missed");
  CHECK_THAT(run.rows[0].note, Catch::Contains("CLOSE_WAIT") && Catch::Contains("never closed"));
}

TEST_CASE("target: bad target options exit 2 and say why") {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases{
      {{"--target", "10.0.0.1:80"}, "loopback only"},
      {{"--target", "127.0.0.1:80", "--fault", "cable-pull"}, "--target-cmd"},
      {{"--target-cmd", "true"}, "--target-port"},
      {{"--target", "127.0.0.1:80", "--keepalive", "1s:1s:3"}, "own settings"},
      {{"--target", "127.0.0.1:80", "--greeting", "ftp"}, "expected raw"},
      {{"--target", "127.0.0.1:80", "--fault", "half-close"}, "does not apply to a target"},
      {{"--greeting", "raw"}, "goes with --target"},
  };
  for (const auto& [args, message] : cases) {
    const auto run = run_probe(args);
    INFO(run.output);
    CHECK(run.exit_code == 2);
    CHECK_THAT(run.output, Catch::Contains(message));
    CHECK(run.rows.empty());
  }
}

TEST_CASE("target: mosquitto with keep alive 5s notices a pulled cable in 7 to 15 s") {
  if (!lab_available()) return;
  if (!fs::exists("/usr/sbin/mosquitto")) {
    WARN("SKIPPED: mosquitto is not installed (scripts/setup installs it)");
    return;
  }
  const auto conf = fs::temp_directory_path() /
                    ("deadpeer-target-mosquitto-" + std::to_string(::getpid()) + ".conf");
  std::ofstream(conf)
      << "listener 1883\nallow_anonymous true\npersistence false\nlog_dest stderr\n";
  const auto run =
      run_probe({"--fault", "cable-pull", "--target-cmd", "/usr/sbin/mosquitto -c " + conf.string(),
                 "--target-port", "1883", "--greeting", "mqtt:keepalive=5s", "--trials", "2",
                 "--limit", "30s"});
  fs::remove(conf);
  INFO(run.output);
  CHECK(run.exit_code == 0);
  REQUIRE(run.rows.size() == 2);
  for (const auto& r : run.rows) {
    CHECK(r.outcome == "detected");
    CHECK(r.detected_by == "target_close");
    // mosquitto 2.0 closes a client whose last packet is more than 1.5 x keep alive old
    // (integer seconds: > 7 s), in a sweep of all clients that runs every 6 s on a clock of
    // whole seconds: 7 to 15 s after the last PINGREQ, which the fault follows at once.
    CHECK(r.latency_ms >= 6500);
    CHECK(r.latency_ms <= 15500);
  }
}

TEST_CASE("target: a server without keepalive never notices a pulled cable") {
  if (!lab_available() || !python_available()) return;
  const auto run =
      run_probe({"--fault", "cable-pull", "--target-cmd",
                 "/usr/bin/python3 -m http.server --bind 0.0.0.0 8080", "--target-port", "8080",
                 "--greeting", "raw", "--trials", "1", "--limit", "3s"});
  INFO(run.output);
  CHECK(run.exit_code == 1);
  REQUIRE(run.rows.size() == 1);
  CHECK(run.rows[0].outcome == "missed");
  CHECK_THAT(run.rows[0].note, Catch::Contains("no keepalive"));
}

TEST_CASE("target: a client with kernel keepalive 1s:1s:3 notices its server's cable cut") {
  if (!lab_available() || !python_available()) return;
  // The client is the target; probe's answering server is its peer in the lab.
  const std::string client =
      "/usr/bin/python3 -c \"import socket; s = socket.create_connection(('{host}', {port})); "
      "s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1); "
      "s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1); "
      "s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1); "
      "s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3); s.recv(1)\"";
  const auto run = run_probe({"--fault", "cable-pull", "--target-side", "client", "--target-port",
                              "7791", "--target-cmd", client, "--trials", "1", "--limit", "20s"});
  INFO(run.output);
  CHECK(run.exit_code == 0);
  REQUIRE(run.rows.size() == 1);
  CHECK(run.rows[0].outcome == "detected");
  CHECK(run.rows[0].detected_by == "target_close");
  CHECK_THAT(run.rows[0].config_key, Catch::EndsWith("side=client"));
  // Idle 1 s, then 3 probes 1 s apart: the kernel gives up 4 s after the last traffic.
  CHECK(run.rows[0].latency_ms >= 3900);
  CHECK(run.rows[0].latency_ms <= 6000);
}

TEST_CASE("target: a Redis-like client with a read timeout notices a hung server") {
  if (!lab_available() || !python_available()) return;
  // PING every second, give up when an answer takes 3 s: a hung server (its kernel still
  // ACKs) is noticed 1 s + 3 s after the last answer, by the client closing.
  const std::string client =
      "/usr/bin/python3 -c \"import socket, time\n"
      "s = socket.create_connection(('{host}', {port})); s.settimeout(3)\n"
      "while True:\n"
      "    s.sendall(b'PING\\r\\n'); s.recv(64); time.sleep(1)\"";
  const auto run = run_probe({"--fault", "hang", "--target-side", "client", "--target-port", "7792",
                              "--greeting", "redis:interval=1s", "--target-cmd", client,
                              "--trials", "1", "--limit", "20s"});
  INFO(run.output);
  CHECK(run.exit_code == 0);
  REQUIRE(run.rows.size() == 1);
  CHECK(run.rows[0].outcome == "detected");
  CHECK(run.rows[0].latency_ms >= 3500);
  CHECK(run.rows[0].latency_ms <= 6000);
}

TEST_CASE("target: the same server without keepalive, under probe wrap 1s:1s:3, notices in 4 s") {
  if (!lab_available() || !python_available()) return;
  const auto run = run_probe(
      {"--fault", "cable-pull", "--target-cmd",
       std::string(DEADPEER_PROBE_BINARY) +
           " wrap --keepalive 1s:1s:3 -- /usr/bin/python3 -m http.server --bind 0.0.0.0 8080",
       "--target-port", "8080", "--greeting", "raw", "--trials", "1", "--limit", "20s"});
  INFO(run.output);
  CHECK(run.exit_code == 0);
  REQUIRE(run.rows.size() == 1);
  CHECK(run.rows[0].outcome == "detected");
  CHECK(run.rows[0].detected_by == "target_close");
  // Idle 1 s, then 3 unanswered probes 1 s apart: the kernel gives up at 4 s (the bound).
  CHECK(run.rows[0].latency_ms >= 3900);
  CHECK(run.rows[0].latency_ms <= 5000);
}
