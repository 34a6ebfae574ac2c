// probe qos: the replay's arithmetic checked against numbers worked out by hand (mistakes,
// T_D mean and p99 of a fixed timeout on a made-up trace), the tuned fixed timeout, the
// synthetic families' determinism and shape, the analysis, and the command end to end as a
// child process (JSON, CSV, exit status, refused options, a trace file round trip, a plot).
// Every case replays at most a few simulated hours, so the whole file runs in seconds.
#include "../probe/lab.hpp"
#include "../probe/qos.hpp"

#include "temp_dir.hpp"

#include <deadpeer/config_error.hpp>
#include <deadpeer/server.hpp>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>

using namespace std::chrono_literals;
using std::chrono::milliseconds;
namespace qos = probe::qos;
namespace json = boost::json;

namespace {

/// A trace from its gaps (ms), starting at `origin`.
qos::trace from_gaps(const std::vector<double>& gaps, double origin = 5000, std::string name = "hand-made") {
  qos::trace t;
  t.name = std::move(name);
  t.interval = 1000ms;
  t.arrival_ms.push_back(origin);
  for (const double g : gaps) t.arrival_ms.push_back(t.arrival_ms.back() + g);
  return t;
}

deadpeer::fixed_detector_config fixed_ms(long long timeout_ms) {
  deadpeer::fixed_detector_config c;
  c.timeout = milliseconds(timeout_ms);
  return c;
}

deadpeer::fixed_detector_config fixed_times(double multiplier) {
  deadpeer::fixed_detector_config c;
  c.multiplier = multiplier;
  return c;
}

qos::setting setting_of(std::string kind, double parameter, deadpeer::detector_config config,
                        bool server_default = false) {
  return {kind, parameter, kind + " " + std::to_string(parameter), std::move(config), server_default};
}

struct run_result {
  int exit_code = -1;
  std::string out, err;
};

run_result run_qos(std::vector<std::string> args) {
  args.insert(args.begin(), {DEADPEER_PROBE_BINARY, "qos"});
  const auto r = probe::lab::run(args, 60s);
  return {r.exit_code, r.out, r.err};
}

json::object parse_object(const std::string& text) {
  INFO(text);
  return json::parse(text).as_object();
}

std::string shortest(double v) {
  char text[32];
  return std::string(text, std::to_chars(text, text + sizeof text, v).ptr);
}

}  // namespace

TEST_CASE("qos: a fixed timeout on a hand-made trace: mistakes and T_D as worked out by hand") {
  // Heartbeats every 1000 ms for 12 s, except one silence of 3000 ms: gaps 3 x 1000, 3000,
  // 6 x 1000 (nine short gaps and the long one, span 12000 ms). A 2000 ms timeout declares the
  // live peer dead once.
  std::vector<double> gaps(3, 1000.0);
  gaps.push_back(3000);
  gaps.insert(gaps.end(), 6, 1000.0);
  const auto t = from_gaps(gaps);
  REQUIRE(t.arrival_ms.back() - t.arrival_ms.front() == 12000);

  // One crash per millisecond of trace (stratified): the sample mean is the exact mean to
  // within a few thousandths of a millisecond.
  const auto q = qos::evaluate(t, fixed_ms(2000), 12000, 7);
  CHECK(q.mistakes == 1);
  CHECK(q.hours == Approx(12000.0 / 3'600'000));
  CHECK(q.mistakes_per_hour == Approx(300.0));  // 1 in 12 s
  CHECK(q.crashes == 12000);
  // A crash u ms into a 1000 ms gap is seen 2000 - u later (mean 1500 over the gap); in the
  // 3000 ms gap the verdict is due 2000 ms in, so T_D = max(0, 2000 - u) (integral 2e6).
  // Mean: (9 x 1.5e6 + 2e6) / 12000 = 1291.67 ms.
  CHECK(q.td_mean_ms == Approx(15.5e6 / 12000).margin(0.1));
  // Above 1000 ms, T_D has density 10 / 12000 per ms (nine 1000 ms gaps and the long one),
  // so 1% of the crashes lie within 12000 x 0.01 / 10 = 12 ms of the 2000 ms maximum.
  CHECK(q.td_p99_ms == Approx(2000 - 12.0).margin(0.5));

  // The same timeout as 2 x the interval, and the trace's own interval is what counts.
  const auto by_multiplier = qos::evaluate(t, fixed_times(2.0), 12000, 7);
  CHECK(by_multiplier.mistakes == q.mistakes);
  CHECK(by_multiplier.td_mean_ms == q.td_mean_ms);
  auto slower = t;
  slower.interval = 2000ms;  // 2 x 2000 ms: no gap reaches 4000 ms
  CHECK(qos::evaluate(slower, fixed_times(2.0), 12000, 7).mistakes == 0);

  // The detector keeps running after a mistake: two long silences are two mistakes.
  const auto twice = from_gaps({1000, 3000, 1000, 5000, 1000});
  CHECK(qos::evaluate(twice, fixed_ms(2000)).mistakes == 2);
  // A silence of exactly the timeout is a verdict: the next heartbeat came too late.
  CHECK(qos::evaluate(from_gaps({1000, 2000, 1000}), fixed_ms(2000)).mistakes == 1);
  CHECK(qos::evaluate(from_gaps({1000, 1999.5, 1000}), fixed_ms(2000)).mistakes == 0);
}

TEST_CASE("qos: evaluate is deterministic for a seed, and refuses what it cannot replay") {
  const auto t = qos::make_synthetic(qos::family::gc, {.interval = 1000ms, .hours = 1, .seed = 3});
  const auto a = qos::evaluate(t, fixed_times(1.5), 2000, 11);
  const auto b = qos::evaluate(t, fixed_times(1.5), 2000, 11);
  CHECK(a.mistakes == b.mistakes);
  CHECK(a.td_mean_ms == b.td_mean_ms);
  CHECK(a.td_p99_ms == b.td_p99_ms);
  // Another seed places the crashes elsewhere: the same mistakes, a nearby but different T_D.
  const auto c = qos::evaluate(t, fixed_times(1.5), 2000, 12);
  CHECK(c.mistakes == a.mistakes);
  CHECK(c.td_mean_ms != a.td_mean_ms);
  CHECK(c.td_mean_ms == Approx(a.td_mean_ms).epsilon(0.02));

  CHECK_THROWS_AS(qos::evaluate(from_gaps({}), fixed_times(3)), std::invalid_argument);
  CHECK_THROWS_AS(qos::evaluate(t, fixed_times(0)), deadpeer::config_error);
  deadpeer::phi_detector_config bad_phi;
  bad_phi.threshold = -1;
  CHECK_THROWS_AS(qos::evaluate(t, bad_phi), deadpeer::config_error);
}

TEST_CASE("qos: tuned_fixed is the shortest timeout that makes at most k mistakes") {
  // Gaps of 1000 ms, and three long ones: 2500.4, 3000 and 4000 ms.
  std::vector<double> gaps(50, 1000.0);
  gaps[10] = 4000;
  gaps[20] = 2500.4;
  gaps[30] = 3000;
  const auto t = from_gaps(gaps);
  CHECK(qos::tuned_fixed(t, 0).timeout == 4001ms);  // a gap equal to the timeout is a mistake
  CHECK(qos::tuned_fixed(t, 1).timeout == 3001ms);
  CHECK(qos::tuned_fixed(t, 2).timeout == 2501ms);  // whole ms, above 2500.4
  CHECK(qos::tuned_fixed(t, 3).timeout == 1001ms);
  CHECK(qos::tuned_fixed(t, 0).interval == t.interval);
  for (std::size_t k = 0; k <= 3; ++k) {
    INFO("k = " << k);
    const auto tuned = qos::tuned_fixed(t, k);
    CHECK(qos::evaluate(t, tuned, 100).mistakes <= k);
    // One millisecond shorter makes more than k.
    CHECK(qos::evaluate(t, fixed_ms(tuned.timeout.count() - 1), 100).mistakes > k);
  }
  CHECK(qos::evaluate(t, fixed_ms(4000), 100).mistakes == 1);
}

TEST_CASE("qos: the synthetic families are deterministic for a seed and shaped as documented") {
  for (const auto f : qos::all_families()) {
    const auto name = std::string(qos::family_name(f));
    INFO(name);
    CHECK(qos::family_from_name(name) == f);
    const qos::synthetic_options options{.interval = 1000ms, .hours = 2, .seed = 5};
    const auto t = qos::make_synthetic(f, options);
    CHECK(t.name == name);
    CHECK(t.interval == 1000ms);
    CHECK(qos::make_synthetic(f, options).arrival_ms == t.arrival_ms);
    CHECK(qos::make_synthetic(f, {.interval = 1000ms, .hours = 2, .seed = 6}).arrival_ms != t.arrival_ms);
    CHECK(std::is_sorted(t.arrival_ms.begin(), t.arrival_ms.end()));
    // Two hours of heartbeats 0.9 to 1.1 s apart: about 7200 of them, the mean gap ~1 s.
    const double span = t.arrival_ms.back() - t.arrival_ms.front();
    CHECK(span == Approx(2 * 3'600'000.0).epsilon(0.01));
    CHECK(span / static_cast<double>(t.arrival_ms.size() - 1) == Approx(1000).epsilon(0.02));

    const auto fast = qos::make_synthetic(f, {.interval = 250ms, .hours = 1, .seed = 5});
    CHECK(fast.interval == 250ms);
    CHECK((fast.arrival_ms.back() - fast.arrival_ms.front()) / static_cast<double>(fast.arrival_ms.size() - 1) ==
          Approx(250).epsilon(0.03));
  }
  CHECK_FALSE(qos::family_from_name("nope"));
  CHECK(qos::all_families().size() == 4);
  CHECK_THROWS_AS(qos::make_synthetic(qos::family::calm, {.interval = 0ms}), std::invalid_argument);
  CHECK_THROWS_AS(qos::make_synthetic(qos::family::calm, {.hours = 0}), std::invalid_argument);

  // Each family's character: the longest silence of two hours, against the interval.
  const auto longest = [](qos::family f) {
    const auto t = qos::make_synthetic(f, {.interval = 1000ms, .hours = 2, .seed = 1});
    double most = 0;
    for (std::size_t i = 1; i < t.arrival_ms.size(); ++i)
      most = std::max(most, t.arrival_ms[i] - t.arrival_ms[i - 1]);
    return most;
  };
  CHECK(longest(qos::family::calm) < 1200);   // 1.1 s and a few ms of jitter
  CHECK(longest(qos::family::gc) > 1300);     // pauses
  CHECK(longest(qos::family::mobile) > 1500);  // bad spells
}

TEST_CASE("qos: phi and adaptive settings replay, and the default sweep holds the server default") {
  const auto t = qos::make_synthetic(qos::family::mobile, {.interval = 1000ms, .hours = 1, .seed = 2});
  const auto sweep = qos::default_sweep(1000ms);
  std::set<std::string> kinds;
  for (const auto& s : sweep) kinds.insert(s.kind);
  CHECK(kinds == std::set<std::string>{"fixed", "phi", "adaptive"});
  // The setting marked as the server default is the detector heartbeat-server really runs.
  const auto d = qos::default_setting(sweep);
  const auto* marked = std::get_if<deadpeer::adaptive_detector_config>(&sweep[d].config);
  const deadpeer::server_options server_defaults;
  const auto* server = std::get_if<deadpeer::adaptive_detector_config>(&server_defaults.detector);
  REQUIRE(marked);
  REQUIRE(server);
  CHECK(marked->margin == server->margin);
  CHECK(marked->memory == server->memory);
  CHECK(marked->start_floor == server->start_floor);
  CHECK(std::count_if(sweep.begin(), sweep.end(), [](const auto& s) { return s.server_default; }) == 1);

  for (const auto& s : sweep) {
    if (s.kind == "fixed") continue;
    INFO(s.label);
    const auto q = qos::evaluate(t, s.config, 2000);
    CHECK(q.crashes == 2000);
    CHECK(q.td_mean_ms > 0);
    CHECK(std::isfinite(q.td_p99_ms));
    CHECK(q.td_p99_ms >= q.td_mean_ms);
    CHECK(q.mistakes_per_hour == Approx(static_cast<double>(q.mistakes) / q.hours));
    CHECK(qos::evaluate(t, s.config, 2000).td_mean_ms == q.td_mean_ms);
  }
}

TEST_CASE("qos: analyse finds the fastest setting within the budget and the tuned fixed timeouts") {
  // Trace "rough": an hour of 1000 ms gaps with one 2500 ms silence; trace "smooth": none.
  std::vector<double> gaps(3599, 1000.0);
  gaps[1800] = 2500;
  const auto rough = from_gaps(gaps, 0, "rough");
  const auto smooth = from_gaps(std::vector<double>(3599, 1000.0), 0, "smooth");
  const std::vector<qos::trace> traces{smooth, rough};
  // fixed 1.5x stands in for the server default: one mistake an hour on "rough".
  const std::vector<qos::setting> sweep{
      setting_of("fixed", 1.5, fixed_times(1.5), true),
      setting_of("fixed", 3, fixed_times(3)),
      setting_of("phi", 8, deadpeer::phi_detector_config{}),
      setting_of("adaptive", 1, deadpeer::adaptive_detector_config{}),
  };
  constexpr std::size_t crashes = 3000;
  std::vector<std::vector<qos::quality>> by_trace;
  for (const auto& t : traces) {
    by_trace.emplace_back();
    for (const auto& s : sweep) by_trace.back().push_back(qos::evaluate(t, s.config, crashes, 1));
  }
  REQUIRE(by_trace[1][0].mistakes == 1);
  REQUIRE(by_trace[1][1].mistakes == 0);

  SECTION("a budget the default misses on one trace") {
    const auto a = qos::analyse(traces, sweep, by_trace, 0.5, crashes, 1);
    CHECK(a.default_setting == 0);
    CHECK_FALSE(a.default_meets_budget_everywhere);
    REQUIRE(a.traces.size() == 2);
    const auto& v = a.traces[1];
    // Kinds in the sweep's order; on "rough" only 3x of the fixed ones is within 0.5/h.
    REQUIRE(v.fastest_within_budget.size() == 3);
    CHECK(v.fastest_within_budget[0].first == "fixed");
    CHECK(v.fastest_within_budget[0].second == std::optional<std::size_t>(1));
    CHECK(v.fastest_within_budget[1].first == "phi");
    CHECK(v.fastest_within_budget[2].first == "adaptive");
    CHECK(a.traces[0].fastest_within_budget[0].second == std::optional<std::size_t>(0));  // smooth: 1.5x
    // The fixed timeout tuned for "rough" at the default's one mistake: just over 1000 ms.
    CHECK(v.fixed_at_default_rate.timeout == 1001ms);
    CHECK(v.fixed_at_default_quality.mistakes == 1);
    CHECK(v.default_over_fixed == by_trace[1][0].td_mean_ms / v.fixed_at_default_quality.td_mean_ms);
    CHECK(v.default_over_fixed == Approx(1000.0 / 501).epsilon(0.01));  // 1500 - 500 vs 1001 - 500
    // Within 0.5/h over an hour, no mistake: just over the 2500 ms silence.
    CHECK(v.fixed_at_budget.timeout == 2501ms);
    CHECK(a.traces[0].fixed_at_budget.timeout == 1001ms);
    // One multiplier for both traces is the larger of the two.
    CHECK(a.single_fixed_multiplier == Approx(2.501));
    REQUIRE(a.single_fixed_quality.size() == 2);
    CHECK(a.single_fixed_quality[0].mistakes == 0);
    CHECK(a.single_fixed_quality[1].mistakes == 0);
    // 2501 - u for u uniform in a 1000 ms gap: 2001 ms, sampled at 3000 crash instants (one
    // random instant per 1200 ms slice: within a few ms).
    CHECK(a.single_fixed_quality[0].td_mean_ms == Approx(2001).margin(15));
  }
  SECTION("a budget wide enough for the default everywhere") {
    const auto a = qos::analyse(traces, sweep, by_trace, 2.0, crashes, 1);
    CHECK(a.default_meets_budget_everywhere);
    CHECK(a.traces[1].fastest_within_budget[0].second == std::optional<std::size_t>(0));
    CHECK(a.traces[1].fixed_at_budget.timeout == 1001ms);  // two mistakes allowed over 1 h
  }
  SECTION("a sweep without a server default is a programming error") {
    auto no_default = sweep;
    no_default[0].server_default = false;
    CHECK_THROWS_AS(qos::analyse(traces, no_default, by_trace, 0.1, crashes, 1), std::logic_error);
  }
}

TEST_CASE("qos command: JSON has a row per trace x setting and the analysis, CSV and the table agree") {
  const auto sweep_size = qos::default_sweep(1000ms).size();
  const auto r = run_qos({"--hours", "2", "--family", "calm,gc", "--format", "json"});
  INFO(r.err);
  const auto root = parse_object(r.out);
  const auto& rows = root.at("rows").as_array();
  REQUIRE(rows.size() == 2 * sweep_size);
  std::size_t defaults = 0;
  for (const auto& row : rows) {
    const auto& o = row.as_object();
    for (const char* key : {"trace", "kind", "label", "parameter", "mistakes", "mistakes_per_hour", "td_mean_ms",
                            "td_p99_ms", "server_default"})
      CHECK(o.contains(key));
    if (o.at("server_default").as_bool()) ++defaults;
  }
  CHECK(defaults == 2);
  CHECK(rows[0].as_object().at("trace").as_string() == "calm");
  CHECK(rows[sweep_size].as_object().at("trace").as_string() == "gc");

  const auto& traces = root.at("traces").as_array();
  REQUIRE(traces.size() == 2);
  for (const auto& entry : traces) {
    const auto& t = entry.as_object();
    CHECK(t.at("fastest_within_budget").as_object().contains("fixed"));
    CHECK(t.at("fixed_at_default_mistakes").as_object().at("timeout_ms").as_int64() > 0);
    CHECK(t.at("default_over_fixed").to_number<double>() > 0);
    CHECK(t.at("single_fixed").as_object().at("td_mean_ms").to_number<double>() > 0);
  }
  CHECK(root.at("single_fixed_multiplier").to_number<double>() > 1);
  CHECK(root.at("budget_per_hour").to_number<double>() == 0.1);
  // Exit 1 exactly when the default is over the budget on some trace.
  const bool meets = root.at("default_meets_budget_everywhere").as_bool();
  CHECK(r.exit_code == (meets ? 0 : 1));

  // The same numbers as CSV (one header, one line per row) and in the table.
  const auto csv = run_qos({"--hours", "2", "--family", "calm,gc", "--format", "csv"});
  CHECK(csv.exit_code == r.exit_code);
  CHECK(csv.out.rfind("trace,kind,label,parameter,mistakes,mistakes_per_hour,td_mean_ms,td_p99_ms,server_default\r\n",
                      0) == 0);
  CHECK(static_cast<std::size_t>(std::count(csv.out.begin(), csv.out.end(), '\n')) == 1 + 2 * sweep_size);
  const auto& first = rows[0].as_object();
  const auto line = "calm,fixed,fixed 1.05x,1.05," + std::to_string(first.at("mistakes").as_int64()) + ",";
  const auto at = csv.out.find(line);
  REQUIRE(at != std::string::npos);
  double rate = 0;
  const char* begin = csv.out.data() + at + line.size();
  std::from_chars(begin, csv.out.data() + csv.out.size(), rate);
  CHECK(rate == Approx(first.at("mistakes_per_hour").to_number<double>()).epsilon(1e-12));
  const auto table = run_qos({"--hours", "2", "--family", "calm,gc"});
  CHECK(table.exit_code == r.exit_code);
  CHECK_THAT(table.out, Catch::Contains("== calm:") && Catch::Contains("== gc:") &&
                            Catch::Contains("summary over 2 traces, budget 0.100/h") &&
                            Catch::Contains("<- server default"));
  // Progress goes to stderr, never into the machine-readable output.
  CHECK_THAT(r.err, Catch::Contains("replays"));

  // A budget the default cannot miss: exit 0.
  CHECK(run_qos({"--hours", "1", "--family", "calm", "--max-mistakes", "10000/h", "--format", "csv"}).exit_code == 0);
}

TEST_CASE("qos command: bad values are refused with exit 2 before any replay") {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--max-mistakes", "-1"},
           {"--max-mistakes", "lots"},
           {"--family", "nope"},
           {"--family", "calm,,gc"},
           {"--interval", "0s"},
           {"--hours", "0"},
           {"--crashes", "0"},
           {"--format", "xml"},
           {"--plot", "x.jpg"},
           {"--plot", ""},
           {"--family", "none"},
           {"--family", "none", "--trace", "/nonexistent/trace.txt"},
       }) {
    INFO(args[0] << " " << args[1]);
    auto with_short = args;
    with_short.insert(with_short.end(), {"--hours", "0.1"});
    if (args[0] == "--hours") with_short = args;
    const auto r = run_qos(with_short);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::StartsWith("probe: "));
    CHECK(r.out.empty());
  }
  const auto r = run_qos({"--plot", "frontier.jpg", "--hours", "0.1"});
  CHECK_THAT(r.err, Catch::Contains(".png") && Catch::Contains(".svg"));
}

TEST_CASE("qos command: --help describes the families and the exit status") {
  const auto r = run_qos({"--help"});
  CHECK(r.exit_code == 0);
  for (const char* text : {"calm", "gc", "mobile", "regime", "docs/detectors.md", "Exit status", "--record-arrivals"})
    CHECK_THAT(r.out, Catch::Contains(text));
}

TEST_CASE("qos command: a trace file replays to the same numbers as the trace in memory") {
  deadpeer::test::temp_dir dir;
  // A gc trace written as ms per line (shortest round-trip text), a comment on top.
  const auto t = qos::make_synthetic(qos::family::gc, {.interval = 1000ms, .hours = 1, .seed = 9});
  const auto path = dir.file("gc.trace");
  {
    std::ofstream out(path);
    out << "# arrival times in ms\n";
    for (const double ms : t.arrival_ms) out << shortest(ms) << "\n";
  }
  const auto r = run_qos({"--family", "none", "--trace", path, "--crashes", "5000", "--format", "json"});
  INFO(r.err);
  REQUIRE((r.exit_code == 0 || r.exit_code == 1));
  const auto root = parse_object(r.out);
  const auto& rows = root.at("rows").as_array();
  const auto sweep = qos::default_sweep(1000ms);
  REQUIRE(rows.size() == sweep.size());
  for (std::size_t s = 0; s < sweep.size(); ++s) {
    if (sweep[s].kind == "phi") continue;  // the slow one; its arithmetic is the same replay
    const auto& row = rows[s].as_object();
    INFO(sweep[s].label);
    CHECK(row.at("trace").as_string() == path);
    const auto q = qos::evaluate(t, sweep[s].config, 5000, 1);
    CHECK(row.at("mistakes").as_int64() == static_cast<std::int64_t>(q.mistakes));
    CHECK(row.at("td_mean_ms").to_number<double>() == Approx(q.td_mean_ms).epsilon(1e-12));
    CHECK(row.at("td_p99_ms").to_number<double>() == Approx(q.td_p99_ms).epsilon(1e-12));
  }

  // A trace whose silence no default detector waits out (a minute at 1 s heartbeats) makes
  // the default miss a budget of 0: exit 1, and the table says where.
  const auto stalled = dir.file("stalled.trace");
  {
    std::ofstream out(stalled);
    double ms = 0;
    for (int i = 0; i < 600; ++i) out << (ms += (i == 300 ? 60'000 : 1000)) << "\n";
  }
  const auto over = run_qos({"--family", "none", "--trace", stalled, "--max-mistakes", "0", "--crashes", "1000"});
  CHECK(over.exit_code == 1);
  CHECK_THAT(over.out, Catch::Contains("is over the budget on " + stalled));
}

TEST_CASE("qos command: --plot draws the frontier as SVG or PNG with gnuplot") {
  const auto gnuplot = probe::lab::run({"sh", "-c", "command -v gnuplot"});
  if (gnuplot.exit_code != 0) {
    WARN("SKIPPED: gnuplot not installed");
    return;
  }
  deadpeer::test::temp_dir dir;
  const auto svg = dir.file("frontier.svg");
  const auto r = run_qos({"--hours", "0.5", "--family", "calm,mobile", "--crashes", "1000", "--max-mistakes",
                          "10000/h", "--plot", svg});
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("plot written to " + svg));
  std::ifstream in(svg);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK_THAT(text, Catch::Contains("<svg") && Catch::Contains("server default") && Catch::Contains("budget") &&
                       Catch::Contains("mobile"));

  // With --format json the note goes to stderr and stdout stays JSON.
  const auto png = dir.file("frontier.PNG");
  const auto j = run_qos({"--hours", "0.5", "--family", "calm", "--crashes", "1000", "--max-mistakes", "10000/h",
                          "--format", "json", "--plot", png});
  CHECK(j.exit_code == 0);
  CHECK_NOTHROW(parse_object(j.out));
  CHECK_THAT(j.err, Catch::Contains("plot written to " + png));
  std::ifstream image(png, std::ios::binary);
  std::string magic(4, '\0');
  image.read(magic.data(), 4);
  CHECK(magic == "\x89PNG");
}
