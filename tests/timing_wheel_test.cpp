#include <deadpeer/timing_wheel.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <stdexcept>
#include <vector>

using namespace std::chrono_literals;
using deadpeer::timing_wheel;
using handle = timing_wheel::handle;

namespace {

constexpr std::int64_t us = 1'000;
constexpr std::int64_t ms = 1'000'000;
constexpr std::int64_t hour = 3'600'000 * ms;

std::vector<handle> sorted(std::vector<handle> v) {
  std::sort(v.begin(), v.end());
  return v;
}

// The handles fired by expire(now_ns), sorted.
std::vector<handle> fire(timing_wheel& wheel, std::int64_t now_ns) {
  std::vector<handle> fired;
  const std::size_t count = wheel.expire(now_ns, [&](handle h) { fired.push_back(h); });
  CHECK(count == fired.size());
  return sorted(fired);
}

using handles = std::vector<handle>;

}  // namespace

TEST_CASE("timing wheel: an entry fires at its due and not one nanosecond before") {
  timing_wheel wheel(1ms, 64);
  wheel.schedule(3, 10 * ms + 500 * us);  // mid-tick
  wheel.schedule(4, 12 * ms);             // on a tick boundary
  for (std::int64_t t = 0; t < 20 * ms; t += ms) {
    INFO("t = " << t);
    for (const std::int64_t now : {t, t + 500 * us - 1, t + 500 * us, t + ms - 1}) {
      const auto fired = fire(wheel, now);
      if (now == 10 * ms + 500 * us) {
        CHECK(fired == handles{3});
      } else if (now == 12 * ms) {
        CHECK(fired == handles{4});
      } else {
        CHECK(fired.empty());
      }
    }
  }
  CHECK(wheel.size() == 0);
  CHECK_FALSE(wheel.scheduled(3));
}

TEST_CASE("timing wheel: moving an entry later or earlier") {
  timing_wheel wheel(1ms, 64);
  wheel.schedule(1, 50 * ms);
  wheel.schedule(2, 500 * ms);
  wheel.schedule(1, 100 * ms);  // a heartbeat arrived
  wheel.schedule(2, 20 * ms);
  CHECK(wheel.size() == 2);
  CHECK(wheel.due(1) == 100 * ms);
  CHECK(wheel.due(2) == 20 * ms);
  CHECK(fire(wheel, 20 * ms - 1).empty());
  CHECK(fire(wheel, 20 * ms) == handles{2});
  for (std::int64_t t = 21 * ms; t < 100 * ms; t += ms)
    CHECK(fire(wheel, t).empty());
  CHECK(fire(wheel, 100 * ms) == handles{1});
  CHECK(fire(wheel, 600 * ms).empty());
  CHECK(wheel.size() == 0);
}

TEST_CASE("timing wheel: cancel forgets an entry and ignores unknown handles") {
  timing_wheel wheel(1ms, 64);
  wheel.schedule(1, 5 * ms);
  wheel.schedule(2, 5 * ms);
  wheel.schedule(3, 5 * ms);
  wheel.cancel(2);
  wheel.cancel(2);
  wheel.cancel(7);       // never scheduled, within the link vector
  wheel.cancel(100000);  // beyond it
  CHECK(wheel.size() == 2);
  CHECK_FALSE(wheel.scheduled(2));
  CHECK_FALSE(wheel.scheduled(100000));
  CHECK(fire(wheel, 10 * ms) == handles{1, 3});
  wheel.schedule(2, 11 * ms);  // a cancelled handle can come back
  CHECK(fire(wheel, 11 * ms) == handles{2});
}

TEST_CASE("timing wheel: the callback may cancel and reschedule any handle") {
  timing_wheel wheel(1ms, 64);
  // 1, 2, 3 and 4 share the slot of 5 ms; 4 is not due at 5.5 ms. 5 is in a later slot.
  wheel.schedule(1, 5 * ms);
  wheel.schedule(2, 5 * ms + 200 * us);
  wheel.schedule(3, 5 * ms + 400 * us);
  wheel.schedule(4, 5 * ms + 900 * us);
  wheel.schedule(5, 9 * ms);
  std::vector<handle> fired;
  const auto count = wheel.expire(5 * ms + 500 * us, [&](handle h) {
    CHECK_FALSE(wheel.scheduled(h));
    fired.push_back(h);
    if (fired.size() > 1) return;
    for (const handle other : {1, 2, 3})
      if (other != h) wheel.cancel(other);  // still waiting in the slot being visited
    wheel.cancel(4);
    wheel.schedule(h, 7 * ms);             // itself, later
    wheel.schedule(5, 6 * ms + 500 * us);  // another slot, earlier
    wheel.schedule(1000, 5 * ms);          // new, overdue, grows the link vector
    wheel.schedule(4, 5 * ms + 800 * us);  // back into the slot being visited
  });
  CHECK(count == 1);
  REQUIRE(fired.size() == 1);
  const handle first = fired.front();
  CHECK(wheel.size() == 4);
  CHECK(wheel.due(first) == 7 * ms);
  // What the callback scheduled as overdue fires at the next expire, not the running one.
  CHECK(fire(wheel, 5 * ms + 500 * us) == handles{1000});
  CHECK(fire(wheel, 6 * ms) == handles{4});
  CHECK(fire(wheel, 6 * ms + 500 * us) == handles{5});
  CHECK(fire(wheel, 7 * ms) == handles{first});
  CHECK(wheel.size() == 0);
}

TEST_CASE("timing wheel: a callback rescheduling its own handle as overdue does not loop") {
  timing_wheel wheel(1ms, 8);
  wheel.schedule(1, 2 * ms);
  int calls = 0;
  const auto callback = [&](handle h) {
    ++calls;
    wheel.schedule(h, 0);
  };
  CHECK(wheel.expire(3 * ms, callback) == 1);
  CHECK(wheel.expire(3 * ms, callback) == 1);
  CHECK(calls == 2);
  CHECK(wheel.scheduled(1));
}

TEST_CASE("timing wheel: entries many revolutions ahead fire exactly once at their time") {
  timing_wheel wheel(1ms, 8);  // one revolution is 8 ms
  const std::int64_t due_1 = 37 * 8 * ms + 3 * ms + 500 * us;
  const std::int64_t due_2 = 5 * 8 * ms + 3 * ms + 100 * us;   // same slot, earlier round
  const std::int64_t due_3 = 37 * 8 * ms + 3 * ms + 200 * us;  // same slot and round
  wheel.schedule(1, due_1);
  wheel.schedule(2, due_2);
  wheel.schedule(3, due_3);
  std::map<handle, std::vector<std::int64_t>> fired_at;
  for (std::int64_t now = 0; now < due_1 + 20 * ms; now += 100 * us)
    wheel.expire(now, [&](handle h) { fired_at[h].push_back(now); });
  CHECK(fired_at[1] == std::vector<std::int64_t>{due_1});
  CHECK(fired_at[2] == std::vector<std::int64_t>{due_2});
  CHECK(fired_at[3] == std::vector<std::int64_t>{due_3});
}

TEST_CASE("timing wheel: a due in the past fires at the next expire") {
  timing_wheel wheel(1ms, 64, 1000 * ms);
  CHECK(fire(wheel, 1100 * ms).empty());
  wheel.schedule(1, 1020 * ms);
  wheel.schedule(2, 5 * ms);  // before the wheel's start
  wheel.schedule(3, 1100 * ms);
  CHECK(wheel.next_wakeup(1100 * ms) == 1100 * ms);
  CHECK(fire(wheel, 1100 * ms) == handles{1, 2, 3});
}

TEST_CASE("timing wheel: next_wakeup is never after the earliest due") {
  timing_wheel wheel(1ms, 64);
  CHECK(wheel.next_wakeup(0) == std::nullopt);
  wheel.schedule(1, 10 * ms + 500 * us);
  const auto wake = wheel.next_wakeup(0);
  REQUIRE(wake.has_value());
  CHECK(*wake >= 10 * ms);  // the start of its slot at the earliest
  CHECK(*wake <= 10 * ms + 500 * us);
  // Once expire() has reached the slot, the wakeup is the exact due: no spinning.
  CHECK(fire(wheel, 10 * ms).empty());
  CHECK(wheel.next_wakeup(10 * ms) == 10 * ms + 500 * us);
  // An entry one revolution ahead in the current slot wakes the loop no later than its due.
  wheel.schedule(2, 10 * ms + 64 * ms + 100 * us);
  CHECK(wheel.next_wakeup(10 * ms) == 10 * ms + 500 * us);
  CHECK(fire(wheel, 10 * ms + 500 * us) == handles{1});
  const auto later = wheel.next_wakeup(10 * ms + 500 * us);
  REQUIRE(later.has_value());
  CHECK(*later > 10 * ms + 500 * us);
  CHECK(*later <= 10 * ms + 64 * ms + 100 * us);
  wheel.cancel(2);
  CHECK(wheel.next_wakeup(11 * ms) == std::nullopt);
  // Never before now: an overdue entry wakes the loop immediately.
  wheel.schedule(3, 1 * ms);
  CHECK(wheel.next_wakeup(11 * ms) == 11 * ms);
}

TEST_CASE("timing wheel: time going backwards is a no-op") {
  timing_wheel wheel(1ms, 64);
  wheel.schedule(1, 80 * ms);
  wheel.schedule(2, 85 * ms);
  CHECK(fire(wheel, 82 * ms) == handles{1});
  wheel.schedule(3, 70 * ms);
  CHECK(wheel.expire(81 * ms, [](handle) { FAIL("fired while time went backwards"); }) == 0);
  CHECK(wheel.size() == 2);
  CHECK(fire(wheel, 85 * ms) == handles{2, 3});
}

TEST_CASE("timing wheel: a sparse long jump visits only occupied slots") {
  timing_wheel wheel;  // 1 ms ticks, 65536 slots
  wheel.schedule(1, 10 * hour - 1 * ms);
  wheel.schedule(2, 10 * hour + 3 * ms);  // not due yet
  wheel.schedule(3, 2 * hour);
  CHECK(fire(wheel, 10 * hour) == handles{1, 3});
  CHECK(wheel.slots_visited() <= 3);
  CHECK(wheel.size() == 1);
  CHECK(wheel.next_wakeup(10 * hour) == 10 * hour + 3 * ms);
  CHECK(fire(wheel, 10 * hour + 3 * ms) == handles{2});
}

TEST_CASE("timing wheel: 100k handles are scheduled and moved without growth after reserve") {
  constexpr std::size_t count = 100'000;
  timing_wheel wheel;
  wheel.reserve(count);
  const std::size_t capacity = wheel.capacity();
  CHECK(capacity >= count);
  for (handle h = 0; h < count; ++h)
    wheel.schedule(h, 1000 * ms + static_cast<std::int64_t>(h) * 7 * us);
  for (handle h = 0; h < count; ++h)
    wheel.schedule(h, 2000 * ms + static_cast<std::int64_t>(count - h) * 13 * us);
  for (handle h = 0; h < count; h += 2)
    wheel.cancel(h);
  CHECK(wheel.capacity() == capacity);
  CHECK(wheel.size() == count / 2);
  CHECK(fire(wheel, 1999 * ms).empty());
  const auto fired = fire(wheel, 2000 * ms + static_cast<std::int64_t>(count + 1) * 13 * us);
  CHECK(fired.size() == count / 2);
  CHECK(wheel.size() == 0);
  CHECK(wheel.capacity() == capacity);
}

TEST_CASE("timing wheel: the link vector grows on demand") {
  timing_wheel wheel;
  CHECK(wheel.capacity() == 0);
  wheel.schedule(1'000'000, 5 * ms);
  CHECK(wheel.capacity() > 1'000'000);
  CHECK(wheel.scheduled(1'000'000));
  CHECK_FALSE(wheel.scheduled(999'999));
  CHECK_THROWS_AS(wheel.schedule(0x8000'0000, 0), std::length_error);
}

TEST_CASE("timing wheel: the constructor rejects a bad tick or slot count") {
  CHECK_THROWS_AS(timing_wheel(0ms, 64), std::invalid_argument);
  CHECK_THROWS_AS(timing_wheel(-1ms, 64), std::invalid_argument);
  CHECK_THROWS_AS(timing_wheel(1ms, 0), std::invalid_argument);
  CHECK_THROWS_AS(timing_wheel(1ms, 100), std::invalid_argument);
  CHECK_NOTHROW(timing_wheel(1ms, 1));
  CHECK_NOTHROW(timing_wheel(1ns, 2));
}

TEST_CASE("timing wheel: a one-slot wheel still fires on time") {
  timing_wheel wheel(1ms, 1);
  wheel.schedule(1, 3 * ms + 1);
  wheel.schedule(2, 1 * ms);
  CHECK(wheel.next_wakeup(0) <= 1 * ms);
  CHECK(fire(wheel, 1 * ms) == handles{2});
  CHECK(fire(wheel, 3 * ms) == handles{});
  CHECK(fire(wheel, 3 * ms + 1) == handles{1});
}

TEST_CASE("timing wheel: randomised against a multimap model") {
  std::mt19937_64 rng(20240611);
  const auto uniform = [&](std::int64_t low, std::int64_t high) {
    return std::uniform_int_distribution<std::int64_t>(low, high)(rng);
  };
  constexpr handle handle_count = 1000;
  const std::int64_t start_ns = 123'456'789;
  timing_wheel wheel(1ms, 256, start_ns);  // one revolution is 256 ms
  std::multimap<std::int64_t, handle> by_due;
  std::map<handle, std::int64_t> due_of;
  const auto model_cancel = [&](handle h) {
    const auto found = due_of.find(h);
    if (found == due_of.end()) return;
    auto [first, last] = by_due.equal_range(found->second);
    while (first->second != h)
      ++first;
    by_due.erase(first);
    due_of.erase(found);
  };
  const auto model_schedule = [&](handle h, std::int64_t due_ns) {
    model_cancel(h);
    by_due.emplace(due_ns, h);
    due_of[h] = due_ns;
  };

  std::int64_t now = start_ns;
  std::size_t total_fired = 0;
  for (int step = 0; step < 100'000; ++step) {
    const auto h = static_cast<handle>(uniform(0, handle_count - 1));
    const auto roll = uniform(0, 99);
    if (roll < 45) {
      std::int64_t due_ns = now + uniform(-20 * ms, 2000 * ms);
      if (roll < 2) due_ns = now + uniform(0, 3 * hour);
      wheel.schedule(h, due_ns);
      model_schedule(h, due_ns);
    } else if (roll < 60) {
      wheel.cancel(h);
      model_cancel(h);
    } else if (roll < 62) {
      // Backwards: nothing happens.
      CHECK(wheel.expire(now - uniform(1, 50 * ms), [](handle) { FAIL("fired backwards"); }) == 0);
    } else {
      const auto wake = wheel.next_wakeup(now);
      REQUIRE(wake.has_value() == !by_due.empty());
      if (wake) {
        REQUIRE(*wake >= now);
        REQUIRE(*wake <= std::max(now, by_due.begin()->first));
      }
      if (roll < 90) {
        now += uniform(0, 3 * ms);
      } else if (roll < 98) {
        now += uniform(0, 300 * ms);
      } else if (roll < 99) {
        now += uniform(0, 2 * 256 * ms);
      } else {
        now += uniform(0, 2 * hour);
      }
      // Sometimes land exactly on the wakeup, as an event loop would.
      if (wake && *wake > now && roll % 3 == 0) now = *wake;
      std::vector<handle> fired;
      wheel.expire(now, [&](handle fired_handle) {
        fired.push_back(fired_handle);
        // Rescheduling a fired handle into the future from the callback.
        if (fired_handle % 4 == 0) wheel.schedule(fired_handle, now + 1 + fired_handle * us);
      });
      std::vector<handle> expected;
      for (auto it = by_due.begin(); it != by_due.end() && it->first <= now;) {
        expected.push_back(it->second);
        due_of.erase(it->second);
        it = by_due.erase(it);
      }
      for (const handle again : fired)
        if (again % 4 == 0) model_schedule(again, now + 1 + again * us);
      REQUIRE(sorted(fired) == sorted(expected));
      total_fired += fired.size();
    }
    REQUIRE(wheel.size() == by_due.size());
    REQUIRE(wheel.scheduled(h) == due_of.contains(h));
    if (due_of.contains(h)) REQUIRE(wheel.due(h) == due_of.at(h));
  }
  CHECK(total_fired > 10'000);
  // Everything left fires once time has passed the last due.
  const std::int64_t end_ns = by_due.empty() ? now : std::max(now, by_due.rbegin()->first);
  CHECK(fire(wheel, end_ns).size() == by_due.size());
  CHECK(wheel.size() == 0);
}
