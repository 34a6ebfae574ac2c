#include "loopback.hpp"

#include <boost/asio/ip/address.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <cerrno>
#include <stdexcept>

namespace deadpeer::test {

io_thread::io_thread() : guard_(io_.get_executor()), thread_([this] { io_.run(); }) {}

io_thread::~io_thread() {
  guard_.reset();
  io_.stop();
  thread_.join();
}

listener::listener(boost::asio::io_context& io)
    : acceptor_(io, {boost::asio::ip::make_address("127.0.0.1"), 0}) {}

boost::asio::ip::tcp::socket listener::accept() {
  return acceptor_.accept();
}

namespace {

void set_timeout(int fd, std::chrono::milliseconds timeout) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

}  // namespace

raw_peer::raw_peer(unsigned short port, std::chrono::milliseconds timeout) {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    throw std::system_error(errno, std::generic_category(), "connect");
  set_timeout(fd_, timeout);
}

raw_peer::raw_peer(int fd, std::chrono::milliseconds timeout) : fd_(fd) {
  set_timeout(fd_, timeout);
}

raw_peer::~raw_peer() {
  close();
}

void raw_peer::send_frame(const wire::frame& f) {
  const auto bytes = wire::encode(f);
  if (const auto ec = send_bytes(bytes)) throw std::system_error(ec, "send_frame");
}

std::error_code raw_peer::send_bytes(std::span<const std::byte> bytes) {
  while (!bytes.empty()) {
    const auto n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return {errno, std::generic_category()};
    }
    bytes = bytes.subspan(static_cast<std::size_t>(n));
  }
  return {};
}

read_result raw_peer::read(bool until_end) {
  read_result r;
  std::array<std::byte, 64 * 1024> buffer{};
  for (;;) {
    for (;;) {
      auto next = decoder_.next();
      if (std::holds_alternative<std::monostate>(next)) break;
      if (auto* bad = std::get_if<wire::decode_error>(&next)) {
        r.bad = *bad;
        return r;
      }
      r.frames.push_back(std::move(std::get<wire::frame>(next)));
      if (!until_end) return r;
    }
    const auto n = ::recv(fd_, buffer.data(), buffer.size(), 0);
    if (n == 0) {
      r.eof = true;
      return r;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      r.error = (errno == EAGAIN || errno == EWOULDBLOCK)
                    ? std::make_error_code(std::errc::timed_out)
                    : std::error_code(errno, std::generic_category());
      return r;
    }
    decoder_.feed(std::span<const std::byte>(buffer.data(), static_cast<std::size_t>(n)));
  }
}

read_result raw_peer::read_frame() {
  return read(false);
}
read_result raw_peer::read_to_end() {
  return read(true);
}

wire::welcome raw_peer::handshake(const std::string& client_id,
                                  std::chrono::milliseconds interval) {
  send_frame(wire::hello{.version = wire::protocol_version,
                         .client_id = client_id,
                         .requested_interval_ms = static_cast<std::uint32_t>(interval.count()),
                         .auth_token = {}});
  auto r = read_frame();
  if (r.frames.size() != 1 || !std::holds_alternative<wire::welcome>(r.frames[0]))
    throw std::runtime_error("handshake: no WELCOME");
  return std::get<wire::welcome>(r.frames[0]);
}

void raw_peer::shutdown_send() {
  ::shutdown(fd_, SHUT_WR);
}

void raw_peer::close_with_reset() {
  const linger l{1, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  close();
}

void raw_peer::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

}  // namespace deadpeer::test
