#include "child_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <stdexcept>
#include <system_error>
#include <thread>

extern char** environ;

namespace probe {

namespace {

// PATH lookup done before fork: the child may only make async-signal-safe calls.
std::string resolve(const std::string& program) {
  if (program.find('/') != std::string::npos) return program;
  std::string dirs = std::getenv("PATH") != nullptr ? std::getenv("PATH") : "";
  dirs += ":/usr/sbin:/sbin:/usr/bin:/bin";
  std::size_t at = 0;
  while (at <= dirs.size()) {
    const auto colon = std::min(dirs.find(':', at), dirs.size());
    const std::string candidate = dirs.substr(at, colon - at) + "/" + program;
    if (colon > at && ::access(candidate.c_str(), X_OK) == 0) return candidate;
    at = colon + 1;
  }
  return program;
}

std::atomic<const std::atomic<bool>*> stop_flag{nullptr};

bool told_to_stop() {
  const auto* flag = stop_flag.load();
  return flag != nullptr && flag->load();
}

}  // namespace

void child_process::stop_waiting_when(const std::atomic<bool>* flag) {
  stop_flag.store(flag);
}

// fork + execve rather than posix_spawn, for two things posix_spawn cannot do:
// - PR_SET_PDEATHSIG: the child is killed when probe dies, even by SIGKILL, so no victim
//   or server outlives it (a stopped one would otherwise stay stopped forever). The
//   signal follows the thread that forked: children are spawned by long-lived threads.
// - close_range: the child inherits only stdin, stdout and stderr. A socket without
//   CLOEXEC (Asio opens them without it) inherited by a victim would keep the server's
//   side of an old connection open, and its close would never reach the wire.
child_process::child_process(const std::vector<std::string>& argv) {
  int out_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category());
  try {
    start(argv, out_pipe[1], false);
  } catch (...) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    throw;
  }
  ::close(out_pipe[1]);
  stdout_fd_ = out_pipe[0];
}

child_process::child_process(const std::vector<std::string>& argv, const std::string& log_path) {
  const int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (log < 0) throw std::system_error(errno, std::generic_category(), "open " + log_path);
  try {
    start(argv, log, true);
  } catch (...) {
    ::close(log);
    throw;
  }
  ::close(log);
}

void child_process::start(const std::vector<std::string>& argv, int output_fd, bool merge_stderr) {
  if (argv.empty()) throw std::invalid_argument("child_process: empty argv");
  int error_pipe[2];  // the child writes errno here when exec fails
  if (::pipe2(error_pipe, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category());
  const std::string path = resolve(argv[0]);
  std::vector<char*> args;
  for (const auto& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the parent died before prctl took effect
    ::dup2(output_fd, STDOUT_FILENO);         // dup2 clears CLOEXEC on the copy
    if (merge_stderr) ::dup2(output_fd, STDERR_FILENO);
    const int error_fd = ::fcntl(error_pipe[1], F_DUPFD_CLOEXEC, 3);
    if (error_fd > 3) ::dup2(error_fd, 3);
    ::fcntl(3, F_SETFD, FD_CLOEXEC);
    ::close_range(4, ~0U, 0);
    ::execve(path.c_str(), args.data(), environ);
    const int e = errno;
    (void)!::write(3, &e, sizeof e);
    ::_exit(127);
  }
  const int fork_error = errno;
  ::close(error_pipe[1]);
  if (pid_ < 0) {
    ::close(error_pipe[0]);
    throw std::system_error(fork_error, std::generic_category(), "fork for " + argv[0]);
  }
  int exec_error = 0;
  ssize_t n = 0;
  do {
    n = ::read(error_pipe[0], &exec_error, sizeof exec_error);
  } while (n < 0 && errno == EINTR);
  ::close(error_pipe[0]);
  if (n == static_cast<ssize_t>(sizeof exec_error)) {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    reaped_ = true;
    throw std::system_error(exec_error, std::generic_category(), "cannot run " + argv[0]);
  }
}

child_process::~child_process() {
  if (!reaped_) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  if (stdout_fd_ >= 0) ::close(stdout_fd_);
}

std::optional<std::string> child_process::read_line(std::chrono::milliseconds timeout) {
  if (stdout_fd_ < 0) return std::nullopt;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (const auto newline = buffer_.find('\n'); newline != std::string::npos) {
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      return line;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || told_to_stop()) return std::nullopt;
    pollfd p{.fd = stdout_fd_, .events = POLLIN, .revents = 0};
    // Wakes every 100 ms to see a stop request: signals here are handled with SA_RESTART
    // and may arrive on another thread, so poll() is not reliably interrupted.
    const int ready = ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 100)));
    if (ready == 0 || (ready < 0 && errno == EINTR)) continue;
    if (ready <= 0) return std::nullopt;
    char chunk[4096];
    const auto n = ::read(stdout_fd_, chunk, sizeof chunk);
    if (n <= 0) return std::nullopt;
    buffer_.append(chunk, static_cast<std::size_t>(n));
    output_.append(chunk, static_cast<std::size_t>(n));
  }
}

std::optional<std::string> child_process::wait_for_line(const std::string& text,
                                                        std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    auto line = read_line(left);
    if (!line) return std::nullopt;
    if (line->find(text) != std::string::npos) return line;
  }
}

void child_process::signal(int sig) {
  if (!reaped_) ::kill(pid_, sig);
}

std::optional<int> child_process::wait(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      return status;
    }
    if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace probe
