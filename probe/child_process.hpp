// A program run as a real child process (a victim, or a server under test), its stdout readable
// line by line with a bounded wait, ended by its PID only (SIGKILL on destruction if still
// running, and by the kernel when probe dies), inheriting no descriptor but 0, 1 and 2.
#pragma once

#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace probe {

class child_process {
 public:
  explicit child_process(const std::vector<std::string>& argv);
  /// Stdout and stderr go to `log_path` (created or truncated) instead: for a program whose
  /// output nobody reads line by line. read_line then returns nullopt.
  child_process(const std::vector<std::string>& argv, const std::string& log_path);
  ~child_process();
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  int pid() const { return pid_; }
  /// The next line of stdout, or nullopt on EOF or when `timeout` passes.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout);
  /// Reads lines until one contains `text`; returns it, or nullopt.
  std::optional<std::string> wait_for_line(const std::string& text,
                                           std::chrono::milliseconds timeout);
  void signal(int sig);
  /// Waits for exit; the raw waitpid status, or nullopt if still running after `timeout`.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  /// From now on every wait of every child_process returns at once (nullopt) once `*flag`
  /// is true: a Ctrl-C stops a wait for a victim's line instead of sitting out its timeout.
  static void stop_waiting_when(const std::atomic<bool>* flag);
  /// Everything read from stdout so far.
  const std::string& output() const { return output_; }

 private:
  void start(const std::vector<std::string>& argv, int output_fd, bool merge_stderr);

  int pid_ = -1;
  int stdout_fd_ = -1;
  bool reaped_ = false;
  std::string buffer_;
  std::string output_;
};

}  // namespace probe
