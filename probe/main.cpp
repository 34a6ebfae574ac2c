// probe: the client and experimenter of deadpeer. Each command lives in its own file;
// this file only dispatches and turns errors into exit codes.
#include "cli.hpp"

#include <deadpeer/config_error.hpp>

#include <boost/version.hpp>

#include <sqlite3.h>

#include <iostream>
#include <map>

namespace {

constexpr std::string_view usage =
    R"(probe: find out how fast dead TCP peers are noticed, and why connections end.

Usage: probe <command> [options]      probe <command> --help for the command's options
       probe --version                   version, commit, Boost and SQLite versions
       probe --simulate-crash [options]  kill a heartbeating client, measure how fast the
                                         server notices (same as probe run --fault crash)

Commands:
  run       inject a fault (crash, hang, cable pull, ...) and measure detection latency
  sweep     run a grid of keepalive and heartbeat settings; resumes when interrupted
  report    per fault and configuration: n, p50, p95, max, bound, failures; --plot
  bound     worst-case time to notice a dead peer with given keepalive settings,
            for an idle and for a busy connection, with the arithmetic shown
  tune      propose keepalive settings that notice a dead peer within a target time
  presets   list the named keepalive presets and why each exists
  explain   say what an error code (104, 10053, ECONNRESET) or a cause means
  connect   run a heartbeat client against a heartbeat-server: RTT and why it ended
  load      hold thousands of heartbeating clients (deadpeer or MQTT) against a server on
            this host: handshake rate, RTT, verdicts, the server's memory and CPU each
  speak     hold one connection to any TCP server as a client would (raw, text, MQTT,
            HTTP, Redis) and print what happens; the victim of target mode
  wrap      run a program you cannot rebuild with keepalive on its TCP sockets
            (LD_PRELOAD): probe wrap --keepalive 60s:10s:5 -- myserver
  doctor    diagnose this host's TCP connections: CLOSE_WAIT leaks, idle connections
            without keepalive (ghosts), silent peers, with the worst case to notice each
  qos       replay heartbeat traces through failure detectors: time to detect a crash
            against false verdicts per hour; tunes a detector on your own recorded links

Target mode (a server you did not write, e.g. an MQTT broker):
  probe run --fault cable-pull --target-cmd "mosquitto -c my.conf" --target-port 1883 \
            --greeting mqtt:keepalive=5s

Durations take a unit: 250ms, 1.5s, 30s, 5m, 2h.
Keepalive settings are written idle:interval:count[:user_timeout], e.g. 60s:10s:5.
Exit status: 0 done, 1 a negative answer (e.g. target cannot be met), 2 bad usage,
130 interrupted (Ctrl-C once: probe stops after cleaning up; twice: at once).
)";

}  // namespace

int main(int argc, char** argv) {
  const std::map<std::string, int (*)(const std::vector<std::string>&), std::less<>> commands{
      {"bound", probe::command_bound},     {"tune", probe::command_tune},
      {"presets", probe::command_presets}, {"explain", probe::command_explain},
      {"connect", probe::command_connect}, {"run", probe::command_run},
      {"sweep", probe::command_sweep},     {"report", probe::command_report},
      {"load", probe::command_load},       {"speak", probe::command_speak},
      {"wrap", probe::command_wrap},       {"doctor", probe::command_doctor},
      {"qos", probe::command_qos},
  };
  std::vector<std::string> args(argv + 1, argv + argc);
  // The experiment users run first: probe --simulate-crash [options] = probe run --fault crash.
  if (!args.empty() && args[0] == "--simulate-crash") {
    args[0] = "run";
    args.insert(args.begin() + 1, {"--fault", "crash"});
  }
  if (args.size() == 1 && args[0] == "--version") {
    std::cout << "probe " << DEADPEER_VERSION << "\n"
              << "commit " << DEADPEER_GIT_COMMIT << "\n"
              << "Boost " << BOOST_LIB_VERSION << "\n"
              << "SQLite " << sqlite3_libversion() << "\n";
    return probe::exit_ok;
  }
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << usage;
    return args.empty() ? probe::exit_usage : probe::exit_ok;
  }
  const auto command = commands.find(args[0]);
  try {
    if (command == commands.end())
      throw probe::usage_error("unknown command \"" + args[0] + "\" (see probe --help)");
    return command->second({args.begin() + 1, args.end()});
  } catch (const probe::usage_error& e) {
    std::cerr << "probe: " << e.what() << "\n";
    return probe::exit_usage;
  } catch (const deadpeer::config_error& e) {
    std::cerr << "probe: " << e.what() << "\n";
    return probe::exit_usage;
  } catch (const std::exception& e) {
    std::cerr << "probe: error: " << e.what() << "\n";
    return probe::exit_negative;
  }
}
