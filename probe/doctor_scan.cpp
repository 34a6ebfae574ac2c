// doctor's snapshot of the host: sock_diag with TCP_INFO, /proc/PID/fd links
// ("socket:[inode]") for the holders, pidfd_getfd + getsockopt for the options in force,
// /proc/sys for the system's values. Reads only; a descriptor borrowed through
// pidfd_getfd is a second reference to the same socket and is closed at once.
#include "doctor.hpp"

#include <deadpeer/keepalive.hpp>

#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <unordered_set>

namespace probe::doctor {
namespace {

namespace fs = std::filesystem;
using deadpeer::tcp_state;

std::optional<long> read_number(const fs::path& p) {
  std::ifstream in(p);
  long v = 0;
  if (in >> v) return v;
  return std::nullopt;
}

std::string program_of(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/comm");
  std::string name;
  std::getline(in, name);
  return name.empty() ? "?" : name;
}

// "socket:[12345]" -> 12345; 0 for any other link.
std::uint64_t socket_inode(const std::string& link) {
  constexpr std::string_view prefix = "socket:[";
  if (link.rfind(prefix, 0) != 0 || link.back() != ']') return 0;
  return std::strtoull(link.c_str() + prefix.size(), nullptr, 10);
}

// Which descriptor of which process holds each of `wanted`, for processes doctor may
// look into (others are skipped: their sockets stay unowned in the report).
struct holder {
  process_ref process;
  int fd = -1;
};
std::unordered_map<std::uint64_t, holder> holders_of(
    const std::unordered_set<std::uint64_t>& wanted, std::optional<int> only_pid) {
  std::unordered_map<std::uint64_t, holder> found;
  std::error_code ec;
  for (fs::directory_iterator proc("/proc", ec), end; !ec && proc != end; proc.increment(ec)) {
    const auto name = proc->path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    const int pid = std::stoi(name);
    if (only_pid && pid != *only_pid) continue;
    std::optional<process_ref> process;
    std::error_code fd_ec;
    for (fs::directory_iterator fds(proc->path() / "fd", fd_ec), fd_end; !fd_ec && fds != fd_end;
         fds.increment(fd_ec)) {
      std::error_code link_ec;
      const auto target = fs::read_symlink(fds->path(), link_ec);
      if (link_ec) continue;
      const auto inode = socket_inode(target.string());
      if (inode == 0 || !wanted.contains(inode) || found.contains(inode)) continue;
      if (!process) process = process_ref{pid, program_of(pid)};
      found[inode] = holder{*process, std::atoi(fds->path().filename().c_str())};
    }
  }
  return found;
}

// Borrows each process's descriptors through pidfd_getfd to read their options.
class option_reader {
 public:
  ~option_reader() {
    for (const auto& [pid, pidfd] : pidfds_)
      if (pidfd >= 0) ::close(pidfd);
  }
  std::optional<deadpeer::keepalive_settings> read(const holder& h) {
    auto [at, fresh] = pidfds_.try_emplace(h.process.pid, -1);
    if (fresh) {
      at->second = static_cast<int>(::syscall(SYS_pidfd_open, h.process.pid, 0));
      if (at->second < 0) note(errno);
    }
    if (at->second < 0) return std::nullopt;
    const int borrowed = static_cast<int>(::syscall(SYS_pidfd_getfd, at->second, h.fd, 0));
    if (borrowed < 0) {
      note(errno);
      return std::nullopt;
    }
    std::error_code ec;
    auto settings = deadpeer::read_keepalive(borrowed, ec);
    ::close(borrowed);
    if (ec) return std::nullopt;
    return settings;
  }
  const std::string& failure() const { return failure_; }

 private:
  void note(int error) {
    if (!failure_.empty()) return;
    failure_ = error == EPERM || error == EACCES
                   ? "the kernel does not let this user borrow another process's sockets: "
                     "run doctor as that process's user or as root"
                   : std::string("pidfd_getfd: ") + std::strerror(error);
  }
  std::unordered_map<int, int> pidfds_;
  std::string failure_;
};

}  // namespace

host_snapshot scan(const scope& only) {
  host_snapshot host;
  deadpeer::sock_diag diag;
  host.sockets = diag.list(deadpeer::sock_diag::detail::tcp_info);
  std::unordered_set<std::uint64_t> wanted;
  for (const auto& s : host.sockets)
    if (s.inode != 0 && s.state != tcp_state::listen &&
        (!only.port || s.local.port() == *only.port || s.remote.port() == *only.port))
      wanted.insert(s.inode);

  option_reader options;
  for (const auto& [inode, h] : holders_of(wanted, only.pid)) {
    host.owners[inode] = h.process;
    if (const auto settings = options.read(h)) host.settings[inode] = *settings;
  }
  host.settings_unreadable = options.failure();

  host.defaults = deadpeer::read_kernel_defaults();
  const fs::path ipv4 = "/proc/sys/net/ipv4";
  if (const auto v = read_number(ipv4 / "tcp_fin_timeout")) host.fin_timeout = std::chrono::seconds(*v);
  std::ifstream range(ipv4 / "ip_local_port_range");
  int first = 0, last = 0;
  if (range >> first >> last && first <= last) {
    host.port_range_first = first;
    host.port_range_last = last;
  }
  return host;
}

}  // namespace probe::doctor
