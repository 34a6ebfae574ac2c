#include "http_client.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace probe {
namespace {

class fd_guard {
 public:
  explicit fd_guard(int fd) : fd_(fd) {}
  ~fd_guard() {
    if (fd_ >= 0) ::close(fd_);
  }
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

http_response http_get(const std::string& host, unsigned short port, const std::string& target,
                       std::chrono::milliseconds timeout) {
  const std::string url = "http://" + host + ":" + std::to_string(port) + target;
  auto fail = [&](const std::string& why) { return std::runtime_error("GET " + url + ": " + why); };
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) throw fail("not an IPv4 address");
  fd_guard fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) throw fail(std::strerror(errno));
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    throw fail(std::strerror(errno));
  const std::string request =
      "GET " + target + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n";
  for (std::size_t sent = 0; sent < request.size();) {
    const auto n = ::send(fd.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw fail(std::strerror(errno));
    sent += static_cast<std::size_t>(n);
  }
  std::string raw;
  std::array<char, 8192> buffer{};
  for (;;) {
    const auto n = ::recv(fd.get(), buffer.data(), buffer.size(), 0);
    if (n == 0) break;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw fail(errno == EAGAIN ? "no answer in time" : std::strerror(errno));
    raw.append(buffer.data(), static_cast<std::size_t>(n));
  }
  const auto head_end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.", 0) != 0 || head_end == std::string::npos || raw.size() < 12)
    throw fail("not an HTTP response");
  http_response r;
  r.status = std::atoi(raw.substr(9, 3).c_str());
  const std::string head = raw.substr(0, head_end);
  std::string lower;
  for (const char c : head)
    lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower.find("transfer-encoding: chunked") != std::string::npos)
    throw fail("chunked responses are not supported");
  if (const auto at = lower.find("\r\ncontent-type: "); at != std::string::npos) {
    const auto start = at + 16;
    r.content_type = head.substr(start, head.find("\r\n", start) - start);
  }
  r.body = raw.substr(head_end + 4);
  return r;
}

}  // namespace probe
