// What the lab's source files share, private to probe/lab*.cpp: running its commands
// (lab_commands.cpp), the registry that removes labs on signals and after a SIGKILL
// (lab_cleanup.cpp), and the networks themselves (lab.cpp).
#pragma once

#include "lab.hpp"

#include <unistd.h>

#include <optional>
#include <string>
#include <vector>

namespace probe::lab::detail {

inline constexpr const char* netns_dir = "/run/netns";

/// Closes a descriptor when it goes out of scope.
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

std::string errno_text(int e);
/// Without leading and trailing blanks and newlines.
std::string trim(std::string s);
/// argv as a person would type it, program by its name.
std::string command_text(const std::vector<std::string>& argv);
/// The full path of `name` (PATH, then /usr/sbin, /sbin, /usr/bin, /bin), or nullopt.
std::optional<std::string> find_program(const std::string& name);
/// find_program, or lab_error naming what is missing.
std::string tool(const char* name);
/// run() that throws unless the command exits 0.
command_result check(const std::vector<std::string>& argv);
std::string netns_file(const std::string& name);
bool exists(const std::string& path);

/// A slot of the signal cleanup registry for this lab (lab_error when all are taken).
int claim_slot(const std::string& ip_path, const topology& t);
void release_slot(int slot);
/// The owner marker of a lab (remove_stale_networks) and its removal.
void write_owner(const std::string& server_ns);
void remove_owner(const std::string& server_ns);
/// remove_stale_networks() once per process, saying on stderr what it did and left.
void sweep_stale_once();

}  // namespace probe::lab::detail
