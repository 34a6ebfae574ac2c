// Parsing is strict on purpose: "5" (no unit) or "-5s" are far more often mistakes than
// intentions, and a keepalive set to 5 ms instead of 5 s fails in production, not here.
#include <deadpeer/duration.hpp>

#include <deadpeer/config_error.hpp>

#include <array>
#include <cstdint>
#include <limits>
#include <utility>

namespace deadpeer {
namespace {

struct unit {
  std::string_view suffix;
  std::int64_t ms;
};

// Longest suffix first, so "ms" is not taken for "m".
constexpr std::array<unit, 4> units{{{"ms", 1}, {"h", 3'600'000}, {"m", 60'000}, {"s", 1'000}}};

// Thrown inside the parser and turned into the caller's chosen form of error.
struct parse_failure {
  std::string why;
};

[[noreturn]] void fail(std::string why) {
  throw parse_failure{std::move(why)};
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

std::chrono::milliseconds parse_or_throw(std::string_view text) {
  if (text.empty()) fail("empty");
  if (text.front() == '-') fail("negative durations are not allowed");
  if (text.front() == '+') fail("a sign is not allowed");

  std::size_t pos = 0;
  constexpr auto max = std::numeric_limits<std::int64_t>::max();
  std::int64_t whole = 0;
  std::size_t whole_digits = 0;
  while (pos < text.size() && is_digit(text[pos])) {
    const int digit = text[pos] - '0';
    if (whole > (max - digit) / 10) fail("too large");
    whole = whole * 10 + digit;
    ++pos;
    ++whole_digits;
  }
  std::string_view fraction;
  if (pos < text.size() && text[pos] == '.') {
    const std::size_t start = ++pos;
    while (pos < text.size() && is_digit(text[pos]))
      ++pos;
    fraction = text.substr(start, pos - start);
    if (fraction.empty()) fail("a decimal point needs digits after it");
  }
  if (whole_digits == 0 && fraction.empty()) fail("no number");

  const std::string_view suffix = text.substr(pos);
  if (suffix.empty()) fail("missing unit");
  const unit* found = nullptr;
  for (const auto& u : units)
    if (suffix == u.suffix) found = &u;
  if (found == nullptr) fail("unknown unit \"" + std::string(suffix) + "\"");

  if (whole > max / found->ms) fail("too large");
  std::int64_t total = whole * found->ms;

  // The fraction must come out to whole milliseconds: value = digits / 10^n units.
  std::int64_t scale = found->ms;
  for (const char c : fraction) {
    const int digit = c - '0';
    if (scale % 10 != 0) {
      if (digit != 0) fail("finer than one millisecond");
      continue;
    }
    scale /= 10;
    if (total > max - digit * scale) fail("too large");
    total += digit * scale;
  }
  return std::chrono::milliseconds(total);
}

}  // namespace

std::optional<std::chrono::milliseconds> try_parse_duration(std::string_view text,
                                                            std::string& why) {
  try {
    return parse_or_throw(text);
  } catch (const parse_failure& failure) {
    why = failure.why;
    return std::nullopt;
  }
}

std::chrono::milliseconds parse_duration(std::string_view text) {
  std::string why;
  if (const auto d = try_parse_duration(text, why)) return *d;
  throw config_error("invalid duration \"" + std::string(text) + "\": " + why +
                     " (expected a number with a unit: ms, s, m or h, e.g. 250ms, 1.5s, 5m)");
}

std::string format_duration(std::chrono::milliseconds d) {
  const std::int64_t ms = d.count();
  const bool negative = ms < 0;
  // Negative values are never parsed, but printing one must not lie about its sign.
  const std::uint64_t magnitude =
      negative ? std::uint64_t(0) - static_cast<std::uint64_t>(ms) : static_cast<std::uint64_t>(ms);
  std::string sign = negative ? "-" : "";
  if (magnitude == 0) return "0s";
  for (const auto& u : {units[1], units[2], units[3]}) {
    const auto unit_ms = static_cast<std::uint64_t>(u.ms);
    if (magnitude % unit_ms == 0)
      return sign + std::to_string(magnitude / unit_ms) + std::string(u.suffix);
  }
  if (magnitude < 1000) return sign + std::to_string(magnitude) + "ms";
  std::string frac = std::to_string(magnitude % 1000 + 1000).substr(1);  // three digits
  while (frac.back() == '0')
    frac.pop_back();
  return sign + std::to_string(magnitude / 1000) + "." + frac + "s";
}

std::string format_duration_hms(std::chrono::milliseconds d) {
  if (d < std::chrono::minutes(1)) return format_duration(d);
  std::string out;
  auto rest = d;
  const auto h = std::chrono::duration_cast<std::chrono::hours>(rest);
  rest -= h;
  const auto m = std::chrono::duration_cast<std::chrono::minutes>(rest);
  rest -= m;
  if (h.count() != 0) out += std::to_string(h.count()) + "h";
  if (m.count() != 0) out += std::to_string(m.count()) + "m";
  if (rest.count() != 0) out += format_duration(rest);
  return out;
}

}  // namespace deadpeer
