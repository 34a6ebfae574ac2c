#include "answering_server.hpp"

#include "mqtt.hpp"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <chrono>
#include <vector>

namespace probe {
namespace {

using protocol = greeting::protocol;

std::string upper(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return s;
}

// One request taken from the front of `in`, answered into `out`. False when `in` holds no
// whole request yet; `close` when the client said goodbye.
bool answer_one(protocol kind, std::string& in, std::string& out, bool& close) {
  switch (kind) {
    case protocol::mqtt: {
      mqtt::packet_header h;
      const auto* p = reinterpret_cast<const std::byte*>(in.data());
      const auto status = mqtt::parse_header(std::span(p, in.size()), h);
      if (status == mqtt::parse_status::need_more) return false;
      if (status == mqtt::parse_status::malformed) {
        close = true;
        return false;
      }
      const auto size = h.header_size + h.remaining_length;
      const auto type = static_cast<unsigned>(h.first_byte) >> 4;
      if (type == 1) out += std::string("\x20\x02\x00\x00", 4);  // CONNECT -> CONNACK
      if (type == 12) out += std::string("\xD0\x00", 2);         // PINGREQ -> PINGRESP
      if (type == 14) close = true;                              // DISCONNECT
      if (type == 8 && h.remaining_length >= 2) {  // SUBSCRIBE -> SUBACK, QoS 0 each
        std::string codes;
        for (std::size_t at = h.header_size + 2; at + 2 <= size;) {
          const auto length = static_cast<std::size_t>(static_cast<unsigned char>(in[at]) << 8 |
                                                       static_cast<unsigned char>(in[at + 1]));
          at += 2 + length + 1;
          codes += '\0';
        }
        out += '\x90';
        out += static_cast<char>(2 + codes.size());
        out += in.substr(h.header_size, 2);
        out += codes;
      }
      in.erase(0, size);
      return true;
    }
    case protocol::redis: {
      if (in.empty()) return false;
      if (in[0] != '*') {  // an inline command: one line
        const auto end = in.find("\r\n");
        if (end == std::string::npos) return false;
        out += upper(in.substr(0, end)).rfind("PING", 0) == 0 ? "+PONG\r\n" : "+OK\r\n";
        in.erase(0, end + 2);
        return true;
      }
      // *N\r\n then N bulk strings $len\r\n...\r\n
      auto line_end = in.find("\r\n");
      if (line_end == std::string::npos) return false;
      const int n = std::atoi(in.c_str() + 1);
      std::size_t at = line_end + 2;
      std::string first;
      for (int k = 0; k < n; ++k) {
        line_end = in.find("\r\n", at);
        if (line_end == std::string::npos || in[at] != '$') return false;
        const auto length = static_cast<std::size_t>(std::atol(in.c_str() + at + 1));
        at = line_end + 2;
        if (in.size() < at + length + 2) return false;
        if (k == 0) first = in.substr(at, length);
        at += length + 2;
      }
      out += upper(first) == "PING" ? "+PONG\r\n" : "+OK\r\n";
      in.erase(0, at);
      return true;
    }
    case protocol::http: {
      const auto end = in.find("\r\n\r\n");
      if (end == std::string::npos) return false;
      out += "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok";
      in.erase(0, end + 4);
      return true;
    }
    default:
      in.clear();  // raw and send: nothing to answer
      return false;
  }
}

}  // namespace

answering_server::answering_server(greeting g, const boost::asio::ip::tcp::endpoint& at)
    : greeting_(std::move(g)) {
  listener_ = ::socket(at.protocol().family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (listener_ < 0) throw std::system_error(errno, std::generic_category(), "answering server");
  const int on = 1;
  ::setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  if (::bind(listener_, at.data(), static_cast<socklen_t>(at.size())) != 0 ||
      ::listen(listener_, 64) != 0) {
    const int e = errno;
    ::close(listener_);
    throw std::system_error(e, std::generic_category(), "answering server: listen");
  }
  sockaddr_storage bound{};
  socklen_t length = sizeof bound;
  ::getsockname(listener_, reinterpret_cast<sockaddr*>(&bound), &length);
  port_ = ntohs(bound.ss_family == AF_INET ? reinterpret_cast<sockaddr_in&>(bound).sin_port
                                           : reinterpret_cast<sockaddr_in6&>(bound).sin6_port);
  thread_ = std::thread([this] { run(); });
}

answering_server::~answering_server() {
  stop_ = true;
  thread_.join();
  ::close(listener_);
}

void answering_server::reset() {
  reset_requested_ = true;
  // The loop wakes at least every 50 ms; a stuck thread is not worth waiting for forever.
  for (int waited_ms = 0; reset_requested_ && waited_ms < 2000; ++waited_ms)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

void answering_server::run() {
  std::map<int, std::string> connections;  // descriptor -> bytes not yet answered
  auto drop_all = [&] {
    for (const auto& [fd, unused] : connections)
      ::close(fd);
    connections.clear();
  };
  while (!stop_) {
    if (reset_requested_) {
      drop_all();
      hung_ = false;
      reset_requested_ = false;
    }
    std::vector<pollfd> watched{{listener_, POLLIN, 0}};
    if (!hung_)
      for (const auto& [fd, unused] : connections)
        watched.push_back({fd, POLLIN, 0});
    if (::poll(watched.data(), watched.size(), 50) <= 0) continue;
    if ((watched[0].revents & POLLIN) != 0) {
      const int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) connections[fd];
    }
    for (std::size_t i = 1; i < watched.size(); ++i) {
      if (watched[i].revents == 0) continue;
      const int fd = watched[i].fd;
      char chunk[4096];
      const auto n = ::recv(fd, chunk, sizeof chunk, MSG_DONTWAIT);
      bool close = n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
      if (n > 0) {
        auto& in = connections[fd];
        in.append(chunk, static_cast<std::size_t>(n));
        std::string out;
        while (!close && answer_one(greeting_.kind, in, out, close))
          ++answers_;
        if (!out.empty() && ::send(fd, out.data(), out.size(), MSG_NOSIGNAL) < 0) close = true;
      }
      if (close) {
        ::close(fd);
        connections.erase(fd);
      }
    }
  }
  drop_all();
}

}  // namespace probe
