// Command-line plumbing shared by probe's commands.
#include "cli.hpp"

#include <deadpeer/duration.hpp>
#include <deadpeer/keepalive.hpp>

#include <ostream>

namespace probe {

namespace po = boost::program_options;

bool parse_command_line(const std::vector<std::string>& args,
                        const po::options_description& options,
                        const po::positional_options_description& positional,
                        std::string_view usage, po::variables_map& vm, std::ostream& out) {
  po::options_description all;
  all.add(options);
  all.add_options()("help,h", "show this help");
  try {
    po::store(po::command_line_parser(args).options(all).positional(positional).run(), vm);
    if (vm.count("help") != 0) {
      out << usage << "\n\n" << all << "\n";
      return false;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw usage_error(std::string(e.what()) + " (see --help)");
  }
  return true;
}

void write_wrapped(std::ostream& out, std::string_view text, std::string_view indent,
                   std::string_view bullet, std::size_t width) {
  std::size_t column = 0;
  std::string first_line(indent);
  first_line += bullet;
  const std::string continuation = std::string(indent) + std::string(bullet.size(), ' ');
  bool first = true;
  while (!text.empty()) {
    const auto space = text.find(' ');
    const auto word = text.substr(0, space);
    text = space == std::string_view::npos ? std::string_view{} : text.substr(space + 1);
    if (word.empty()) continue;
    if (column > 0 && column + 1 + word.size() > width) {
      out << "\n";
      column = 0;
    }
    if (column == 0) {
      const std::string& lead = first ? first_line : continuation;
      first = false;
      out << lead << word;
      column = lead.size() + word.size();
    } else {
      out << ' ' << word;
      column += 1 + word.size();
    }
  }
  if (column > 0) out << "\n";
}

std::string describe_duration(std::chrono::milliseconds d) {
  const auto exact = deadpeer::format_duration(d);
  const auto hms = deadpeer::format_duration_hms(d);
  return hms == exact ? exact : exact + " (" + hms + ")";
}

std::string presets_help() {
  std::string text = "named keepalive settings:";
  for (const auto& p : deadpeer::keepalive_presets())
    text += "\n  " + std::string(p.name) + " (" + deadpeer::to_string(p.options) +
            "): " + std::string(p.rationale);
  return text;
}

}  // namespace probe
