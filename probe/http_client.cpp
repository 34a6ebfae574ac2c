// The control API client, on Boost.Beast: any host (IPv4, IPv6 literal or name), chunked
// or sized bodies, one deadline over resolve, connect, write and read. The operations are
// asynchronous only so the deadline (beast::tcp_stream's expiry) can cover them; the call
// itself blocks on a private io_context.
#include "http_client.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <stdexcept>

namespace probe {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

// A body larger than this is refused: the control API's answers are far smaller.
constexpr std::uint64_t body_limit = 64 * 1024 * 1024;

std::string host_for_url(const std::string& host) {
  return host.find(':') != std::string::npos && host.front() != '[' ? "[" + host + "]" : host;
}

}  // namespace

http_response http_get(const std::string& host, unsigned short port, const std::string& target,
                       std::chrono::milliseconds timeout) {
  const std::string authority = host_for_url(host) + ":" + std::to_string(port);
  const std::string url = "http://" + authority + target;
  std::string bare_host = host;
  if (bare_host.size() > 2 && bare_host.front() == '[' && bare_host.back() == ']')
    bare_host = bare_host.substr(1, bare_host.size() - 2);

  asio::io_context io;
  tcp::resolver resolver(io);
  beast::tcp_stream stream(io);
  beast::flat_buffer buffer;
  http::request<http::empty_body> request{http::verb::get, target, 11};
  request.set(http::field::host, authority);
  request.set(http::field::user_agent, "deadpeer-probe");
  request.set(http::field::connection, "close");
  http::response_parser<http::string_body> parser;
  parser.body_limit(body_limit);

  beast::error_code failure;
  const char* stage = "resolve";
  stream.expires_after(timeout);
  resolver.async_resolve(
      bare_host, std::to_string(port),
      [&](beast::error_code ec, tcp::resolver::results_type found) {
        if ((failure = ec)) return;
        stage = "connect";
        stream.async_connect(found, [&](beast::error_code ec2, const tcp::endpoint&) {
          if ((failure = ec2)) return;
          stage = "send";
          http::async_write(stream, request, [&](beast::error_code ec3, std::size_t) {
            if ((failure = ec3)) return;
            stage = "read";
            http::async_read(stream, buffer, parser,
                             [&](beast::error_code ec4, std::size_t) { failure = ec4; });
          });
        });
      });
  // The resolver's own deadline: tcp_stream's expiry starts with the connect.
  io.run_for(timeout + std::chrono::seconds(1));
  if (!io.stopped()) {
    resolver.cancel();
    stream.cancel();
    io.run();
    throw std::runtime_error("GET " + url + ": no answer in time (" + stage + ")");
  }
  if (failure)
    throw std::runtime_error(
        "GET " + url + ": " +
        (failure == beast::error::timeout ? std::string("no answer in time") : failure.message()) +
        " (" + stage + ")");
  auto response = parser.release();
  http_response r;
  r.status = static_cast<int>(response.result_int());
  if (const auto type = response.find(http::field::content_type); type != response.end())
    r.content_type = std::string(type->value());
  r.body = std::move(response.body());
  return r;
}

}  // namespace probe
