// The lab's random loss: a live path that loses some of its packets, the noise a failure
// detector must not mistake for a dead peer.
//
// What this module decides:
// - Loss is two rules per chain of the victim's `inet fault` table, added in one nft
//   transaction: a counter that sees every packet, then `numgen random mod 10000 < N` with a
//   counter and drop. Each packet is drawn on its own in the kernel (independent loss, no
//   bursts), in both directions; ARP is not in an inet table, so neighbours stay resolved, as
//   on a lossy radio link whose link layer still works. netem is not used: this kernel has
//   none, and nftables is what the other faults already use.
// - The counters are the measurement: what the kernel actually dropped, per direction, not
//   what the probability promised.
// - The rules carry comments, so reading them back never depends on rule order or handles.
#include "lab_internal.hpp"

#include <string_view>

namespace probe::lab {
namespace {

using namespace detail;

constexpr std::string_view seen_comment = "deadpeer-seen";
constexpr std::string_view loss_comment = "deadpeer-loss";

/// The packets of the counter on the line of `listing` that carries `comment`; 0 if none.
std::uint64_t counter_packets(const std::string& listing, std::string_view comment) {
  const std::string tagged = "comment \"" + std::string(comment) + "\"";
  std::size_t start = 0;
  while (start < listing.size()) {
    auto end = listing.find('\n', start);
    if (end == std::string::npos) end = listing.size();
    const std::string_view line(listing.data() + start, end - start);
    start = end + 1;
    if (line.find(tagged) == std::string_view::npos) continue;
    constexpr std::string_view marker = "counter packets ";
    const auto at = line.find(marker);
    if (at == std::string_view::npos) return 0;
    std::uint64_t packets = 0;
    for (std::size_t i = at + marker.size(); i < line.size() && line[i] >= '0' && line[i] <= '9';
         ++i)
      packets = packets * 10 + static_cast<std::uint64_t>(line[i] - '0');
    return packets;
  }
  return 0;
}

}  // namespace

void network::loss_start(int basis_points) {
  if (basis_points < 1 || basis_points > 10000)
    throw lab_error("loss of " + std::to_string(basis_points) +
                    " basis points is outside 1..10000");
  if (pulled_) throw lab_error("cannot add loss to a pulled cable");
  const std::string table = "inet " + topo_.nft_table;
  const auto listing = check({tool("ip"), "netns", "exec", topo_.victim_ns, tool("nft"), "list",
                              "chain", "inet", topo_.nft_table, "in"});
  if (listing.out.find(loss_comment) != std::string::npos)
    throw lab_error("loss is already on in " + topo_.victim_ns);
  std::string rules;
  for (const char* chain : {"in", "out"}) {
    const std::string at = "add rule " + table + " " + chain + " ";
    rules += at + "counter comment \"" + std::string(seen_comment) + "\"; ";
    rules += at + "numgen random mod 10000 < " + std::to_string(basis_points) +
             " counter drop comment \"" + std::string(loss_comment) + "\"; ";
  }
  check({tool("ip"), "netns", "exec", topo_.victim_ns, tool("nft"), rules});
}

network::loss_counters network::loss_counts() const {
  loss_counters counts;
  for (const char* chain : {"in", "out"}) {
    const auto listing = check({tool("ip"), "netns", "exec", topo_.victim_ns, tool("nft"), "list",
                                "chain", "inet", topo_.nft_table, chain});
    const bool in = std::string_view(chain) == "in";
    (in ? counts.in_packets : counts.out_packets) = counter_packets(listing.out, seen_comment);
    (in ? counts.in_dropped : counts.out_dropped) = counter_packets(listing.out, loss_comment);
  }
  return counts;
}

void network::loss_stop() {
  // The loss rules are the only rules in these chains unless the cable is pulled, which
  // loss_start refuses; flushing them is the same as healing.
  if (pulled_) return;
  cable_heal();
}

}  // namespace probe::lab
