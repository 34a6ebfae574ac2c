// The fault lab: real faults on a real kernel, without touching the host's own network.
//
// A lab is two network namespaces joined by a veth pair: the server end lives in one, the
// "victim" in the other, and faults are injected on the victim's side only: an nftables drop
// (cable pull), the veth going down, or its sockets destroyed while the path is dropped (a
// reboot: no FIN ever leaves). The kernel then does what it would do in the field, which is
// what users tune keepalive against.
//
// What this module decides:
// - Names are unique per process and instance ("dp-s-<pid>-<n>", "dp-c-<pid>-<n>"), so
//   concurrent probes never collide; the interface names inside ("dps", "dpc") are per
//   namespace. Addresses are fixed (10.231.77.1 and .2/24): each pair is isolated.
// - Commands are run as child processes (ip, nft, ss) without a shell, with a bounded wait;
//   a failure names the command and quotes its stderr.
// - Every exit path removes the namespaces: the destructor, a constructor that fails
//   half-way, and the terminating signals a user or a pipe sends (install_cleanup_handlers).
//   Only SIGKILL escapes; remove_stale_networks() sweeps up after it. The signal path uses
//   only async-signal-safe calls on argv arrays built when the lab was created.
// - The calling thread enters a namespace only for the duration of a callback
//   (in_server_ns / in_victim_ns); a socket keeps the namespace it was created in, so an
//   embedded server or client can run inside the lab from any thread afterwards.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace probe::lab {

/// The lab could not be built or a fault could not be injected; what() names the command
/// that failed and quotes its stderr.
class lab_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// nullopt when this process can build the lab: CAP_NET_ADMIN and CAP_SYS_ADMIN in its user
/// namespace, a writable /run/netns (or /run), and ip, nft and ss installed. Otherwise a
/// message saying what is missing and how to run it. Cheap (no child process) and leaves
/// nothing behind.
std::optional<std::string> unavailable_reason();

/// Names and addresses of one lab. Addresses are without prefix length (it is /24).
struct topology {
  std::string server_ns, victim_ns;      ///< network namespace names (ip netns list)
  std::string server_if, victim_if;      ///< veth ends, "dps" and "dpc", one per namespace
  std::string server_addr, victim_addr;  ///< "10.231.77.1", "10.231.77.2"
  std::string nft_table;  ///< "fault", family inet, in the victim namespace, chains in/out
};

/// What a child process did: its exit code (or 128 + signal number if a signal ended it)
/// and everything it wrote.
struct command_result {
  int exit_code = 0;
  std::string out;
  std::string err;
};

/// Runs argv[0] (looked up in PATH, then /usr/sbin, /sbin, /usr/bin, /bin) with argv, no
/// shell, stdin from /dev/null, and waits at most `timeout`; a command still running then
/// is killed (SIGKILL) and lab_error is thrown, as it is when the program cannot be started.
/// A non-zero exit is not an error here: see exit_code.
command_result run(const std::vector<std::string>& argv,
                   std::chrono::milliseconds timeout = std::chrono::seconds(10));

/// One lab: two namespaces joined by a veth pair. Not copyable or movable (the signal
/// cleanup registry refers to it by slot).
class network {
 public:
  /// Builds the lab: namespaces, veth, addresses, lo and the veth up in both (returns once
  /// the link carries traffic), nft table `inet fault` with chains in/out (priority -300,
  /// policy accept) in the victim namespace. Installs the signal cleanup handlers.
  /// Throws lab_error with the failing command and its stderr, after removing what was
  /// already created.
  network();
  /// Calls destroy().
  ~network();
  network(const network&) = delete;
  network& operator=(const network&) = delete;

  /// Removes both namespaces (which removes the veth and the nft table once no socket
  /// holds them). Idempotent, never throws; problems are reported on stderr. Does nothing
  /// in a forked child: only the creating process tears its lab down.
  void destroy() noexcept;

  const topology& topo() const { return topo_; }

  /// Drops everything in and out of the victim namespace at the IP level (nft rules in the
  /// victim's in/out chains). ARP still works. No-op if already pulled.
  void cable_pull();
  /// Removes the drop rules.
  void cable_heal();
  bool cable_pulled() const { return pulled_; }

  /// Sets the victim's veth end down (its routes go with it); link_up returns once the
  /// link carries traffic again.
  void link_down();
  void link_up();

  /// `ss -K` in the victim namespace for every socket connected to the server address:
  /// they are closed at once (the victim's own fds then fail with ECONNABORTED). The kernel
  /// sends an RST for each unless the cable is pulled: a "reboot" is cable_pull(),
  /// destroy_victim_sockets(), cable_heal() — see reboot_victim(). Throws lab_error if a
  /// socket survives (a kernel without CONFIG_INET_DIAG_DESTROY).
  void destroy_victim_sockets();
  /// The victim host reboots: its sockets to the server vanish without FIN or RST, and the
  /// path works again afterwards (the cable is left as it was before the call). The server
  /// learns of it only when it next sends something (data or a keepalive probe): RST.
  void reboot_victim();

  /// Random loss (lab_noise.cpp): every packet into and out of the victim namespace is
  /// dropped with probability basis_points / 10000, each on its own (nft numgen random, the
  /// kernel's randomness: not repeatable). Counts what passed and what was dropped. Throws
  /// lab_error when the cable is pulled or loss is already on; basis_points 1..10000.
  void loss_start(int basis_points);
  /// Packets seen and dropped by the loss rules since loss_start, per direction.
  struct loss_counters {
    std::uint64_t in_packets = 0, in_dropped = 0;    ///< toward the victim
    std::uint64_t out_packets = 0, out_dropped = 0;  ///< from the victim
  };
  loss_counters loss_counts() const;
  /// Removes the loss rules (no-op when there are none).
  void loss_stop();

  /// Connect faults (lab_connect.cpp): an nftables table `inet connect_fault` in the server
  /// namespace (created on first use, gone with the namespace) drops the SYNs arriving from
  /// the victim (drop_syns) or the SYN-ACKs the server sends back (drop_synacks); every
  /// other segment passes. heal_connect_faults() removes the table. Throws lab_error.
  void drop_syns();
  void drop_synacks();
  void heal_connect_faults();
  /// A sysctl such as "net.ipv4.tcp_syn_retries" in one of the lab's namespaces (net.*
  /// sysctls are per network namespace: the host's stay untouched). read_* give nullopt
  /// when this kernel has no such key; set_* throw lab_error.
  void set_victim_sysctl(const std::string& key, const std::string& value);
  void set_server_sysctl(const std::string& key, const std::string& value);
  std::optional<std::string> read_victim_sysctl(const std::string& key) const;
  std::optional<std::string> read_server_sysctl(const std::string& key) const;

  /// Teardown faults (lab_teardown.cpp): an nftables table `inet teardown_fault` in the
  /// victim namespace (apart from the cable-pull and connect tables) drops what the victim
  /// sends: everything (drop_victim_output: the ACK of the server's FIN is lost) or only its
  /// segments with FIN set (drop_victim_fins: it acknowledges the server's FIN, its own is
  /// lost). heal_teardown_faults() removes the table. Throws lab_error.
  void drop_victim_output();
  void drop_victim_fins();
  void heal_teardown_faults();

  /// Runs fn on the calling thread while that thread is inside the server namespace
  /// (setns(CLONE_NEWNET) on a saved fd), then returns it to its original namespace even if
  /// fn throws. Sockets created in fn stay in the server namespace: this is how an embedded
  /// server listens inside the lab. If the thread cannot return, the process aborts (it
  /// would otherwise go on in the wrong network).
  void in_server_ns(const std::function<void()>& fn) const;
  /// The same for the victim namespace: how an embedded client connects from inside it.
  void in_victim_ns(const std::function<void()>& fn) const;

  /// argv prefix to run a program inside the victim namespace:
  /// {"<path of ip>", "netns", "exec", victim_ns}.
  std::vector<std::string> victim_exec_prefix() const;
  /// The same for the server namespace.
  std::vector<std::string> server_exec_prefix() const;

 private:
  void build();
  void wait_link_carries(std::chrono::milliseconds timeout);

  topology topo_;
  int slot_ = -1;  // index in the signal cleanup registry
  int server_fd_ = -1;
  int victim_fd_ = -1;
  int owner_pid_ = 0;
  bool pulled_ = false;
  bool destroyed_ = false;
};

/// Removes the namespaces of labs whose creator is provably gone (one that was SIGKILLed
/// cannot clean up after itself): each lab leaves a marker with its creator's PID, that
/// process's start time and its PID namespace; a lab is removed only when the marker
/// names this PID namespace and no process with that PID and start time exists. dp-*
/// namespaces without such proof (another container's, another PID namespace's, from an
/// older probe) are left alone and, if `left_alone` is given, listed there. network()
/// calls this once per process. Returns the names removed.
std::vector<std::string> remove_stale_networks(std::vector<std::string>* left_alone = nullptr);

/// Installs SIGINT, SIGTERM, SIGHUP, SIGQUIT and SIGPIPE handlers that remove every live
/// network of this process and then pass the signal on: to the handler that was installed
/// before (e.g. an Asio signal_set, so a graceful shutdown still happens), or else re-raised
/// with the default action, so Ctrl-C never leaves namespaces behind. A second signal of the
/// same kind gets the default action. A signal that is ignored (SIG_IGN, e.g. SIGHUP under
/// nohup) is left ignored. Safe to call again: it installs only where the handler is not
/// already this one, so call it again after something else (a signal_set) has replaced it.
/// network() calls it.
void install_cleanup_handlers();

/// From now on the first SIGINT or SIGTERM only sets `*flag`: the program stops between
/// steps and removes its labs in order (no lab vanishes under a trial that is still
/// running). A second one removes every lab at once and ends the program with the
/// signal's default action. nullptr restores immediate cleanup. Installs the handlers.
void defer_interrupts(std::atomic<bool>* flag);

}  // namespace probe::lab
