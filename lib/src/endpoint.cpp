#include <deadpeer/endpoint.hpp>

#include <deadpeer/config_error.hpp>

#include <boost/asio/ip/address.hpp>

#include <charconv>
#include <string>

namespace deadpeer {

boost::asio::ip::tcp::endpoint parse_endpoint(std::string_view text) {
  const auto fail = [&](const std::string& why) -> config_error {
    return config_error("invalid address \"" + std::string(text) + "\": " + why +
                        " (expected HOST:PORT with a numeric host, e.g. 127.0.0.1:7700 or "
                        "[::1]:7700)");
  };
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos) throw fail("no port");
  std::string_view host = text.substr(0, colon);
  const std::string_view port_text = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  else if (host.find(':') != std::string_view::npos)
    throw fail("an IPv6 address needs brackets");
  boost::system::error_code ec;
  const auto address = boost::asio::ip::make_address(std::string(host), ec);
  if (ec) throw fail("\"" + std::string(host) + "\" is not an IP address");
  unsigned port = 0;
  const auto* end = port_text.data() + port_text.size();
  const auto [ptr, parse_ec] = std::from_chars(port_text.data(), end, port);
  if (port_text.empty() || parse_ec != std::errc() || ptr != end)
    throw fail("port \"" + std::string(port_text) + "\" is not a number");
  if (port > 65535) throw fail("port " + std::to_string(port) + " is above 65535");
  return {address, static_cast<unsigned short>(port)};
}

std::string format_endpoint(const boost::asio::ip::tcp::endpoint& endpoint) {
  const auto address = endpoint.address().to_string();
  return (endpoint.address().is_v6() ? "[" + address + "]" : address) + ":" +
         std::to_string(endpoint.port());
}

}  // namespace deadpeer
