// What every probe command shares: how a bad command line is reported (exit 2 with a
// message, never a stack trace) and how long explanations are printed.
#pragma once

#include <boost/program_options.hpp>

#include <chrono>
#include <iosfwd>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace probe {

/// Exit codes: 0 done, 1 the command ran and its answer is negative, 2 bad usage.
inline constexpr int exit_ok = 0;
inline constexpr int exit_negative = 1;
inline constexpr int exit_usage = 2;
/// Stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report it).
inline constexpr int exit_interrupted = 130;

/// A command line the program cannot run; main prints it and exits with exit_usage.
class usage_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Parses `args` (the words after the command name) against `options`, with `positional`
/// for bare arguments. Unknown options and malformed values become usage_error.
/// Returns false when --help was given (after printing `usage` and the options).
bool parse_command_line(const std::vector<std::string>& args,
                        const boost::program_options::options_description& options,
                        const boost::program_options::positional_options_description& positional,
                        std::string_view usage, boost::program_options::variables_map& vm,
                        std::ostream& out);

/// Writes `text` wrapped at `width` columns, every line starting with `indent`; a
/// non-empty `bullet` starts the first line and continuation lines are aligned after it.
void write_wrapped(std::ostream& out, std::string_view text, std::string_view indent,
                   std::string_view bullet = {}, std::size_t width = 80);

/// A duration as "390s (6m30s)" when the hours-and-minutes form says more.
std::string describe_duration(std::chrono::milliseconds d);

/// The keepalive presets as help text: name, spec and one-line rationale each.
std::string presets_help();

int command_connect(const std::vector<std::string>& args);
int command_run(const std::vector<std::string>& args);
int command_sweep(const std::vector<std::string>& args);
int command_report(const std::vector<std::string>& args);
int command_explain(const std::vector<std::string>& args);
int command_bound(const std::vector<std::string>& args);
int command_tune(const std::vector<std::string>& args);
int command_presets(const std::vector<std::string>& args);
int command_load(const std::vector<std::string>& args);
int command_speak(const std::vector<std::string>& args);
int command_wrap(const std::vector<std::string>& args);
int command_doctor(const std::vector<std::string>& args);
int command_qos(const std::vector<std::string>& args);

}  // namespace probe
