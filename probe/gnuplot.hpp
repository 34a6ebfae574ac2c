// Drawing with the gnuplot program, shared by `probe report --plot` and `probe qos --plot`.
// What this module decides: probe draws by writing a gnuplot script and its data into a fresh
// temporary directory and running gnuplot on it (one Debian package, no plotting library to
// link), and only two formats are offered, PNG and SVG, chosen by the output file's extension;
// PNG uses the antialiased pngcairo terminal when gnuplot has it and the plain png one
// otherwise. Every failure (no gnuplot, a script error, an unwritable file) is a plot_error
// whose message says why, with gnuplot's own log when it ran.
#pragma once

#include <cstddef>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace probe {

/// Plotting failed (gnuplot error, unwritable output file); what() says why.
class plot_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace gnuplot {

/// The full path of the gnuplot program found on PATH, or nullopt.
std::optional<std::string> find_gnuplot();

/// The image format a plot file's name asks for: "png" or "svg" (by its extension, in any
/// case), or nullopt for any other name.
std::optional<std::string> plot_format(const std::string& path);

/// A fresh private directory (`prefix` + random letters, in the system's temporary
/// directory), removed with its contents when this object ends. Throws plot_error.
class temp_directory {
 public:
  explicit temp_directory(std::string_view prefix = "deadpeer-plot");
  ~temp_directory();
  temp_directory(const temp_directory&) = delete;
  temp_directory& operator=(const temp_directory&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

/// Runs `program` with `args`, stdout and stderr into `log`, through probe's one spawn
/// helper. Returns true when it exited with status 0 within two minutes; throws plot_error
/// when it cannot be started or does not finish.
bool run_program(const std::string& program, const std::vector<std::string>& args,
                 const std::filesystem::path& log);

std::string read_text(const std::filesystem::path& file);
/// Throws plot_error when the file cannot be written.
void write_text(const std::filesystem::path& file, const std::string& text);

/// A gnuplot double-quoted string (escapes work, "\n" breaks the line).
std::string quoted(std::string_view text);
/// A gnuplot single-quoted string, for file names (no escapes; '' is a quote).
std::string quoted_path(const std::filesystem::path& path);

/// The "set terminal ..." line (with its newline) for an image of `width` x `height` pixels:
/// svg, else pngcairo when `gnuplot` offers it (asked once, its answer logged to `log`), else
/// png. Text is drawn as is (noenhanced).
std::string terminal_line(const std::string& gnuplot, bool svg, std::size_t width, std::size_t height,
                          const std::filesystem::path& log);

/// Runs `gnuplot` on `script`, which must draw `image`, then copies `image` to `out_path`.
/// Throws plot_error with gnuplot's log (`log`) when it fails or draws nothing.
void draw(const std::string& gnuplot, const std::filesystem::path& script,
          const std::filesystem::path& image, const std::string& out_path,
          const std::filesystem::path& log);

}  // namespace gnuplot
}  // namespace probe
