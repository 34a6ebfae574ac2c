#include <deadpeer/deadline_ring.hpp>

#include <deadpeer/config_error.hpp>

namespace deadpeer {

deadline_ring::deadline_ring(std::chrono::milliseconds granularity, std::size_t buckets,
                             time_point start)
    : granularity_(granularity), start_(start), buckets_(buckets) {
  if (granularity.count() <= 0 || buckets == 0)
    throw config_error("deadline_ring: granularity and bucket count must be positive");
}

std::int64_t deadline_ring::tick_of(time_point t) const {
  // Rounding up means a bucket is swept only once all its deadlines have passed.
  const auto since = t - start_;
  if (since.count() <= 0) return 0;
  return (since.count() + granularity_.count() - 1) / granularity_.count();
}

std::vector<std::uint64_t>& deadline_ring::bucket_of(std::int64_t tick) {
  return tick == overdue_tick ? overdue_
                              : buckets_[static_cast<std::size_t>(tick) % buckets_.size()];
}

void deadline_ring::remove_from_bucket(const entry& e) {
  auto& bucket = bucket_of(e.tick);
  const std::uint64_t moved = bucket.back();
  bucket[e.position] = moved;
  entries_.at(moved).position = e.position;
  bucket.pop_back();
}

void deadline_ring::schedule(std::uint64_t id, time_point deadline) {
  // A deadline in an already swept tick is due at the next sweep.
  const std::int64_t natural = tick_of(deadline);
  const std::int64_t tick = natural <= swept_tick_ ? overdue_tick : natural;
  auto found = entries_.find(id);
  if (found != entries_.end()) {
    if (found->second.tick == tick) {
      found->second.deadline = deadline;
      return;
    }
    remove_from_bucket(found->second);
    entries_.erase(found);
  }
  auto& bucket = bucket_of(tick);
  entries_.emplace(id, entry{deadline, tick, bucket.size()});
  bucket.push_back(id);
}

void deadline_ring::cancel(std::uint64_t id) {
  const auto found = entries_.find(id);
  if (found == entries_.end()) return;
  remove_from_bucket(found->second);
  entries_.erase(found);
}

std::vector<std::uint64_t> deadline_ring::expire(time_point now) {
  std::vector<std::uint64_t> due;
  for (const auto id : overdue_) {
    due.push_back(id);
    entries_.erase(id);
  }
  overdue_.clear();
  // Only ticks whose whole span has passed: their deadlines are all <= now.
  const std::int64_t now_tick = (now - start_).count() / granularity_.count();
  if (now_tick <= swept_tick_) return due;
  const auto ring = static_cast<std::int64_t>(buckets_.size());
  const std::int64_t first = std::max(swept_tick_ + 1, now_tick - ring + 1);
  for (std::int64_t tick = first; tick <= now_tick; ++tick) {
    auto& bucket = buckets_[static_cast<std::size_t>(tick % ring)];
    for (std::size_t i = 0; i < bucket.size();) {
      const auto id = bucket[i];
      const auto& e = entries_.at(id);
      if (e.tick <= now_tick) {  // this revolution, not a later one
        due.push_back(id);
        remove_from_bucket(e);
        entries_.erase(id);
      } else {
        ++i;  // a later revolution
      }
    }
  }
  swept_tick_ = now_tick;
  return due;
}

std::optional<deadline_ring::time_point> deadline_ring::deadline_of(std::uint64_t id) const {
  const auto found = entries_.find(id);
  if (found == entries_.end()) return std::nullopt;
  return found->second.deadline;
}

}  // namespace deadpeer
