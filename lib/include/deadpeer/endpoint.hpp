// HOST:PORT as users type it on a command line or in a config file. Only numeric
// addresses are accepted: deadpeer measures TCP timing, and a DNS lookup in the middle
// of an experiment would be one more thing that can hang.
#pragma once

#include <boost/asio/ip/tcp.hpp>

#include <string>
#include <string_view>

namespace deadpeer {

/// Parses "127.0.0.1:7700" or "[::1]:7700"; the port may be 0
/// (pick a free one). Throws config_error quoting the input otherwise.
boost::asio::ip::tcp::endpoint parse_endpoint(std::string_view text);

/// The form parse_endpoint reads: "127.0.0.1:7700", "[::1]:7700".
std::string format_endpoint(const boost::asio::ip::tcp::endpoint& endpoint);

}  // namespace deadpeer
