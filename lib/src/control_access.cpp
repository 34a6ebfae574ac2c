// Which Host headers the control API answers (see control_access in control_api.hpp):
// pure string logic, apart from the API's sockets so that it can be tested and fuzzed
// alone.
#include <deadpeer/control_api.hpp>

#include <boost/asio/ip/address.hpp>

#include <algorithm>
#include <cctype>
#include <string>

namespace deadpeer {
namespace {

bool same_name(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

}  // namespace

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
  if (same_name(name, "localhost")) return true;
  return std::any_of(access.host_names.begin(), access.host_names.end(),
                     [&](const std::string& allowed) { return same_name(name, allowed); });
}

}  // namespace deadpeer
