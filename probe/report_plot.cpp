// probe report --plot: a PNG or SVG drawn by the gnuplot program (one Debian package; the data
// and script it was given can be kept and rerun by hand).
#include "report.hpp"

#include "gnuplot.hpp"
#include "report_text.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

namespace probe {
namespace report {
namespace {

using detail::number_text;
using detail::printf_text;

// The temporary directory, the gnuplot run and the quoting are gnuplot.hpp's, shared with
// probe qos --plot.
using gnuplot::temp_directory;
using gnuplot::write_text;
constexpr auto gp_quoted = gnuplot::quoted;
constexpr auto gp_path = gnuplot::quoted_path;

/// The configuration one setting per line, for a tic label: splits at the spaces that
/// separate settings, not at those inside "(fixed 3s)".
std::vector<std::string> label_lines(std::string_view configuration) {
  std::vector<std::string> lines(1);
  int depth = 0;
  for (const char c : configuration) {
    if (c == '(') ++depth;
    if (c == ')' && depth > 0) --depth;
    if (c == ' ' && depth == 0) {
      if (!lines.back().empty()) lines.emplace_back();
      continue;
    }
    lines.back() += c;
  }
  return lines;
}

std::string join_lines(const std::vector<std::string>& lines) {
  std::string text;
  for (const auto& line : lines)
    text += (text.empty() ? "" : "\n") + line;
  return text;
}

/// Spreads the points of one column sideways so equal latencies do not hide each other:
/// the golden-ratio sequence fills [-0.25, 0.25) evenly and is the same on every run.
double jitter(std::size_t k) {
  const double golden = 0.6180339887498949;
  const double f = static_cast<double>(k) * golden;
  return (f - std::floor(f) - 0.5) * 0.5;
}

/// Tic labels for a log axis of seconds, in the units people read: 1 µs ... 1 h.
std::string human_time_tics() {
  const std::pair<const char*, const char*> tics[] = {
      {"1 µs", "1e-6"}, {"10 µs", "1e-5"}, {"100 µs", "1e-4"}, {"1 ms", "0.001"},
      {"10 ms", "0.01"}, {"100 ms", "0.1"},  {"1 s", "1"},       {"10 s", "10"},
      {"1 min", "60"},  {"10 min", "600"},  {"1 h", "3600"}};
  std::string text;
  for (const auto& [label, seconds] : tics)
    text += (text.empty() ? "" : ", ") + gp_quoted(label) + " " + seconds;
  return text;
}

/// A latency in seconds for a log axis (a 0 ms latency would vanish: shown as 1 µs).
double plot_seconds(double ms) {
  return std::max(ms, 0.001) / 1000.0;
}

}  // namespace

// --- plot ------------------------------------------------------------------------------

void write_plot(const std::string& gnuplot, const std::vector<trial_row>& trials,
                const std::vector<summary_row>& rows, const std::string& png_path,
                std::string_view title) {
  std::map<std::pair<std::string, std::string>, std::size_t> column_of;
  for (std::size_t i = 0; i < rows.size(); ++i)
    column_of[{rows[i].fault, rows[i].config_key}] = i;

  // Panel 1 data: x = the configuration's column (plus jitter), y = latency in seconds;
  // trials later than their bound apart, drawn so they stand out.
  std::string points;
  std::string over;
  std::vector<std::size_t> placed(rows.size(), 0);
  std::map<std::string, std::vector<double>> by_layer;
  for (const auto& t : trials) {
    if (t.outcome != "detected" || !t.latency_ms) continue;
    const auto found = column_of.find({t.fault, t.config_key});
    if (found == column_of.end()) continue;
    const auto column = found->second;
    const auto point = number_text(static_cast<double>(column) + jitter(placed[column]++)) + " " +
                       number_text(plot_seconds(*t.latency_ms)) + "\n";
    (over_bound(t) ? over : points) += point;
    by_layer[t.detected_by.empty() ? std::string("unknown") : t.detected_by].push_back(
        plot_seconds(*t.latency_ms));
  }
  if (by_layer.empty())
    throw plot_error("nothing to plot: no trial in the selection detected its fault");

  std::string bounds;
  for (std::size_t i = 0; i < rows.size(); ++i)
    if (rows[i].bound_ms && *rows[i].bound_ms > 0)
      bounds += std::to_string(i) + " " +
                number_text(static_cast<double>(*rows[i].bound_ms) / 1000.0) + "\n";

  // Panel 2 data: one block per detecting layer (gnuplot "index i"), y and jitter.
  std::string layers;
  std::vector<std::string> layer_names;
  for (const auto& [name, values] : by_layer) {
    if (!layer_names.empty()) layers += "\n\n";
    layer_names.push_back(name);
    for (std::size_t k = 0; k < values.size(); ++k)
      layers += number_text(values[k]) + " " + number_text(jitter(k)) + "\n";
  }

  temp_directory dir("deadpeer-report");
  const auto points_file = dir.path() / "trials.dat";
  const auto bounds_file = dir.path() / "bounds.dat";
  const auto layers_file = dir.path() / "layers.dat";
  const auto over_file = dir.path() / "over.dat";
  const auto script_file = dir.path() / "plot.gp";
  const auto log_file = dir.path() / "gnuplot.log";
  const bool svg = plot_format(png_path) == "svg";
  const auto image_file = dir.path() / (svg ? "plot.svg" : "plot.png");
  write_text(points_file, points);
  write_text(bounds_file, bounds);
  write_text(layers_file, layers);
  write_text(over_file, over);


  std::string config_tics;
  std::size_t label_height = 1;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    auto lines = label_lines(rows[i].configuration);
    lines.insert(lines.begin(), rows[i].fault);
    if (rows[i].failures() > 0)
      lines.push_back("(" + std::to_string(rows[i].failures()) + " failed)");
    label_height = std::max(label_height, lines.size());
    config_tics += (i > 0 ? ", " : "") + gp_quoted(join_lines(lines)) + " " + std::to_string(i);
  }
  std::string layer_tics;
  for (std::size_t i = 0; i < layer_names.size(); ++i)
    layer_tics += (i > 0 ? ", " : "") +
                  gp_quoted(layer_names[i] +
                            "\n(n=" + std::to_string(by_layer[layer_names[i]].size()) + ")") +
                  " " + std::to_string(i + 1);

  const std::size_t width = std::clamp<std::size_t>(190 * rows.size() + 200, 1000, 9000);
  std::ostringstream gp;
  gp << probe::gnuplot::terminal_line(gnuplot, svg, width, 1100, log_file);
  gp << "set output " << gp_path(image_file) << "\n"
     << "set multiplot layout 2,1 title " << gp_quoted(title) << "\n"
     << "set logscale y\n"
     << "set ytics (" << human_time_tics() << ")\n"
     << "set ylabel \"detection latency\"\n"
     << "set grid ytics\n"
     << "set key outside top center horizontal\n"
     << "set bmargin " << label_height + 2 << "\n"
     << "set title \"latency per configuration: points are detected trials, bars the bound "
        "the settings promise\"\n"
     << "set xrange [-0.5:" << static_cast<double>(rows.size()) - 0.5 << "]\n"
     << "set xtics (" << config_tics << ")\n"
     << "plot ";
  // Bounds first, so the trials' points are drawn on top of their bar.
  if (!bounds.empty())
    gp << gp_path(bounds_file)
       << " using ($1-0.4):2:(0.8):(0) with vectors nohead linewidth 3 linecolor rgb "
          "\"#d62728\" title \"promised bound\", ";
  gp << gp_path(points_file)
     << " using 1:2 with points pointtype 7 pointsize 0.7 linecolor rgb \"#1f77b4\" title "
        "\"detected trial\"";
  if (const auto over_count = std::count(over.begin(), over.end(), '\n'); over_count > 0)
    gp << ", " << gp_path(over_file)
       << " using 1:2 with points pointtype 9 pointsize 1.6 linecolor rgb \"#d62728\" title "
       << gp_quoted("over its bound (" + std::to_string(over_count) + ")");
  gp << "\n";
  gp << "set title \"latency distribution per detecting layer (all configurations)\"\n"
     << "set bmargin 4\n"
     << "set xrange [0.3:" << static_cast<double>(layer_names.size()) + 0.7 << "]\n"
     << "set xtics (" << layer_tics << ")\n"
     << "set style fill solid 0.25 border -1\n"
     << "set style boxplot nooutliers\n"
     << "unset key\n"
     << "plot for [i=0:" << layer_names.size() - 1 << "] " << gp_path(layers_file)
     << " index i using (i+1):1:(0.5) with boxplot linecolor i+1, \\\n"
     << "     for [i=0:" << layer_names.size() - 1 << "] " << gp_path(layers_file)
     << " index i using (i+1+$2):1 with points pointtype 7 pointsize 0.6 linecolor i+1\n"
     << "unset multiplot\n";
  write_text(script_file, gp.str());

  probe::gnuplot::draw(gnuplot, script_file, image_file, png_path, log_file);
}

}  // namespace report
}  // namespace probe
