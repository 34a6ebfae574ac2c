// One keepalive setting said the way each place a user meets it wants it: sysctl lines,
// setsockopt in C, nginx, Go, Java, gRPC, Redis, MQTT, and the probe wrap / doctor lines
// that apply it to a program without a rebuild and then check it.
//
// What this module decides:
// - Each recipe states the worst case it gives. Where a framework cannot say the same
//   thing (Redis derives interval and count from one number, MQTT has a single keep alive
//   with a 1.5x rule, gRPC pings over HTTP/2 instead of TCP), the recipe picks the value
//   whose worst case stays within the requested one, and prints that worst case.
// - Pure text from settings: the numbers printed are tested against the settings.
#pragma once

#include <deadpeer/keepalive.hpp>

#include <string>
#include <vector>

namespace probe {

struct recipe {
  std::string name;   ///< "sysctl", "c", "nginx", "go", "java", "grpc", "redis", "mqtt", "wrap"
  std::string title;  ///< one line: where it goes
  std::string text;   ///< lines to paste, then notes (lines starting with "# " or "//")
};

/// The recipe names, in the order keepalive_recipes returns them.
const std::vector<std::string>& recipe_names();

/// Recipes for enabled settings (idle, interval, count, optional user timeout) whose
/// worst case is `worst` (compute_bound of the same settings).
std::vector<recipe> keepalive_recipes(const deadpeer::keepalive_settings& settings,
                                      const deadpeer::detection_bound& worst);

/// Redis `tcp-keepalive N`: Redis sets idle N, interval N/3 and count 3 itself. The largest
/// N whose worst case (N + 3 x max(1, N/3) seconds) is within `bound`; at least 1.
int redis_tcp_keepalive_for(std::chrono::milliseconds bound);

/// MQTT keep alive K: the broker ends a client silent for 1.5 x K. The largest whole K
/// within `bound`; at least 1.
int mqtt_keep_alive_for(std::chrono::milliseconds bound);

}  // namespace probe
