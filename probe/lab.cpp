// The fault lab. See lab.hpp for what it decides; notes on how:
//
// - Child processes are started with posix_spawn (stdin /dev/null, stdout and stderr to
//   pipes, signal mask cleared and dispositions reset) and watched with poll on the pipes
//   and a pidfd, so the wait is bounded without busy-waiting; one that overruns is killed.
// - Signal cleanup keeps a fixed array of slots, one per live network, each holding the
//   ready-made argv of `ip netns del NAME` and the path /run/netns/NAME. The handler walks
//   the live slots of this process (a forked child never touches its parent's), forks and
//   execs those argv, waits a bounded time, then makes sure with umount2(MNT_DETACH) +
//   unlink — the two calls `ip netns del` itself makes — and passes the signal on. Nothing
//   in that path allocates or takes a lock.
#include "lab.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

extern char** environ;

namespace probe::lab {
namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

constexpr const char* netns_dir = "/run/netns";
constexpr const char* server_if_name = "dps";
constexpr const char* victim_if_name = "dpc";
constexpr const char* server_address = "10.231.77.1";
constexpr const char* victim_address = "10.231.77.2";
constexpr const char* prefix_length = "/24";
constexpr const char* table_name = "fault";
constexpr const char* server_ifindex = "10";
constexpr const char* victim_ifindex = "11";

std::string errno_text(int e) {
  return std::strerror(e);
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\t'))
    s.pop_back();
  std::size_t start = 0;
  while (start < s.size() && (s[start] == '\n' || s[start] == ' '))
    ++start;
  return s.substr(start);
}

std::string command_text(const std::vector<std::string>& argv) {
  std::string text;
  for (std::size_t i = 0; i < argv.size(); ++i) {
    // The program by its name: "ip ...", not the path it was found at.
    std::string word = i == 0 ? argv[0].substr(argv[0].rfind('/') + 1) : argv[i];
    if (!text.empty()) text += ' ';
    if (word.find_first_of(" ;{}'\"") != std::string::npos)
      text += "'" + word + "'";
    else
      text += word;
  }
  return text;
}

bool is_executable_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

/// argv[0] as a path: PATH first, then the sbin directories a non-root PATH often lacks.
std::optional<std::string> find_program(const std::string& name) {
  if (name.find('/') != std::string::npos)
    return is_executable_file(name) ? std::optional<std::string>(name) : std::nullopt;
  std::vector<std::string> dirs;
  if (const char* path = std::getenv("PATH")) {
    std::string all = path;
    std::size_t start = 0;
    while (start <= all.size()) {
      std::size_t end = all.find(':', start);
      if (end == std::string::npos) end = all.size();
      if (end > start) dirs.push_back(all.substr(start, end - start));
      start = end + 1;
    }
  }
  for (const char* dir : {"/usr/sbin", "/sbin", "/usr/bin", "/bin"})
    dirs.emplace_back(dir);
  for (const auto& dir : dirs) {
    std::string candidate = dir + "/" + name;
    if (is_executable_file(candidate)) return candidate;
  }
  return std::nullopt;
}

std::string tool(const char* name) {
  auto path = find_program(name);
  if (!path) throw lab_error(std::string(name) + ": not found in PATH, /usr/sbin or /sbin");
  return *path;
}

struct fd_closer {
  int fd = -1;
  fd_closer() = default;
  explicit fd_closer(int f) : fd(f) {}
  fd_closer(const fd_closer&) = delete;
  fd_closer& operator=(const fd_closer&) = delete;
  ~fd_closer() { reset(); }
  void reset() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

/// Reads what is available; returns false once the pipe is at EOF.
bool drain(int fd, std::string& into) {
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      into.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n == 0) return false;
    if (errno == EINTR) continue;
    return errno == EAGAIN;  // nothing more for now; other errors end the pipe
  }
}

/// run() that throws unless the command exits 0.
command_result check(const std::vector<std::string>& argv) {
  command_result r = run(argv);
  if (r.exit_code != 0) {
    std::string err = trim(r.err.empty() ? r.out : r.err);
    throw lab_error("`" + command_text(argv) + "` failed (exit " + std::to_string(r.exit_code) +
                    ")" + (err.empty() ? std::string() : ": " + err));
  }
  return r;
}

std::string netns_file(const std::string& name) {
  return std::string(netns_dir) + "/" + name;
}

bool exists(const std::string& path) {
  return ::access(path.c_str(), F_OK) == 0;
}

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

// ---- signal cleanup registry ---------------------------------------------------------------

constexpr int max_labs = 64;
constexpr std::size_t name_capacity = 64;
constexpr std::size_t path_capacity = 256;

char word_netns[] = "netns";
char word_del[] = "del";
char env_path[] = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
char* handler_env[] = {env_path, nullptr};

enum slot_state : int { slot_free = 0, slot_filling = 1, slot_live = 2 };

struct cleanup_slot {
  std::atomic<int> state{slot_free};
  pid_t owner = 0;
  char ip_path[path_capacity] = {};
  char names[2][name_capacity] = {};
  char files[2][name_capacity + 16] = {};
  char* argv[2][5] = {};
};

cleanup_slot slots[max_labs];
static_assert(std::atomic<int>::is_always_lock_free, "the signal handler reads slot states");

constexpr int handled_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE};
constexpr int handled_count = 5;
struct sigaction previous_actions[handled_count];
volatile sig_atomic_t passed_on[handled_count];
std::mutex install_mutex;

int claim_slot(const std::string& ip_path, const topology& t) {
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

void release_slot(int i) {
  if (i >= 0) slots[i].state.store(slot_free, std::memory_order_release);
}

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

// ---- running commands ------------------------------------------------------------------------

command_result run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  if (argv.empty()) throw lab_error("run: empty command");
  auto path = find_program(argv[0]);
  if (!path) throw lab_error("`" + command_text(argv) + "`: " + argv[0] + " not found");

  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) throw lab_error("pipe: " + errno_text(errno));
  fd_closer out_read(out_pipe[0]), out_write(out_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) throw lab_error("pipe: " + errno_text(errno));
  fd_closer err_read(err_pipe[0]), err_write(err_pipe[1]);

  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  ::posix_spawn_file_actions_adddup2(&actions, out_write.fd, 1);
  ::posix_spawn_file_actions_adddup2(&actions, err_write.fd, 2);
  posix_spawnattr_t attr;
  ::posix_spawnattr_init(&attr);
  sigset_t none, all;
  ::sigemptyset(&none);
  ::sigfillset(&all);
  ::posix_spawnattr_setsigmask(&attr, &none);
  ::posix_spawnattr_setsigdefault(&attr, &all);
  ::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<char*> c_argv;
  c_argv.reserve(argv.size() + 1);
  for (const auto& word : argv)
    c_argv.push_back(const_cast<char*>(word.c_str()));
  c_argv.push_back(nullptr);

  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, path->c_str(), &actions, &attr, c_argv.data(), environ);
  ::posix_spawn_file_actions_destroy(&actions);
  ::posix_spawnattr_destroy(&attr);
  if (rc != 0) throw lab_error("cannot start `" + command_text(argv) + "`: " + errno_text(rc));
  out_write.reset();
  err_write.reset();
  ::fcntl(out_read.fd, F_SETFL, O_NONBLOCK);
  ::fcntl(err_read.fd, F_SETFL, O_NONBLOCK);
  fd_closer pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));  // -1 before Linux 5.3

  command_result result;
  bool out_open = true, err_open = true, exited = false;
  int status = 0;
  const auto deadline = clock_type::now() + timeout;
  for (;;) {
    if (!exited) {
      pid_t r = ::waitpid(pid, &status, WNOHANG);
      if (r == pid) {
        exited = true;
      } else if (r < 0 && errno == ECHILD) {  // someone else reaped it (SIGCHLD ignored)
        exited = true;
        status = 0;
      }
    }
    if (exited) {
      // Everything it wrote before exiting is in the pipes now; a descendant that still
      // holds them open is not waited for.
      if (out_open) drain(out_read.fd, result.out);
      if (err_open) drain(err_read.fd, result.err);
      break;
    }
    const auto now = clock_type::now();
    if (now >= deadline) {
      ::kill(pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      throw lab_error("`" + command_text(argv) + "` did not finish within " +
                      std::to_string(timeout.count()) + " ms and was killed" +
                      (result.err.empty() ? std::string() : ": " + trim(result.err)));
    }
    auto wait_ms = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
    if (pidfd.fd < 0 || (!out_open && !err_open)) wait_ms = std::min<long long>(wait_ms, 5);
    pollfd fds[3];
    nfds_t count = 0;
    if (out_open) fds[count++] = {out_read.fd, POLLIN, 0};
    if (err_open) fds[count++] = {err_read.fd, POLLIN, 0};
    if (pidfd.fd >= 0) fds[count++] = {pidfd.fd, POLLIN, 0};
    int ready = ::poll(fds, count, static_cast<int>(wait_ms));
    if (ready < 0 && errno != EINTR) throw lab_error("poll: " + errno_text(errno));
    if (out_open) out_open = drain(out_read.fd, result.out);
    if (err_open) err_open = drain(err_read.fd, result.err);
  }
  if (WIFEXITED(status))
    result.exit_code = WEXITSTATUS(status);
  else if (WIFSIGNALED(status))
    result.exit_code = 128 + WTERMSIG(status);
  return result;
}

// ---- availability ------------------------------------------------------------------------

std::optional<std::string> unavailable_reason() {
  const std::string how =
      "run probe as root (sudo probe ...), or as an ordinary user inside its own user, "
      "network and mount namespaces: unshare --user --net --mount --map-root-user sh -c "
      "'mount -t tmpfs tmpfs /run && exec probe ...'";

  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  std::string missing_caps;
  if (::syscall(SYS_capget, &header, data) != 0) {
    missing_caps = "CAP_NET_ADMIN and CAP_SYS_ADMIN (capget failed: " + errno_text(errno) + ")";
  } else {
    auto has = [&](int cap) { return (data[cap / 32].effective & (1u << (cap % 32))) != 0; };
    if (!has(CAP_NET_ADMIN)) missing_caps = "CAP_NET_ADMIN";
    if (!has(CAP_SYS_ADMIN))
      missing_caps += std::string(missing_caps.empty() ? "" : " and ") + "CAP_SYS_ADMIN";
  }
  if (!missing_caps.empty())
    return "needs CAP_NET_ADMIN and CAP_SYS_ADMIN (to create network namespaces, veth pairs "
           "and nftables rules); this process lacks " +
           missing_caps + ": " + how;

  std::string missing_tools;
  for (const char* name : {"ip", "ss", "nft"}) {
    if (find_program(name)) continue;
    missing_tools += std::string(missing_tools.empty() ? "" : ", ") + name;
  }
  if (!missing_tools.empty())
    return "needs ip and ss (Debian package iproute2) and nft (package nftables); not found "
           "in PATH, /usr/sbin or /sbin: " +
           missing_tools;

  // ip netns add keeps each namespace as a bind mount under /run/netns.
  const char* dir = exists(netns_dir) ? netns_dir : "/run";
  if (::faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) != 0)
    return std::string("needs a writable ") + dir +
           " (ip netns add keeps the namespaces there): " + how;
  return std::nullopt;
}

// ---- stale labs ----------------------------------------------------------------------------

namespace {

// Who made a lab: a marker file per lab, named after its server namespace, holding the
// creator's PID, its start time (field 22 of /proc/PID/stat: a reused PID has another)
// and its PID namespace. Only a lab whose marker names a process of this PID namespace
// that is gone is provably a dead probe's; anything else may be another user's, another
// container's, or alive in a PID namespace we cannot see.
constexpr const char* owners_dir = "/run/deadpeer-labs";

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

std::string owner_file(const std::string& server_ns) { return std::string(owners_dir) + "/" + server_ns; }

void write_owner(const std::string& server_ns) {
  std::error_code ec;
  std::filesystem::create_directories(owners_dir, ec);
  std::ofstream out(owner_file(server_ns));
  out << ::getpid() << " " << process_start_time(::getpid()) << " " << pid_namespace() << "\n";
}

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
      case owner_state::alive: break;
      case owner_state::dead: stale.emplace_back(entry->d_name, server_ns); break;
      case owner_state::unknown:
        if (left_alone) left_alone->emplace_back(entry->d_name);
        break;
    }
  }
  ::closedir(dir);
  for (const auto& [name, server_ns] : stale) {
    command_result r = run({"ip", "netns", "del", name});
    if (r.exit_code == 0) removed.push_back(name);
    if (!exists(netns_file("dp-s-" + server_ns.substr(5))) &&
        !exists(netns_file("dp-c-" + server_ns.substr(5))))
      ::unlink(owner_file(server_ns).c_str());
  }
  return removed;
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

  // Labs of probes that were SIGKILLed (no handler ran) are swept once per process.
  static std::once_flag swept;
  std::call_once(swept, [] {
    std::vector<std::string> left;
    const auto removed = remove_stale_networks(&left);
    if (!removed.empty())
      std::fprintf(stderr, "deadpeer lab: removed %zu namespace(s) left by probe processes that died\n",
                   removed.size());
    if (!left.empty())
      std::fprintf(stderr,
                   "deadpeer lab: left %zu dp-* namespace(s) alone (e.g. %s): nothing proves they "
                   "belong to a dead probe of this host; remove them with ip netns del if they do\n",
                   left.size(), left.front().c_str());
  });
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
  ::unlink(owner_file(topo_.server_ns).c_str());
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
