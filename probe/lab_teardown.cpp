// The lab's teardown faults: what stops a close half-way. The victim's outgoing segments
// are dropped in its own nft table (not the cable-pull table, so healing one kind of fault
// never flushes the other's rules), at the output hook so the victim's kernel still
// receives everything and acknowledges or closes as it would in the field.
#include "lab_internal.hpp"

namespace probe::lab {
namespace {

using namespace detail;

constexpr const char* teardown_table = "inet teardown_fault";

// Adds the table and its out chain unless they exist, then one drop rule (`match` may be
// empty: everything).
void add_drop(const topology& t, const std::string& match) {
  const std::string table = teardown_table;
  (void)check({tool("ip"), "netns", "exec", t.victim_ns, tool("nft"),
               "add table " + table + "; add chain " + table +
                   " out { type filter hook output priority -300; policy accept; }; add rule " +
                   table + " out " + match + (match.empty() ? "" : " ") + "drop"});
}

}  // namespace

void network::drop_victim_output() {
  add_drop(topo_, "");
}

void network::drop_victim_fins() {
  add_drop(topo_, "tcp flags & fin == fin");
}

void network::heal_teardown_faults() {
  const std::string table = teardown_table;
  // "add" first so that the delete succeeds whether or not a fault was injected.
  (void)check({tool("ip"), "netns", "exec", topo_.victim_ns, tool("nft"),
               "add table " + table + "; delete table " + table});
}

}  // namespace probe::lab
