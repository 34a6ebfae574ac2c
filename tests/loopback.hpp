// Test support for real loopback connections: an io_context on its own thread (where
// sessions run), and a raw peer that speaks the wire protocol by hand with plain POSIX
// calls and bounded receive timeouts, the way a foreign client would.
#pragma once

#include <deadpeer/wire.hpp>

#include "../probe/http_client.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <thread>
#include <variant>
#include <vector>

namespace deadpeer::test {

using probe::http_response;

/// Runs an io_context on a background thread until destroyed.
class io_thread {
 public:
  io_thread();
  ~io_thread();
  io_thread(const io_thread&) = delete;
  io_thread& operator=(const io_thread&) = delete;
  boost::asio::io_context& context() { return io_; }

 private:
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_;
  std::thread thread_;
};

/// A listening socket on 127.0.0.1 with an ephemeral port; accept() is blocking.
class listener {
 public:
  explicit listener(boost::asio::io_context& io);
  unsigned short port() const { return acceptor_.local_endpoint().port(); }
  boost::asio::ip::tcp::socket accept();

 private:
  boost::asio::ip::tcp::acceptor acceptor_;
};

/// A connected pair on 127.0.0.1 with its own io_context: `client` connected, `server`
/// accepted (the side a server program would hold).
struct loopback_pair {
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor acceptor{
      io, boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0)};
  boost::asio::ip::tcp::socket client{io};
  boost::asio::ip::tcp::socket server{io};

  loopback_pair() {
    client.connect(acceptor.local_endpoint());
    acceptor.accept(server);
  }
};

/// What a raw peer's read produced.
struct read_result {
  std::vector<wire::frame> frames;
  std::optional<wire::decode_error> bad;
  bool eof = false;
  std::error_code error;  ///< a socket error (ECONNRESET...), or timed_out
};

/// A blocking TCP socket driven by hand. Every receive waits at most `timeout`.
class raw_peer {
 public:
  /// Connects to 127.0.0.1:port.
  explicit raw_peer(unsigned short port,
                    std::chrono::milliseconds timeout = std::chrono::seconds(5));
  /// Adopts an accepted descriptor.
  raw_peer(int fd, std::chrono::milliseconds timeout);
  ~raw_peer();
  raw_peer(const raw_peer&) = delete;
  raw_peer& operator=(const raw_peer&) = delete;

  void send_frame(const wire::frame& f);
  /// Sends bytes; returns the error if the kernel refused them.
  std::error_code send_bytes(std::span<const std::byte> bytes);
  /// Reads until one frame is complete, EOF, an error or the timeout.
  read_result read_frame();
  /// Reads until EOF, an error or the timeout, collecting frames.
  read_result read_to_end();
  /// Performs the client side of the handshake and returns the WELCOME.
  wire::welcome handshake(const std::string& client_id, std::chrono::milliseconds interval);

  void shutdown_send();
  void close_with_reset();  ///< SO_LINGER {1, 0} then close
  void close();
  int fd() const { return fd_; }

 private:
  read_result read(bool until_end);
  int fd_ = -1;
  wire::decoder decoder_{wire::default_max_frame};
};

/// GET on 127.0.0.1:port (the probe's HTTP client), for the control API tests.
inline http_response http_get(unsigned short port, const std::string& target,
                              std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  return probe::http_get("127.0.0.1", port, target, timeout);
}

}  // namespace deadpeer::test
