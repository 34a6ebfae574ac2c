// Deadline bookkeeping for many connections at O(1) per update: a ring of time buckets
// (a hashed timing wheel). Moving a connection's deadline when a heartbeat arrives is a
// constant-time swap between buckets, and a sweep visits only the buckets whose time has
// come, never every connection. The price is resolution: a deadline fires up to one
// bucket width late. mosquitto's keepalive code makes the same trade with one-second
// buckets; deadpeer's server uses its reap interval.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <unordered_map>
#include <vector>

namespace deadpeer {

class deadline_ring {
 public:
  using time_point = std::chrono::steady_clock::time_point;

  /// `granularity`: bucket width; `buckets`: ring size (deadlines further than
  /// granularity × buckets ahead still work, they are skipped on earlier revolutions).
  deadline_ring(std::chrono::milliseconds granularity, std::size_t buckets, time_point start);

  /// Sets or moves the deadline of `id`. O(1).
  void schedule(std::uint64_t id, time_point deadline);
  /// Forgets `id`. O(1). No effect if absent.
  void cancel(std::uint64_t id);
  /// Removes and returns every id whose deadline is <= now. Visits only the buckets
  /// between the previous call and `now` (all of them at most once).
  std::vector<std::uint64_t> expire(time_point now);

  std::size_t size() const { return entries_.size(); }
  std::optional<time_point> deadline_of(std::uint64_t id) const;

 private:
  struct entry {
    time_point deadline;
    std::int64_t tick;
    std::size_t position;  // index within its bucket
  };
  static constexpr std::int64_t overdue_tick = -1;  // deadline already in a swept tick
  std::int64_t tick_of(time_point t) const;         // rounds up
  std::vector<std::uint64_t>& bucket_of(std::int64_t tick);
  void remove_from_bucket(const entry& e);

  std::chrono::nanoseconds granularity_;
  time_point start_;
  std::vector<std::vector<std::uint64_t>> buckets_;
  std::vector<std::uint64_t> overdue_;  // due at the next expire(), whatever its time
  std::unordered_map<std::uint64_t, entry> entries_;
  std::int64_t swept_tick_ = 0;  // every tick <= this has been swept
};

}  // namespace deadpeer
