// probe qos: replays traces (synthetic families, files, a deadpeer database) through a sweep
// of detector settings and prints, per trace, each setting's T_D and lambda_M, the fastest
// setting of each kind within the mistake budget, and how the server's default detector
// compares with the best fixed timeout at the same mistake rate. The arithmetic is qos.hpp's;
// this file reads options, runs the sweep on the machine's cores and prints. What it decides:
// - The answer is one bit for scripts: exit 1 when the server's default detector makes more
//   false verdicts than the budget on some trace (or the plot could not be drawn), so CI can
//   hold the default to its promise; the table, CSV or JSON say where and by how much.
// - CSV is one row per trace x setting and nothing else (a spreadsheet's table); JSON has the
//   same rows plus the analysis, so a tool needs no arithmetic of its own.
// - The plot is the frontier of Chen, Toueg and Aguilera: T_D against lambda_M, one panel per
//   trace. lambda_M is drawn on a log axis because the interesting rates span 0.01/h to
//   1000/h; a rate of 0 has no place there, so zeros sit at a floor below every rate shown
//   (0.005/h unless a rate or the budget is that low) and the tic there reads "0".
#include "cli.hpp"
#include "gnuplot.hpp"
#include "qos.hpp"
#include "report.hpp"
#include "report_text.hpp"

#include <deadpeer/json_text.hpp>
#include <deadpeer/config_error.hpp>
#include <deadpeer/duration.hpp>
#include <deadpeer/server.hpp>

#include <boost/json.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <limits>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

namespace probe {
namespace {

namespace po = boost::program_options;
namespace json = boost::json;
using std::chrono::milliseconds;

constexpr const char* usage =
    "usage: probe qos [--family calm,gc,mobile,regime] [--trace FILE]... [--from-db FILE]\n"
    "                 [--hours 100] [--seed 1] [--interval 1s] [--crashes 20000]\n"
    "                 [--max-mistakes 0.1/h] [--plot FILE.png|FILE.svg] [--format table|csv|json]\n\n"
    "Replays heartbeat arrival traces through failure detectors and measures, for every\n"
    "setting, T_D (crash to verdict: mean and p99 over many crash instants) and lambda_M\n"
    "(false verdicts per hour on a live peer), the two numbers of Chen, Toueg and Aguilera's\n"
    "QoS of failure detectors. For each trace it names the fastest setting of each detector\n"
    "within the mistake budget, and compares the server's default detector with the best\n"
    "fixed timeout tuned for that trace at the same mistake rate.\n\n"
    "Detectors swept: fixed 1.05x to 6x the interval, phi accrual thresholds 1 to 16, and the\n"
    "adaptive detector's margins 0.25 to 2 (the server's default is marked).\n\n"
    "Synthetic families (seeded, deterministic). Every one sends a heartbeat 0.9 to 1.1 x\n"
    "the interval after the previous one, and delivers them in order:\n"
    "  calm    a LAN: network delay normal(30 ms, sd 8 ms)\n"
    "  gc      calm, plus sender pauses about once a minute (Poisson), lognormal lengths:\n"
    "          median 250 ms, 1 in 100 over 1 s (garbage collection, VM migration)\n"
    "  mobile  a cellular link: good spells (delay normal(60 ms, sd 15 ms)) and bad ones\n"
    "          (200 ms + exponential, mean 350 ms) starting 1 heartbeat in 300, lasting 5\n"
    "  regime  half an hour calm, half an hour jittery (delay normal(150 ms, sd 120 ms)), in\n"
    "          turn: a link whose spread switches\n"
    "docs/detectors.md explains the models, the detectors and how to read the results.\n\n"
    "Your own traces: a file with one arrival time in milliseconds per line (--trace; any\n"
    "origin, '#' comments), or every connection recorded in a deadpeer database (--from-db:\n"
    "heartbeat-server --record-arrivals N, or probe's own lab).\n\n"
    "--plot draws T_D against lambda_M (log scale, zeros at a floor marked 0), one panel per\n"
    "trace and one curve per detector, the server default circled and the budget dashed.\n\n"
    "Exit status: 0 the server default is within the budget on every trace; 1 it is over the\n"
    "budget on some trace, or the plot could not be drawn; 2 bad usage.";

double parse_budget(const std::string& text) {
  std::string number = text;
  if (number.size() > 2 && number.substr(number.size() - 2) == "/h") number.resize(number.size() - 2);
  std::size_t used = 0;
  double value = -1;
  try {
    value = std::stod(number, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != number.size() || !std::isfinite(value) || value < 0)
    throw usage_error("--max-mistakes: expected false verdicts per hour such as 0.1/h, got \"" + text + "\"");
  return value;
}

struct trace_result {
  qos::trace trace;
  std::vector<qos::quality> by_setting;  // parallel to the sweep
};

// The sweep on every trace, spread over the machine's cores (each evaluation is independent).
void evaluate_all(std::vector<trace_result>& results, const std::vector<qos::setting>& sweep,
                  std::size_t crashes, std::uint64_t seed) {
  const std::size_t jobs = results.size() * sweep.size();
  for (auto& r : results) r.by_setting.resize(sweep.size());
  std::atomic<std::size_t> next{0};
  std::atomic<std::size_t> done{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  const auto work = [&] {
    for (std::size_t job; (job = next++) < jobs;) {
      auto& r = results[job / sweep.size()];
      try {
        r.by_setting[job % sweep.size()] = qos::evaluate(r.trace, sweep[job % sweep.size()].config, crashes, seed);
      } catch (...) {
        const std::lock_guard lock(failure_mutex);
        if (!failure) failure = std::current_exception();
      }
      const auto finished = ++done;
      if (finished % 10 == 0 || finished == jobs)
        std::fprintf(stderr, "\rqos: %zu of %zu replays", finished, jobs);
    }
  };
  const unsigned threads = std::max(1u, std::min(4u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < threads; ++i) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  std::fprintf(stderr, "\n");
  if (failure) std::rethrow_exception(failure);
}

std::string seconds(double ms) {
  if (std::isinf(ms)) return "never";
  char text[32];
  std::snprintf(text, sizeof text, "%.3fs", ms / 1000);
  return text;
}

std::string rate(double per_hour) {
  char text[32];
  std::snprintf(text, sizeof text, "%.3f/h", per_hour);
  return text;
}

// --- CSV and JSON ----------------------------------------------------------------------

using report::csv_field;

/// Shortest text that reads back as the same double; empty for infinity or NaN.
std::string number_text(double v) {
  return std::isfinite(v) ? report::detail::number_text(v) : std::string();
}

constexpr const char* csv_header =
    "trace,kind,label,parameter,mistakes,mistakes_per_hour,td_mean_ms,td_p99_ms,server_default\r\n";

std::string format_csv(const std::vector<trace_result>& results, const std::vector<qos::setting>& sweep) {
  std::string out = csv_header;
  for (const auto& r : results)
    for (std::size_t s = 0; s < sweep.size(); ++s) {
      const auto& q = r.by_setting[s];
      out += csv_field(r.trace.name) + "," + csv_field(sweep[s].kind) + "," + csv_field(sweep[s].label) + "," +
             number_text(sweep[s].parameter) + "," + std::to_string(q.mistakes) + "," +
             number_text(q.mistakes_per_hour) + "," + number_text(q.td_mean_ms) + "," + number_text(q.td_p99_ms) +
             "," + (sweep[s].server_default ? "true" : "false") + "\r\n";
    }
  return out;
}

/// A number, or null when it is not finite (JSON has no infinity).
json::value json_number(double v) {
  return std::isfinite(v) ? json::value(v) : json::value(nullptr);
}

json::object json_quality(const qos::quality& q) {
  return {{"mistakes", q.mistakes},
          {"mistakes_per_hour", json_number(q.mistakes_per_hour)},
          {"td_mean_ms", json_number(q.td_mean_ms)},
          {"td_p99_ms", json_number(q.td_p99_ms)}};
}

double ratio(double over, double under) {
  return under > 0 ? over / under : std::numeric_limits<double>::quiet_NaN();
}

std::string format_json(const std::vector<trace_result>& results, const std::vector<qos::setting>& sweep,
                        const qos::analysis& a, double budget, std::size_t crashes, std::uint64_t seed) {
  json::array rows;
  for (const auto& r : results)
    for (std::size_t s = 0; s < sweep.size(); ++s) {
      auto row = json_quality(r.by_setting[s]);
      json::object o{{"trace", r.trace.name},
                     {"kind", sweep[s].kind},
                     {"label", sweep[s].label},
                     {"parameter", json_number(sweep[s].parameter)}};
      for (auto& [key, value] : row) o[key] = value;
      o["server_default"] = sweep[s].server_default;
      rows.push_back(std::move(o));
    }

  const auto& by_default = sweep[a.default_setting];
  json::array traces;
  for (std::size_t t = 0; t < results.size(); ++t) {
    const auto& r = results[t];
    const auto& v = a.traces[t];
    const auto& d = r.by_setting[a.default_setting];
    json::object fastest;
    for (const auto& [kind, best] : v.fastest_within_budget) {
      if (!best) {
        fastest[kind] = nullptr;
        continue;
      }
      auto o = json_quality(r.by_setting[*best]);
      o["label"] = sweep[*best].label;
      o["parameter"] = json_number(sweep[*best].parameter);
      fastest[kind] = std::move(o);
    }
    auto tuned = json_quality(v.fixed_at_default_quality);
    tuned["timeout_ms"] = v.fixed_at_default_rate.timeout.count();
    auto single = json_quality(a.single_fixed_quality[t]);
    single["timeout_ms"] = json_number(a.single_fixed_multiplier * static_cast<double>(r.trace.interval.count()));
    auto server_default = json_quality(d);
    server_default["within_budget"] = d.mistakes_per_hour <= budget;
    traces.push_back(json::object{
        {"trace", r.trace.name},
        {"arrivals", r.trace.arrival_ms.size()},
        {"hours", json_number(d.hours)},
        {"interval_ms", r.trace.interval.count()},
        {"crashes", d.crashes},
        {"server_default", std::move(server_default)},
        {"fastest_within_budget", std::move(fastest)},
        {"fixed_at_default_mistakes", std::move(tuned)},
        {"default_over_fixed", json_number(v.default_over_fixed)},
        {"fixed_at_budget_timeout_ms", v.fixed_at_budget.timeout.count()},
        {"single_fixed", std::move(single)},
        {"single_fixed_over_default", json_number(ratio(a.single_fixed_quality[t].td_mean_ms, d.td_mean_ms))},
    });
  }

  json::object root{
      {"budget_per_hour", json_number(budget)},
      {"seed", seed},
      {"crashes", crashes},
      {"server_default", json::object{{"kind", by_default.kind},
                                      {"label", by_default.label},
                                      {"parameter", json_number(by_default.parameter)}}},
      {"default_meets_budget_everywhere", a.default_meets_budget_everywhere},
      {"single_fixed_multiplier", json_number(a.single_fixed_multiplier)},
      {"rows", std::move(rows)},
      {"traces", std::move(traces)},
  };
  return deadpeer::json_text(root) + "\n";
}

// --- the frontier plot ------------------------------------------------------------------

/// Where a rate of 0 is drawn on the log axis: 0.005/h, or lower when a rate or the budget
/// shown is within a factor 2 of it.
double zero_floor(const std::vector<trace_result>& results, double budget) {
  double floor = 0.005;
  for (const auto& r : results)
    for (const auto& q : r.by_setting)
      if (q.mistakes_per_hour > 0) floor = std::min(floor, q.mistakes_per_hour / 2);
  if (budget > 0) floor = std::min(floor, budget / 2);
  return floor;
}

// One panel per trace: T_D mean (s) against lambda_M (log), a curve per detector kind in the
// sweep's order, the server default circled, the fixed timeout tuned for the trace at the
// default's mistakes crossed, the budget a dashed vertical line.
void write_frontier_plot(const std::string& program, const std::vector<trace_result>& results,
                         const std::vector<qos::setting>& sweep, const qos::analysis& a, double budget,
                         const std::string& out_path, const std::string& title) {
  std::vector<std::string> kinds;
  for (const auto& s : sweep)
    if (std::find(kinds.begin(), kinds.end(), s.kind) == kinds.end()) kinds.push_back(s.kind);
  const double floor = zero_floor(results, budget);
  double top = std::max(budget, 1.0);
  for (const auto& r : results)
    for (const auto& q : r.by_setting) top = std::max(top, q.mistakes_per_hour);
  const auto x = [&](double rate) { return number_text(rate > 0 ? rate : floor); };
  const auto y = [](double ms) { return number_text(ms / 1000); };

  // frontier.dat: block t x kinds + k (gnuplot "index") holds trace t's settings of kind k;
  // marks.dat: block t holds the server default, then the tuned fixed timeout.
  std::string frontier, marks;
  for (std::size_t t = 0; t < results.size(); ++t) {
    const auto& r = results[t];
    for (const auto& kind : kinds) {
      if (!frontier.empty()) frontier += "\n\n";
      for (std::size_t s = 0; s < sweep.size(); ++s)
        if (sweep[s].kind == kind && std::isfinite(r.by_setting[s].td_mean_ms))
          frontier += x(r.by_setting[s].mistakes_per_hour) + " " + y(r.by_setting[s].td_mean_ms) + "\n";
    }
    if (t > 0) marks += "\n\n";
    const auto& d = r.by_setting[a.default_setting];
    const auto& tuned = a.traces[t].fixed_at_default_quality;
    marks += x(d.mistakes_per_hour) + " " + y(d.td_mean_ms) + "\n" + x(tuned.mistakes_per_hour) + " " +
             y(tuned.td_mean_ms) + "\n";
  }

  gnuplot::temp_directory dir("deadpeer-qos");
  const auto frontier_file = dir.path() / "frontier.dat";
  const auto marks_file = dir.path() / "marks.dat";
  const auto script_file = dir.path() / "plot.gp";
  const auto log_file = dir.path() / "gnuplot.log";
  const bool svg = gnuplot::plot_format(out_path) == "svg";
  const auto image_file = dir.path() / (svg ? "plot.svg" : "plot.png");
  gnuplot::write_text(frontier_file, frontier);
  gnuplot::write_text(marks_file, marks);

  const std::size_t n = results.size();
  const std::size_t columns = n == 1 ? 1 : n <= 4 ? 2 : 3;
  const std::size_t rows = (n + columns - 1) / columns;
  const std::size_t width = std::clamp<std::size_t>(650 * columns, 700, 8000);
  const std::size_t height = std::clamp<std::size_t>(480 * rows + 60, 500, 8000);
  const char* colours[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"};
  const double budget_x = budget > 0 ? budget : floor;

  std::ostringstream gp;
  gp << gnuplot::terminal_line(program, svg, width, height, log_file)
     << "set output " << gnuplot::quoted_path(image_file) << "\n"
     << "set multiplot layout " << rows << "," << columns << " title " << gnuplot::quoted(title) << "\n"
     << "set logscale x\n"
     << "set format x \"%g\"\n"
     << "set xrange [" << number_text(floor / 1.6) << ":" << number_text(top * 1.6) << "]\n"
     << "set xtics add (\"0\" " << number_text(floor) << ")\n"
     << "set yrange [0:*]\n"
     << "set grid\n"
     << "set key top right box opaque\n"
     << "set xlabel " << gnuplot::quoted("lambda_M: false verdicts per hour (log; 0 drawn at " + number_text(floor) + ")")
     << "\n"
     << "set ylabel \"T_D: mean crash-to-verdict time (s)\"\n"
     << "set arrow 1 from " << number_text(budget_x) << ", graph 0 to " << number_text(budget_x)
     << ", graph 1 nohead dashtype 2 linewidth 2 linecolor rgb \"#d62728\"\n"
     << "set label 1 " << gnuplot::quoted("budget " + rate(budget)) << " at " << number_text(budget_x)
     << ", graph 0.04 offset 0.5,0 textcolor rgb \"#d62728\"\n";
  for (std::size_t t = 0; t < n; ++t) {
    const auto& r = results[t];
    char heading[64];
    std::snprintf(heading, sizeof heading, " (%zu arrivals, %.1f h)", r.trace.arrival_ms.size(),
                  r.by_setting.empty() ? 0.0 : r.by_setting[0].hours);
    gp << "set title " << gnuplot::quoted(r.trace.name + heading) << "\n" << "plot ";
    for (std::size_t k = 0; k < kinds.size(); ++k)
      gp << gnuplot::quoted_path(frontier_file) << " index " << t * kinds.size() + k
         << " using 1:2 with linespoints pointtype 7 pointsize 0.8 linewidth 2 linecolor rgb \""
         << colours[k % std::size(colours)] << "\" title " << gnuplot::quoted(kinds[k]) << ", \\\n     ";
    gp << gnuplot::quoted_path(marks_file) << " index " << t
       << " every ::0::0 using 1:2 with points pointtype 6 pointsize 3 linewidth 2 linecolor rgb \"black\" title "
       << gnuplot::quoted("server default (" + sweep[a.default_setting].label + ")") << ", \\\n     "
       << gnuplot::quoted_path(marks_file) << " index " << t
       << " every ::1::1 using 1:2 with points pointtype 2 pointsize 2 linewidth 2 linecolor rgb \"black\" title "
       << gnuplot::quoted("fixed tuned at the default's mistakes") << "\n";
  }
  gp << "unset multiplot\n";
  gnuplot::write_text(script_file, gp.str());
  gnuplot::draw(program, script_file, image_file, out_path, log_file);
}

// --- the table --------------------------------------------------------------------------

void print_table(const std::vector<trace_result>& results, const std::vector<qos::setting>& sweep,
                 const qos::analysis& a, double budget) {
  for (std::size_t t = 0; t < results.size(); ++t) {
    const auto& r = results[t];
    std::printf("\n== %s: %zu arrivals over %.1f h, interval %s\n", r.trace.name.c_str(),
                r.trace.arrival_ms.size(), r.by_setting.empty() ? 0.0 : r.by_setting[0].hours,
                deadpeer::format_duration(r.trace.interval).c_str());
    std::printf("%-16s %12s %9s %10s %10s\n", "SETTING", "MISTAKES/H", "MISTAKES", "T_D MEAN", "T_D P99");
    for (std::size_t s = 0; s < sweep.size(); ++s) {
      const auto& q = r.by_setting[s];
      std::printf("%-16s %12s %9zu %10s %10s%s\n", sweep[s].label.c_str(), rate(q.mistakes_per_hour).c_str(),
                  q.mistakes, seconds(q.td_mean_ms).c_str(), seconds(q.td_p99_ms).c_str(),
                  s == a.default_setting ? "  <- server default" : "");
    }
    const auto& v = a.traces[t];
    std::printf("fastest within %s:", rate(budget).c_str());
    for (const auto& [kind, best] : v.fastest_within_budget)
      std::printf("  %s", best ? (sweep[*best].label + " (T_D " + seconds(r.by_setting[*best].td_mean_ms) + ")").c_str()
                               : (kind + " none").c_str());
    std::printf("\n");
    const auto& d = r.by_setting[a.default_setting];
    std::printf("default %s vs fixed %s tuned for this trace at the same mistakes (%zu): T_D %s vs %s = %.2fx\n",
                sweep[a.default_setting].label.c_str(),
                deadpeer::format_duration(v.fixed_at_default_rate.timeout).c_str(), d.mistakes,
                seconds(d.td_mean_ms).c_str(), seconds(v.fixed_at_default_quality.td_mean_ms).c_str(),
                v.default_over_fixed);
  }
  std::printf("\nsummary over %zu traces, budget %s:\n", results.size(), rate(budget).c_str());
  std::printf("  the server default (%s) is %s", sweep[a.default_setting].label.c_str(),
              a.default_meets_budget_everywhere ? "within the budget on every trace" : "over the budget on");
  const char* separator = " ";
  for (const auto& r : results) {
    const auto& d = r.by_setting[a.default_setting];
    if (d.mistakes_per_hour <= budget) continue;
    std::printf("%s%s (%s)", separator, r.trace.name.c_str(), rate(d.mistakes_per_hour).c_str());
    separator = ", ";
  }
  std::printf("\n");
  std::printf("  one fixed multiplier within the budget on every trace: %.2fx; its T_D against the default's:\n",
              a.single_fixed_multiplier);
  for (std::size_t t = 0; t < results.size(); ++t)
    std::printf("    %-24s %s vs %s = %.2fx\n", results[t].trace.name.c_str(),
                seconds(a.single_fixed_quality[t].td_mean_ms).c_str(),
                seconds(results[t].by_setting[a.default_setting].td_mean_ms).c_str(),
                a.single_fixed_quality[t].td_mean_ms / results[t].by_setting[a.default_setting].td_mean_ms);
}

}  // namespace

int command_qos(const std::vector<std::string>& args) {
  po::options_description options("options");
  options.add_options()  //
      ("family", po::value<std::string>()->default_value("calm,gc,mobile,regime"),
       "synthetic families to replay, comma-separated; \"none\" for only files or a database")  //
      ("trace", po::value<std::vector<std::string>>()->composing(),
       "a trace file: one arrival time in ms per line (repeatable)")  //
      ("from-db", po::value<std::string>(), "every connection recorded in this deadpeer database")  //
      ("hours", po::value<double>()->default_value(100), "length of each synthetic trace")  //
      ("seed", po::value<std::uint64_t>()->default_value(1), "seed of the synthetic traces and crash instants")  //
      ("interval", po::value<std::string>()->default_value("1s"),
       "heartbeat interval of the synthetic traces and of trace files")  //
      ("crashes", po::value<std::size_t>()->default_value(20000), "crash instants sampled per trace")  //
      ("max-mistakes", po::value<std::string>()->default_value("0.1/h"), "the mistake budget, per hour")  //
      ("plot", po::value<std::string>()->value_name("FILE.png|FILE.svg"),
       "draw the T_D / lambda_M frontier of each trace with gnuplot (PNG, or SVG for .svg)")  //
      ("format", po::value<std::string>()->default_value("table"), "table, csv or json");
  po::variables_map vm;
  if (!parse_command_line(args, options, {}, usage, vm, std::cout)) return exit_ok;

  const double budget = parse_budget(vm["max-mistakes"].as<std::string>());
  std::string why;
  const auto interval = deadpeer::try_parse_duration(vm["interval"].as<std::string>(), why);
  if (!interval || *interval <= milliseconds(0))
    throw usage_error("--interval: expected a duration > 0 such as 1s or 500ms, got \"" +
                      vm["interval"].as<std::string>() + "\"" + (why.empty() ? "" : ": " + why));
  const double hours = vm["hours"].as<double>();
  if (!(hours > 0 && hours <= 10'000)) throw usage_error("--hours: expected a number > 0 and at most 10000");
  const auto crashes = vm["crashes"].as<std::size_t>();
  if (crashes == 0) throw usage_error("--crashes: expected at least 1");
  const auto format = vm["format"].as<std::string>();
  if (format != "table" && format != "csv" && format != "json")
    throw usage_error("--format: expected table, csv or json, got \"" + format + "\"");
  std::optional<std::string> plot;
  if (vm.count("plot")) {
    plot = vm["plot"].as<std::string>();
    if (plot->empty()) throw usage_error("--plot needs a file name, e.g. --plot frontier.png");
    if (!gnuplot::plot_format(*plot))
      throw usage_error("--plot \"" + *plot +
                        "\": the name must end in .png (a PNG image) or .svg (SVG), the two formats probe draws");
  }
  const auto seed = vm["seed"].as<std::uint64_t>();

  std::vector<trace_result> results;
  const auto families = vm["family"].as<std::string>();
  if (families != "none") {
    std::size_t from = 0;
    while (from <= families.size()) {
      const auto comma = std::min(families.find(',', from), families.size());
      const auto name = families.substr(from, comma - from);
      const auto f = qos::family_from_name(name);
      if (!f) throw usage_error("--family: unknown family \"" + name + "\" (calm, gc, mobile, regime or none)");
      const qos::synthetic_options synthetic{*interval, hours, seed};
      results.push_back(trace_result{qos::make_synthetic(*f, synthetic), {}});
      from = comma + 1;
    }
  }
  if (vm.count("trace"))
    for (const auto& file : vm["trace"].as<std::vector<std::string>>()) {
      try {
        results.push_back(trace_result{qos::read_trace_file(file, *interval), {}});
      } catch (const std::runtime_error& e) {
        throw usage_error(e.what());
      }
    }
  if (vm.count("from-db")) {
    std::vector<qos::trace> recorded;
    try {
      recorded = qos::read_traces_from_db(vm["from-db"].as<std::string>());
    } catch (const std::runtime_error& e) {
      throw usage_error(e.what());
    }
    if (recorded.empty())
      throw usage_error(vm["from-db"].as<std::string>() + " holds no recorded connection with enough arrivals");
    for (auto& t : recorded) results.push_back(trace_result{std::move(t), {}});
  }
  if (results.empty()) throw usage_error("nothing to replay: give --family, --trace or --from-db");

  const auto sweep = qos::default_sweep(*interval);
  evaluate_all(results, sweep, crashes, seed);
  std::vector<std::vector<qos::quality>> table;
  std::vector<qos::trace> traces;
  for (const auto& r : results) {
    table.push_back(r.by_setting);
    traces.push_back(r.trace);
  }
  const auto a = qos::analyse(traces, sweep, table, budget, crashes, seed);
  if (format == "csv")
    std::cout << format_csv(results, sweep);
  else if (format == "json")
    std::cout << format_json(results, sweep, a, budget, crashes, seed);
  else
    print_table(results, sweep, a, budget);
  std::cout.flush();
  std::fflush(stdout);
  const int verdict = a.default_meets_budget_everywhere ? exit_ok : exit_negative;
  if (!plot) return verdict;

  // The plot's note goes where it does not corrupt machine-readable output.
  std::ostream& note = format == "table" ? std::cout : std::cerr;
  const auto program = gnuplot::find_gnuplot();
  if (!program) {
    std::cerr << "probe: cannot draw " << *plot << ": gnuplot not found; install gnuplot-nox (scripts/setup does)\n";
    return exit_negative;
  }
  char title[160];
  std::snprintf(title, sizeof title, "probe qos: T_D against lambda_M (seed %llu, %zu crashes per trace, budget %s)",
                static_cast<unsigned long long>(seed), crashes, rate(budget).c_str());
  try {
    write_frontier_plot(*program, results, sweep, a, budget, *plot, title);
  } catch (const plot_error& e) {
    std::cerr << "probe: " << e.what() << "\n";
    return exit_negative;
  }
  note << "plot written to " << *plot << "\n";
  return verdict;
}

}  // namespace probe
