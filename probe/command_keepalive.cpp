// probe bound / tune / presets: the keepalive arithmetic, for people tuning by hand.
// Unset keepalive fields and tcp_retries2 come from this machine's /proc, so the
// figures describe what the local kernel would do.
#include "cli.hpp"
#include "tune_recipes.hpp"

#include <deadpeer/config_error.hpp>
#include <deadpeer/connect_bound.hpp>
#include <deadpeer/duration.hpp>
#include <deadpeer/keepalive.hpp>

#include <iomanip>
#include <iostream>

namespace probe {
namespace {

namespace po = boost::program_options;
using deadpeer::format_duration;

std::string spec_with_sources(const deadpeer::keepalive_options& given,
                              const deadpeer::keepalive_settings& used) {
  if (!used.enabled) return "off";
  auto mark = [](bool from_system) { return from_system ? " (system default)" : ""; };
  return "idle " + format_duration(used.idle) + mark(!given.idle) + ", interval " +
         format_duration(used.interval) + mark(!given.interval) + ", count " +
         std::to_string(used.count) + mark(!given.count) + ", user timeout " +
         (used.user_timeout.count() == 0 ? std::string("off") : format_duration(used.user_timeout));
}

void print_bound(const deadpeer::detection_bound& b) {
  std::cout << "  idle connection: " << (b.idle ? describe_duration(*b.idle) : std::string("never"))
            << "\n";
  write_wrapped(std::cout, b.idle_arithmetic, "      ");
  std::cout << "  busy connection: " << describe_duration(b.busy) << "\n";
  write_wrapped(std::cout, b.busy_arithmetic, "      ");
}

// probe bound --connect: the SYN retry schedule (deadpeer/connect_bound.hpp).
int print_connect_bound(const po::variables_map& vm) {
  auto settings = deadpeer::read_syn_retry_settings();
  if (vm.count("syn-retries") != 0) settings.syn_retries = vm["syn-retries"].as<int>();
  if (vm.count("linear-timeouts") != 0) {
    const int linear = vm["linear-timeouts"].as<int>();
    if (linear < -1 || linear > 127)
      throw usage_error("--linear-timeouts " + std::to_string(linear) + " is outside -1..127");
    settings.linear_timeouts = linear < 0 ? std::nullopt : std::optional<int>(linear);
  }
  if (settings.syn_retries < 1 || settings.syn_retries > 127)
    throw usage_error("--syn-retries " + std::to_string(settings.syn_retries) +
                      " is outside 1..127");
  const auto kernel = deadpeer::read_kernel_defaults();
  const auto b = deadpeer::compute_connect_bound(settings, kernel.hz);
  std::cout << "connect: tcp_syn_retries " << settings.syn_retries
            << (vm.count("syn-retries") != 0 ? "" : " (system)") << ", tcp_syn_linear_timeouts "
            << (settings.linear_timeouts ? std::to_string(*settings.linear_timeouts)
                                         : std::string("absent"))
            << (vm.count("linear-timeouts") != 0 ? "" : " (system)") << ", HZ "
            << (kernel.hz > 0 ? std::to_string(kernel.hz) : std::string("unknown")) << "\n";
  if (!settings.from_system)
    std::cout << "note: /proc/sys/net/ipv4 is not readable; Linux's default values were used\n";
  std::cout << "worst-case time until connect() fails with ETIMEDOUT when nothing answers: "
            << describe_duration(b.latest) << "\n";
  write_wrapped(std::cout, b.arithmetic, "      ");
  std::cout << "  the listener keeps a half-open connection whose SYN-ACKs are lost for about "
            << describe_duration(deadpeer::synack_give_up_time(settings.synack_retries))
            << " (tcp_synack_retries " << settings.synack_retries << ")\n";
  return exit_ok;
}

}  // namespace

int command_bound(const std::vector<std::string>& args) {
  po::options_description options("Options");
  options.add_options()  //
      ("keepalive,k", po::value<std::string>()->value_name("SPEC"),
       "idle:interval:count[:user_timeout], e.g. 60s:10s:5; empty fields use the system "
       "defaults from /proc/sys/net/ipv4 (default: all system defaults)")  //
      ("preset,p", po::value<std::string>()->value_name("NAME"),
       ("start from a preset; --keepalive fields override it. " + presets_help()).c_str())  //
      ("user-timeout,u", po::value<std::string>()->value_name("DURATION"),
       "TCP_USER_TIMEOUT, e.g. 30s; 0s turns it off (default: from --keepalive, else off)")  //
      ("retries2", po::value<int>()->value_name("N"),
       "net.ipv4.tcp_retries2 to assume for busy connections (default: this machine's)")  //
      ("connect",
       "instead: the worst case of a connect() that is never answered (SYN or SYN-ACK lost, "
       "the listener's queue full), from tcp_syn_retries and tcp_syn_linear_timeouts")  //
      ("syn-retries", po::value<int>()->value_name("N"),
       "with --connect: net.ipv4.tcp_syn_retries to assume (default: this machine's)")  //
      ("linear-timeouts", po::value<int>()->value_name("N"),
       "with --connect: net.ipv4.tcp_syn_linear_timeouts to assume; -1: a kernel without "
       "it (default: this machine's)");
  po::variables_map vm;
  if (!parse_command_line(
          args, options, {},
          "Usage: probe bound [--preset NAME] [--keepalive SPEC] [--user-timeout DURATION]\n"
          "       probe bound --connect [--syn-retries N] [--linear-timeouts N]\n\n"
          "Prints the worst-case time from a peer's silent death (cable pull, power loss,\n"
          "NAT state loss) until the kernel aborts the connection, for an idle connection\n"
          "(keepalive probes) and a busy one (unacknowledged data: retransmissions or\n"
          "TCP_USER_TIMEOUT), with the arithmetic. A crashed process is noticed at once\n"
          "(its kernel sends FIN or RST); a hung one is never noticed by keepalive.",
          vm, std::cout))
    return exit_ok;

  if (vm.count("connect") != 0) return print_connect_bound(vm);
  if (vm.count("syn-retries") != 0 || vm.count("linear-timeouts") != 0)
    throw usage_error("--syn-retries and --linear-timeouts go with --connect");
  deadpeer::keepalive_options given;
  if (vm.count("preset") != 0)
    given = deadpeer::find_keepalive_preset(vm["preset"].as<std::string>()).options;
  if (vm.count("keepalive") != 0)
    given = deadpeer::overlay(given, deadpeer::parse_keepalive(vm["keepalive"].as<std::string>()));
  if (vm.count("user-timeout") != 0) {
    given.user_timeout = deadpeer::parse_duration(vm["user-timeout"].as<std::string>());
    deadpeer::validate(given);
  }
  auto defaults = deadpeer::read_kernel_defaults();
  if (vm.count("retries2") != 0) {
    const int retries2 = vm["retries2"].as<int>();
    if (retries2 < 0 || retries2 > 255)
      throw usage_error("--retries2 " + std::to_string(retries2) + " is outside 0..255");
    defaults.retries2 = retries2;
  }
  const auto used = deadpeer::resolve(given, defaults);
  std::cout << "keepalive: " << deadpeer::to_string(deadpeer::to_options(used)) << "  ("
            << spec_with_sources(given, used) << ")\n";
  if (!defaults.from_system)
    std::cout << "note: /proc/sys/net/ipv4 is not readable; Linux's default values were used\n";
  std::cout << "worst-case time to notice a dead peer:\n";
  print_bound(deadpeer::compute_bound(used, defaults));
  return exit_ok;
}

int command_tune(const std::vector<std::string>& args) {
  po::options_description options("Options");
  options.add_options()  //
      ("detect-within,t", po::value<std::string>()->value_name("DURATION")->required(),
       "worst-case time allowed to notice a dead peer, e.g. 30s (required)")  //
      ("nat-idle,n", po::value<std::string>()->value_name("DURATION"),
       "idle timeout of a NAT, firewall or load balancer on the path, e.g. 4m (AWS NLB: "
       "350s, many carrier NATs: 2.5m-5m); idle stays below 80% of it")  //
      ("for", po::value<std::vector<std::string>>()->value_name("NAME")->composing(),
       "print the settings only for these: sysctl, c, nginx, go, java, grpc, redis, mqtt, "
       "wrap; repeatable (default: all)");
  po::variables_map vm;
  if (!parse_command_line(
          args, options, {},
          "Usage: probe tune --detect-within DURATION [--nat-idle DURATION] [--for NAME]...\n\n"
          "Proposes keepalive settings (idle, interval, count, user timeout) whose idle and\n"
          "busy bounds both meet the target, then says them the way each place wants them:\n"
          "sysctl lines, setsockopt in C, nginx, Go, Java, gRPC, Redis, MQTT, and the probe\n"
          "wrap and doctor lines that apply them to a program without a rebuild and check.",
          vm, std::cout))
    return exit_ok;
  std::vector<std::string> wanted;
  if (vm.count("for") != 0) wanted = vm["for"].as<std::vector<std::string>>();
  for (const auto& name : wanted)
    if (std::find(recipe_names().begin(), recipe_names().end(), name) == recipe_names().end())
      throw usage_error("--for " + name +
                        ": unknown; use sysctl, c, nginx, go, java, grpc, redis, mqtt or wrap");

  deadpeer::tune_request request;
  request.detect_within = deadpeer::parse_duration(vm["detect-within"].as<std::string>());
  if (vm.count("nat-idle") != 0)
    request.nat_idle = deadpeer::parse_duration(vm["nat-idle"].as<std::string>());
  const auto proposal = deadpeer::tune(request);
  if (!proposal.feasible) {
    std::cout << "cannot meet the target:\n";
    write_wrapped(std::cout, proposal.reason, "  ");
    return exit_negative;
  }
  std::cout << "proposed: --keepalive "
            << deadpeer::to_string(deadpeer::to_options(proposal.settings)) << "\n";
  std::cout << "worst-case time to notice a dead peer:\n";
  print_bound(proposal.bound);
  std::cout << "why:\n";
  for (const auto& note : proposal.notes)
    write_wrapped(std::cout, note, "  ", "- ");
  std::cout << "A hung peer process is invisible to keepalive (its kernel still answers):\n"
               "add an application heartbeat for that.\n";
  const auto recipes = keepalive_recipes(proposal.settings, proposal.bound);
  for (const auto& r : recipes) {
    if (!wanted.empty() && std::find(wanted.begin(), wanted.end(), r.name) == wanted.end()) continue;
    std::cout << "\n" << r.title << ":\n";
    std::string::size_type at = 0;
    while (at < r.text.size()) {
      const auto end = std::min(r.text.find('\n', at), r.text.size());
      std::cout << "  " << r.text.substr(at, end - at) << "\n";
      at = end + 1;
    }
  }
  return exit_ok;
}

int command_presets(const std::vector<std::string>& args) {
  po::options_description options("Options");
  po::variables_map vm;
  if (!parse_command_line(args, options, {}, "Usage: probe presets\n\nLists keepalive presets.", vm,
                          std::cout))
    return exit_ok;
  const auto defaults = deadpeer::read_kernel_defaults();
  for (const auto& p : deadpeer::keepalive_presets()) {
    const auto bound =
        deadpeer::compute_bound(deadpeer::resolve(p.options, defaults), defaults);
    std::cout << std::left << std::setw(14) << p.name << deadpeer::to_string(p.options)
              << "  (idle bound " << describe_duration(*bound.idle) << ", busy bound "
              << describe_duration(bound.busy) << ")\n";
    write_wrapped(std::cout, p.rationale, "    ");
  }
  return exit_ok;
}

}  // namespace probe
