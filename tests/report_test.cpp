#include "../probe/report.hpp"

#include "../probe/cli.hpp"
#include "../probe/gnuplot.hpp"

#include <deadpeer/store.hpp>

#include <sqlite3.h>
#include <boost/json.hpp>
#include "temp_dir.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

using namespace probe::report;
namespace fs = std::filesystem;

namespace {

trial_row detected(const std::string& fault, const std::string& key, double latency_ms,
                   const std::string& layer = "eof", std::int64_t bound_ms = -1) {
  trial_row r;
  r.run_id = 1;
  r.fault = fault;
  r.config_key = key;
  r.keepalive = "off";
  r.bound_ms = bound_ms;
  r.latency_ms = latency_ms;
  r.detected_by = layer;
  r.outcome = "detected";
  return r;
}

trial_row failed(const std::string& fault, const std::string& key, const std::string& outcome,
                 std::optional<double> latency_ms = std::nullopt) {
  trial_row r = detected(fault, key, 0);
  r.latency_ms = latency_ms;
  r.detected_by = outcome == "premature" ? "heartbeat" : "";
  r.outcome = outcome;
  return r;
}

using deadpeer::test::temp_dir;

/// Captures std::cout and std::cerr while it lives.
class capture_output {
 public:
  capture_output()
      : old_out_(std::cout.rdbuf(out_.rdbuf())), old_err_(std::cerr.rdbuf(err_.rdbuf())) {}
  ~capture_output() {
    std::cout.rdbuf(old_out_);
    std::cerr.rdbuf(old_err_);
  }
  capture_output(const capture_output&) = delete;
  capture_output& operator=(const capture_output&) = delete;
  std::string out() const { return out_.str(); }
  std::string err() const { return err_.str(); }

 private:
  std::ostringstream out_, err_;
  std::streambuf* old_out_;
  std::streambuf* old_err_;
};

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    lines.push_back(line);
  return lines;
}

bool starts_with_png_signature(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string head(8, '\0');
  in.read(head.data(), 8);
  return in && head == std::string("\x89PNG\r\n\x1a\n", 8);
}

}  // namespace

TEST_CASE("nearest-rank percentiles pick a measured value") {
  SECTION("n = 1: every percentile is the one value") {
    const std::vector<double> one{7.5};
    CHECK(nearest_rank(one, 1) == 7.5);
    CHECK(nearest_rank(one, 50) == 7.5);
    CHECK(nearest_rank(one, 95) == 7.5);
    CHECK(nearest_rank(one, 100) == 7.5);
  }
  SECTION("n = 5: p50 is the 3rd value, p95 the 5th") {
    const std::vector<double> five{10, 20, 30, 40, 50};
    CHECK(nearest_rank(five, 50) == 30);
    CHECK(nearest_rank(five, 95) == 50);
    CHECK(nearest_rank(five, 20) == 10);  // ceil(1.0) = 1
    CHECK(nearest_rank(five, 21) == 20);  // ceil(1.05) = 2
    CHECK(nearest_rank(five, 100) == 50);
  }
  SECTION("n = 20: p50 is the 10th value, p95 the 19th") {
    std::vector<double> twenty;
    for (int i = 1; i <= 20; ++i)
      twenty.push_back(i);
    CHECK(nearest_rank(twenty, 50) == 10);
    CHECK(nearest_rank(twenty, 95) == 19);
    CHECK(nearest_rank(twenty, 96) == 20);
    CHECK(nearest_rank(twenty, 5) == 1);
    CHECK(nearest_rank(twenty, 100) == 20);
  }
}

TEST_CASE("summarize computes percentiles per group from unsorted trials") {
  std::vector<trial_row> rows;
  // 20 trials of one group in scrambled order: 13 * i mod 20 visits every residue once.
  for (int i = 0; i < 20; ++i)
    rows.push_back(detected("crash", "a", (13 * i) % 20 + 1.0));
  rows.push_back(detected("crash", "b", 0.84));
  for (double ms : {50.0, 10.0, 40.0, 30.0, 20.0})
    rows.push_back(detected("hang", "a", ms));

  const auto summary = summarize(rows);
  REQUIRE(summary.size() == 3);
  CHECK(summary[0].fault == "crash");
  CHECK(summary[0].config_key == "a");
  CHECK(summary[0].trials == 20);
  CHECK(summary[0].p50_ms == 10);
  CHECK(summary[0].p95_ms == 19);
  CHECK(summary[0].max_ms == 20);
  CHECK(summary[1].config_key == "b");
  CHECK(summary[1].trials == 1);
  CHECK(summary[1].p50_ms == 0.84);
  CHECK(summary[1].p95_ms == 0.84);
  CHECK(summary[1].max_ms == 0.84);
  CHECK(summary[2].fault == "hang");
  CHECK(summary[2].p50_ms == 30);
  CHECK(summary[2].p95_ms == 50);
  CHECK(summary[2].max_ms == 50);
}

TEST_CASE("groups are ordered by fault, then by the order they first ran in") {
  const auto summary =
      summarize({detected("hang", "z", 1), detected("crash", "y", 1), detected("hang", "a", 1),
                 detected("crash", "x", 1), detected("hang", "z", 2)});
  REQUIRE(summary.size() == 4);
  CHECK(summary[0].config_key == "y");
  CHECK(summary[1].config_key == "x");
  CHECK(summary[2].config_key == "z");
  CHECK(summary[2].trials == 2);
  CHECK(summary[3].config_key == "a");
}

TEST_CASE("detected_by names the most common layer first and joins mixed ones with +") {
  SECTION("one layer") {
    const auto s = summarize({detected("crash", "k", 1, "eof"), detected("crash", "k", 2, "eof")});
    CHECK(s.at(0).detected_by == "eof");
  }
  SECTION("mixed: most common first") {
    const auto s = summarize({detected("crash", "k", 1, "reset"), detected("crash", "k", 2, "eof"),
                              detected("crash", "k", 3, "reset"), detected("crash", "k", 4, "eof"),
                              detected("crash", "k", 5, "reset")});
    CHECK(s.at(0).detected_by == "reset+eof");
  }
  SECTION("a tie is broken by name") {
    const auto s =
        summarize({detected("crash", "k", 1, "reset"), detected("crash", "k", 2, "eof")});
    CHECK(s.at(0).detected_by == "eof+reset");
  }
  SECTION("only detected trials count; nothing detected leaves it empty") {
    const auto s =
        summarize({failed("hang", "k", "premature", 500.0), failed("hang", "k", "missed")});
    CHECK(s.at(0).detected_by.empty());
    CHECK_FALSE(s.at(0).p50_ms);
    CHECK(format_table(s).find("  -  ") != std::string::npos);
  }
}

TEST_CASE("an interrupted trial is neither a trial nor a failure") {
  const auto s = summarize({detected("hang", "k", 3000, "heartbeat", 4000),
                            failed("hang", "k", "interrupted"), failed("cable-pull", "k", "interrupted")});
  REQUIRE(s.size() == 1);  // a group of interrupted trials only is no group
  CHECK(s[0].trials == 1);
  CHECK(s[0].failures() == 0);
}

TEST_CASE("failures count missed and premature trials, which stay out of the latencies") {
  const auto s =
      summarize({detected("hang", "k", 3000, "heartbeat", 4000), failed("hang", "k", "missed"),
                 failed("hang", "k", "premature", 10.0),
                 detected("hang", "k", 3500, "heartbeat", 4000), failed("hang", "k", "missed")});
  REQUIRE(s.size() == 1);
  CHECK(s[0].trials == 5);
  CHECK(s[0].detected == 2);
  CHECK(s[0].missed == 2);
  CHECK(s[0].premature == 1);
  CHECK(s[0].failures() == 3);
  CHECK(s[0].p50_ms == 3000);  // the premature 10 ms is not a latency
  CHECK(s[0].max_ms == 3500);
  CHECK(s[0].detected_by == "heartbeat");
}

TEST_CASE("over_bound counts the trials above their own bound, p50/bound says how tight it is") {
  const auto s = summarize({detected("cable-pull", "k", 4050, "keepalive", 4116),
                            detected("cable-pull", "k", 4090, "keepalive", 4116),
                            detected("cable-pull", "k", 4130, "keepalive", 4116),
                            failed("cable-pull", "k", "missed")});
  REQUIRE(s.size() == 1);
  CHECK(s[0].over_bound == 1);
  REQUIRE(s[0].p50_over_bound);
  CHECK(*s[0].p50_over_bound == Approx(4090.0 / 4116));
  const auto table = format_table(s);
  CHECK_THAT(table, Catch::Contains("over_bound") && Catch::Contains("0.99"));
  const auto none = summarize({detected("hang", "k", 500, "heartbeat")});
  CHECK(none[0].over_bound == 0);
  CHECK_FALSE(none[0].p50_over_bound);
}

TEST_CASE("bound: none when there is no finite bound, else max/bound") {
  const auto none = summarize({detected("hang", "k", 1500, "heartbeat", -1)});
  CHECK_FALSE(none.at(0).bound_ms);
  CHECK_FALSE(none.at(0).max_over_bound);
  const auto table = format_table(none);
  CHECK(table.find("none") != std::string::npos);
  CHECK(format_csv(none).find(",1500,,,heartbeat,") != std::string::npos);

  const auto bounded = summarize({detected("cable-pull", "k", 4070, "keepalive", 4000),
                                  detected("cable-pull", "k", 3990, "keepalive", 4000)});
  CHECK(bounded.at(0).bound_ms == 4000);
  REQUIRE(bounded.at(0).max_over_bound);
  CHECK(*bounded.at(0).max_over_bound == Approx(1.0175));
  const auto lines = lines_of(format_table(bounded));
  REQUIRE(lines.size() == 2);
  CHECK(lines[1].find("4.07 s") != std::string::npos);
  CHECK(lines[1].find("4.00 s") != std::string::npos);
  CHECK(lines[1].find("1.02") != std::string::npos);

  // An instant detection against a long bound is not printed as a ratio of 0.00.
  const auto tiny = summarize({detected("crash", "k", 0.84, "eof", 4000)});
  CHECK(format_table(tiny).find("<0.01") != std::string::npos);
}

TEST_CASE("latencies print with units and sensible precision") {
  CHECK(format_latency(0.84) == "0.84 ms");
  CHECK(format_latency(0.004) == "0.004 ms");
  CHECK(format_latency(5.126) == "5.13 ms");
  CHECK(format_latency(42.34) == "42.3 ms");
  CHECK(format_latency(420.4) == "420 ms");
  CHECK(format_latency(4070) == "4.07 s");
  CHECK(format_latency(42100) == "42.1 s");
  CHECK(format_latency(7875000) == "7875 s");
}

TEST_CASE("the configuration prints compactly") {
  trial_row r;
  r.keepalive = "1s:1s:3:0s";
  r.heartbeat_interval_ms = 1000;
  r.detector = "fixed 3s (3 x 1s)";
  CHECK(describe_configuration(r) == "ka=1s:1s:3 hb=1s(fixed 3s) ut=off");
  r.keepalive = "off";
  r.detector = "phi threshold 8 (window 1000, min std 100ms, pause 3s)";
  r.user_timeout_ms = 5000;
  CHECK(describe_configuration(r) == "ka=off hb=1s(phi 8) ut=5s");
  r.keepalive = "2s:1s:3:5s";
  r.heartbeat_interval_ms = 0;
  r.detector.clear();
  CHECK(describe_configuration(r) == "ka=2s:1s:3 hb=off ut=5s");
  r.user_timeout_ms = 0;  // the spec disagrees with the column: kept whole
  CHECK(describe_configuration(r) == "ka=2s:1s:3:5s hb=off ut=off");
}

TEST_CASE("keys that compact to the same text print the full key") {
  auto a = detected("crash", "ka=off;hb=off;reaper=1s", 1);
  auto b = detected("crash", "ka=off;hb=off;reaper=5s", 1);
  const auto s = summarize({a, b});
  REQUIRE(s.size() == 2);
  CHECK(s[0].configuration == "ka=off;hb=off;reaper=1s");
  CHECK(s[1].configuration == "ka=off;hb=off;reaper=5s");
  CHECK(summarize({a}).at(0).configuration == "ka=off hb=off ut=off");
}

TEST_CASE("the table has a header line and aligned columns") {
  const auto s = summarize({detected("crash", "k1", 0.84, "eof"),
                            detected("cable-pull", "k2", 4070, "keepalive", 4000),
                            failed("cable-pull", "k2", "missed")});
  const auto lines = lines_of(format_table(s));
  REQUIRE(lines.size() == 3);
  CHECK(lines[0].starts_with("fault"));
  for (const char* column :
       {"configuration", "n", "p50", "p95", "max", "bound", "max/bound", "p50/bound", "over_bound",
        "detected_by", "failures", "wire_diff"})
    CHECK(lines[0].find(column) != std::string::npos);
  // The last column is right-aligned, so every line ends at the same place, and every
  // column starts where its header does.
  CHECK(lines[1].size() == lines[0].size());
  CHECK(lines[2].size() == lines[0].size());
  const auto detected_by_at = lines[0].find("detected_by");
  CHECK(lines[1].substr(detected_by_at, 9) == "keepalive");
  CHECK(lines[2].substr(detected_by_at, 3) == "eof");
  const auto failures_end = lines[0].find("failures") + std::string("failures").size();
  CHECK(lines[1].substr(failures_end - 1, 1) == "1");
  CHECK(lines[1].ends_with(" -"));  // no wire instants in these rows
}

TEST_CASE("csv follows RFC 4180") {
  CHECK(csv_field("plain") == "plain");
  CHECK(csv_field("") == "");
  CHECK(csv_field("a,b") == "\"a,b\"");
  CHECK(csv_field("say \"hi\"") == "\"say \"\"hi\"\"\"");
  CHECK(csv_field("two\nlines") == "\"two\nlines\"");
  CHECK(csv_field("cr\r") == "\"cr\r\"");

  auto r = detected("crash", "ka=off, hb=\"1s\"", 0.5, "eof", 10);
  r.detector = "fixed 3s (3 x 1s)";
  const auto csv = format_csv(summarize({r}));
  const auto end_of_header = csv.find("\r\n");
  REQUIRE(end_of_header != std::string::npos);
  CHECK(csv.substr(0, end_of_header) ==
        "fault,configuration,n,p50_ms,p95_ms,max_ms,bound_ms,max_over_bound,detected_by,"
        "failures,detected,missed,premature,config_key,keepalive,heartbeat_interval_ms,"
        "detector,user_timeout_ms,wire_seen,wire_disagree,p50_over_bound,over_bound,observed,"
        "answer_read,answer_after_error");
  CHECK(csv.substr(end_of_header + 2) ==
        "crash,ka=off hb=off ut=off,1,0.5,0.5,0.5,10,0.05,eof,0,1,0,0,"
        "\"ka=off, hb=\"\"1s\"\"\",off,0,fixed 3s (3 x 1s),0,0,0,0.05,0,0,0,0\r\n");
}

TEST_CASE("json is an array of objects with the csv's fields") {
  const auto s =
      summarize({detected("crash", "k1", 842.125, "eof", 1000),
                 detected("hang", "k2", 1500, "heartbeat", -1), failed("hang", "k3", "missed")});
  const auto parsed = boost::json::parse(format_json(s));
  REQUIRE(parsed.is_array());
  const auto& array = parsed.as_array();
  REQUIRE(array.size() == 3);
  const auto& first = array[0].as_object();
  CHECK(first.at("fault").as_string() == "crash");
  CHECK(first.at("n").to_number<double>() == 1);
  CHECK(first.at("p50_ms").to_number<double>() == 842.125);
  CHECK(first.at("bound_ms").to_number<double>() == 1000);
  CHECK(first.at("max_over_bound").to_number<double>() == Approx(0.842125));
  CHECK(first.at("detected_by").as_string() == "eof");
  CHECK(first.at("failures").to_number<double>() == 0);
  CHECK(array[1].as_object().at("bound_ms").is_null());
  CHECK(array[1].as_object().at("max_over_bound").is_null());
  CHECK(array[2].as_object().at("p50_ms").is_null());
  CHECK(array[2].as_object().at("failures").to_number<double>() == 1);
  CHECK(format_json(s).find("842.125") != std::string::npos);  // no exponent form
}

TEST_CASE("the run selection takes an id, last or all") {
  CHECK(parse_run_selection("all").which == run_selection::kind::all);
  CHECK(parse_run_selection("last").which == run_selection::kind::last);
  const auto three = parse_run_selection("3");
  CHECK(three.which == run_selection::kind::id);
  CHECK(three.id == 3);
  for (const char* bad : {"0", "-1", "x", "3x", "", "first"})
    CHECK_THROWS_AS(parse_run_selection(bad), probe::usage_error);
}

TEST_CASE("end to end: a database written by event_store is reported") {
  temp_dir dir;
  const auto db = dir.file("results.db");
  {
    deadpeer::event_store store({.path = db});
    const auto first = store.begin_run({.started_unix_ms = 1700000000000,
                                        .version = "test",
                                        .host = "test",
                                        .command = "probe --simulate-crash",
                                        .config_json = "{}"});
    const auto second = store.begin_run({.started_unix_ms = 1700000001000,
                                         .version = "test",
                                         .host = "test",
                                         .command = "probe --simulate-crash",
                                         .config_json = "{}"});
    auto trial = [&](std::int64_t run, int n, const std::string& fault, const std::string& key,
                     double latency, const std::string& layer, const std::string& outcome,
                     std::int64_t bound) {
      deadpeer::trial_record r;
      r.run_id = run;
      r.trial = n;
      r.fault = fault;
      r.config_key = key;
      r.keepalive = key == "fast" ? "1s:1s:3:0s" : "off";
      r.heartbeat_interval_ms = key == "fast" ? 0 : 1000;
      r.detector = key == "fast" ? "" : "fixed 3s (3 x 1s)";
      r.bound_ms = bound;
      r.fault_mono_ns = 1'000'000'000;
      const bool has_latency = outcome != "missed";
      r.detected_mono_ns =
          has_latency ? r.fault_mono_ns + static_cast<std::int64_t>(latency * 1e6) : 0;
      r.latency_ms = has_latency ? static_cast<std::int64_t>(latency) : -1;
      r.latency_ms_exact = has_latency ? latency : -1;
      r.detected_by = has_latency ? layer : "";
      r.outcome = outcome;
      store.record(r);
    };
    trial(first, 1, "crash", "fast", 0.5, "eof", "detected", 4000);
    trial(first, 2, "crash", "fast", 0.25, "reset", "detected", 4000);
    trial(first, 3, "crash", "fast", 0.75, "eof", "detected", 4000);
    trial(first, 1, "cable-pull", "fast", 4070.5, "keepalive", "detected", 4000);
    trial(first, 2, "cable-pull", "fast", 0, "", "missed", 4000);
    trial(second, 1, "hang", "hb", 3012.25, "heartbeat", "detected", -1);
    trial(second, 2, "hang", "hb", 80, "heartbeat", "premature", -1);
    store.flush();
  }

  std::string description;
  const auto all = load_trials(db, {}, description);
  CHECK(description == "all runs");
  REQUIRE(all.size() == 7);
  const auto s = summarize(all);
  REQUIRE(s.size() == 3);
  CHECK(s[0].fault == "cable-pull");
  CHECK(s[0].configuration == "ka=1s:1s:3 hb=off ut=off");
  CHECK(s[0].trials == 2);
  CHECK(s[0].max_ms == 4070.5);
  CHECK(s[0].bound_ms == 4000);
  CHECK(s[0].failures() == 1);
  CHECK(s[1].fault == "crash");
  CHECK(s[1].trials == 3);
  CHECK(s[1].p50_ms == 0.5);
  CHECK(s[1].p95_ms == 0.75);
  CHECK(s[1].detected_by == "eof+reset");
  CHECK(s[1].failures() == 0);
  CHECK(s[2].fault == "hang");
  CHECK(s[2].configuration == "ka=off hb=1s(fixed 3s) ut=off");
  CHECK_FALSE(s[2].bound_ms);
  CHECK(s[2].p50_ms == 3012.25);
  CHECK(s[2].failures() == 1);

  const auto last = load_trials(db, parse_run_selection("last"), description);
  CHECK(description == "the last run (2)");
  CHECK(last.size() == 2);
  CHECK(load_trials(db, parse_run_selection("1"), description).size() == 5);
  CHECK(load_trials(db, parse_run_selection("99"), description).empty());

  SECTION("the command prints each format and exits 0") {
    capture_output output;
    CHECK(probe::command_report({"--db", db}) == probe::exit_ok);
    CHECK(probe::command_report({"--db", db, "--format", "csv", "--run", "1"}) == probe::exit_ok);
    CHECK(probe::command_report({"--db", db, "--format", "json", "--run", "last"}) ==
          probe::exit_ok);
    const auto text = output.out();
    CHECK(text.find("eof+reset") != std::string::npos);
    CHECK(text.find("p50_ms") != std::string::npos);
    CHECK(text.find("\"fault\": \"hang\"") != std::string::npos);
  }
  SECTION("an empty selection says so and exits 1") {
    capture_output output;
    CHECK(probe::command_report({"--db", db, "--run", "99"}) == probe::exit_negative);
    CHECK(output.err().find("no trials for run 99") != std::string::npos);
  }
  SECTION("bad options are usage errors") {
    capture_output output;
    CHECK_THROWS_AS(probe::command_report({"--db", db, "--format", "xml"}), probe::usage_error);
    CHECK_THROWS_AS(probe::command_report({"--db", db, "--run", "zero"}), probe::usage_error);
  }
  SECTION("a plot is drawn when gnuplot is installed") {
    const auto gnuplot = find_gnuplot();
    if (!gnuplot) {
      WARN("SKIPPED: gnuplot not installed");
    } else {
      const auto png = dir.file("plot.png");
      write_plot(*gnuplot, all, s, png, "test");
      CHECK(starts_with_png_signature(png));
      fs::remove(png);
      capture_output output;
      CHECK(probe::command_report({"--db", db, "--plot", png}) == probe::exit_ok);
      CHECK(starts_with_png_signature(png));
      CHECK(output.out().find("plot written to " + png) != std::string::npos);

      // A name ending in .svg gets SVG from gnuplot's svg terminal, not a PNG misnamed.
      const auto svg = dir.file("plot.svg");
      CHECK(probe::command_report({"--db", db, "--plot", svg}) == probe::exit_ok);
      const auto text = probe::gnuplot::read_text(svg);
      CHECK(text.find("<svg") != std::string::npos);
      CHECK_FALSE(starts_with_png_signature(svg));
      // The latency axis reads in human units, and trials over their bound stand out.
      CHECK(text.find(">1 s<") != std::string::npos);
      const auto over = std::count_if(all.begin(), all.end(),
                                      [](const auto& t) { return probe::report::over_bound(t); });
      REQUIRE(over > 0);  // the database holds a trial later than its bound
      CHECK(text.find("over its bound (" + std::to_string(over) + ")") != std::string::npos);
      auto late = all;
      const auto detected = std::find_if(late.begin(), late.end(), [](const auto& t) {
        return t.outcome == "detected" && t.latency_ms && *t.latency_ms > 1 &&
               !probe::report::over_bound(t);
      });
      REQUIRE(detected != late.end());
      detected->bound_ms = static_cast<std::int64_t>(*detected->latency_ms) - 1;
      const auto marked = dir.file("marked.svg");
      write_plot(*gnuplot, late, s, marked, "test");
      const auto marked_text = probe::gnuplot::read_text(marked);
      CHECK(marked_text.find("over its bound (" + std::to_string(over + 1) + ")") != std::string::npos);
    }
  }
  SECTION("without gnuplot the table is still printed, then exit 1 with what to install") {
    const char* old_path = std::getenv("PATH");
    const std::string saved = old_path != nullptr ? old_path : "";
    ::setenv("PATH", dir.file("empty-bin").c_str(), 1);
    int rc = -1;
    std::string out, err;
    {
      capture_output output;
      rc = probe::command_report({"--db", db, "--plot", dir.file("never.png")});
      out = output.out();
      err = output.err();
    }
    if (old_path != nullptr)
      ::setenv("PATH", saved.c_str(), 1);
    else
      ::unsetenv("PATH");
    CHECK(rc == probe::exit_negative);
    CHECK(out.find("eof+reset") != std::string::npos);
    CHECK(err.find("install gnuplot-nox (scripts/setup does)") != std::string::npos);
    CHECK_FALSE(fs::exists(dir.file("never.png")));
  }
}

TEST_CASE("a missing file or one without trials is a clear usage error") {
  temp_dir dir;
  std::string description;
  const auto missing = dir.file("missing.db");
  CHECK_THROWS_WITH(load_trials(missing, {}, description),
                    Catch::StartsWith(missing + " does not exist: no results yet"));
  CHECK_THROWS_AS(probe::command_report({"--db", missing}), probe::usage_error);
  CHECK_FALSE(fs::exists(missing));  // a read-only report never creates the file

  const auto other = dir.file("other.db");
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(other.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, "CREATE TABLE unrelated (x)", nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  CHECK_THROWS_WITH(load_trials(other, {}, description),
                    "no results in " + other + ": run probe --simulate-crash first");

  const auto garbage = dir.file("garbage.db");
  std::ofstream(garbage) << "this is not a database, just some text that is long enough";
  CHECK_THROWS_AS(load_trials(garbage, {}, description), probe::usage_error);
  CHECK_THROWS_WITH(load_trials(garbage, {}, description), Catch::Contains(garbage));
}

namespace {

trial_row observed(const std::string& key, double latency_ms, const std::string& layer,
                   std::optional<bool> answer_read, bool after_error = false) {
  trial_row r = detected("early-reject", key, latency_ms, layer);
  r.outcome = "observed";
  r.answer_read = answer_read;
  r.answer_after_error = after_error;
  return r;
}

}  // namespace

TEST_CASE("observed trials (early-reject) count their latencies and how many read the answer") {
  const auto s = summarize({observed("server_close=naive", 0.2, "reset", true, true),
                            observed("server_close=naive", 0.4, "reset", false),
                            observed("server_close=naive", 0.3, "eof", std::nullopt),
                            observed("server_close=graceful", 9.5, "eof", true),
                            observed("server_close=graceful", 8.5, "eof", true),
                            detected("crash", "k1", 0.84, "eof")});
  REQUIRE(s.size() == 3);
  CHECK(s[0].fault == "crash");
  CHECK(s[0].observed == 0);
  const auto& naive = s[1];
  CHECK(naive.configuration == "server_close=naive");
  CHECK(naive.trials == 3);
  CHECK(naive.observed == 3);
  CHECK(naive.answer_read == 1);
  CHECK(naive.answer_after_error == 1);  // read, but only after the client's first error
  CHECK(naive.detected == 0);
  CHECK(naive.failures() == 0);  // observing is not failing
  CHECK(naive.p50_ms == 0.3);
  CHECK(naive.max_ms == 0.4);
  CHECK(naive.detected_by == "reset+eof");
  CHECK_FALSE(naive.bound_ms);
  const auto& graceful = s[2];
  CHECK(graceful.configuration == "server_close=graceful");
  CHECK(graceful.answer_read == 2);
  CHECK(graceful.answer_after_error == 0);
  CHECK(graceful.detected_by == "eof");

  // The table's last column says it per group; groups without observed trials show "-".
  const auto lines = lines_of(format_table(s));
  REQUIRE(lines.size() == 4);
  const auto answered_end = lines[0].find("answered") + std::string("answered").size();
  CHECK(lines[0].size() == answered_end);
  CHECK(lines[1].ends_with(" -"));
  CHECK(lines[2].ends_with(" 1/3 (1 after an error)"));
  CHECK(lines[3].ends_with(" 2/2"));
  CHECK(lines[2].size() == lines[0].size());

  const auto csv = format_csv(s);
  CHECK_THAT(csv, Catch::Contains(",3,1,1\r\n") && Catch::Contains(",2,2,0\r\n"));
  const auto json = boost::json::parse(format_json(s)).as_array();
  CHECK(json[1].as_object().at("observed").to_number<double>() == 3);
  CHECK(json[1].as_object().at("answer_read").to_number<double>() == 1);
  CHECK(json[0].as_object().at("answer_read").to_number<double>() == 0);
}

TEST_CASE("end to end: the answer_read of early-reject's details is read from the database") {
  temp_dir dir;
  const auto db = dir.file("results.db");
  {
    deadpeer::event_store store({.path = db});
    const auto run = store.begin_run({.started_unix_ms = 1700000000000,
                                      .version = "test",
                                      .host = "test",
                                      .command = "probe run --fault early-reject",
                                      .config_json = "{}"});
    auto trial = [&](int n, const std::string& mode, const std::string& details) {
      deadpeer::trial_record r;
      r.run_id = run;
      r.trial = n;
      r.fault = "early-reject";
      r.config_key = "server_close=" + mode;
      r.keepalive = "system";
      r.bound_ms = -1;
      r.fault_mono_ns = 1'000'000'000;
      r.detected_mono_ns = r.fault_mono_ns + 250'000;
      r.latency_ms = 0;
      r.latency_ms_exact = 0.25;
      r.detected_by = mode == "naive" ? "reset" : "eof";
      r.outcome = "observed";
      r.details = details;
      store.record(r);
    };
    trial(1, "naive", R"({"server_close":"naive","answer_read":false})");
    trial(2, "naive", R"({"server_close":"naive","answer_read":true,"answer_before_error":false})");
    trial(1, "graceful", R"({"server_close":"graceful","answer_read":true})");
    trial(2, "graceful", "");  // no details: unknown, not read
    store.flush();
  }
  std::string description;
  const auto rows = load_trials(db, {}, description);
  REQUIRE(rows.size() == 4);
  CHECK(rows[0].answer_read == false);
  CHECK(rows[1].answer_read == true);
  CHECK(rows[1].answer_after_error);
  CHECK_FALSE(rows[2].answer_after_error);
  CHECK(rows[2].answer_read == true);
  CHECK_FALSE(rows[3].answer_read.has_value());
  const auto s = summarize(rows);
  REQUIRE(s.size() == 2);
  CHECK(s[0].configuration == "server_close=naive");
  CHECK(s[0].observed == 2);
  CHECK(s[0].answer_read == 1);
  CHECK(s[0].answer_after_error == 1);
  CHECK(s[1].answer_read == 1);
  CHECK(s[1].p50_ms == 0.25);
}

// --- false verdicts (lossy, stall) -----------------------------------------------------

namespace {

trial_row noise_trial(const std::string& fault, const std::string& key, const std::string& outcome,
                      double trial_time_ms) {
  trial_row r = failed(fault, key, outcome, outcome == "premature" ? std::optional(trial_time_ms)
                                                                   : std::nullopt);
  r.trial_time_ms = trial_time_ms;
  return r;
}

}  // namespace

TEST_CASE("false verdicts per hour: verdicts over the hours of trial time") {
  CHECK(false_verdicts_per_hour(3, 3'600'000) == Approx(3));
  CHECK(false_verdicts_per_hour(1, 1'800'000) == Approx(2));
  CHECK(false_verdicts_per_hour(2, 10'000) == Approx(720));
  CHECK(false_verdicts_per_hour(0, 7'200'000) == Approx(0));
  CHECK_FALSE(false_verdicts_per_hour(2, 0));  // no trial time: not such a fault
}

TEST_CASE("lossy and stall groups count survived and premature trials and their trial time") {
  const auto s = summarize({noise_trial("lossy", "k", "premature", 1200),
                            noise_trial("lossy", "k", "survived", 10'000),
                            noise_trial("lossy", "k", "premature", 800),
                            noise_trial("lossy", "k", "interrupted", 500),  // not a trial
                            noise_trial("stall", "k", "survived", 30'000),
                            detected("crash", "k", 0.5)});
  REQUIRE(s.size() == 3);
  const auto& crash = s[0];
  const auto& lossy = s[1];
  const auto& stall = s[2];
  CHECK(lossy.trials == 3);
  CHECK(lossy.survived == 1);
  CHECK(lossy.premature == 2);
  CHECK(lossy.failures() == 2);  // a false verdict is a failure
  CHECK(lossy.trial_time_ms == Approx(12'000));
  REQUIRE(lossy.false_verdicts_per_hour);
  CHECK(*lossy.false_verdicts_per_hour == Approx(600));  // 2 in 12 s
  CHECK_FALSE(lossy.p50_ms);  // a premature verdict is not a latency
  CHECK_FALSE(lossy.bound_ms);
  CHECK(stall.survived == 1);
  CHECK(*stall.false_verdicts_per_hour == 0);
  CHECK(crash.survived == 0);
  CHECK_FALSE(crash.false_verdicts_per_hour);

  const auto table = format_table(s);
  const auto lines = lines_of(table);
  // The main table (header and three groups), a blank line, the heading, its header and
  // the two groups that measured false verdicts.
  REQUIRE(lines.size() == 9);
  CHECK(lines[4].empty());
  CHECK(lines[5].starts_with("false verdicts"));
  for (const char* column : {"trials", "survived", "premature", "trial_time", "per_hour"})
    CHECK(lines[6].find(column) != std::string::npos);
  CHECK(lines[7].starts_with("lossy"));
  CHECK(lines[7].ends_with(" 600"));
  CHECK(lines[7].find(" 12.0 s ") != std::string::npos);
  CHECK(lines[7].size() == lines[6].size());  // numbers are right-aligned
  CHECK(lines.back().starts_with("stall"));
  CHECK(lines.back().ends_with(" 0.00"));
  CHECK(lines.back().find(" 30.0 s ") != std::string::npos);
  // Without such groups the table is as before.
  CHECK(format_table({crash}).find("false verdicts") == std::string::npos);

  const auto parsed = boost::json::parse(format_json(s)).as_array();
  const auto& o = parsed[1].as_object();
  CHECK(o.at("survived").to_number<double>() == 1);
  CHECK(o.at("premature").to_number<double>() == 2);
  CHECK(o.at("trial_time_ms").to_number<double>() == 12'000);
  CHECK(o.at("false_verdicts_per_hour").to_number<double>() == Approx(600));
  CHECK(parsed[0].as_object().at("false_verdicts_per_hour").is_null());
}

TEST_CASE("end to end: the trial time of lossy trials is read from details") {
  temp_dir dir;
  const auto db = dir.file("results.db");
  {
    deadpeer::event_store store({.path = db});
    const auto run = store.begin_run({.started_unix_ms = 1700000000000,
                                      .version = "test",
                                      .host = "test",
                                      .command = "probe run --fault lossy",
                                      .config_json = "{}"});
    auto trial = [&](int n, const std::string& outcome, const std::string& details) {
      deadpeer::trial_record r;
      r.run_id = run;
      r.trial = n;
      r.fault = "lossy";
      r.config_key = "lossy-key";
      r.keepalive = "system";
      r.heartbeat_interval_ms = 100;
      r.detector = "fixed 250ms (3 x 100ms)";
      r.bound_ms = -1;
      r.fault_mono_ns = 1'000'000'000;
      r.latency_ms = -1;
      r.latency_ms_exact = -1;
      if (outcome == "premature") {
        r.latency_ms_exact = 1500;
        r.latency_ms = 1500;
        r.detected_mono_ns = r.fault_mono_ns + 1'500'000'000;
        r.detected_by = "heartbeat";
      }
      r.outcome = outcome;
      r.details = details;
      store.record(r);
    };
    trial(1, "premature", R"({"duration_ms": 5000, "observed_ms": 1500, "verdict": {}})");
    trial(2, "survived", R"({"duration_ms": 5000, "observed_ms": 5000.5})");
    trial(3, "survived", "");  // an empty details column stands for {}: no trial time
    store.flush();
  }
  std::string description;
  const auto rows = load_trials(db, {}, description);
  REQUIRE(rows.size() == 3);
  CHECK(rows[0].trial_time_ms == 1500);
  CHECK(rows[1].trial_time_ms == 5000.5);
  CHECK_FALSE(rows[2].trial_time_ms);
  const auto s = summarize(rows);
  REQUIRE(s.size() == 1);
  CHECK(s[0].survived == 2);
  CHECK(s[0].premature == 1);
  CHECK(s[0].trial_time_ms == Approx(6500.5));
  CHECK(*s[0].false_verdicts_per_hour == Approx(3'600'000 / 6500.5));
}

TEST_CASE("report: --plot draws the format its name asks for, and no other") {
  CHECK(probe::report::plot_format("latency.png") == "png");
  CHECK(probe::report::plot_format("out/Latency.PNG") == "png");
  CHECK(probe::report::plot_format("latency.svg") == "svg");
  CHECK_FALSE(probe::report::plot_format("latency.gif"));
  CHECK_FALSE(probe::report::plot_format("latency"));
  CHECK_THROWS_WITH(probe::command_report({"--plot", "latency.jpg"}),
                    Catch::Contains("\"latency.jpg\"") && Catch::Contains(".svg"));
}
