#include "../probe/child_process.hpp"

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>

using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

// Children of `parent` (from /proc/PID/stat: the field after the state is the parent).
std::set<int> children_of(int parent) {
  std::set<int> found;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const auto name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    std::istringstream fields(line.substr(line.rfind(')') + 2));
    char state = 0;
    int ppid = 0;
    fields >> state >> ppid;
    if (ppid == parent) found.insert(std::stoi(name));
  }
  return found;
}

// Gone, or a zombie waiting for whoever adopted it.
bool dead(int pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  return line.substr(line.rfind(')') + 2, 1) == "Z";
}

}  // namespace

TEST_CASE("child_process: a child inherits no socket of its parent, CLOEXEC or not") {
  // Asio opens sockets without CLOEXEC; a victim holding a copy of the server's side of a
  // connection would keep it open after the server closed it.
  const int leaky = ::socket(AF_INET, SOCK_STREAM, 0);
  const int leaky_too = ::socket(AF_INET6, SOCK_STREAM, 0);
  REQUIRE(leaky >= 0);
  REQUIRE(leaky_too >= 0);
  probe::child_process ls({"ls", "-l", "/proc/self/fd/"});
  while (ls.read_line(10s)) {
  }
  REQUIRE(ls.wait(10s).has_value());
  INFO(ls.output());
  CHECK(ls.output().find(" 0 -> ") != std::string::npos);  // the listing itself worked
  CHECK(ls.output().find("socket:") == std::string::npos);
  ::close(leaky);
  ::close(leaky_too);
}

TEST_CASE("child_process: a program that cannot run is an error naming it") {
  CHECK_THROWS_WITH(probe::child_process({"/nonexistent/deadpeer-program"}),
                    Catch::Contains("/nonexistent/deadpeer-program"));
}

TEST_CASE("child_process: probe SIGKILLed in the middle of a trial leaves no process behind") {
  // A server-hang trial: probe's children are a heartbeat-server (then stopped) and a
  // heartbeat client; the dead-after is long, so probe is still waiting when it is killed.
  probe::child_process run(
      {DEADPEER_PROBE_BINARY, "run", "--fault", "server-hang", "--heartbeat", "200ms",
       "--dead-after", "60s", "--trials", "1", "--db",
       (fs::temp_directory_path() / ("deadpeer-orphans-" + std::to_string(::getpid()) + ".db"))
           .string()});
  REQUIRE(run.wait_for_line("server-hang:", 20s));
  std::set<int> children;
  const auto until = std::chrono::steady_clock::now() + 30s;
  while (children.size() < 2 && std::chrono::steady_clock::now() < until) {
    children = children_of(run.pid());
    std::this_thread::sleep_for(10ms);
  }
  REQUIRE(children.size() == 2);
  run.signal(SIGKILL);
  REQUIRE(run.wait(10s).has_value());
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  for (const int pid : children) {
    while (!dead(pid) && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(10ms);
    CHECK(dead(pid));
    if (!dead(pid)) ::kill(pid, SIGKILL);  // ours: do not leave it running for the next test
  }
  for (const auto& suffix : {"", "-wal", "-shm"})
    fs::remove(fs::temp_directory_path() /
               ("deadpeer-orphans-" + std::to_string(::getpid()) + ".db" + suffix));
}

TEST_CASE("probe: Ctrl-C during a trial stores it as interrupted and exits 130") {
  const auto db =
      fs::temp_directory_path() / ("deadpeer-interrupt-" + std::to_string(::getpid()) + ".db");
  probe::child_process run({DEADPEER_PROBE_BINARY, "run", "--fault", "hang", "--heartbeat", "200ms",
                            "--dead-after", "60s", "--trials", "3", "--db", db.string()});
  // The fault is in place once the victim (probe's child) is stopped.
  bool stopped = false;
  const auto until = std::chrono::steady_clock::now() + 30s;
  while (!stopped && std::chrono::steady_clock::now() < until) {
    for (const int pid : children_of(run.pid())) {
      std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
      std::string line;
      if (std::getline(stat, line) && line.substr(line.rfind(')') + 2, 1) == "T") stopped = true;
    }
    std::this_thread::sleep_for(10ms);
  }
  REQUIRE(stopped);
  run.signal(SIGINT);
  while (run.read_line(30s)) {
  }
  const auto status = run.wait(30s);
  INFO(run.output());
  REQUIRE(status.has_value());
  REQUIRE(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 130);
  probe::child_process query({"sqlite3", db.string(), "SELECT group_concat(outcome) FROM trials"});
  const auto outcomes = query.read_line(10s);
  (void)query.wait(10s);
  REQUIRE(outcomes);
  CHECK(*outcomes == "interrupted");
  for (const auto& suffix : {"", "-wal", "-shm"})
    fs::remove(db.string() + suffix);
}
