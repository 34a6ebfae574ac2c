// Comparing secrets (auth tokens) in constant time: the time taken to refuse a guess must
// not reveal how much of it was right.
#pragma once

#include <string_view>

namespace deadpeer::detail {

inline bool same_secret(std::string_view a, std::string_view b) {
  unsigned char difference = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < a.size(); ++i)
    difference |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return difference == 0;
}

}  // namespace deadpeer::detail
