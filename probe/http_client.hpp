// A minimal HTTP/1.1 GET for the control API: Connection: close, read to EOF, bounded by
// a receive timeout. The probe only ever talks to its own heartbeat-server, so this is
// all the HTTP it needs.
#pragma once

#include <chrono>
#include <string>

namespace probe {

struct http_response {
  int status = 0;
  std::string content_type;
  std::string body;
};

/// GET http://host:port/target. Throws std::runtime_error naming the URL on connect,
/// timeout or protocol failure.
http_response http_get(const std::string& host, unsigned short port, const std::string& target,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace probe
