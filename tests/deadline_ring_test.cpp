#include <deadpeer/deadline_ring.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <random>
#include <set>

using namespace std::chrono_literals;
using deadpeer::deadline_ring;

namespace {
const deadline_ring::time_point t0{};
std::set<std::uint64_t> as_set(const std::vector<std::uint64_t>& v) {
  return {v.begin(), v.end()};
}
}  // namespace

TEST_CASE("deadlines expire once their bucket has passed, never early") {
  deadline_ring ring(100ms, 16, t0);
  ring.schedule(1, t0 + 250ms);
  ring.schedule(2, t0 + 300ms);
  ring.schedule(3, t0 + 301ms);
  CHECK(ring.expire(t0 + 249ms).empty());
  // Resolution is one bucket: 250 ms is due once the bucket ending at 300 ms has passed.
  CHECK(ring.expire(t0 + 299ms).empty());
  CHECK(as_set(ring.expire(t0 + 300ms)) == std::set<std::uint64_t>{1, 2});
  CHECK(ring.expire(t0 + 399ms).empty());
  CHECK(as_set(ring.expire(t0 + 400ms)) == std::set<std::uint64_t>{3});
  CHECK(ring.size() == 0);
}

TEST_CASE("moving a deadline later keeps an entry alive and cancel forgets it") {
  deadline_ring ring(10ms, 8, t0);
  ring.schedule(7, t0 + 50ms);
  ring.schedule(8, t0 + 50ms);
  ring.schedule(7, t0 + 500ms);  // a heartbeat arrived
  ring.cancel(8);
  CHECK(ring.expire(t0 + 100ms).empty());
  CHECK(ring.deadline_of(7) == t0 + 500ms);
  CHECK_FALSE(ring.deadline_of(8).has_value());
  CHECK(as_set(ring.expire(t0 + 500ms)) == std::set<std::uint64_t>{7});
}

TEST_CASE("deadlines beyond one revolution are skipped until their turn") {
  deadline_ring ring(10ms, 4, t0);  // one revolution is 40 ms
  ring.schedule(1, t0 + 125ms);
  for (auto t = 10ms; t < 130ms; t += 10ms) {
    INFO("t = " << t.count());
    const auto due = ring.expire(t0 + t);
    CHECK(due.empty() == (t < 130ms));
  }
  CHECK(as_set(ring.expire(t0 + 130ms)) == std::set<std::uint64_t>{1});
}

TEST_CASE("a late sweep catches up on every missed bucket") {
  deadline_ring ring(10ms, 4, t0);
  for (std::uint64_t id = 1; id <= 20; ++id)
    ring.schedule(id, t0 + std::chrono::milliseconds(id * 7));
  CHECK(ring.expire(t0 + 1s).size() == 20);
}

TEST_CASE("a deadline already in the past is due at the next sweep") {
  deadline_ring ring(10ms, 4, t0);
  (void)ring.expire(t0 + 100ms);
  ring.schedule(5, t0 + 20ms);
  CHECK(as_set(ring.expire(t0 + 110ms)) == std::set<std::uint64_t>{5});
}

TEST_CASE("randomised: the ring agrees with a sorted reference") {
  std::mt19937 rng(12345);
  deadline_ring ring(5ms, 64, t0);
  std::map<std::uint64_t, deadline_ring::time_point> reference;
  auto now = t0;
  auto swept = t0;  // end of the last bucket the ring has swept
  for (int step = 0; step < 20000; ++step) {
    const auto id = static_cast<std::uint64_t>(rng() % 500);
    switch (rng() % 4) {
      case 0:
      case 1: {
        const auto deadline = now + std::chrono::milliseconds(rng() % 1000);
        ring.schedule(id, deadline);
        reference[id] = deadline;
        break;
      }
      case 2:
        ring.cancel(id);
        reference.erase(id);
        break;
      default: {
        now += std::chrono::milliseconds(rng() % 20);
        const auto got = as_set(ring.expire(now));
        // Due: every deadline whose bucket (its time rounded up to 5 ms) has passed, and
        // any deadline scheduled into a bucket already swept.
        std::set<std::uint64_t> expected;
        for (const auto& [key, deadline] : reference) {
          const auto bucket_end = ((deadline - t0) + 5ms - std::chrono::nanoseconds(1)) / 5ms * 5ms;
          if (t0 + bucket_end <= now || deadline <= swept) expected.insert(key);
        }
        swept = t0 + (now - t0) / 5ms * 5ms;
        REQUIRE(got == expected);
        for (const auto key : got) {
          CHECK(reference.at(key) <= now);
          reference.erase(key);
        }
      }
    }
  }
  CHECK(ring.size() == reference.size());
}
