// Which Host headers the control API answers (see control_access in control_api.hpp):
// pure string logic, apart from the API's sockets so that it can be tested and fuzzed
// alone.
#include <deadpeer/control_api.hpp>

#include "ascii_text.hpp"

#include <boost/asio/ip/address.hpp>

#include <algorithm>
#include <string>

namespace deadpeer {

bool host_allowed(std::string_view value, const control_access& access) {
  std::string_view name = value;
  if (name.starts_with('[')) {  // [v6]:port
    const auto close = name.find(']');
    if (close == std::string_view::npos) return false;
    const auto rest = name.substr(close + 1);
    if (!rest.empty() && !rest.starts_with(':')) return false;
    name = name.substr(1, close - 1);
  } else if (const auto colon = name.rfind(':'); colon != std::string_view::npos) {
    name = name.substr(0, colon);
  }
  if (name.empty()) return false;
  boost::system::error_code not_ip;
  (void)boost::asio::ip::make_address(std::string(name), not_ip);
  if (!not_ip) return true;
  if (detail::same_ignoring_case(name, "localhost")) return true;
  return std::any_of(
      access.host_names.begin(), access.host_names.end(),
      [&](const std::string& allowed) { return detail::same_ignoring_case(name, allowed); });
}

}  // namespace deadpeer
