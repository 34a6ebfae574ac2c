// Uses the installed headers and library: parses a keepalive spec and prints its bound.
#include <deadpeer/duration.hpp>
#include <deadpeer/keepalive.hpp>

#include <iostream>

int main() {
  const auto settings = deadpeer::resolve(deadpeer::parse_keepalive("1s:1s:3"), {});
  const auto bound = deadpeer::compute_bound(settings, 15);
  std::cout << "idle bound " << deadpeer::format_duration(*bound.idle) << "\n";
  return bound.idle == std::chrono::seconds(4) ? 0 : 1;
}
