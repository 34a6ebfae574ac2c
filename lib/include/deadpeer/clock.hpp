// One clock for every timestamp deadpeer records: CLOCK_MONOTONIC in nanoseconds. It is
// system-wide on one host, so a probe and a server on the same machine can subtract
// each other's timestamps directly; it never jumps with NTP or a manual date change.
#pragma once

#include <chrono>
#include <cstdint>

namespace deadpeer {

/// Nanoseconds on the monotonic clock (std::chrono::steady_clock, which is
/// CLOCK_MONOTONIC on Linux with libstdc++ and libc++).
inline std::int64_t monotonic_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// The same instant expressed as monotonic nanoseconds.
inline std::int64_t to_monotonic_ns(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

}  // namespace deadpeer
