// probe report: the trials table as a summary per (fault, configuration), in a table for
// people, CSV or JSON for tools, and optionally a PNG or SVG drawn by gnuplot.
//
// Decisions:
// - Percentiles are nearest-rank (see nearest_rank): every figure printed is a latency
//   that was actually measured, never an interpolation between two trials, and p95 of a
//   small group is simply its worst or second-worst trial, which is the honest answer.
// - Latency figures cover the detected trials only; missed and premature trials have no
//   meaningful latency and are counted as failures instead of being averaged in.
// - The database is opened read-only: a report never changes results, and it can run
//   while a sweep is still writing (WAL mode).
// - Plots are drawn by the gnuplot program rather than a plotting library: it is one
//   Debian package, and the data and script it was given can be kept and rerun by hand.
#include "report.hpp"

#include "cli.hpp"

#include <algorithm>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

namespace probe {

// --- the command -----------------------------------------------------------------------

namespace po = boost::program_options;

int command_report(const std::vector<std::string>& args) {
  po::options_description options("Options");
  options.add_options()  //
      ("db", po::value<std::string>()->value_name("FILE")->default_value("results.db"),
       "the results database written by probe")  //
      ("format,f", po::value<std::string>()->value_name("FORMAT")->default_value("table"),
       "table (for people), csv (RFC 4180, numbers in ms) or json (an array of objects)")  //
      ("plot", po::value<std::string>()->value_name("FILE.png|FILE.svg"),
       "also draw latency per configuration against its bound, and per detecting layer, "
       "with gnuplot: a PNG image, or SVG when FILE ends in .svg")  //
      ("run", po::value<std::string>()->value_name("ID|last|all")->default_value("all"),
       "which runs to include: one run id, the last run, or all");
  po::variables_map vm;
  if (!parse_command_line(
          args, options, {},
          "Usage: probe report [--db FILE] [--format table|csv|json] [--plot FILE.png|.svg]\n"
          "                    [--run ID|last|all]\n\n"
          "Summarizes the trials in the results database per fault and configuration: the\n"
          "number of trials n; p50, p95 and max detection latency over the detected trials\n"
          "(nearest-rank percentiles: always a measured value); the bound the settings\n"
          "promise (none: no finite bound) and max/bound; the layers that detected the\n"
          "fault, most common first (eof+reset: both did); failures, the trials that\n"
          "missed the fault or declared the peer dead too early; and wire_diff, of the\n"
          "trials whose closing FIN or RST was seen on the wire, how many disagree with the\n"
          "application's decision by more than 5 ms or 2% of the latency.",
          vm, std::cout))
    return exit_ok;

  const auto& db = vm["db"].as<std::string>();
  const auto& format = vm["format"].as<std::string>();
  if (format != "table" && format != "csv" && format != "json")
    throw usage_error("--format \"" + format + "\" is not one of table, csv, json");
  const auto selection = report::parse_run_selection(vm["run"].as<std::string>());
  std::optional<std::string> plot;
  if (vm.count("plot") != 0) {
    plot = vm["plot"].as<std::string>();
    if (plot->empty()) throw usage_error("--plot needs a file name, e.g. --plot results.png");
    if (!report::plot_format(*plot))
      throw usage_error("--plot \"" + *plot +
                        "\": the name must end in .png (a PNG image) or .svg (SVG), the two "
                        "formats probe draws");
  }

  std::string description;
  const auto trials = report::load_trials(db, selection, description);
  if (trials.empty()) {
    std::cerr << "probe: no trials for " << description << " in " << db << "\n";
    return exit_negative;
  }
  const auto rows = report::summarize(trials);
  if (format == "csv") {
    std::cout << report::format_csv(rows);
  } else if (format == "json") {
    std::cout << report::format_json(rows);
  } else {
    std::cout << report::format_table(rows) << "(" << trials.size() << " trials, " << description
              << "; latencies over "
              << "detected trials; over_bound = detected trials later than their bound; "
              << "failures = missed + premature; wire_diff = trials whose "
              << "wire instant disagrees / trials with one"
              << (std::any_of(rows.begin(), rows.end(),
                              [](const report::summary_row& r) { return r.observed > 0; })
                      ? "; observed trials (early-reject) count in the latencies, answered = "
                        "those whose client read the whole answer"
                      : "")
              << ")\n";
  }
  std::cout.flush();

  if (!plot) return exit_ok;
  // The plot's note goes where it does not corrupt machine-readable output.
  std::ostream& note = format == "table" ? std::cout : std::cerr;
  const auto gnuplot = report::find_gnuplot();
  if (!gnuplot) {
    std::cerr << "probe: cannot draw " << *plot
              << ": gnuplot not found; install gnuplot-nox (scripts/setup does)\n";
    return exit_negative;
  }
  try {
    report::write_plot(*gnuplot, trials, rows, *plot,
                       "deadpeer detection latency: " + db + ", " + description);
  } catch (const report::plot_error& e) {
    std::cerr << "probe: " << e.what() << "\n";
    return exit_negative;
  }
  note << "plot written to " << *plot << "\n";
  return exit_ok;
}

}  // namespace probe
