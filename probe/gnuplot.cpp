// The gnuplot helpers of gnuplot.hpp: finding the program, a private work directory, running
// it through child_process, and quoting text and file names for its scripts.
#include "gnuplot.hpp"

#include "child_process.hpp"

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>

namespace probe {
namespace gnuplot {

namespace fs = std::filesystem;

std::optional<std::string> plot_format(const std::string& path) {
  auto extension = fs::path(path).extension().string();
  for (auto& c : extension)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (extension == ".png") return "png";
  if (extension == ".svg") return "svg";
  return std::nullopt;
}

std::optional<std::string> find_gnuplot() {
  const char* path = std::getenv("PATH");
  std::string_view dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  while (true) {
    const auto colon = dirs.find(':');
    std::string dir(dirs.substr(0, colon));
    if (dir.empty()) dir = ".";
    const auto candidate = fs::path(dir) / "gnuplot";
    std::error_code ec;
    if (fs::is_regular_file(candidate, ec) && ::access(candidate.c_str(), X_OK) == 0)
      return candidate.string();
    if (colon == std::string_view::npos) return std::nullopt;
    dirs.remove_prefix(colon + 1);
  }
}

temp_directory::temp_directory(std::string_view prefix) {
  std::error_code ec;
  auto base = fs::temp_directory_path(ec);
  if (ec) base = "/tmp";
  std::string name = (base / (std::string(prefix) + "-XXXXXX")).string();
  if (::mkdtemp(name.data()) == nullptr)
    throw plot_error("cannot create a temporary directory in " + base.string() + ": " +
                     std::strerror(errno));
  path_ = name;
}

temp_directory::~temp_directory() {
  std::error_code ignored;
  fs::remove_all(path_, ignored);
}

bool run_program(const std::string& program, const std::vector<std::string>& args,
                 const fs::path& log) {
  std::vector<std::string> argv{program};
  argv.insert(argv.end(), args.begin(), args.end());
  std::optional<int> status;
  try {
    child_process child(argv, log.string());
    status = child.wait(std::chrono::minutes(2));
  } catch (const std::system_error& e) {
    throw plot_error("cannot run " + program + ": " + e.what());
  }
  if (!status) throw plot_error(program + " did not finish within 2 minutes");
  return WIFEXITED(*status) && WEXITSTATUS(*status) == 0;
}

std::string read_text(const fs::path& file) {
  std::ifstream in(file);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_text(const fs::path& file, const std::string& text) {
  std::ofstream out(file);
  out << text;
  if (!out.flush()) throw plot_error("cannot write " + file.string());
}

std::string quoted(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + '"';
}

std::string quoted_path(const fs::path& path) {
  std::string out = "'";
  for (const char c : path.string()) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + '\'';
}

std::string terminal_line(const std::string& gnuplot, bool svg, std::size_t width, std::size_t height,
                          const fs::path& log) {
  const auto size = " size " + std::to_string(width) + "," + std::to_string(height);
  if (svg) return "set terminal svg" + size + " font \"sans,12\" noenhanced\n";
  // pngcairo draws antialiased text; the libgd png terminal is the fallback.
  run_program(gnuplot, {"-e", "set terminal"}, log);
  const bool cairo = read_text(log).find("pngcairo") != std::string::npos;
  return std::string("set terminal ") + (cairo ? "pngcairo" : "png") + size +
         (cairo ? " font \"sans,12\"" : "") + " noenhanced\n";
}

void draw(const std::string& gnuplot, const fs::path& script, const fs::path& image,
          const std::string& out_path, const fs::path& log) {
  if (!run_program(gnuplot, {script.string()}, log))
    throw plot_error("gnuplot failed to draw " + out_path + ":\n" + read_text(log));
  std::error_code ec;
  if (!fs::exists(image, ec) || fs::file_size(image, ec) == 0)
    throw plot_error("gnuplot drew nothing for " + out_path + ":\n" + read_text(log));
  fs::copy_file(image, out_path, fs::copy_options::overwrite_existing, ec);
  if (ec) throw plot_error("cannot write " + out_path + ": " + ec.message());
}

}  // namespace gnuplot
}  // namespace probe
