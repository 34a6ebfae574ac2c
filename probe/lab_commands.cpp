// The fault lab's commands (ip, nft, ss) and whether a lab can be built here.
//
// - Child processes are started with posix_spawn (stdin /dev/null, stdout and stderr to
//   pipes, signal mask cleared and dispositions reset) and watched with poll on the pipes
//   and a pidfd, so the wait is bounded without busy-waiting; one that overruns is killed.
#include "lab_internal.hpp"

#include <fcntl.h>
#include <linux/capability.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

extern char** environ;

namespace probe::lab {
namespace {

using clock_type = std::chrono::steady_clock;

bool is_executable_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

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

}  // namespace

namespace detail {

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

}  // namespace detail

using namespace detail;

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

}  // namespace probe::lab
