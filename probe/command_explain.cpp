// probe explain: the classifier's knowledge, on demand. Accepts what people copy out of
// logs: errno numbers and names, Winsock numbers and names, and deadpeer cause names.
#include "cli.hpp"

#include <deadpeer/cause.hpp>

#include <iostream>

namespace probe {

namespace po = boost::program_options;

int command_explain(const std::vector<std::string>& args) {
  po::options_description options("Options");
  options.add_options()("code", po::value<std::string>()->value_name("CODE")->required(),
                        "an error number (104, 10053), name (ECONNRESET, WSAECONNABORTED) or "
                        "deadpeer cause (heartbeat_timeout)");
  po::positional_options_description positional;
  positional.add("code", 1);
  po::variables_map vm;
  if (!parse_command_line(args, options, positional,
                          "Usage: probe explain <code|name>\n\n"
                          "Says what an error code or a deadpeer cause means on the wire, what "
                          "usually\ncauses it and what to do. Linux errno and Winsock numbers "
                          "are both accepted.",
                          vm, std::cout))
    return exit_ok;

  const auto& text = vm["code"].as<std::string>();
  const auto found = deadpeer::lookup(text);
  if (!found)
    throw usage_error("unknown error code or name \"" + text +
                      "\" (try a number such as 104 or 10054, a name such as ECONNRESET, or "
                      "a cause such as heartbeat_timeout)");
  if (found->error) {
    const auto& e = *found->error;
    std::cout << e.name << " (" << e.number << ", " << e.platform << ")";
    // The same condition under the other platform's name, so a Windows log can be read
    // against Linux documentation and back.
    for (const auto& other : deadpeer::known_errors())
      if (other.platform != e.platform && other.cause == e.cause &&
          other.name.ends_with(e.name.starts_with("WSA") ? e.name.substr(3) : e.name))
        std::cout << " = " << other.name << " (" << other.number << ", " << other.platform << ")";
    std::cout << "\n";
    if (!e.note.empty()) write_wrapped(std::cout, e.note, "  ");
  }
  const auto& x = deadpeer::explain(found->cause);
  std::cout << "cause: " << deadpeer::to_string(found->cause) << "\n";
  std::cout << "on the wire:\n";
  write_wrapped(std::cout, x.on_the_wire, "  ");
  std::cout << "typical reasons:\n";
  write_wrapped(std::cout, x.typical, "  ");
  std::cout << "what to do:\n";
  write_wrapped(std::cout, x.what_to_do, "  ");
  return exit_ok;
}

}  // namespace probe
