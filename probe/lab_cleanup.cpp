// The fault lab's cleanup. See lab.hpp for what it decides; notes on how:
//
// - Signal cleanup keeps a fixed array of slots, one per live network, each holding the
//   ready-made argv of `ip netns del NAME` and the path /run/netns/NAME. The handler walks
//   the live slots of this process (a forked child never touches its parent's), forks and
//   execs those argv, waits a bounded time, then makes sure with umount2(MNT_DETACH) +
//   unlink — the two calls `ip netns del` itself makes — and passes the signal on. Nothing
//   in that path allocates or takes a lock.
#include "lab_internal.hpp"

#include <dirent.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

namespace probe::lab {
namespace {

using namespace detail;

// ---- signal cleanup registry ---------------------------------------------------------------

constexpr int max_labs = 64;
constexpr std::size_t name_capacity = 64;
constexpr std::size_t path_capacity = 256;

char word_netns[] = "netns";
char word_del[] = "del";
char env_path[] = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
char* handler_env[] = {env_path, nullptr};

enum slot_state : int { slot_free = 0, slot_filling = 1, slot_live = 2 };

// Where each lab's owner marker lives (see "stale labs" below).
constexpr const char* owners_dir = "/run/deadpeer-labs";

struct cleanup_slot {
  std::atomic<int> state{slot_free};
  pid_t owner = 0;
  char ip_path[path_capacity] = {};
  char names[2][name_capacity] = {};
  char files[2][name_capacity + 16] = {};
  char owner_marker[name_capacity + 32] = {};  ///< remove_stale_networks' proof of owner
  char* argv[2][5] = {};
};

cleanup_slot slots[max_labs];
static_assert(std::atomic<int>::is_always_lock_free, "the signal handler reads slot states");

constexpr int handled_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE};
constexpr int handled_count = 5;
struct sigaction previous_actions[handled_count];
volatile sig_atomic_t passed_on[handled_count];
std::mutex install_mutex;

}  // namespace

int detail::claim_slot(const std::string& ip_path, const topology& t) {
  if (ip_path.size() >= path_capacity || t.server_ns.size() >= name_capacity ||
      t.victim_ns.size() >= name_capacity)
    throw lab_error("lab names too long for the cleanup registry: " + ip_path);
  for (int i = 0; i < max_labs; ++i) {
    cleanup_slot& s = slots[i];
    int expected = slot_free;
    if (!s.state.compare_exchange_strong(expected, slot_filling)) continue;
    s.owner = ::getpid();
    std::snprintf(s.ip_path, sizeof s.ip_path, "%s", ip_path.c_str());
    const std::string* names[2] = {&t.server_ns, &t.victim_ns};
    for (int k = 0; k < 2; ++k) {
      std::snprintf(s.names[k], sizeof s.names[k], "%s", names[k]->c_str());
      std::snprintf(s.files[k], sizeof s.files[k], "%s/%s", netns_dir, names[k]->c_str());
      std::snprintf(s.owner_marker, sizeof s.owner_marker, "%s/%s", owners_dir,
                    t.server_ns.c_str());
      s.argv[k][0] = s.ip_path;
      s.argv[k][1] = word_netns;
      s.argv[k][2] = word_del;
      s.argv[k][3] = s.names[k];
      s.argv[k][4] = nullptr;
    }
    s.state.store(slot_live, std::memory_order_release);
    return i;
  }
  throw lab_error("more than " + std::to_string(max_labs) + " labs at once in one process");
}

void detail::release_slot(int i) {
  if (i >= 0) slots[i].state.store(slot_free, std::memory_order_release);
}

namespace {

pid_t fork_in_handler() {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
  return ::_Fork();  // async-signal-safe: no atfork handlers
#else
  return ::fork();
#endif
}

/// Async-signal-safe: fork, execve, waitpid, nanosleep, kill, umount2, unlink only.
void remove_namespace_from_handler(cleanup_slot& s, int k) {
  pid_t pid = fork_in_handler();
  if (pid == 0) {
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    int devnull = ::open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      ::dup2(devnull, 0);
      ::dup2(devnull, 1);
      ::dup2(devnull, 2);
    }
    ::execve(s.ip_path, s.argv[k], handler_env);
    ::_exit(127);
  }
  if (pid > 0) {
    int status = 0;
    bool reaped = false;
    for (int waited_ms = 0; waited_ms < 5000 && !reaped; ++waited_ms) {
      pid_t r = ::waitpid(pid, &status, WNOHANG);
      if (r == pid || (r < 0 && errno != EINTR)) {
        reaped = true;
        break;
      }
      timespec ms{0, 1000000};
      ::nanosleep(&ms, nullptr);
    }
    if (!reaped) {
      ::kill(pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
    }
  }
  // Whatever ip did or did not do: the same two calls it makes. Harmless when done.
  ::umount2(s.files[k], MNT_DETACH);
  ::unlink(s.files[k]);
}

void remove_all_from_handler() {
  const pid_t self = ::getpid();
  for (cleanup_slot& s : slots) {
    if (s.state.load(std::memory_order_acquire) != slot_live || s.owner != self) continue;
    remove_namespace_from_handler(s, 0);
    remove_namespace_from_handler(s, 1);
    ::unlink(s.owner_marker);  // async-signal-safe; the lab is gone, so is its marker
  }
}

int signal_index(int sig) {
  for (int i = 0; i < handled_count; ++i)
    if (handled_signals[i] == sig) return i;
  return -1;
}

std::atomic<std::atomic<bool>*> deferred_interrupt{nullptr};
static_assert(std::atomic<std::atomic<bool>*>::is_always_lock_free);
static_assert(std::atomic<bool>::is_always_lock_free);

extern "C" void cleanup_on_signal(int sig, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  if (sig == SIGINT || sig == SIGTERM) {
    if (auto* flag = deferred_interrupt.load()) {
      // First interruption: only say so; the program stops between steps and removes its
      // labs in order. A second one removes them here and ends the program.
      if (!flag->exchange(true)) {
        errno = saved_errno;
        return;
      }
      remove_all_from_handler();
      struct sigaction dfl {};
      dfl.sa_handler = SIG_DFL;
      ::sigemptyset(&dfl.sa_mask);
      ::sigaction(sig, &dfl, nullptr);
      ::raise(sig);
      errno = saved_errno;
      return;
    }
  }
  remove_all_from_handler();
  const int i = signal_index(sig);
  // Pass the signal on once to whoever handled it before us (a second one, or a handler
  // that sends it back here, gets the default action: no loop, and a second Ctrl-C kills).
  if (i >= 0 && passed_on[i] == 0) {
    passed_on[i] = 1;
    const struct sigaction& prev = previous_actions[i];
    if ((prev.sa_flags & SA_SIGINFO) != 0 && prev.sa_sigaction != nullptr) {
      prev.sa_sigaction(sig, info, context);
      errno = saved_errno;
      return;
    }
    if ((prev.sa_flags & SA_SIGINFO) == 0 && prev.sa_handler != SIG_DFL &&
        prev.sa_handler != SIG_IGN) {
      prev.sa_handler(sig);
      errno = saved_errno;
      return;
    }
  }
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigemptyset(&dfl.sa_mask);
  ::sigaction(sig, &dfl, nullptr);
  ::raise(sig);  // blocked while this handler runs: delivered, with the default action, on return
  errno = saved_errno;
}

bool is_ours(const struct sigaction& a) {
  return (a.sa_flags & SA_SIGINFO) != 0 && a.sa_sigaction == &cleanup_on_signal;
}

}  // namespace

// ---- stale labs ----------------------------------------------------------------------------

namespace {

// Who made a lab: a marker file per lab, named after its server namespace, holding the
// creator's PID, its start time (field 22 of /proc/PID/stat: a reused PID has another)
// and its PID namespace. Only a lab whose marker names a process of this PID namespace
// that is gone is provably a dead probe's; anything else may be another user's, another
// container's, or alive in a PID namespace we cannot see.

std::string process_start_time(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return "";
  std::istringstream fields(line.substr(line.rfind(')') + 2));
  std::string field;
  for (int i = 3; i <= 22 && fields >> field; ++i) {
  }
  return field;
}

std::string pid_namespace() {
  std::error_code ec;
  const auto link = std::filesystem::read_symlink("/proc/self/ns/pid", ec);
  return ec ? "" : link.string();
}

std::string owner_file(const std::string& server_ns) {
  return std::string(owners_dir) + "/" + server_ns;
}

}  // namespace

void detail::write_owner(const std::string& server_ns) {
  std::error_code ec;
  std::filesystem::create_directories(owners_dir, ec);
  std::ofstream out(owner_file(server_ns));
  out << ::getpid() << " " << process_start_time(::getpid()) << " " << pid_namespace() << "\n";
}

void detail::remove_owner(const std::string& server_ns) {
  ::unlink(owner_file(server_ns).c_str());
}

namespace {

enum class owner_state { alive, dead, unknown };

owner_state owner_of(const std::string& server_ns) {
  std::ifstream in(owner_file(server_ns));
  long pid = 0;
  std::string start, pidns;
  if (!(in >> pid >> start >> pidns) || pid <= 0) return owner_state::unknown;
  if (pidns != pid_namespace()) return owner_state::unknown;
  const auto now = process_start_time(static_cast<pid_t>(pid));
  return !now.empty() && now == start ? owner_state::alive : owner_state::dead;
}

}  // namespace

std::vector<std::string> remove_stale_networks(std::vector<std::string>* left_alone) {
  std::vector<std::string> removed;
  DIR* dir = ::opendir(netns_dir);
  if (dir == nullptr) return removed;
  std::vector<std::pair<std::string, std::string>> stale;  // namespace, its lab's marker
  while (const dirent* entry = ::readdir(dir)) {
    // dp-s-<pid>-<n> or dp-c-<pid>-<n>
    unsigned long pid = 0, n = 0;
    char side = 0;
    int used = 0;
    if (std::sscanf(entry->d_name, "dp-%c-%lu-%lu%n", &side, &pid, &n, &used) != 3 ||
        entry->d_name[used] != '\0' || (side != 's' && side != 'c') || pid == 0)
      continue;
    const std::string server_ns = "dp-s-" + std::to_string(pid) + "-" + std::to_string(n);
    switch (owner_of(server_ns)) {
      case owner_state::alive:
        break;
      case owner_state::dead:
        stale.emplace_back(entry->d_name, server_ns);
        break;
      case owner_state::unknown:
        if (left_alone) left_alone->emplace_back(entry->d_name);
        break;
    }
  }
  ::closedir(dir);
  // Markers whose lab is gone and whose owner is not alive (a lab removed by a signal
  // handler of an older build, say) are garbage.
  if (DIR* owners = ::opendir(owners_dir)) {
    std::vector<std::string> garbage;
    while (const dirent* entry = ::readdir(owners)) {
      const std::string marker = entry->d_name;
      if (marker.rfind("dp-s-", 0) != 0) continue;
      if (exists(netns_file(marker)) || exists(netns_file("dp-c-" + marker.substr(5)))) continue;
      if (owner_of(marker) != owner_state::alive) garbage.push_back(marker);
    }
    ::closedir(owners);
    for (const auto& marker : garbage)
      ::unlink(owner_file(marker).c_str());
  }
  for (const auto& [name, server_ns] : stale) {
    command_result r = run({"ip", "netns", "del", name});
    if (r.exit_code == 0) removed.push_back(name);
    if (!exists(netns_file("dp-s-" + server_ns.substr(5))) &&
        !exists(netns_file("dp-c-" + server_ns.substr(5))))
      ::unlink(owner_file(server_ns).c_str());
  }
  return removed;
}

void detail::sweep_stale_once() {
  // Labs of probes that were SIGKILLed (no handler ran) are swept once per process.
  static std::once_flag swept;
  std::call_once(swept, [] {
    std::vector<std::string> left;
    const auto removed = remove_stale_networks(&left);
    if (!removed.empty())
      std::fprintf(stderr,
                   "deadpeer lab: removed %zu namespace(s) left by probe processes that died\n",
                   removed.size());
    if (!left.empty())
      std::fprintf(stderr,
                   "deadpeer lab: left %zu dp-* namespace(s) alone (e.g. %s): nothing proves they "
                   "belong to a dead probe of this host; remove them with ip netns del if they "
                   "do\n",
                   left.size(), left.front().c_str());
  });
}

// ---- signal handlers ---------------------------------------------------------------------

void install_cleanup_handlers() {
  std::lock_guard lock(install_mutex);
  for (int i = 0; i < handled_count; ++i) {
    const int sig = handled_signals[i];
    struct sigaction current {};
    if (::sigaction(sig, nullptr, &current) != 0) continue;
    if (is_ours(current)) continue;
    if ((current.sa_flags & SA_SIGINFO) == 0 && current.sa_handler == SIG_IGN) continue;
    previous_actions[i] = current;
    passed_on[i] = 0;
    struct sigaction ours {};
    ours.sa_sigaction = &cleanup_on_signal;
    ours.sa_flags = SA_SIGINFO | SA_RESTART;
    ::sigemptyset(&ours.sa_mask);
    for (int other : handled_signals)
      ::sigaddset(&ours.sa_mask, other);
    ::sigaction(sig, &ours, nullptr);
  }
}

void defer_interrupts(std::atomic<bool>* flag) {
  deferred_interrupt.store(flag);
  install_cleanup_handlers();
}

}  // namespace probe::lab
