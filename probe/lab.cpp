// The fault lab's networks: two namespaces, a veth pair, an nftables table, and the faults
// on them. See lab.hpp for what it decides; lab_commands.cpp runs the commands and
// lab_cleanup.cpp removes labs on signals and after a SIGKILL.
#include "lab.hpp"

#include "lab_internal.hpp"

#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace probe::lab {
namespace {

using namespace detail;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

constexpr const char* server_if_name = "dps";
constexpr const char* victim_if_name = "dpc";
constexpr const char* server_address = "10.231.77.1";
constexpr const char* victim_address = "10.231.77.2";
constexpr const char* prefix_length = "/24";
constexpr const char* table_name = "fault";
constexpr const char* server_ifindex = "10";
constexpr const char* victim_ifindex = "11";

// ---- entering a namespace on the calling thread ------------------------------------------

void run_in_namespace(int target, const std::string& name, const std::function<void()>& fn) {
  if (target < 0) throw lab_error("namespace " + name + " is gone: the lab was destroyed");
  int original = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (original < 0)
    throw lab_error("cannot save this thread's network namespace (/proc/thread-self/ns/net): " +
                    errno_text(errno));
  if (::setns(target, CLONE_NEWNET) != 0) {
    int e = errno;
    ::close(original);
    throw lab_error("setns into " + name + ": " + errno_text(e));
  }
  struct return_home {
    int fd;
    ~return_home() {
      if (::setns(fd, CLONE_NEWNET) != 0) {
        // Going on would put every later socket of this thread in the lab.
        std::fprintf(stderr, "deadpeer lab: cannot return to the original network namespace: %s\n",
                     std::strerror(errno));
        std::abort();
      }
      ::close(fd);
    }
  } home{original};
  fn();
}

/// True when `ifname` in the namespace is up and running (carrier, operstate up: the
/// kernel has activated its queue, so packets are no longer dropped).
bool interface_running(int ns_fd, const std::string& ns_name, const char* ifname) {
  bool running = false;
  run_in_namespace(ns_fd, ns_name, [&] {
    fd_closer s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (s.fd < 0) throw lab_error("socket in " + ns_name + ": " + errno_text(errno));
    ifreq req{};
    std::snprintf(req.ifr_name, IFNAMSIZ, "%s", ifname);
    if (::ioctl(s.fd, SIOCGIFFLAGS, &req) != 0)
      throw lab_error(std::string("SIOCGIFFLAGS ") + ifname + " in " + ns_name + ": " +
                      errno_text(errno));
    running = (req.ifr_flags & IFF_UP) != 0 && (req.ifr_flags & IFF_RUNNING) != 0;
  });
  return running;
}

}  // namespace

// ---- network -----------------------------------------------------------------------------

network::network() {
  if (auto why = unavailable_reason()) throw lab_error("the fault lab cannot be built: " + *why);
  owner_pid_ = ::getpid();
  static std::atomic<unsigned> counter{0};
  const std::string pid = std::to_string(owner_pid_);
  for (int attempt = 0;; ++attempt) {
    // Skips names left behind by an earlier process that had this PID and was SIGKILLed.
    const std::string n = std::to_string(counter.fetch_add(1));
    topo_.server_ns = "dp-s-" + pid + "-" + n;
    topo_.victim_ns = "dp-c-" + pid + "-" + n;
    if (!exists(netns_file(topo_.server_ns)) && !exists(netns_file(topo_.victim_ns))) break;
    if (attempt == 1000) throw lab_error("no free lab name under " + std::string(netns_dir));
  }
  topo_.server_if = server_if_name;
  topo_.victim_if = victim_if_name;
  topo_.server_addr = server_address;
  topo_.victim_addr = victim_address;
  topo_.nft_table = table_name;

  sweep_stale_once();
  install_cleanup_handlers();
  write_owner(topo_.server_ns);
  slot_ = claim_slot(tool("ip"), topo_);  // before anything exists: a signal now cleans up
  try {
    build();
  } catch (...) {
    destroy();
    throw;
  }
}

network::~network() {
  destroy();
}

void network::build() {
  const std::string ip = tool("ip");
  const std::string nft = tool("nft");
  const auto& t = topo_;
  check({ip, "netns", "add", t.server_ns});
  check({ip, "netns", "add", t.victim_ns});
  // Distinct ifindexes on purpose: in two fresh namespaces both ends would get index 2, and
  // the kernel then treats their carrier changes as non-urgent and applies them up to 1 s
  // late (linkwatch_urgent_event): the link would carry nothing for that long after "up",
  // and after "down" the first keepalive probe would fail locally and be retried 0.5 s
  // later instead of counted — 4.6 s instead of 4.0 s for 1s/1s/3.
  check({ip, "link", "add", t.server_if, "index", server_ifindex, "netns", t.server_ns, "type",
         "veth", "peer", "name", t.victim_if, "index", victim_ifindex, "netns", t.victim_ns});
  check({ip, "-n", t.server_ns, "addr", "add", t.server_addr + prefix_length, "dev", t.server_if});
  check({ip, "-n", t.victim_ns, "addr", "add", t.victim_addr + prefix_length, "dev", t.victim_if});
  check({ip, "-n", t.server_ns, "link", "set", "lo", "up"});
  check({ip, "-n", t.victim_ns, "link", "set", "lo", "up"});
  check({ip, "-n", t.server_ns, "link", "set", t.server_if, "up"});
  check({ip, "-n", t.victim_ns, "link", "set", t.victim_if, "up"});
  const std::string table = "inet " + t.nft_table;
  check({ip, "netns", "exec", t.victim_ns, nft,
         "add table " + table + "; add chain " + table +
             " in { type filter hook input priority -300; policy accept; }; add chain " + table +
             " out { type filter hook output priority -300; policy accept; }"});
  server_fd_ = ::open(netns_file(t.server_ns).c_str(), O_RDONLY | O_CLOEXEC);
  if (server_fd_ < 0) throw lab_error("open " + netns_file(t.server_ns) + ": " + errno_text(errno));
  victim_fd_ = ::open(netns_file(t.victim_ns).c_str(), O_RDONLY | O_CLOEXEC);
  if (victim_fd_ < 0) throw lab_error("open " + netns_file(t.victim_ns) + ": " + errno_text(errno));
  wait_link_carries(2s);
}

void network::wait_link_carries(std::chrono::milliseconds timeout) {
  const auto deadline = clock_type::now() + timeout;
  for (;;) {
    if (interface_running(server_fd_, topo_.server_ns, topo_.server_if.c_str()) &&
        interface_running(victim_fd_, topo_.victim_ns, topo_.victim_if.c_str()))
      return;
    if (clock_type::now() >= deadline)
      throw lab_error("the veth pair " + topo_.server_if + "/" + topo_.victim_if +
                      " did not come up within " + std::to_string(timeout.count()) + " ms");
    timespec ms{0, 2000000};
    ::nanosleep(&ms, nullptr);
  }
}

void network::destroy() noexcept {
  if (destroyed_) return;
  destroyed_ = true;
  if (server_fd_ >= 0) ::close(server_fd_);
  if (victim_fd_ >= 0) ::close(victim_fd_);
  server_fd_ = victim_fd_ = -1;
  if (::getpid() != owner_pid_) return;  // a forked child's copy: the lab is its parent's
  for (const std::string* name : {&topo_.server_ns, &topo_.victim_ns}) {
    const std::string file = netns_file(*name);
    if (!exists(file)) continue;
    std::string problem;
    try {
      command_result r = run({"ip", "netns", "del", *name});
      if (r.exit_code != 0) problem = trim(r.err);
    } catch (const std::exception& e) {
      problem = e.what();
    }
    if (exists(file)) {  // ip failed or is missing: its own two calls
      ::umount2(file.c_str(), MNT_DETACH);
      if (::unlink(file.c_str()) != 0 && errno != ENOENT)
        std::fprintf(stderr, "deadpeer lab: cannot remove network namespace %s: %s%s%s\n",
                     name->c_str(), problem.c_str(), problem.empty() ? "" : "; ",
                     std::strerror(errno));
    }
  }
  remove_owner(topo_.server_ns);
  release_slot(slot_);
  slot_ = -1;
}

void network::cable_pull() {
  if (pulled_) return;
  const std::string table = "inet " + topo_.nft_table;
  check({tool("ip"), "netns", "exec", topo_.victim_ns, tool("nft"),
         "add rule " + table + " in drop; add rule " + table + " out drop"});
  pulled_ = true;
}

void network::cable_heal() {
  const std::string table = "inet " + topo_.nft_table;
  check({tool("ip"), "netns", "exec", topo_.victim_ns, tool("nft"),
         "flush chain " + table + " in; flush chain " + table + " out"});
  pulled_ = false;
}

void network::link_down() {
  check({tool("ip"), "-n", topo_.victim_ns, "link", "set", topo_.victim_if, "down"});
}

void network::link_up() {
  check({tool("ip"), "-n", topo_.victim_ns, "link", "set", topo_.victim_if, "up"});
  wait_link_carries(2s);
}

void network::destroy_victim_sockets() {
  const std::string ip = tool("ip"), ss = tool("ss");
  check({ip, "netns", "exec", topo_.victim_ns, ss, "-K", "-n", "dst", topo_.server_addr});
  command_result left = check({ip, "netns", "exec", topo_.victim_ns, ss, "-H", "-t", "-n", "state",
                               "connected", "exclude", "time-wait", "dst", topo_.server_addr});
  if (!trim(left.out).empty())
    throw lab_error("ss -K left sockets to " + topo_.server_addr + " in " + topo_.victim_ns +
                    " (does the kernel lack CONFIG_INET_DIAG_DESTROY?):\n" + trim(left.out));
}

void network::reboot_victim() {
  const bool was_pulled = pulled_;
  cable_pull();
  try {
    destroy_victim_sockets();
  } catch (...) {
    if (!was_pulled) cable_heal();
    throw;
  }
  if (!was_pulled) cable_heal();
}

void network::in_server_ns(const std::function<void()>& fn) const {
  run_in_namespace(server_fd_, topo_.server_ns, fn);
}

void network::in_victim_ns(const std::function<void()>& fn) const {
  run_in_namespace(victim_fd_, topo_.victim_ns, fn);
}

std::vector<std::string> network::victim_exec_prefix() const {
  return {tool("ip"), "netns", "exec", topo_.victim_ns};
}

std::vector<std::string> network::server_exec_prefix() const {
  return {tool("ip"), "netns", "exec", topo_.server_ns};
}

}  // namespace probe::lab
