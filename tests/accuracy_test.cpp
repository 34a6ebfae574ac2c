// The product is its numbers: run the real probe for each fault and check the stored rows
// (not the printed text) against the ranges the kernel's behaviour implies (lab.md).
// Faults that need network namespaces are skipped loudly without CAP_NET_ADMIN.
#include "../probe/child_process.hpp"
#include "../probe/lab.hpp"

#include <sqlite3.h>
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

struct trial_row {
  std::string outcome, detected_by, cause, error_name, note;
  double latency_ms = -1;
};

// Runs probe with `args` against a fresh database and returns its trials.
std::vector<trial_row> run_probe(const std::vector<std::string>& args) {
  static int counter = 0;
  const auto db = fs::temp_directory_path() / ("deadpeer-accuracy-" + std::to_string(::getpid()) +
                                               "-" + std::to_string(counter++) + ".db");
  std::vector<std::string> argv{DEADPEER_PROBE_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.insert(argv.end(), {"--db", db.string()});
  probe::child_process p(argv);
  while (p.read_line(120s)) {
  }
  const auto status = p.wait(120s);
  INFO(p.output());
  REQUIRE(status.has_value());
  REQUIRE(WIFEXITED(*status));
  sqlite3* handle = nullptr;
  REQUIRE(sqlite3_open_v2(db.c_str(), &handle, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(handle,
                             "SELECT outcome, detected_by, cause, error_name, note, "
                             "latency_ms_exact FROM trials ORDER BY id",
                             -1, &stmt, nullptr) == SQLITE_OK);
  std::vector<trial_row> rows;
  auto text = [&](int column) {
    const auto* value = sqlite3_column_text(stmt, column);
    return value ? std::string(reinterpret_cast<const char*>(value)) : std::string();
  };
  while (sqlite3_step(stmt) == SQLITE_ROW)
    rows.push_back({text(0), text(1), text(2), text(3), text(4), sqlite3_column_double(stmt, 5)});
  sqlite3_finalize(stmt);
  sqlite3_close(handle);
  for (const auto& suffix : {"", "-wal", "-shm"})
    fs::remove(db.string() + suffix);
  return rows;
}

double p95(std::vector<trial_row> rows) {
  std::vector<double> v;
  for (const auto& r : rows)
    v.push_back(r.latency_ms);
  std::sort(v.begin(), v.end());
  const auto rank = (95 * v.size() + 99) / 100;  // nearest rank
  return v.at(rank - 1);
}

bool lab_available() {
  if (const auto why = probe::lab::unavailable_reason()) {
    WARN("SKIPPED: the network lab is not available here: " << *why);
    return false;
  }
  return true;
}

}  // namespace

TEST_CASE("accuracy: crash is noticed by EOF with p95 within 20 ms") {
  const auto rows = run_probe({"--simulate-crash", "--trials", "5"});
  REQUIRE(rows.size() == 5);
  for (const auto& r : rows) {
    CHECK(r.outcome == "detected");
    CHECK(r.detected_by == "eof");
  }
  CHECK(p95(rows) <= 20.0);
}

TEST_CASE("accuracy: crash with unread data is noticed by RST with p95 within 20 ms") {
  const auto rows = run_probe({"run", "--fault", "crash-rst", "--trials", "5"});
  REQUIRE(rows.size() == 5);
  for (const auto& r : rows) {
    CHECK(r.outcome == "detected");
    CHECK(r.detected_by == "reset");
    CHECK(r.error_name == "ECONNRESET");
  }
  CHECK(p95(rows) <= 20.0);
}

TEST_CASE("accuracy: a hang is noticed by the heartbeat within 0.6 to 1.0 s") {
  const auto rows = run_probe(
      {"run", "--fault", "hang", "--heartbeat", "200ms", "--dead-after", "600ms", "--trials", "3"});
  REQUIRE(rows.size() == 3);
  for (const auto& r : rows) {
    CHECK(r.outcome == "detected");
    CHECK(r.detected_by == "heartbeat");
    // The fault follows the victim's last heartbeat by the time the probe needs to see
    // it (an RTT and a pipe read), so the latency is the timeout minus a few ms, while
    // the server's silence before its verdict is the full timeout.
    INFO(r.latency_ms << " ms, " << r.note);
    CHECK(r.latency_ms >= 590.0);
    CHECK(r.latency_ms <= 1000.0);
    const auto at = r.note.find("silence ");
    REQUIRE(at != std::string::npos);
    const double silence = std::stod(r.note.substr(at + 8));
    CHECK(silence >= 600.0);
    CHECK(silence <= 1000.0);
  }
}

TEST_CASE("accuracy: keepalive alone never notices a hang and the trial is stored as missed") {
  const auto rows = run_probe(
      {"run", "--fault", "hang", "--heartbeat", "off", "--keepalive", "1s:1s:3", "--trials", "1"});
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].outcome == "missed");
  CHECK(rows[0].latency_ms < 0);
}

TEST_CASE("accuracy: cable pull with keepalive 1s:1s:3 is noticed in 4.0 to 4.4 s") {
  if (!lab_available()) return;
  const auto rows = run_probe({"run", "--fault", "cable-pull", "--keepalive", "1s:1s:3",
                               "--heartbeat", "off", "--trials", "3"});
  REQUIRE(rows.size() == 3);
  for (const auto& r : rows) {
    INFO(r.latency_ms << " ms " << r.note);
    CHECK(r.outcome == "detected");
    CHECK(r.detected_by == "keepalive");
    CHECK(r.error_name == "ETIMEDOUT");
    CHECK(r.latency_ms >= 4000.0);
    CHECK(r.latency_ms <= 4400.0);
  }
}

TEST_CASE("accuracy: cable pull with 1s:1s:10 and a 2.5 s user timeout ends in 3.0 to 3.3 s") {
  if (!lab_available()) return;
  const auto rows = run_probe({"run", "--fault", "cable-pull", "--keepalive", "1s:1s:10",
                               "--user-timeout", "2500ms", "--heartbeat", "off", "--trials", "3"});
  REQUIRE(rows.size() == 3);
  for (const auto& r : rows) {
    INFO(r.latency_ms << " ms " << r.note);
    CHECK(r.outcome == "detected");
    CHECK(r.error_name == "ETIMEDOUT");
    CHECK(r.latency_ms >= 3000.0);
    CHECK(r.latency_ms <= 3300.0);
  }
}

TEST_CASE("accuracy: after a reboot the next keepalive probe meets RST") {
  if (!lab_available()) return;
  const auto rows = run_probe({"run", "--fault", "reboot", "--keepalive", "1s:1s:3", "--heartbeat",
                               "off", "--trials", "3"});
  REQUIRE(rows.size() == 3);
  for (const auto& r : rows) {
    INFO(r.latency_ms << " ms " << r.note);
    CHECK(r.outcome == "detected");
    CHECK(r.error_name == "ECONNRESET");
    // Within one keepalive interval (1 s) of healing, plus timer slack.
    const auto at = r.note.find("detected ");
    REQUIRE(at != std::string::npos);
    CHECK(std::stoi(r.note.substr(at + 9)) <= 1100);
  }
}

TEST_CASE("accuracy: the client notices a crashed server by EOF and a hung one by heartbeat") {
  const auto crash = run_probe({"run", "--fault", "server-crash", "--trials", "3"});
  REQUIRE(crash.size() == 3);
  for (const auto& r : crash) {
    CHECK(r.outcome == "detected");
    CHECK(r.detected_by == "eof");
  }
  CHECK(p95(crash) <= 20.0);
  const auto hang = run_probe({"run", "--fault", "server-hang", "--heartbeat", "200ms",
                               "--dead-after", "600ms", "--trials", "3"});
  REQUIRE(hang.size() == 3);
  for (const auto& r : hang) {
    INFO(r.latency_ms << " ms, " << r.note);
    CHECK(r.outcome == "detected");
    CHECK(r.detected_by == "heartbeat");
    CHECK(r.latency_ms >= 590.0);
    CHECK(r.latency_ms <= 1000.0);
  }
}

TEST_CASE("accuracy: a client with keepalive 1s:1s:3 notices a cut server in 4.0 to 4.4 s") {
  if (!lab_available()) return;
  const auto rows = run_probe({"run", "--fault", "server-cable-pull", "--keepalive", "1s:1s:3",
                               "--heartbeat", "off", "--trials", "2"});
  REQUIRE(rows.size() == 2);
  for (const auto& r : rows) {
    INFO(r.latency_ms << " ms " << r.note);
    CHECK(r.outcome == "detected");
    CHECK(r.detected_by == "keepalive");
    CHECK(r.latency_ms >= 4000.0);
    CHECK(r.latency_ms <= 4400.0);
  }
}
