// probe run / probe --simulate-crash / probe sweep: the experiments, from the command
// line. Options shared by run and sweep are described once here.
#include "cli.hpp"
#include "connect_faults.hpp"
#include "experiment.hpp"
#include "greeting.hpp"
#include "http_client.hpp"
#include "lab.hpp"
#include "noise_faults.hpp"
#include "teardown_faults.hpp"

#include <deadpeer/json_text.hpp>
#include <deadpeer/config_error.hpp>
#include <deadpeer/duration.hpp>
#include <deadpeer/endpoint.hpp>

#include <boost/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <tuple>

namespace probe {
namespace {

namespace po = boost::program_options;
namespace json = boost::json;
using std::chrono::milliseconds;

std::string fault_help() {
  std::string text = "fault to inject:";
  for (const auto& f : fault_kinds())
    text += "\n  " + std::string(f.name) + ": " + std::string(f.description) +
            (f.needs_lab ? " [network namespaces: root, or an unprivileged user namespace]" : "");
  return text;
}

void add_experiment_options(po::options_description& o, bool sweep) {
  o.add_options()  //
      ("fault,f", po::value<std::string>()->default_value("crash")->value_name("FAULT"),
       fault_help().c_str())  //
      ("trials,n", po::value<int>()->default_value(5)->value_name("N"),
       "trials per configuration (1..1000)")  //
      ("heartbeat",
       po::value<std::string>()->default_value("500ms")->value_name(sweep ? "LIST"
                                                                          : "INTERVAL|off"),
       sweep ? "heartbeat intervals to try, comma-separated, e.g. off,500ms"
             : "heartbeat interval, or off for kernel detection only")  //
      ("keepalive,k", po::value<std::string>()->value_name(sweep ? "LIST" : "SPEC"),
       sweep ? "keepalive specs to try, comma-separated, e.g. 1s:1s:3,2s:1s:5"
             : "kernel keepalive on the server's sockets, idle:interval:count[:user_timeout]")  //
      ("user-timeout,u", po::value<std::string>()->value_name("DURATION"),
       "TCP_USER_TIMEOUT on the server's sockets")  //
      ("detector", po::value<std::string>()->default_value("fixed")->value_name("fixed|phi|adaptive"),
       "failure detector on the server (heartbeat-server's own default is adaptive; the lab's "
       "is fixed, whose bound is exact)")  //
      ("dead-after", po::value<std::string>()->value_name(sweep ? "LIST" : "DURATION"),
       sweep ? "fixed detector: silences that mean dead to try, comma-separated, e.g. "
               "250ms,500ms,1s (default: 3 x heartbeat)"
             : "fixed detector: silence that means dead (default: 3 x heartbeat)")  //
      ("phi-threshold", po::value<double>()->default_value(8.0)->value_name("X"),
       "phi detector threshold")  //
      ("server", po::value<std::string>()->value_name("HOST:PORT"),
       "measure an already running heartbeat-server (its control API on PORT+1 unless "
       "--control-port); default: an embedded server on 127.0.0.1 with ephemeral ports and a "
       "temporary database")  //
      ("control-port", po::value<unsigned short>()->value_name("PORT"),
       "control API port of --server")  //
      ("limit", po::value<std::string>()->value_name("DURATION"),
       "give up on a trial after this long (default: 3 x bound + 10s, at most 5m)")  //
      ("db", po::value<std::string>()->default_value("results.db")->value_name("FILE"),
       "SQLite file the runs and trials are added to")  //
      ("json", "print the trials as JSON on stdout (progress goes to stderr)");
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ','))
    if (!item.empty()) items.push_back(item);
  if (items.empty()) throw usage_error("empty list \"" + text + "\"");
  return items;
}

// A sweep list that names one setting twice would run its configuration twice under one
// label: refused, comparing the settings as parsed ("1s" and "1000ms" are the same).
template <class Key>
void refuse_duplicates(const char* option, const std::vector<std::string>& items, Key key) {
  std::vector<std::pair<std::string, std::string>> seen;  // (parsed, as written)
  for (const auto& item : items) {
    const std::string k = key(item);
    for (const auto& [other_key, other] : seen) {
      if (other_key != k) continue;
      const auto what = other == item ? "\"" + item + "\" twice"
                                      : "\"" + other + "\" and \"" + item + "\", the same setting";
      throw usage_error(std::string("--") + option + " lists " + what +
                        ": each configuration is run once; drop the duplicate");
    }
    seen.emplace_back(k, item);
  }
}

std::optional<milliseconds> parse_heartbeat(const std::string& text) {
  if (text == "off") return std::nullopt;
  const auto d = deadpeer::parse_duration(text);
  if (d < milliseconds(10))
    throw usage_error("--heartbeat " + text + ": below 10ms (write off to disable heartbeats)");
  return d;
}

// The detector's options only mean something when heartbeats run (`all_off`: none does).
void refuse_detector_without_heartbeat(const po::variables_map& vm, bool all_off) {
  if (!all_off) return;
  for (const char* name : {"detector", "dead-after", "phi-threshold"})
    if (vm.count(name) != 0 && !vm[name].defaulted())
      throw usage_error(std::string("--") + name +
                        " sets the heartbeat's failure detector, but --heartbeat off runs no "
                        "heartbeat (only the kernel notices): drop one of the two");
}

std::chrono::milliseconds parse_dead_after(const std::string& text) {
  const auto d = deadpeer::parse_duration(text);
  if (d.count() == 0) throw usage_error("--dead-after must be positive");
  return d;
}

// Fills everything except the listed (sweep) dimensions.
experiment_config base_config(const po::variables_map& vm, bool sweep = false) {
  experiment_config c;
  c.fault = vm["fault"].as<std::string>();
  (void)find_fault(c.fault);
  c.trials = vm["trials"].as<int>();
  if (c.trials < 1 || c.trials > 1000)
    throw usage_error("--trials " + std::to_string(c.trials) + " is outside 1..1000");
  if (vm.count("control-port") != 0 && vm.count("server") == 0)
    throw usage_error("--control-port is the control API port of an external server: give "
                      "--server HOST:PORT too, or drop it (the embedded server's ports are "
                      "its own)");
  c.detector = vm["detector"].as<std::string>();
  if (c.detector != "fixed" && c.detector != "phi" && c.detector != "adaptive")
    throw usage_error("--detector \"" + c.detector + "\": expected fixed, phi or adaptive");
  if (c.detector != "fixed" && vm.count("dead-after") != 0)
    throw usage_error("--dead-after sets the fixed detector's silence; it does not apply to --detector " +
                      c.detector);
  if (vm.count("dead-after") != 0 && !sweep)  // a sweep takes a list (command_sweep)
    c.dead_after = parse_dead_after(vm["dead-after"].as<std::string>());
  c.phi_threshold = vm["phi-threshold"].as<double>();
  if (!(c.phi_threshold > 0) || !std::isfinite(c.phi_threshold))
    throw usage_error("--phi-threshold must be a positive number");
  if (vm.count("user-timeout") != 0)
    c.user_timeout = deadpeer::parse_duration(vm["user-timeout"].as<std::string>());
  if (vm.count("server") != 0) c.server = deadpeer::parse_endpoint(vm["server"].as<std::string>());
  if (vm.count("control-port") != 0)
    c.server_control_port = vm["control-port"].as<unsigned short>();
  if (vm.count("limit") != 0) {
    c.limit = deadpeer::parse_duration(vm["limit"].as<std::string>());
    if (*c.limit <= milliseconds(0))
      throw usage_error("--limit " + vm["limit"].as<std::string>() +
                        ": expected a positive duration (leave it out for 3 x bound + 10s, at "
                        "most 5m)");
  }
  c.db = vm["db"].as<std::string>();
  c.json = vm.count("json") != 0;
  return c;
}

std::string describe_latency(double ms) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(ms < 10 ? 2 : ms < 1000 ? 1 : 0) << ms << " ms";
  return out.str();
}

json::object trial_json(const experiment_config& c, const trial_result& r) {
  json::object o;
  o["fault"] = c.fault;
  o["config"] = c.config_key();
  o["trial"] = r.trial;
  o["outcome"] = r.outcome;
  o["latency_ms"] = r.latency_ms;
  const auto bound = c.bound();
  o["bound_ms"] = bound ? bound->count() : -1;
  o["detected_by"] = r.detected_by;
  o["cause"] = r.cause;
  o["errno"] = r.error_name;
  o["note"] = r.note;
  if (!r.details.empty()) o["details"] = json::parse(r.details);
  return o;
}

std::string command_line(const std::string& command, const std::vector<std::string>& args) {
  std::string text = "probe " + command;
  for (const auto& a : args)
    text += " " + a;
  return text;
}

json::object config_json(const po::variables_map& vm) {
  json::object o;
  for (const auto& [key, value] : vm) {
    if (const auto* s = boost::any_cast<std::string>(&value.value()))
      o[key] = *s;
    else if (const auto* i = boost::any_cast<int>(&value.value()))
      o[key] = *i;
    else if (const auto* d = boost::any_cast<double>(&value.value()))
      o[key] = *d;
    else if (const auto* p = boost::any_cast<unsigned short>(&value.value()))
      o[key] = *p;
    else
      o[key] = true;
  }
  return o;
}

void print_next_steps(const experiment_config& c, std::int64_t run_id) {
  std::ostream& out = c.json ? std::cerr : std::cout;
  out << "\nresults: " << c.db << " (run " << run_id << "; probe report --db " << c.db
      << " shows every run)\n";
  if (c.fault == "crash")
    out << "next: a silent death, which only timers can notice:\n"
           "  probe run --fault cable-pull --keepalive 1s:1s:3 --heartbeat off\n"
           "  probe run --fault hang --heartbeat 200ms --dead-after 600ms\n";
}

// An external heartbeat-server's kernel keepalive is its own: read it from /status, so
// trials are labelled (and bounded) with the settings actually in force.
void adopt_server_keepalive(experiment_config& c, bool user_gave_keepalive) {
  if (!c.server) return;
  const auto host = c.server->address().to_string();
  const auto port =
      c.server_control_port.value_or(static_cast<unsigned short>(c.server->port() + 1));
  http_response r;
  try {
    r = http_get(host, port, "/status", std::chrono::seconds(5));
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("cannot read the server's settings: ") + e.what() +
                             " (give its control API with --control-port)");
  }
  if (r.status != 200)
    throw std::runtime_error("the server's /status answered " + std::to_string(r.status));
  const auto status = json::parse(r.body).as_object();
  const auto* spec = status.if_contains("keepalive");
  if (spec == nullptr || !spec->is_string()) return;
  const std::string text(spec->as_string());
  std::optional<deadpeer::keepalive_options> in_force;
  if (text != "system default") in_force = deadpeer::parse_keepalive(text);
  if (user_gave_keepalive && (in_force ? deadpeer::to_string(*in_force) : "system") !=
                                 (c.keepalive ? deadpeer::to_string(*c.keepalive) : "system"))
    throw usage_error("the server at " + host + ":" + std::to_string(c.server->port()) +
                      " runs keepalive " + text +
                      "; --keepalive cannot change an external server's settings: drop it");
  if (c.user_timeout)
    throw usage_error("--user-timeout cannot change an external server's settings (it runs " +
                      text + "): drop it");
  c.keepalive = in_force;  // its user timeout, if any, is part of the spec
}

// early-reject: how the server closes after answering an upload early.
void add_early_reject_options(po::options_description& o, bool sweep) {
  o.add_options()  //
      ("server-close", po::value<std::string>()->value_name(sweep ? "LIST" : "naive|graceful"),
       sweep ? "--fault early-reject: the server's closes to try, comma-separated (default: "
               "naive,graceful)"
             : "--fault early-reject: naive closes right after the answer with the body unread "
               "(its kernel sends RST); graceful shuts down its sending side (FIN), reads and "
               "discards the rest until the client's EOF (at most 5s), then closes (default: "
               "naive)");
}

std::vector<std::string> server_close_from(const po::variables_map& vm, const std::string& fault,
                                           bool sweep) {
  if (vm.count("server-close") == 0)
    return fault == "early-reject" && sweep ? std::vector<std::string>{"naive", "graceful"}
                                            : std::vector<std::string>{"naive"};
  if (fault != "early-reject") throw usage_error("--server-close goes with --fault early-reject");
  const auto& text = vm["server-close"].as<std::string>();
  const auto modes = sweep ? split_list(text) : std::vector<std::string>{text};
  for (const auto& m : modes)
    if (m != "naive" && m != "graceful")
      throw usage_error("--server-close \"" + m + "\": expected naive or graceful");
  refuse_duplicates("server-close", modes, [](const std::string& m) { return m; });
  return modes;
}

// syn-drop, synack-drop, backlog-full: the victim's SYN retries (connect_faults.hpp).
void add_connect_options(po::options_description& o) {
  o.add_options()  //
      ("syn-retries", po::value<int>()->default_value(3)->value_name("N"),
       "syn-drop, synack-drop, backlog-full: net.ipv4.tcp_syn_retries in the victim's network "
       "namespace (1..127; the host's own setting is untouched). With this kernel's "
       "tcp_syn_linear_timeouts 4, 1 fails after about 3s, 2 after 7s, 3 after 19s");
}

int syn_retries_from(const po::variables_map& vm, const std::string& fault) {
  const int n = vm["syn-retries"].as<int>();
  if (!vm["syn-retries"].defaulted() && !is_connect_fault(fault))
    throw usage_error("--syn-retries goes with --fault syn-drop, synack-drop or backlog-full");
  if (n < 1 || n > 127) throw usage_error("--syn-retries " + std::to_string(n) + " is outside 1..127");
  return n;
}

// fin-drop, fin-wait2, time-wait: the teardown sysctls of the server namespace
// (teardown_faults.hpp).
void add_teardown_options(po::options_description& o) {
  o.add_options()  //
      ("orphan-retries", po::value<int>()->default_value(2)->value_name("N"),
       "fin-drop: net.ipv4.tcp_orphan_retries in the server's network namespace (0..8; 0 is "
       "the kernel's 8, about 105s a trial; 2 ends the orphan after about 3.3s)")  //
      ("fin-timeout", po::value<std::string>()->default_value("2s")->value_name("DURATION"),
       "fin-wait2: net.ipv4.tcp_fin_timeout in the server's network namespace (whole seconds, "
       "1s..120s; Linux's default is 60s). 2s sits on the timer wheel's 32ms grid at HZ 250, "
       "3s..16s on its 256ms grid");
}

void teardown_from(const po::variables_map& vm, experiment_config& c) {
  const bool teardown = is_teardown_fault(c.fault);
  if (!vm["orphan-retries"].defaulted() && c.fault != "fin-drop")
    throw usage_error("--orphan-retries goes with --fault fin-drop");
  if (!vm["fin-timeout"].defaulted() && c.fault != "fin-wait2")
    throw usage_error("--fin-timeout goes with --fault fin-wait2");
  c.orphan_retries = vm["orphan-retries"].as<int>();
  c.fin_timeout = deadpeer::parse_duration(vm["fin-timeout"].as<std::string>());
  if (!teardown) return;
  if (c.orphan_retries < 0 || c.orphan_retries > 8)
    throw usage_error("--orphan-retries " + std::to_string(c.orphan_retries) + " is outside 0..8");
  if (c.fin_timeout < milliseconds(1000) || c.fin_timeout > milliseconds(120'000) ||
      c.fin_timeout.count() % 1000 != 0)
    throw usage_error("--fin-timeout must be whole seconds within 1s..120s");
}

// Target mode: a server probe did not write.
void add_target_options(po::options_description& o) {
  o.add_options()  //
      ("target-cmd", po::value<std::string>()->value_name("COMMAND"),
       "measure this server instead of deadpeer's: probe starts COMMAND (sh -c) inside the "
       "lab's server namespace, waits for --target-port, and stops it at the end; every fault "
       "applies")  //
      ("target-port", po::value<unsigned short>()->value_name("PORT"),
       "the port --target-cmd listens on")  //
      ("target", po::value<std::string>()->value_name("HOST:PORT"),
       "measure a server already listening on a loopback address (crash and hang only: network "
       "faults need the server inside the lab, use --target-cmd)")  //
      ("target-side", po::value<std::string>()->default_value("server")->value_name("server|client"),
       "client: --target-cmd is a client program, run in the lab's victim namespace against "
       "probe's own answering server on --target-port ({host} and {port} in the command are "
       "replaced); the faults cut its server's path (cable-pull, link-down) or hang it")  //
      ("greeting", po::value<std::string>()->default_value("raw")->value_name("SPEC"),
       "what the victim says to the target before the fault: raw (connect only), send:TEXT, "
       "mqtt:keepalive=D, http[:interval=D], redis[:interval=D] (probe speak --help)");
}

std::optional<target_settings> target_from(const po::variables_map& vm) {
  const bool by_command = vm.count("target-cmd") != 0, by_address = vm.count("target") != 0;
  const auto side = vm["target-side"].as<std::string>();
  if (side != "server" && side != "client")
    throw usage_error("--target-side \"" + side + "\": expected server or client");
  if (!by_command && !by_address) {
    if (vm.count("target-port") != 0) throw usage_error("--target-port goes with --target-cmd");
    if (side != "server") throw usage_error("--target-side goes with --target-cmd");
    if (!vm["greeting"].defaulted()) throw usage_error("--greeting goes with --target-cmd or --target");
    return std::nullopt;
  }
  if (by_command && by_address)
    throw usage_error("give --target-cmd (probe starts the server) or --target (it already "
                      "listens), not both");
  if (vm.count("server") != 0)
    throw usage_error("--server is deadpeer's heartbeat-server; for another server use "
                      "--target-cmd or --target alone");
  for (const char* deadpeer_only : {"keepalive", "user-timeout", "dead-after", "control-port"})
    if (vm.count(deadpeer_only) != 0)
      throw usage_error(std::string("--") + deadpeer_only +
                        " sets deadpeer's server; a target keeps its own settings, which is "
                        "what target mode measures");
  if (!vm["heartbeat"].defaulted() || !vm["detector"].defaulted())
    throw usage_error("--heartbeat and --detector set deadpeer's protocol; a target speaks "
                      "its own (choose it with --greeting)");
  target_settings t;
  t.client_side = side == "client";
  if (t.client_side && by_address)
    throw usage_error("--target-side client starts the client: give its command with --target-cmd");
  t.greeting = vm["greeting"].as<std::string>();
  (void)greeting::parse(t.greeting);
  if (by_command) {
    t.command = vm["target-cmd"].as<std::string>();
    if (t.command.find_first_not_of(" \t") == std::string::npos)
      throw usage_error("--target-cmd is empty");
    if (vm.count("target-port") == 0 || vm["target-port"].as<unsigned short>() == 0)
      throw usage_error(t.client_side ? "--target-side client needs --target-port PORT (where "
                                        "probe's answering server listens for the client)"
                                      : "--target-cmd needs --target-port PORT (where the command "
                                        "listens)");
    t.port = vm["target-port"].as<unsigned short>();
  } else {
    if (vm.count("target-port") != 0)
      throw usage_error("--target HOST:PORT already names the port; drop --target-port");
    t.address = deadpeer::parse_endpoint(vm["target"].as<std::string>());
    if (!t.address->address().is_loopback())
      throw usage_error("--target " + vm["target"].as<std::string>() +
                        ": probe sends its faults' traffic to loopback only (127.0.0.0/8, ::1); "
                        "for another server use --target-cmd, which runs it inside the lab");
  }
  return t;
}

// lossy and stall: the noise, and how long each trial lives under it.
void add_noise_options(po::options_description& o, bool sweep) {
  o.add_options()  //
      ("duration", po::value<std::string>()->default_value("10s")->value_name("DURATION"),
       "lossy, stall: how long each trial runs; a verdict within it is false (1s..24h)")  //
      ("loss",
       po::value<std::string>()->default_value("5%")->value_name(sweep ? "LIST" : "PERCENT"),
       sweep ? "lossy: loss rates to try, comma-separated, e.g. 1%,5%,30%"
             : "lossy: chance that each packet to or from the victim is dropped, each way and "
               "each packet on its own (nftables numgen; steps of 0.01%)")  //
      ("pause", po::value<std::string>()->default_value("200ms..2s")->value_name("MIN..MAX"),
       "stall: how long each pause (SIGSTOP to SIGCONT) lasts, log-uniform between MIN and MAX: "
       "many short ones, a few long ones, as a garbage collector's")  //
      ("pause-gap", po::value<std::string>()->default_value("2s")->value_name("DURATION"),
       "stall: mean time from the end of one pause to the start of the next (exponential, at "
       "least one heartbeat interval)")  //
      ("seed", po::value<std::uint64_t>()->default_value(1)->value_name("N"),
       "stall: seed of the pause schedule; the same seed pauses every trial the same way");
}

// Applies the noise options to `c` (refused with faults they do not fit); returns the loss
// rates, in basis points (a list in a sweep).
std::vector<int> noise_from(const po::variables_map& vm, experiment_config& c, bool sweep) {
  const bool lossy = c.fault == "lossy", stall = c.fault == "stall";
  auto given = [&](const char* name) { return vm.count(name) != 0 && !vm[name].defaulted(); };
  for (const auto& [name, fits] : std::vector<std::pair<const char*, bool>>{
           {"duration", lossy || stall}, {"loss", lossy}, {"pause", stall},
           {"pause-gap", stall}, {"seed", stall}})
    if (given(name) && !fits)
      throw usage_error(std::string("--") + name + " goes with --fault " +
                        (std::string_view(name) == "duration" ? "lossy or stall"
                         : std::string_view(name) == "loss" ? "lossy"
                                                            : "stall"));
  c.duration = deadpeer::parse_duration(vm["duration"].as<std::string>());
  if (c.duration < std::chrono::seconds(1) || c.duration > std::chrono::hours(24))
    throw usage_error("--duration " + vm["duration"].as<std::string>() + " is outside 1s..24h");
  std::tie(c.pause_min, c.pause_max) = noise::parse_pause_range(vm["pause"].as<std::string>());
  c.pause_gap = deadpeer::parse_duration(vm["pause-gap"].as<std::string>());
  if (c.pause_gap.count() <= 0) throw usage_error("--pause-gap must be positive");
  c.seed = vm["seed"].as<std::uint64_t>();
  const auto& loss = vm["loss"].as<std::string>();
  std::vector<int> rates;
  const auto items = sweep ? split_list(loss) : std::vector<std::string>{loss};
  for (const auto& item : items)
    rates.push_back(noise::parse_loss(item));
  refuse_duplicates("loss", items, [](const std::string& item) {
    return std::to_string(noise::parse_loss(item));
  });
  c.loss_basis_points = rates.front();
  return rates;
}

}  // namespace

int command_run(const std::vector<std::string>& args) {
  po::options_description options("Options (durations take a unit: 250ms, 1.5s, 30s)");
  add_experiment_options(options, false);
  po::options_description target_options(
      "Target mode: how long a server you did not write holds a dead client");
  add_target_options(target_options);
  options.add(target_options);
  po::options_description connect_options("syn-drop, synack-drop, backlog-full: connect() that is never answered");
  add_connect_options(connect_options);
  options.add(connect_options);
  po::options_description teardown_options(
      "fin-drop, fin-wait2, time-wait: how long a close the peer never finishes lingers");
  add_teardown_options(teardown_options);
  options.add(teardown_options);
  po::options_description reject_options(
      "early-reject: an upload answered early, and what the client reads");
  add_early_reject_options(reject_options, false);
  options.add(reject_options);
  po::options_description noise_options("lossy and stall: false verdicts on a live peer");
  add_noise_options(noise_options, false);
  options.add(noise_options);
  po::variables_map vm;
  if (!parse_command_line(args, options, {},
                          "Usage: probe run [--fault crash] [--trials 5] [--heartbeat 500ms] "
                          "[--keepalive SPEC] ...\n       probe --simulate-crash [options]\n\n"
                          "Injects a real fault into a heartbeating victim process, measures how "
                          "long the\nserver takes to notice, against the bound the settings "
                          "promise, and stores\nevery trial in --db. Faults are injected right "
                          "after a heartbeat exchange, so\nthe latency is the full detection "
                          "time.",
                          vm, std::cout))
    return exit_ok;
  auto config = base_config(vm);
  config.target = target_from(vm);
  config.syn_retries = syn_retries_from(vm, config.fault);
  teardown_from(vm, config);
  config.server_close = server_close_from(vm, config.fault, false).front();
  (void)noise_from(vm, config, false);
  config.heartbeat = parse_heartbeat(vm["heartbeat"].as<std::string>());
  refuse_detector_without_heartbeat(vm, !config.heartbeat);
  if (vm.count("keepalive") != 0)
    config.keepalive = deadpeer::parse_keepalive(vm["keepalive"].as<std::string>());
  adopt_server_keepalive(config, vm.count("keepalive") != 0);
  if (config.fault == "hang" || config.fault == "crash-rst")
    if (config.heartbeat && config.effective_dead_after() <= *config.heartbeat)
      throw usage_error("--dead-after must be longer than the heartbeat interval");

  if ((find_fault(config.fault).needs_lab || (config.target && !config.target->command.empty())) &&
      lab::unavailable_reason())
    run_again_in_user_namespace("run", args);
  install_interrupt_handler();
  std::ostream& progress_out = config.json ? std::cerr : std::cout;
  const auto bound = config.bound();
  progress_out << config.fault << ": " << config.trials << " trials, " << config.config_key()
               << ", bound "
               << (bound ? deadpeer::format_duration(*bound)
                         : config.target ? "none (the target's own settings are what is measured)"
                                         : "none")
               << (config.target ? ", limit " + deadpeer::format_duration(config.hard_limit()) : "")
               << std::endl;  // before the first trial, even when stdout is a pipe
  const auto run_id =
      begin_run(config.db, command_line("run", args), deadpeer::json_text(config_json(vm)));
  json::array out;
  const auto results =
      run_experiment(config, run_id, 1, [&](const experiment_config& c, const trial_result& r) {
        progress_out << "  trial " << r.trial << "/" << c.trials << ": " << r.outcome;
        if (r.latency_ms >= 0)
          progress_out << " after " << describe_latency(r.latency_ms) << " (" << r.detected_by
                       << ", " << r.cause << (r.error_name.empty() ? "" : ", " + r.error_name)
                       << ")";
        if (const auto b = c.bound();
            r.outcome == "detected" && b && r.latency_ms > static_cast<double>(b->count()))
          progress_out << " OVER ITS BOUND of " << deadpeer::format_duration(*b);
        if (!r.note.empty()) progress_out << " — " << r.note;
        progress_out << std::endl;
        out.push_back(trial_json(c, r));
      });
  if (config.json) {
    std::cout << deadpeer::json_text(out) << std::endl;
  } else {
    std::cout << "\n";
    (void)command_report({"--db", config.db, "--run", std::to_string(run_id)});
  }
  print_next_steps(config, run_id);
  if (interrupted()) {
    std::cerr << "probe: interrupted; the trials finished before it are stored (an interrupted "
                 "trial is stored as interrupted and is not a failure). probe sweep with the "
                 "same options resumes where a run stopped.\n";
    return exit_interrupted;
  }
  for (const auto& r : results)
    if (r.outcome != "detected" && r.outcome != "observed" && r.outcome != "survived")
      return exit_negative;
  return exit_ok;
}

int command_sweep(const std::vector<std::string>& args) {
  po::options_description options("Options (durations take a unit: 250ms, 1.5s, 30s)");
  add_experiment_options(options, true);
  po::options_description reject_options(
      "early-reject: an upload answered early, and what the client reads");
  add_early_reject_options(reject_options, true);
  options.add(reject_options);
  po::options_description noise_options("lossy and stall: false verdicts on a live peer");
  add_noise_options(noise_options, true);
  options.add(noise_options);
  po::options_description connect_options("syn-drop, synack-drop, backlog-full: connect() that is never answered");
  add_connect_options(connect_options);
  options.add(connect_options);
  po::options_description teardown_options(
      "fin-drop, fin-wait2, time-wait: how long a close the peer never finishes lingers");
  add_teardown_options(teardown_options);
  options.add(teardown_options);
  po::variables_map vm;
  if (!parse_command_line(args, options, {},
                          "Usage: probe sweep --fault cable-pull --keepalive 1s:1s:3,2s:1s:5 "
                          "--heartbeat off,500ms --trials 5\n\n"
                          "Runs every combination of the listed keepalive specs and heartbeat "
                          "intervals.\nConfigurations whose trials are already in --db are "
                          "skipped, so an interrupted\nsweep resumes where it stopped.",
                          vm, std::cout))
    return exit_ok;
  auto base = base_config(vm, true);
  base.syn_retries = syn_retries_from(vm, base.fault);
  teardown_from(vm, base);
  const auto loss_rates = noise_from(vm, base, true);
  std::vector<std::optional<deadpeer::keepalive_options>> keepalives{std::nullopt};
  if (vm.count("keepalive") != 0) {
    keepalives.clear();
    const auto specs = split_list(vm["keepalive"].as<std::string>());
    for (const auto& spec : specs)
      keepalives.push_back(deadpeer::parse_keepalive(spec));
    refuse_duplicates("keepalive", specs, [](const std::string& spec) {
      return deadpeer::to_string(deadpeer::parse_keepalive(spec));
    });
  }
  const auto heartbeats = split_list(vm["heartbeat"].as<std::string>());
  auto heartbeat_key = [](const std::string& h) {
    const auto d = parse_heartbeat(h);
    return d ? deadpeer::format_duration(*d) : std::string("off");
  };
  refuse_duplicates("heartbeat", heartbeats, heartbeat_key);
  refuse_detector_without_heartbeat(
      vm, std::all_of(heartbeats.begin(), heartbeats.end(),
                      [&](const std::string& h) { return heartbeat_key(h) == "off"; }));
  std::vector<experiment_config> grid;
  for (const auto& k : keepalives)
    for (const auto& h : heartbeats) {
      auto c = base;
      c.keepalive = k;
      c.heartbeat = parse_heartbeat(h);
      grid.push_back(c);
    }

  // early-reject: one configuration per server close (no timer plays a part in it).
  const auto server_closes = server_close_from(vm, base.fault, true);
  if (base.fault == "early-reject") {
    grid.clear();
    for (const auto& mode : server_closes) {
      auto c = base;
      c.server_close = mode;
      grid.push_back(c);
    }
  }

  // Detector settings and loss rates: every combination with the grid so far.
  std::vector<std::optional<milliseconds>> dead_afters{std::nullopt};
  if (vm.count("dead-after") != 0) {
    dead_afters.clear();
    const auto texts = split_list(vm["dead-after"].as<std::string>());
    for (const auto& text : texts)
      dead_afters.push_back(parse_dead_after(text));
    refuse_duplicates("dead-after", texts, [](const std::string& text) {
      return deadpeer::format_duration(parse_dead_after(text));
    });
  }
  {
    std::vector<experiment_config> expanded;
    for (const auto& g : grid)
      for (const auto& d : dead_afters)
        for (const int loss :
             base.fault == "lossy" ? loss_rates : std::vector<int>{loss_rates.front()}) {
          auto c = g;
          c.dead_after = d;
          c.loss_basis_points = loss;
          expanded.push_back(c);
        }
    grid = std::move(expanded);
  }

  if (find_fault(base.fault).needs_lab && lab::unavailable_reason())
    run_again_in_user_namespace("sweep", args);
  install_interrupt_handler();
  std::ostream& progress_out = base.json ? std::cerr : std::cout;
  int total = 0, done = 0;
  std::vector<int> remaining;
  for (const auto& c : grid) {
    const int stored = stored_trials(c.db, c.config_key(), c.fault);
    remaining.push_back(std::max(0, c.trials - stored));
    total += remaining.back();
    if (stored >= c.trials)
      progress_out << "skip (already stored): " << c.fault << " " << c.config_key() << "\n";
  }
  if (total == 0) {
    progress_out << "nothing to do: every configuration already has its trials in " << base.db
                 << "\n";
    return exit_ok;
  }
  const auto run_id =
      begin_run(base.db, command_line("sweep", args), deadpeer::json_text(config_json(vm)));
  const auto started = std::chrono::steady_clock::now();
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  json::array out;
  for (std::size_t i = 0; i < grid.size() && !interrupted(); ++i) {
    if (remaining[i] == 0) continue;
    auto c = grid[i];
    const int first = c.trials - remaining[i] + 1;
    c.trials = remaining[i];
    progress_out << "config " << i + 1 << "/" << grid.size() << ": " << c.config_key() << "\n";
    run_experiment(c, run_id, first, [&](const experiment_config& cfg, const trial_result& r) {
      ++done;
      out.push_back(trial_json(cfg, r));
      const auto elapsed = std::chrono::steady_clock::now() - started;
      const auto eta = std::chrono::duration_cast<milliseconds>(elapsed / done * (total - done));
      constexpr int width = 30;
      const int filled = done * width / total;
      std::cerr << (tty ? "\r" : "") << "[" << std::string(static_cast<std::size_t>(filled), '#')
                << std::string(static_cast<std::size_t>(width - filled), ' ') << "] " << done << "/"
                << total << " trials, ETA "
                << deadpeer::format_duration_hms(std::chrono::round<std::chrono::seconds>(eta))
                << " (last: " << r.outcome
                << (r.latency_ms >= 0 ? " " + describe_latency(r.latency_ms) : "") << ")"
                << (tty ? "   " : "\n") << std::flush;
    });
  }
  if (tty) std::cerr << "\n";
  if (base.json)
    std::cout << deadpeer::json_text(out) << std::endl;
  else
    (void)command_report({"--db", base.db, "--run", std::to_string(run_id)});
  if (interrupted()) {
    std::cerr << "probe: interrupted: run the same command again to resume (interrupted trials "
                 "are run again)\n";
    return exit_interrupted;
  }
  return exit_ok;
}

}  // namespace probe
