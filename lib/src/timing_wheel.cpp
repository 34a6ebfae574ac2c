#include <deadpeer/timing_wheel.hpp>

#include <deadpeer/config_error.hpp>

#include <bit>
#include <stdexcept>
#include <string>

namespace deadpeer {

namespace {
constexpr std::size_t max_slots = std::size_t{1} << 30;
}  // namespace

timing_wheel::timing_wheel(std::chrono::nanoseconds tick, std::size_t slots, std::int64_t start_ns)
    : tick_ns_(tick.count()),
      slot_mask_(slots - 1),
      visiting_list_(slots),
      target_list_(slots + 1),
      position_ns_(start_ns) {
  if (tick_ns_ <= 0) throw config_error("timing_wheel: the tick must be positive");
  if (!std::has_single_bit(slots) || slots > max_slots)
    throw config_error("timing_wheel: the slot count must be a power of two up to 2^30, not " +
                       std::to_string(slots));
  heads_.assign(slots + 2, no_handle);
  occupied_.assign((slots + 63) / 64, 0);
}

void timing_wheel::reserve(std::size_t handles) {
  if (handles > list_tag) throw std::length_error("timing_wheel: handles must be below 2^31");
  if (handles > links_.size()) links_.resize(handles, link{no_handle, no_handle, 0});
}

void timing_wheel::grow_for(handle h) {
  if (h >= list_tag) throw std::length_error("timing_wheel: handles must be below 2^31");
  const std::size_t wanted = std::max<std::size_t>({std::size_t{h} + 1, links_.size() * 2, 64});
  reserve(std::min<std::size_t>(wanted, list_tag));
}

std::size_t timing_wheel::occupied_distance(std::size_t from_slot, std::size_t max_distance) const {
  const std::size_t first_word = from_slot >> 6;
  std::size_t word = first_word;
  std::uint64_t bits = occupied_[word] & (~std::uint64_t{0} << (from_slot & 63));
  bool wrapped = false;
  for (;;) {
    if (bits != 0) {
      const std::size_t slot = (word << 6) + static_cast<std::size_t>(std::countr_zero(bits));
      const std::size_t distance = (slot - from_slot) & slot_mask_;
      return distance <= max_distance ? distance : no_slot;
    }
    if (wrapped) return no_slot;
    word = word + 1 == occupied_.size() ? 0 : word + 1;
    if (word == first_word) {
      // Back where the scan began: only the slots before from_slot are left.
      bits = occupied_[word] & ((std::uint64_t{1} << (from_slot & 63)) - 1);
      wrapped = true;
    } else {
      if ((((word << 6) - from_slot) & slot_mask_) > max_distance) return no_slot;
      bits = occupied_[word];
    }
  }
}

std::optional<std::int64_t> timing_wheel::next_wakeup(std::int64_t now_ns) const {
  if (size_ == 0) return std::nullopt;
  // Called from inside a callback, the detached lists may hold entries due now.
  if (heads_[visiting_list_] != no_handle || heads_[target_list_] != no_handle) return now_ns;
  std::int64_t earliest_ns = occupied(current_slot_) ? current_slot_earliest_due_ns_ : never_ns;
  if (slot_mask_ != 0) {
    const std::size_t distance =
        occupied_distance((current_slot_ + 1) & slot_mask_, slot_mask_ - 1);
    if (distance != no_slot) {
      const auto ahead_ns =
          static_cast<std::uint64_t>(distance + 1) * static_cast<std::uint64_t>(tick_ns_);
      const auto headroom_ns =
          static_cast<std::uint64_t>(never_ns) - static_cast<std::uint64_t>(position_ns_);
      const std::int64_t slot_start_ns =
          ahead_ns >= headroom_ns ? never_ns : position_ns_ + static_cast<std::int64_t>(ahead_ns);
      earliest_ns = std::min(earliest_ns, slot_start_ns);
    }
  }
  return std::max(earliest_ns, now_ns);
}

}  // namespace deadpeer
