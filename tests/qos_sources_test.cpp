// probe qos's trace sources (probe/qos_sources.cpp): trace files read strictly, every refusal
// naming the file and line; databases written by the store read back as traces named after
// their connections, damaged rows refused naming the connection.
#include "../probe/qos.hpp"

#include "temp_dir.hpp"

#include <deadpeer/store.hpp>

#include <catch2/catch.hpp>
#include <sqlite3.h>

#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using Catch::Contains;
using deadpeer::test::temp_dir;
using probe::qos::read_trace_file;
using probe::qos::read_traces_from_db;

namespace {

std::string write_file(const temp_dir& dir, const std::string& name, const std::string& text) {
  const auto path = dir.file(name);
  std::ofstream(path) << text;
  return path;
}

// The message of the std::runtime_error `f` throws; fails the test if none is thrown.
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  FAIL("no std::runtime_error was thrown");
  return {};
}

void exec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  char* message = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &message);
  const std::string text = message ? message : "";
  sqlite3_free(message);
  sqlite3_close(db);
  INFO(sql << ": " << text);
  REQUIRE(rc == SQLITE_OK);
}

deadpeer::connection_record connection(const std::string& client_id, std::int64_t interval_ms,
                                       std::vector<std::int64_t> mono_ns) {
  deadpeer::connection_record r;
  r.session_id = 7;
  r.client_id = client_id;
  r.peer_address = "127.0.0.1:5555";
  r.cause = "peer_closed";
  r.detected_by = "eof";
  r.close_mode = "plain";
  r.keepalive = "system default";
  r.heartbeat_interval_ms = interval_ms;
  r.detector = "fixed";
  r.arrivals = deadpeer::arrival_trace{
      .interval_ms = interval_ms, .seen = mono_ns.size(), .mono_ns = std::move(mono_ns)};
  return r;
}

}  // namespace

TEST_CASE("a trace file: one time in ms a line, comments and blank lines skipped") {
  temp_dir dir;
  const auto path = write_file(dir, "link.txt",
                               "# recorded on the office Wi-Fi\n"
                               "\n"
                               "1000\n"
                               "  2000.25 \r\n"
                               "2000.25\n"
                               "# a pause\n"
                               "3999.5\n");
  const auto t = read_trace_file(path, 1000ms);
  CHECK(t.name == path);
  CHECK(t.interval == 1000ms);
  CHECK(t.arrival_ms == std::vector<double>{1000, 2000.25, 2000.25, 3999.5});
}

TEST_CASE("a trace file's bad lines are refused, naming the file and the line") {
  temp_dir dir;
  SECTION("a line that is not a number") {
    const auto path = write_file(dir, "t.txt", "1\n2\n3 ms\n4\n");
    const auto message = error_of([&] { read_trace_file(path, 1000ms); });
    CHECK_THAT(message, Contains(path + ":3: \"3 ms\" is not an arrival time"));
  }
  SECTION("not finite") {
    const auto path = write_file(dir, "t.txt", "1\n2\ninf\n");
    CHECK_THAT(error_of([&] { read_trace_file(path, 1000ms); }), Contains(path + ":3:"));
  }
  SECTION("a time that goes back") {
    const auto path = write_file(dir, "t.txt", "10\n# c\n20\n30\n\n25.5\n");
    const auto message = error_of([&] { read_trace_file(path, 1000ms); });
    CHECK_THAT(message, Contains(path + ":6: 25.5 ms comes before 30 ms on line 4"));
    CHECK_THAT(message, Contains("must not decrease"));
  }
  SECTION("too few arrivals") {
    const auto path = write_file(dir, "t.txt", "# two only\n10\n20\n");
    const auto message = error_of([&] { read_trace_file(path, 1000ms); });
    CHECK_THAT(message, Contains(path + ":3: 2 arrival time(s)"));
    CHECK_THAT(message, Contains("at least 3"));
  }
  SECTION("a file that cannot be read") {
    const auto path = dir.file("missing.txt");
    CHECK_THAT(error_of([&] { read_trace_file(path, 1000ms); }), Contains(path + ": cannot be read"));
  }
}

TEST_CASE("a database's recorded connections come back as traces named after them") {
  temp_dir dir;
  const auto path = dir.file("deadpeer.db");
  {
    deadpeer::event_store store({.path = path});
    store.record(connection("client-a", 500, {1'000'000, 501'000'000, 1'002'500'500}));
    store.record(connection("client-b", 500, {7, 8}));  // too short for the default
    // Heartbeats off: the interval is the median gap (10, 30 and 30 ms).
    store.record(connection("quiet", 0, {0, 10'000'000, 40'000'000, 70'000'000}));
  }
  const auto traces = read_traces_from_db(path);
  REQUIRE(traces.size() == 2);
  CHECK(traces[0].name == "connection 1 (client-a, 127.0.0.1:5555)");
  CHECK(traces[0].interval == 500ms);
  CHECK(traces[0].arrival_ms == std::vector<double>{0, 500, 1001.501});
  CHECK(traces[1].name == "connection 3 (quiet, 127.0.0.1:5555)");
  CHECK(traces[1].interval == 30ms);
  CHECK(read_traces_from_db(path, 2).size() == 3);
  CHECK(read_traces_from_db(path, 4).size() == 1);

  SECTION("a BLOB that disagrees with its count is refused, naming the connection") {
    exec(path, "UPDATE arrivals SET count = 4 WHERE connection_id = 1");
    const auto message = error_of([&] { read_traces_from_db(path); });
    CHECK_THAT(message, Contains(path) && Contains("connection 1 (client-a") &&
                            Contains("24 bytes, expected count 4 x 8"));
  }
  SECTION("times that go back are refused") {
    // The second arrival (bytes 9..16) set to 2^56 us, above the third.
    exec(path, "UPDATE arrivals SET times_us = substr(times_us, 1, 8) || "
               "X'0000000000000001' || substr(times_us, 17) WHERE connection_id = 1");
    CHECK_THAT(error_of([&] { read_traces_from_db(path); }),
               Contains("connection 1 (client-a") && Contains("arrival 3"));
  }
}

TEST_CASE("a file without recorded arrivals is refused, saying why") {
  temp_dir dir;
  SECTION("no such file") {
    const auto path = dir.file("none.db");
    CHECK_THAT(error_of([&] { read_traces_from_db(path); }), Contains(path + ": no such file"));
  }
  SECTION("a database from before schema 4") {
    const auto path = dir.file("old.db");
    exec(path, "CREATE TABLE connections (id INTEGER PRIMARY KEY); PRAGMA user_version = 3;");
    CHECK_THAT(error_of([&] { read_traces_from_db(path); }),
               Contains(path + " holds no recorded arrivals") && Contains("--record-arrivals"));
  }
  SECTION("not a database") {
    const auto path = write_file(dir, "text.db", std::string(4096, 'x'));
    CHECK_THAT(error_of([&] { read_traces_from_db(path); }),
               Contains(path) && Contains("not a database"));
  }
}
