// The lab's connect faults: what stops a handshake half-way. SYNs or SYN-ACKs are dropped
// in the server namespace (its own nft table, apart from the victim's cable-pull table, so
// the two kinds of fault never flush each other's rules), and the SYN retry sysctls are set
// per namespace, which lets a trial use tcp_syn_retries 1 or 3 without touching the host.
#include "lab_internal.hpp"

namespace probe::lab {
namespace {

using namespace detail;

constexpr const char* connect_table = "inet connect_fault";

std::optional<std::string> read_sysctl(const std::string& ns, const std::string& key) {
  const command_result r = run({tool("ip"), "netns", "exec", ns, tool("sysctl"), "-n", key});
  if (r.exit_code != 0) return std::nullopt;
  return trim(r.out);
}

void write_sysctl(const std::string& ns, const std::string& key, const std::string& value) {
  (void)check({tool("ip"), "netns", "exec", ns, tool("sysctl"), "-q", "-w", key + "=" + value});
}

// Adds the table with both chains unless it exists, then one drop rule for `flags`.
void add_drop(const topology& t, const std::string& chain, const std::string& flags) {
  const std::string table = connect_table;
  (void)check({tool("ip"), "netns", "exec", t.server_ns, tool("nft"),
               "add table " + table + "; add chain " + table +
                   " in { type filter hook input priority -300; policy accept; }; add chain " +
                   table + " out { type filter hook output priority -300; policy accept; }; " +
                   "add rule " + table + " " + chain + " tcp flags & (syn | ack) == " + flags +
                   " drop"});
}

}  // namespace

void network::drop_syns() { add_drop(topo_, "in", "syn"); }

void network::drop_synacks() { add_drop(topo_, "out", "syn | ack"); }

void network::heal_connect_faults() {
  const std::string table = connect_table;
  // "add" first so that the delete succeeds whether or not a fault was injected.
  (void)check({tool("ip"), "netns", "exec", topo_.server_ns, tool("nft"),
               "add table " + table + "; delete table " + table});
}

void network::set_victim_sysctl(const std::string& key, const std::string& value) {
  write_sysctl(topo_.victim_ns, key, value);
}

void network::set_server_sysctl(const std::string& key, const std::string& value) {
  write_sysctl(topo_.server_ns, key, value);
}

std::optional<std::string> network::read_victim_sysctl(const std::string& key) const {
  return read_sysctl(topo_.victim_ns, key);
}

std::optional<std::string> network::read_server_sysctl(const std::string& key) const {
  return read_sysctl(topo_.server_ns, key);
}

}  // namespace probe::lab
