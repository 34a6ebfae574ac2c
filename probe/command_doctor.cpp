// probe doctor: the report of doctor.hpp as a table for people and JSON for monitoring.
// Exit 0 when nothing is found, 1 when something is (so a cron job or a check can alert).
#include "cli.hpp"
#include "doctor.hpp"

#include <deadpeer/json_text.hpp>
#include <deadpeer/duration.hpp>
#include <deadpeer/endpoint.hpp>
#include <deadpeer/keepalive.hpp>

#include <boost/json.hpp>

#include <signal.h>

#include <cerrno>
#include <iomanip>
#include <iostream>
#include <sstream>

namespace probe {
namespace {

namespace po = boost::program_options;
namespace json = boost::json;
using deadpeer::format_duration;

// "60s:10s:5", "60s:10s:5:30s" with a user timeout, "off".
std::string spec_of(const deadpeer::keepalive_settings& s) {
  auto options = deadpeer::to_options(s);
  if (s.user_timeout.count() == 0) options.user_timeout.reset();
  return deadpeer::to_string(options);
}

std::string keepalive_words(const doctor::coverage& c) {
  std::string words = spec_of(c.worst);
  if (!c.worst.enabled && c.worst.user_timeout.count() > 0)
    words += ", user timeout " + format_duration(c.worst.user_timeout);
  if (c.settings_read == 0) words += "*";
  return words;
}

std::string states_words(const std::map<std::string, int>& states) {
  std::string words;
  for (const auto& [name, count] : states)
    words += (words.empty() ? "" : " ") + name + " " + std::to_string(count);
  return words;
}

void print_table(const doctor::report& r, const doctor::host_snapshot& host,
                 const doctor::thresholds& limits) {
  const auto& d = host.defaults;
  std::cout << "doctor: " << r.sockets_seen << " TCP sockets in scope, " << r.groups.size()
            << " groups. System: keepalive " << d.idle.count() << "s:" << d.interval.count()
            << "s:" << d.count << " where enabled, tcp_retries2 " << d.retries2
            << " (a busy connection without a user timeout ends after "
            << describe_duration(deadpeer::compute_bound(deadpeer::keepalive_settings{}, d).busy)
            << "), tcp_fin_timeout " << host.fin_timeout.count() << "s.\n";
  std::cout << "Thresholds: idle over " << format_duration(limits.idle_over)
            << ", CLOSE_WAIT over " << format_duration(limits.close_wait_over) << ".\n\n";
  if (!r.groups.empty()) {
    std::cout << std::left << std::setw(8) << "PID" << std::setw(16) << "PROGRAM" << std::setw(26)
              << "WHERE" << std::setw(22) << "KEEPALIVE" << std::setw(22)
              << "NOTICED IDLE / BUSY" << "STATES\n";
    bool assumed = false;
    for (const auto& g : r.groups) {
      assumed = assumed || g.keepalive.settings_read == 0;
      const auto& b = g.keepalive.bound;
      std::cout << std::left << std::setw(8) << (g.process.pid == 0 ? "?" : std::to_string(g.process.pid))
                << std::setw(16) << g.process.program.substr(0, 15) << std::setw(26)
                << g.where.describe() << std::setw(22) << keepalive_words(g.keepalive)
                << std::setw(22)
                << ((b.idle ? format_duration(*b.idle) : std::string("never")) + " / " +
                    format_duration(b.busy) + (g.keepalive.user_timeout_known ? "" : "?"))
                << states_words(g.states) << "\n";
    }
    if (assumed) {
      std::cout << "* options not readable from the sockets: keepalive as the kernel's timers "
                   "show it, with the system's values; ? a user timeout would shorten it.";
      if (!host.settings_unreadable.empty()) std::cout << " (" << host.settings_unreadable << ")";
      std::cout << "\n";
    }
    std::cout << "\n";
  }
  const auto& t = r.closing;
  std::cout << "Teardown: TIME_WAIT " << t.time_wait;
  if (t.time_wait > 0)
    std::cout << " (most toward " << t.busiest_destination << ": " << t.busiest_destination_time_wait
              << " of " << t.port_range_size << " local ports)";
  std::cout << ", FIN_WAIT2 " << t.fin_wait2_orphaned << " orphaned (gone within tcp_fin_timeout "
            << host.fin_timeout.count() << "s) and " << t.fin_wait2_held
            << " held by a process, FIN_WAIT1 " << t.fin_wait1 << ", LAST_ACK " << t.last_ack
            << ", CLOSING " << t.closing << ".\n\n";
  if (r.findings.empty()) {
    std::cout << "No findings: no CLOSE_WAIT leak, no idle connection without keepalive, no "
                 "peer silent while we send.\n";
    return;
  }
  std::cout << r.findings.size() << (r.findings.size() == 1 ? " finding:\n" : " findings:\n");
  int n = 0;
  for (const auto& f : r.findings) {
    std::ostringstream bullet;
    bullet << ++n << ". ";
    write_wrapped(std::cout, "[" + std::string(doctor::to_string(f.kind)) + "] " + f.verdict, "",
                  bullet.str());
    write_wrapped(std::cout, "what to do: " + f.advice, std::string(bullet.str().size(), ' '));
  }
}

json::value bound_json(const doctor::coverage& c) {
  json::object o;
  o["idle_ms"] = c.bound.idle ? json::value(c.bound.idle->count()) : json::value(nullptr);
  o["busy_ms"] = c.bound.busy.count();
  o["idle_arithmetic"] = c.bound.idle_arithmetic;
  o["busy_arithmetic"] = c.bound.busy_arithmetic;
  return o;
}

json::value report_json(const doctor::report& r, const doctor::host_snapshot& host,
                        const doctor::thresholds& limits) {
  json::object system;
  system["keepalive_time_s"] = host.defaults.idle.count();
  system["keepalive_intvl_s"] = host.defaults.interval.count();
  system["keepalive_probes"] = host.defaults.count;
  system["tcp_retries2"] = host.defaults.retries2;
  system["tcp_fin_timeout_s"] = host.fin_timeout.count();
  system["ip_local_port_range"] = json::array{host.port_range_first, host.port_range_last};
  system["options_unreadable"] = host.settings_unreadable;
  json::array groups;
  for (const auto& g : r.groups) {
    json::object o;
    o["pid"] = g.process.pid;
    o["program"] = g.process.program;
    if (g.where.listening_port) o["listening_port"] = *g.where.listening_port;
    if (g.where.remote) o["remote"] = deadpeer::format_endpoint(*g.where.remote);
    o["where"] = g.where.describe();
    json::object states;
    for (const auto& [name, count] : g.states) states[name] = count;
    o["states"] = std::move(states);
    json::object k;
    k["sockets"] = g.keepalive.sockets;
    k["options_read"] = g.keepalive.settings_read;
    k["keepalive_on"] = g.keepalive.keepalive_on;
    k["keepalive_off"] = g.keepalive.keepalive_off;
    k["worst"] = spec_of(g.keepalive.worst);
    k["user_timeout_ms"] = g.keepalive.worst.user_timeout.count();
    k["user_timeout_known"] = g.keepalive.user_timeout_known;
    k["basis"] = g.keepalive.basis;
    k["bound"] = bound_json(g.keepalive);
    o["keepalive"] = std::move(k);
    groups.push_back(std::move(o));
  }
  json::array findings;
  for (const auto& f : r.findings)
    findings.push_back(json::object{{"kind", doctor::to_string(f.kind)},
                                    {"pid", f.process.pid},
                                    {"program", f.process.program},
                                    {"where", f.where},
                                    {"count", f.count},
                                    {"worst_ms", f.worst.count()},
                                    {"verdict", f.verdict},
                                    {"advice", f.advice}});
  const auto& t = r.closing;
  return json::object{
      {"sockets_in_scope", r.sockets_seen},
      {"thresholds", json::object{{"idle_over_ms", limits.idle_over.count()},
                                  {"close_wait_over_ms", limits.close_wait_over.count()}}},
      {"system", std::move(system)},
      {"groups", std::move(groups)},
      {"teardown", json::object{{"time_wait", t.time_wait},
                                {"busiest_destination", t.busiest_destination},
                                {"busiest_destination_time_wait", t.busiest_destination_time_wait},
                                {"port_range_size", t.port_range_size},
                                {"fin_wait2_orphaned", t.fin_wait2_orphaned},
                                {"fin_wait2_held", t.fin_wait2_held},
                                {"fin_wait1", t.fin_wait1},
                                {"last_ack", t.last_ack},
                                {"closing", t.closing}}},
      {"findings", std::move(findings)},
  };
}

std::chrono::milliseconds duration_option(const po::variables_map& vm, const char* name) {
  const auto text = vm[name].as<std::string>();
  const auto d = deadpeer::parse_duration(text);
  if (d.count() < 0) throw usage_error(std::string("--") + name + " " + text + " is negative");
  return d;
}

}  // namespace

int command_doctor(const std::vector<std::string>& args) {
  po::options_description options("Options");
  options.add_options()  //
      ("pid", po::value<int>()->value_name("PID"), "only the sockets of this process")  //
      ("port", po::value<unsigned short>()->value_name("PORT"),
       "only sockets whose local or remote port is PORT")  //
      ("all", "every TCP socket of this network namespace (the default)")  //
      ("idle-over", po::value<std::string>()->value_name("DURATION")->default_value("10m"),
       "an ESTABLISHED socket without keepalive silent this long is a ghost candidate")  //
      ("close-wait-over", po::value<std::string>()->value_name("DURATION")->default_value("1m"),
       "a CLOSE_WAIT socket with no data for this long is a leak, not a close under way")  //
      ("json", "print the report as JSON");
  po::variables_map vm;
  if (!parse_command_line(
          args, options, {},
          "Usage: probe doctor [--pid PID | --port PORT | --all] [--idle-over 10m] [--json]\n\n"
          "Diagnoses the TCP connections on this host, of programs you did not write too: per\n"
          "process and listening port (or remote endpoint), the states, the keepalive and user\n"
          "timeout in force (read from the sockets where the kernel allows: as root or as\n"
          "their user), the worst-case time to notice a dead peer, and findings in plain\n"
          "words: CLOSE_WAIT leaks, idle connections nothing will ever check (ghosts), peers\n"
          "silent while data waits for an ACK, half-closed sockets, TIME_WAIT eating local\n"
          "ports. Reads only. Sees the network namespace it runs in (use ip netns exec or\n"
          "nsenter -n for a container's).\n"
          "Exit status: 0 no findings, 1 findings, 2 bad usage.",
          vm, std::cout))
    return exit_ok;

  doctor::scope only;
  if (vm.count("all") != 0 && (vm.count("pid") != 0 || vm.count("port") != 0))
    throw usage_error("--all looks at every socket; give it alone, or --pid / --port to narrow");
  if (vm.count("pid") != 0) {
    const int pid = vm["pid"].as<int>();
    if (pid <= 0) throw usage_error("--pid " + std::to_string(pid) + " is not a process ID");
    if (::kill(pid, 0) != 0 && errno == ESRCH)
      throw usage_error("--pid " + std::to_string(pid) + ": no such process");
    only.pid = pid;
  }
  if (vm.count("port") != 0) {
    only.port = vm["port"].as<unsigned short>();
    if (*only.port == 0) throw usage_error("--port 0 is not a TCP port");
  }
  doctor::thresholds limits;
  limits.idle_over = duration_option(vm, "idle-over");
  limits.close_wait_over = duration_option(vm, "close-wait-over");

  const auto host = doctor::scan(only);
  const auto report = doctor::diagnose(host, only, limits);
  if (vm.count("json") != 0)
    std::cout << deadpeer::json_text(report_json(report, host, limits)) << "\n";
  else
    print_table(report, host, limits);
  return report.findings.empty() ? exit_ok : exit_negative;
}

}  // namespace probe
