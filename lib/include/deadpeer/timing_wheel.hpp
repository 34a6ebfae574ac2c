// Every per-connection deadline of the epoll server (handshake, ping due, dead-after,
// reap) lives in one hashed timing wheel per event loop: 1 ms ticks, 65536 slots, so one
// revolution is about 65 s. A connection's slab index is its handle, and each slot is an
// intrusive doubly linked list threaded through a vector indexed by handle, so schedule,
// move and cancel are O(1) splices that allocate nothing once the vector covers the slab.
//
// Entries keep their absolute due time rather than a round counter: a slot mixes entries
// of several revolutions, a visit fires only those whose due has passed, and nothing ever
// fires early. One occupancy bit per slot lets expire() jump from one occupied slot to the
// next (a loop that slept for hours costs at most one revolution of bitmap words, not one
// step per tick) and lets next_wakeup() give epoll_wait its timeout without walking slots.
// Memory: 16 B per handle, plus 4 B and one bit per slot (about 264 KiB for 65536 slots).
//
// mosquitto keeps keepalive deadlines in one-second buckets, which is cheaper still but
// lets a deadline fire up to a second late. Detection latency is what deadpeer measures,
// so deadlines need millisecond resolution.
#pragma once

#include <algorithm>
#include <cassert>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

namespace deadpeer {

/// Deadlines keyed by a caller-chosen index, on a monotonic nanosecond clock.
/// Not thread-safe: one wheel belongs to one event loop.
class timing_wheel {
 public:
  /// The caller's index for an entry (its connection-slab index); below 2^31.
  using handle = std::uint32_t;

  /// `tick`: slot width (> 0); `slots`: a power of two, at most 2^30; `start_ns`: the
  /// wheel's origin, normally the loop's monotonic_ns() when it starts. Entries due more
  /// than tick × slots ahead are fine: they wait in their slot for their round.
  /// Throws config_error (a std::invalid_argument) for any other tick or slot count.
  explicit timing_wheel(std::chrono::nanoseconds tick = std::chrono::milliseconds(1),
                        std::size_t slots = 65536, std::int64_t start_ns = 0);

  /// Sizes the link vector for handles below `handles`, so that scheduling them never
  /// allocates.
  void reserve(std::size_t handles);
  /// How many handles (0 ... capacity() - 1) can be scheduled without allocating.
  std::size_t capacity() const { return links_.size(); }

  /// Sets or moves the deadline of `h`. O(1). A due time already passed fires at the next
  /// expire(). Grows the link vector (geometrically) if `h` is beyond capacity().
  void schedule(handle h, std::int64_t due_ns) {
    if (h >= links_.size()) grow_for(h);
    if (links_[h].prev == no_handle) {
      ++size_;
    } else {
      unlink(h);
    }
    links_[h].due_ns = due_ns;
    link_into(h, slot_for(due_ns));
  }

  /// Forgets `h`. O(1). No effect if `h` is not scheduled.
  void cancel(handle h) {
    if (!scheduled(h)) return;
    unlink(h);
    links_[h].prev = no_handle;
    --size_;
  }

  /// Whether `h` has a deadline.
  bool scheduled(handle h) const { return h < links_.size() && links_[h].prev != no_handle; }
  /// The deadline of `h`. Precondition: scheduled(h).
  std::int64_t due(handle h) const {
    assert(scheduled(h));
    return links_[h].due_ns;
  }
  /// Number of scheduled entries.
  std::size_t size() const { return size_; }

  /// Calls `on_due(h)` for every entry with due <= now_ns, slot by slot from the last
  /// expire() position, and returns how many. Each entry is unscheduled before its call,
  /// so the callback may schedule or cancel any handle, itself included; whatever it
  /// schedules fires at a later expire(), never in this one. A now_ns earlier than the
  /// previous call's does nothing. Visits only occupied slots, at most one revolution of
  /// them. Must not be called from inside `on_due`.
  template <class F>
  std::size_t expire(std::int64_t now_ns, F&& on_due);

  /// The earliest time at which expire() may fire something, never before now_ns and never
  /// after the earliest due (it may be earlier: the start of a slot whose entries are in a
  /// later round, or the due of an entry since cancelled). nullopt when nothing is
  /// scheduled. epoll_wait's timeout is this minus now, rounded up to milliseconds.
  std::optional<std::int64_t> next_wakeup(std::int64_t now_ns) const;

  /// Occupied slots that expire() has visited since construction: the work it did.
  std::uint64_t slots_visited() const { return slots_visited_; }

 private:
  struct link {
    std::uint32_t prev;  // a handle, list_tag | list index for the first entry, or no_handle
    std::uint32_t next;  // a handle, or no_handle at the end of the list
    std::int64_t due_ns;
  };
  static_assert(sizeof(link) == 16);

  static constexpr std::uint32_t no_handle = 0xFFFF'FFFF;  // as prev: not scheduled
  static constexpr std::uint32_t list_tag = 0x8000'0000;
  static constexpr std::int64_t never_ns = std::numeric_limits<std::int64_t>::max();
  static constexpr std::size_t no_slot = static_cast<std::size_t>(-1);

  void grow_for(handle h);
  // Distance (in slots) from `from_slot` to the nearest occupied slot no more than
  // `max_distance` ahead, wrapping; no_slot if there is none.
  std::size_t occupied_distance(std::size_t from_slot, std::size_t max_distance) const;
  bool occupied(std::size_t slot) const { return (occupied_[slot >> 6] >> (slot & 63)) & 1; }

  // Overdue entries go to the current slot: they fire at the next expire().
  std::size_t slot_for(std::int64_t due_ns) const {
    if (due_ns <= position_ns_) return current_slot_;
    const std::uint64_t ticks_ahead =
        (static_cast<std::uint64_t>(due_ns) - static_cast<std::uint64_t>(position_ns_)) / tick_ns_;
    return (current_slot_ + static_cast<std::size_t>(ticks_ahead & slot_mask_)) & slot_mask_;
  }

  // `list` is a slot, or one of the two lists expire() detaches slots into.
  void link_into(handle h, std::size_t list) {
    const std::uint32_t first = heads_[list];
    links_[h].prev = list_tag | static_cast<std::uint32_t>(list);
    links_[h].next = first;
    if (first != no_handle) {
      links_[first].prev = h;
    } else if (list <= slot_mask_) {
      occupied_[list >> 6] |= std::uint64_t{1} << (list & 63);
    }
    heads_[list] = h;
    if (list == current_slot_)
      current_slot_earliest_due_ns_ = std::min(current_slot_earliest_due_ns_, links_[h].due_ns);
  }

  void unlink(handle h) {
    const link& l = links_[h];
    if (l.prev & list_tag) {
      const std::size_t list = l.prev & ~list_tag;
      heads_[list] = l.next;
      if (l.next == no_handle && list <= slot_mask_)
        occupied_[list >> 6] &= ~(std::uint64_t{1} << (list & 63));
    } else {
      links_[l.prev].next = l.next;
    }
    if (l.next != no_handle) links_[l.next].prev = l.prev;
  }

  // Moves the entries of `slot` into `list` (one of expire()'s two).
  void detach(std::size_t slot, std::size_t list) {
    const std::uint32_t first = heads_[slot];
    heads_[slot] = no_handle;
    occupied_[slot >> 6] &= ~(std::uint64_t{1} << (slot & 63));
    links_[first].prev = list_tag | static_cast<std::uint32_t>(list);
    heads_[list] = first;
    ++slots_visited_;
  }

  // Fires the entries of `list` that are due; the others go back into `slot`.
  template <class F>
  std::size_t fire_due(std::size_t list, std::size_t slot, std::int64_t now_ns, F& on_due) {
    std::size_t fired = 0;
    for (handle h = heads_[list]; h != no_handle; h = heads_[list]) {
      unlink(h);
      if (links_[h].due_ns <= now_ns) {
        links_[h].prev = no_handle;
        --size_;
        ++fired;
        on_due(h);
      } else {
        link_into(h, slot);  // a later round
      }
    }
    return fired;
  }

  std::int64_t tick_ns_;
  std::size_t slot_mask_;
  std::size_t visiting_list_;  // after the slot heads: the slot expire() is working through
  std::size_t target_list_;    // and the current slot's entries, held until the others are done
  std::vector<link> links_;
  std::vector<std::uint32_t> heads_;     // one per slot, then the two above
  std::vector<std::uint64_t> occupied_;  // bit per slot: its list is not empty
  std::size_t current_slot_ = 0;
  std::int64_t position_ns_;  // start of the current slot's tick
  std::int64_t last_expire_ns_ = std::numeric_limits<std::int64_t>::min();
  // A lower bound on the dues in the current slot (exact right after expire()).
  std::int64_t current_slot_earliest_due_ns_ = never_ns;
  std::size_t size_ = 0;
  std::uint64_t slots_visited_ = 0;
};

template <class F>
std::size_t timing_wheel::expire(std::int64_t now_ns, F&& on_due) {
  if (now_ns < last_expire_ns_) return 0;
  last_expire_ns_ = now_ns;
  const std::uint64_t ticks_advanced =
      now_ns > position_ns_
          ? (static_cast<std::uint64_t>(now_ns) - static_cast<std::uint64_t>(position_ns_)) /
                tick_ns_
          : 0;
  // Visits the ticks from span before now to now: every slot once after a longer gap.
  const auto span = static_cast<std::size_t>(std::min<std::uint64_t>(ticks_advanced, slot_mask_));
  const std::size_t target_slot =
      (current_slot_ + static_cast<std::size_t>(ticks_advanced & slot_mask_)) & slot_mask_;
  const std::size_t first_slot = (target_slot - span) & slot_mask_;
  // Move first: whatever a callback schedules is placed relative to the new position.
  current_slot_ = target_slot;
  position_ns_ = static_cast<std::int64_t>(static_cast<std::uint64_t>(position_ns_) +
                                           ticks_advanced * static_cast<std::uint64_t>(tick_ns_));
  current_slot_earliest_due_ns_ = never_ns;

  // The current slot is done last, from a held list: what a callback schedules as due
  // lands in the (now empty) current slot and waits for the next call.
  if (occupied(target_slot)) detach(target_slot, target_list_);
  std::size_t fired = 0;
  if (span > 0) {
    const std::size_t last_distance = span - 1;
    for (std::size_t distance = 0;; ++distance) {
      const std::size_t step =
          occupied_distance((first_slot + distance) & slot_mask_, last_distance - distance);
      if (step == no_slot) break;
      distance += step;
      const std::size_t slot = (first_slot + distance) & slot_mask_;
      detach(slot, visiting_list_);
      fired += fire_due(visiting_list_, slot, now_ns, on_due);
      if (distance == last_distance) break;
    }
  }
  fired += fire_due(target_list_, target_slot, now_ns, on_due);
  return fired;
}

}  // namespace deadpeer
