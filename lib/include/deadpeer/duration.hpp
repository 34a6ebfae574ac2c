// Durations as people type them: "250ms", "1.5s", "30s", "5m", "2h".
// deadpeer works in whole milliseconds: every timer it sets (keepalive, user timeout,
// heartbeat) is specified by the kernel or the protocol in milliseconds or coarser, so
// finer input is refused instead of being rounded silently.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace deadpeer {

/// Parses a non-negative duration with a mandatory unit: ms, s, m or h.
/// A decimal fraction is allowed when it yields whole milliseconds ("1.5s", "0.25s").
/// Throws config_error, quoting the input, on garbage, a missing unit, a negative value,
/// a fraction finer than 1 ms, or a value that does not fit in 64-bit milliseconds.
std::chrono::milliseconds parse_duration(std::string_view text);

/// Non-throwing form: nullopt with `why` set to the reason (without the input) on failure.
std::optional<std::chrono::milliseconds> try_parse_duration(std::string_view text,
                                                            std::string& why);

/// Prints a duration canonically, so that parse_duration(format_duration(d)) == d:
/// the largest unit that divides it exactly ("2h", "5m", "30s", "250ms"), or seconds with
/// a fraction when it has one and is at least a second ("1.5s").
std::string format_duration(std::chrono::milliseconds d);

/// Prints a duration for people, in hours, minutes and seconds: 7875s -> "2h11m15s",
/// 1500ms -> "1.5s". Not meant to be parsed back.
std::string format_duration_hms(std::chrono::milliseconds d);

}  // namespace deadpeer
