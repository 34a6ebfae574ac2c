// ASCII case folding for the names deadpeer matches (errno names, TCP states, host names):
// locale-free and constexpr, so tables can be checked at compile time.
#pragma once

#include <cstddef>
#include <string_view>

namespace deadpeer::detail {

constexpr char lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

constexpr bool same_ignoring_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

}  // namespace deadpeer::detail
