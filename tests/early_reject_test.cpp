// probe run --fault early-reject, through the real program on loopback: an upload answered
// 413 and closed while the client still sends. What the client saw is read back from the
// trials table (outcome 'observed', details as JSON): a graceful close (FIN, drain, close)
// gives the answer and a clean EOF every time; a naive close (body unread) ends in a reset.
#include "../probe/early_reject.hpp"

#include "../probe/child_process.hpp"

#include "temp_dir.hpp"

#include <sqlite3.h>
#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <string>
#include <vector>

using namespace std::chrono_literals;
namespace json = boost::json;

namespace {

struct stored_trial {
  std::string outcome, cause, error_name, detected_by, note, config_key;
  double latency_ms = -1;
  json::object details;
};

struct probe_answer {
  int exit_code = -1;
  std::string output;
};

// Runs probe with `args` (stdout and stderr together) and waits for it, bounded.
probe_answer run_probe(const std::vector<std::string>& args) {
  std::vector<std::string> argv{"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1", DEADPEER_PROBE_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  probe::child_process p(argv);
  while (p.read_line(60s)) {
  }
  const auto status = p.wait(60s);
  INFO(p.output());
  REQUIRE(status.has_value());
  REQUIRE(WIFEXITED(*status));
  return {WEXITSTATUS(*status), p.output()};
}

std::vector<stored_trial> stored_trials(const std::string& db) {
  std::vector<stored_trial> rows;
  sqlite3* handle = nullptr;
  REQUIRE(sqlite3_open_v2(db.c_str(), &handle, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(handle,
                             "SELECT outcome, cause, error_name, detected_by, note, config_key, "
                             "latency_ms_exact, details FROM trials ORDER BY id",
                             -1, &stmt, nullptr) == SQLITE_OK);
  auto text = [&](int column) {
    const auto* value = sqlite3_column_text(stmt, column);
    return value ? std::string(reinterpret_cast<const char*>(value)) : std::string();
  };
  while (sqlite3_step(stmt) == SQLITE_ROW) {
    stored_trial t{text(0), text(1), text(2), text(3), text(4), text(5),
                   sqlite3_column_double(stmt, 6), {}};
    INFO(text(7));
    t.details = json::parse(text(7)).as_object();
    rows.push_back(std::move(t));
  }
  sqlite3_finalize(stmt);
  sqlite3_close(handle);
  return rows;
}

std::string text_of(const json::object& o, std::string_view key) {
  return std::string(o.at(key).as_string());
}

}  // namespace

TEST_CASE("early-reject: graceful always gives the answer and a clean EOF, naive ends in a reset") {
  deadpeer::test::temp_dir dir;
  const auto db = (dir.path() / "results.db").string();
  constexpr int trials = 4;
  for (const char* mode : {"graceful", "naive"}) {
    const auto run = run_probe({"run", "--fault", "early-reject", "--server-close", mode,
                                "--trials", std::to_string(trials), "--db", db});
    INFO(run.output);
    CHECK(run.exit_code == 0);  // observed trials are not failures
    CHECK_THAT(run.output, Catch::Contains("answered"));
  }
  const auto rows = stored_trials(db);
  REQUIRE(rows.size() == 2 * trials);
  int graceful = 0, naive = 0;
  for (const auto& t : rows) {
    INFO(t.note << "\n" << json::serialize(t.details));
    CHECK(t.outcome == "observed");
    CHECK(t.latency_ms >= 0);
    CHECK(t.latency_ms < 5000);
    CHECK(t.details.at("body_bytes").to_number<double>() ==
          static_cast<double>(probe::early_reject_body_bytes));
    CHECK(text_of(t.details, "status") == "HTTP/1.1 413 Payload Too Large");
    // The report note says how Linux shows a FIN followed by RST, and where 10053 comes in.
    CHECK_THAT(t.note, Catch::Contains("EOF, then EPIPE") && Catch::Contains("10053"));
    const auto& server = t.details.at("server").as_object();
    if (text_of(t.details, "server_close") == "graceful") {
      ++graceful;
      CHECK(t.config_key == "server_close=graceful");
      CHECK(t.details.at("answer_read").as_bool());
      CHECK(t.details.at("answer_before_error").as_bool());
      CHECK(t.details.at("clean_eof").as_bool());
      CHECK(t.details.at("body_complete").as_bool());
      CHECK(text_of(t.details, "error").empty());
      CHECK(t.error_name.empty());
      CHECK(t.cause == "peer_closed");
      CHECK(t.detected_by == "eof");
      CHECK_THAT(text_of(t.details, "sequence"), Catch::Contains("answer") && Catch::Contains("EOF"));
      CHECK(text_of(server, "drain_end") == "EOF");
      CHECK(text_of(server, "segment") != "RST");
    } else {
      ++naive;
      CHECK(t.config_key == "server_close=naive");
      CHECK(server.at("unread_at_close").as_int64() > 0);
      CHECK_FALSE(t.details.at("clean_eof").as_bool());
      const auto error = text_of(t.details, "error");
      CHECK((error == "ECONNRESET" || error == "EPIPE"));
      CHECK(t.error_name == error);
      CHECK((t.cause == "peer_reset" || t.cause == "broken_pipe"));
      CHECK(t.details.at("body_bytes_sent").to_number<double>() <
            static_cast<double>(probe::early_reject_body_bytes));
      CHECK_FALSE(t.details.at("body_complete").as_bool());
      CHECK_THAT(text_of(t.details, "sequence"), Catch::Contains(error));
      // Read before the error exactly when the sequence starts with the answer.
      CHECK(t.details.at("answer_before_error").as_bool() ==
            text_of(t.details, "sequence").starts_with("answer"));
      if (text_of(server, "segment") != "none" && !text_of(server, "segment").empty())
        CHECK(text_of(server, "segment") == "RST");
    }
  }
  CHECK(graceful == trials);
  CHECK(naive == trials);

  // probe report shows, per group, how many trials read the answer.
  const auto report = run_probe({"report", "--db", db, "--format", "json"});
  REQUIRE(report.exit_code == 0);
  const auto groups = json::parse(report.output).as_array();
  REQUIRE(groups.size() == 2);
  for (const auto& g : groups) {
    const auto& o = g.as_object();
    CHECK(o.at("observed").to_number<double>() == trials);
    CHECK(o.at("failures").to_number<double>() == 0);
    if (o.at("config_key").as_string() == "server_close=graceful") {
      CHECK(o.at("answer_read").to_number<double>() == trials);
      CHECK(o.at("detected_by").as_string() == "eof");
    } else {
      CHECK(o.at("detected_by").as_string() == "reset");
    }
  }
  const auto table = run_probe({"report", "--db", db});
  CHECK_THAT(table.output, Catch::Contains("server_close=graceful") &&
                               Catch::Contains(std::to_string(trials) + "/" + std::to_string(trials)));
}

TEST_CASE("early-reject: a sweep runs both closes by default and resumes") {
  deadpeer::test::temp_dir dir;
  const auto db = (dir.path() / "results.db").string();
  const auto sweep = run_probe({"sweep", "--fault", "early-reject", "--trials", "1", "--db", db});
  INFO(sweep.output);
  CHECK(sweep.exit_code == 0);
  const auto rows = stored_trials(db);
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].config_key == "server_close=naive");
  CHECK(rows[1].config_key == "server_close=graceful");
  const auto again = run_probe({"sweep", "--fault", "early-reject", "--trials", "1", "--db", db});
  CHECK_THAT(again.output, Catch::Contains("nothing to do"));
}

TEST_CASE("early-reject: --server-close is checked") {
  deadpeer::test::temp_dir dir;
  const auto db = (dir.path() / "results.db").string();
  const auto wrong_fault = run_probe({"run", "--fault", "crash", "--server-close", "graceful", "--db", db});
  CHECK(wrong_fault.exit_code == 2);
  CHECK_THAT(wrong_fault.output, Catch::Contains("--server-close goes with --fault early-reject"));
  const auto bad_mode =
      run_probe({"run", "--fault", "early-reject", "--server-close", "polite", "--db", db});
  CHECK(bad_mode.exit_code == 2);
  CHECK_THAT(bad_mode.output, Catch::Contains("\"polite\""));
  const auto help = run_probe({"run", "--help"});
  CHECK_THAT(help.output, Catch::Contains("early-reject") && Catch::Contains("--server-close"));
}

TEST_CASE("early-reject: probe explain 10053 tells the same story as the trials' note") {
  const auto explain = run_probe({"explain", "10053"});
  CHECK(explain.exit_code == 0);
  CHECK_THAT(explain.output, Catch::Contains("FIN") && Catch::Contains("RST") &&
                                 Catch::Contains("EOF, then EPIPE"));
}
