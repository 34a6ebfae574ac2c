// probe wrap: runs a program that cannot be rebuilt with kernel keepalive (and a user
// timeout) on the TCP sockets it accepts and connects, through libdeadpeer-preload.so.
// It checks the settings first (the library itself can only refuse them silently), says
// the worst case they give, and then becomes the program (exec): signals, exit status and
// descriptors are the program's own.
#include "cli.hpp"

#include <deadpeer/duration.hpp>
#include <deadpeer/keepalive.hpp>

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>

namespace probe {
namespace {

namespace fs = std::filesystem;
namespace po = boost::program_options;

// Beside probe in a build tree (build/preload/), or lib/ of an install, or the
// DEADPEER_PRELOAD_LIBRARY the user names.
std::string find_preload_library() {
  if (const char* named = std::getenv("DEADPEER_PRELOAD_LIBRARY"); named != nullptr && *named)
    return named;
  std::error_code ec;
  const auto self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) throw std::runtime_error("cannot find the probe executable: " + ec.message());
  const auto dir = self.parent_path();
  for (const auto& candidate :
       {dir / ".." / "preload" / "libdeadpeer-preload.so", dir / ".." / "lib" / "libdeadpeer-preload.so",
        dir / ".." / "lib64" / "libdeadpeer-preload.so"})
    if (fs::exists(candidate)) return fs::canonical(candidate).string();
  throw std::runtime_error(
      "libdeadpeer-preload.so not found beside probe (../preload, ../lib); build it, or name it "
      "with DEADPEER_PRELOAD_LIBRARY=/path/libdeadpeer-preload.so");
}

}  // namespace

int command_wrap(const std::vector<std::string>& args) {
  // Everything after "--" is the program and its arguments, untouched.
  const auto dashes = std::find(args.begin(), args.end(), std::string("--"));
  const std::vector<std::string> own(args.begin(), dashes);
  const std::vector<std::string> program(dashes == args.end() ? dashes : dashes + 1, args.end());
  po::options_description options("Options");
  options.add_options()  //
      ("keepalive,k", po::value<std::string>()->value_name("SPEC"),
       "kernel keepalive idle:interval:count[:user_timeout], e.g. 60s:10s:5 (whole seconds; "
       "count 1-127)")  //
      ("user-timeout,u", po::value<std::string>()->value_name("DURATION"),
       "TCP_USER_TIMEOUT: how long sent data may stay unacknowledged")  //
      ("only-port", po::value<unsigned short>()->value_name("PORT"),
       "only sockets whose local or remote port is PORT (e.g. the service's listening port)");
  po::variables_map vm;
  if (!parse_command_line(
          own, options, {},
          "Usage: probe wrap --keepalive 60s:10s:5 [--user-timeout 80s] [--only-port 8080] -- "
          "PROGRAM [ARGS...]\n\n"
          "Runs PROGRAM with libdeadpeer-preload.so (LD_PRELOAD): every TCP socket it accepts\n"
          "or connects, IPv4 and IPv6, gets the keepalive and user timeout given here; other\n"
          "sockets are left alone and no call of the program fails because of it. The library\n"
          "says once on stderr what it applied. For a server you cannot rebuild whose ghost\n"
          "connections nobody notices: probe doctor shows them, probe wrap fixes them.",
          vm, std::cout))
    return exit_ok;
  if (program.empty()) throw usage_error("give the program after --, e.g. probe wrap -k 60s:10s:5 -- myserver");
  if (vm.count("keepalive") == 0 && vm.count("user-timeout") == 0)
    throw usage_error("give --keepalive and/or --user-timeout: without them there is nothing to apply");

  deadpeer::keepalive_options k;
  k.enabled = false;
  if (vm.count("keepalive") != 0) {
    const auto text = vm["keepalive"].as<std::string>();
    k = deadpeer::parse_keepalive(text);
    if (!k.enabled || !k.idle || !k.interval || !k.count)
      throw usage_error("--keepalive " + text +
                        ": give all three of idle:interval:count (the library sets each one)");
  }
  if (vm.count("user-timeout") != 0)
    k.user_timeout = deadpeer::parse_duration(vm["user-timeout"].as<std::string>());
  const auto kernel = deadpeer::read_kernel_defaults();
  const auto bound = deadpeer::compute_bound(deadpeer::resolve(k, kernel), kernel);
  const auto library = find_preload_library();

  auto set = [](const char* name, const std::string& value) { ::setenv(name, value.c_str(), 1); };
  if (k.enabled)
    set("DEADPEER_KEEPALIVE", deadpeer::format_duration(*k.idle) + ":" +
                                  deadpeer::format_duration(*k.interval) + ":" +
                                  std::to_string(*k.count));
  if (k.user_timeout) set("DEADPEER_USER_TIMEOUT", deadpeer::format_duration(*k.user_timeout));
  if (vm.count("only-port") != 0)
    set("DEADPEER_ONLY_PORT", std::to_string(vm["only-port"].as<unsigned short>()));
  const char* existing = std::getenv("LD_PRELOAD");
  set("LD_PRELOAD", library + (existing != nullptr && *existing ? " " + std::string(existing) : ""));
  std::cerr << "probe wrap: " << program.front() << " with "
            << (k.enabled ? "keepalive " + deadpeer::to_string(k) : std::string("no keepalive"))
            << "; a dead idle peer is noticed within "
            << (bound.idle ? deadpeer::format_duration(*bound.idle) : std::string("never"))
            << ", a busy one within " << deadpeer::format_duration(bound.busy) << std::endl;

  std::vector<char*> argv;
  for (const auto& a : program)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::execvp(argv[0], argv.data());
  const int error = errno;
  std::cerr << "probe wrap: cannot run " << program.front() << ": " << std::strerror(error) << "\n";
  return error == ENOENT ? 127 : 126;
}

}  // namespace probe
