// The heartbeat arrivals of one recorded connection (server_options::record_arrivals): the
// CLOCK_MONOTONIC instants, in nanoseconds, of the last `capacity` reads that brought bytes
// from the peer after its handshake. What it decides:
// - Bounded, and the newest win: the trace a user tunes a detector on must include the
//   silence right before the connection ended, so old arrivals are overwritten, never new.
// - Memory grows with the arrivals seen (a vector filled up to capacity, then overwritten in
//   place), so a connection that ends early never pays for a large N.
// - Every arrival has a sequence number (1 for the connection's first), so a reader can page
//   through a ring that moves on between two reads (GET /arrivals?since=SEQ), and the first
//   arrival ever seen stays the origin of the times the control API serves.
// One event loop owns each ring; nothing here is thread-safe.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace deadpeer::detail {

class arrival_ring {
 public:
  explicit arrival_ring(std::size_t capacity) : capacity_(std::max<std::size_t>(capacity, 1)) {}

  void add(std::int64_t mono_ns) {
    if (seen_ == 0) origin_ns_ = mono_ns;
    ++seen_;
    if (ns_.size() < capacity_) {
      ns_.push_back(mono_ns);
      return;
    }
    ns_[next_] = mono_ns;
    next_ = (next_ + 1) % capacity_;
  }

  /// Arrivals kept (at most the capacity).
  std::size_t size() const { return ns_.size(); }
  /// Arrivals ever added; the kept ones are numbered seen() - size() + 1 .. seen().
  std::uint64_t seen() const { return seen_; }
  /// The sequence number of the oldest kept arrival (1 before the ring wraps).
  std::uint64_t first_kept() const { return seen_ - ns_.size() + 1; }
  /// The first arrival ever added (0 before any).
  std::int64_t origin_ns() const { return origin_ns_; }

  /// The kept arrivals with a sequence number above `since`, oldest first, at most `limit`.
  std::vector<std::int64_t> after(std::uint64_t since, std::size_t limit) const {
    std::vector<std::int64_t> out;
    const std::uint64_t first = std::max(since + 1, first_kept());
    if (first > seen_) return out;
    const auto available = static_cast<std::size_t>(seen_ - first + 1);
    out.reserve(std::min(available, limit));
    // ns_ is in order from index `next_` (0 until the ring wraps), wrapping around.
    std::size_t at = (next_ + static_cast<std::size_t>(first - first_kept())) % ns_.size();
    for (std::size_t i = 0; i < available && i < limit; ++i) {
      out.push_back(ns_[at]);
      at = at + 1 == ns_.size() ? 0 : at + 1;
    }
    return out;
  }
  /// Every kept arrival, oldest first.
  std::vector<std::int64_t> ordered() const { return after(0, ns_.size()); }

 private:
  std::vector<std::int64_t> ns_;
  std::size_t capacity_;
  std::size_t next_ = 0;  ///< the oldest kept arrival once the ring is full
  std::uint64_t seen_ = 0;
  std::int64_t origin_ns_ = 0;
};

}  // namespace deadpeer::detail
