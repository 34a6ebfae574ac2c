// probe explain: the classifier's knowledge, on demand. Accepts what people copy out of
// logs, as they copied it: errno and Winsock numbers (also in hex) and names, the messages
// programs print for them, whole log lines that contain one, TCP state names and deadpeer
// cause names. Several words are joined with spaces, so an unquoted paste works too.
//
// ETIMEDOUT has no single story: the timer that fired depends on what the connection was
// doing. Without --while the command says so and sketches each case instead of telling the
// keepalive story to someone whose connect timed out. Input that matches nothing is a
// usage error (exit 2), with the forms that are accepted.
#include "cli.hpp"

#include <deadpeer/cause.hpp>

#include <iostream>
#include <optional>
#include <string>

namespace probe {

namespace po = boost::program_options;

namespace {

constexpr std::string_view accepted_forms =
    "a number (104, 0x2746), a name (ECONNRESET), a message or log line (\"Connection reset "
    "by peer\"), a TCP state (CLOSE_WAIT) or a cause (server_full); see probe explain --help";

constexpr std::string_view usage =
    "Usage: probe explain <text> [--while connecting|idle|sending]\n"
    "\n"
    "Says what an error means on the wire, what usually causes it and what to do.\n"
    "<text> is any of:\n"
    "  a number          104, 10054, or Winsock in hex: 0x2746, 0x80072746\n"
    "  a name            ECONNRESET, WSAECONNABORTED, ETIMEDOUT\n"
    "  a message         as strerror, Java, .NET, Python, Go or Node.js print it:\n"
    "                    \"Broken pipe\", \"Connection reset\", ConnectionResetError,\n"
    "                    \"An existing connection was forcibly closed by the remote host\"\n"
    "  a log line        \"java.net.SocketException: Connection reset\",\n"
    "                    \"[Errno 111] Connection refused\", \"Error: read ECONNRESET\"\n"
    "  a TCP state       SYN_SENT, CLOSE_WAIT, FIN-WAIT-1, TIME_WAIT\n"
    "  a deadpeer cause  heartbeat_timeout, server_full, too_many_pings\n"
    "Matching ignores case; in a log line the longest known text wins. Quote a line\n"
    "that contains shell characters. A timeout (ETIMEDOUT, 10060) depends on what the\n"
    "connection was doing: say it with --while.\n"
    "Exit status: 0 explained, 2 nothing known in the text or a bad option.";

void print_error_line(const deadpeer::known_error& e) {
  std::cout << e.name << " (" << e.number << ", " << e.platform << ")";
  // The same condition under the other platform's name, so a Windows log can be read
  // against Linux documentation and back.
  const std::string_view bare = e.name.starts_with("WSA") ? e.name.substr(3) : e.name;
  for (const auto& other : deadpeer::known_errors())
    if (other.platform != e.platform && other.cause == e.cause &&
        (other.name == bare || other.name.substr(other.name.starts_with("WSA") ? 3 : 0) == bare))
      std::cout << " = " << other.name << " (" << other.number << ", " << other.platform << ")";
  std::cout << "\n";
  if (!e.note.empty()) write_wrapped(std::cout, std::string(e.note) + ".", "  ");
}

void print_explanation(deadpeer::cause c) {
  const auto& x = deadpeer::explain(c);
  std::cout << "cause: " << deadpeer::to_string(c) << "\n";
  std::cout << "on the wire:\n";
  write_wrapped(std::cout, x.on_the_wire, "  ");
  std::cout << "typical reasons:\n";
  write_wrapped(std::cout, x.typical, "  ");
  std::cout << "what to do:\n";
  write_wrapped(std::cout, x.what_to_do, "  ");
}

}  // namespace

int command_explain(const std::vector<std::string>& args) {
  po::options_description options("Options");
  options.add_options()("code", po::value<std::vector<std::string>>()->value_name("TEXT"),
                        "what to explain (see above); several words are joined with spaces")  //
      ("while", po::value<std::string>()->value_name("ACTIVITY"),
       "what the connection was doing: connecting, idle or sending. ETIMEDOUT needs it: "
       "SYN retries, keepalive probes and retransmissions all end in the same code");
  po::positional_options_description positional;
  positional.add("code", -1);
  po::variables_map vm;
  if (!parse_command_line(args, options, positional, usage, vm, std::cout)) return exit_ok;

  if (vm.count("code") == 0)
    throw usage_error("nothing to explain: give " + std::string(accepted_forms));
  std::string text;
  for (const auto& word : vm["code"].as<std::vector<std::string>>())
    text += (text.empty() ? "" : " ") + word;

  std::optional<deadpeer::activity> activity;
  if (vm.count("while") != 0) {
    activity = deadpeer::activity_from_string(vm["while"].as<std::string>());
    if (!activity)
      throw usage_error("--while \"" + vm["while"].as<std::string>() +
                        "\": use connecting, idle or sending");
  }

  const auto found = deadpeer::lookup(text);
  if (!found)
    throw usage_error("nothing known in \"" + text + "\"; give " + std::string(accepted_forms));

  if (found->matched != text) std::cout << "matched: \"" << found->matched << "\"\n";
  if (found->text) {
    const auto& t = *found->text;
    std::cout << "\"" << t.text
              << "\": " << (t.is_tcp_state ? "a TCP state" : "printed by " + std::string(t.source));
    if (!t.error_name.empty()) std::cout << " for " << t.error_name;
    std::cout << "\n";
    if (!t.note.empty()) write_wrapped(std::cout, std::string(t.note) + ".", "  ");
  }
  auto c = found->cause;
  if (found->error) {
    const auto& e = *found->error;
    print_error_line(e);
    if (deadpeer::depends_on_activity(e)) {
      if (!activity) {
        std::cout << "which timer ended the connection depends on what it was doing:\n";
        for (const auto a : {deadpeer::activity::connecting, deadpeer::activity::idle,
                             deadpeer::activity::sending}) {
          const auto ac = deadpeer::cause_while(e, a);
          std::cout << "  --while " << deadpeer::to_string(a) << ": " << deadpeer::to_string(ac)
                    << "\n";
          write_wrapped(std::cout, deadpeer::explain(ac).on_the_wire, "    ");
        }
        std::cout << "run again with --while connecting|idle|sending for the full explanation\n";
        return exit_ok;
      }
      c = deadpeer::cause_while(e, *activity);
      if (*activity == deadpeer::activity::sending)
        std::cout << "  (user_timeout instead, if TCP_USER_TIMEOUT was set: probe explain "
                     "user_timeout)\n";
    } else if (activity) {
      std::cout << "  (--while does not change what " << e.name << " means)\n";
    }
  } else if (activity) {
    std::cout << "  (--while applies to error codes such as ETIMEDOUT; ignored here)\n";
  }
  print_explanation(c);
  return exit_ok;
}

}  // namespace probe
