#include <deadpeer/sock_diag.hpp>

#include "loopback.hpp"

#include <catch2/catch.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/socket_base.hpp>

#include <chrono>
#include <optional>
#include <thread>

using namespace deadpeer;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

// A connected pair on loopback: the accepted side is what a target's server would hold.
using connected_pair = deadpeer::test::loopback_pair;

// Polls until `pred` holds or 5 s pass (the kernel's FIN processing is asynchronous).
template <typename F>
bool eventually(F&& pred) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return pred();
}

}  // namespace

TEST_CASE("sock_diag finds the server side of a connection by its 4-tuple") {
  connected_pair p;
  sock_diag diag;
  const auto found = diag.find(p.server.local_endpoint(), p.server.remote_endpoint());
  REQUIRE(found);
  CHECK(found->state == tcp_state::established);
  CHECK(to_string(found->state) == "ESTABLISHED");
  CHECK(found->local == p.server.local_endpoint());
  CHECK(found->remote == p.server.remote_endpoint());
  CHECK(found->inode != 0);
  CHECK(found->timer == socket_timer::none);  // no keepalive, nothing in flight
}

TEST_CASE("sock_diag reports no socket for a 4-tuple nobody holds, not the listener") {
  connected_pair p;
  sock_diag diag;
  auto stranger = p.client.local_endpoint();
  stranger.port(static_cast<unsigned short>(stranger.port() == 65535 ? 1 : stranger.port() + 1));
  CHECK_FALSE(diag.find(p.server.local_endpoint(), stranger));
}

TEST_CASE("sock_diag sees a keepalive timer and the states a close leaves behind") {
  connected_pair p;
  sock_diag diag;
  p.server.set_option(asio::socket_base::keep_alive(true));
  const auto server_side = [&] {
    return diag.find(p.server.local_endpoint(), p.server.remote_endpoint());
  };
  REQUIRE(server_side());
  CHECK(server_side()->timer == socket_timer::keepalive);
  CHECK(server_side()->timer_expires > std::chrono::milliseconds(0));

  const auto client_local = p.client.local_endpoint();
  const auto client_remote = p.client.remote_endpoint();
  p.client.close();  // FIN: the server side goes CLOSE_WAIT, the client FIN_WAIT2
  CHECK(eventually([&] {
    const auto s = server_side();
    return s && s->state == tcp_state::close_wait;
  }));
  CHECK(eventually([&] {
    const auto c = diag.find(client_local, client_remote);
    return c && c->state == tcp_state::fin_wait2;
  }));
  const auto all = diag.list();
  CHECK(std::any_of(all.begin(), all.end(), [&](const socket_entry& e) {
    return e.state == tcp_state::listen && e.local == p.acceptor.local_endpoint();
  }));
}
