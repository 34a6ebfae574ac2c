// An HTTP/1.1 GET for heartbeat-server's control API (and any other): Connection: close,
// one deadline for the whole exchange, IPv4, IPv6 and host names.
#pragma once

#include <chrono>
#include <string>

namespace probe {

struct http_response {
  int status = 0;
  std::string content_type;
  std::string body;
};

/// GET http://host:port/target; `host` is an address (an IPv6 one with or without
/// brackets) or a name. Throws std::runtime_error naming the URL and the stage that
/// failed (resolve, connect, send, read) on error or timeout.
http_response http_get(const std::string& host, unsigned short port, const std::string& target,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace probe
