// Every explanation that the kernel can show on loopback is checked against it: each test
// makes the real error happen with plain POSIX calls, then checks that the text a user
// would paste (and the kernel's own strerror text) is explained as that very errno. Waits
// are on events (poll, waitpid, the kernel's socket table) with bounded deadlines; the only
// test that takes seconds measures the kernel's SYN retries, which take seconds.
#include <deadpeer/cause.hpp>

#include <deadpeer/sock_diag.hpp>

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

using deadpeer::cause;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

class fd_holder {
 public:
  explicit fd_holder(int fd = -1) : fd_(fd) {}
  ~fd_holder() { reset(); }
  fd_holder(const fd_holder&) = delete;
  fd_holder& operator=(const fd_holder&) = delete;
  fd_holder(fd_holder&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  fd_holder& operator=(fd_holder&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

sockaddr_in loopback(in_port_t port_host_order) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port_host_order);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

const sockaddr* as_sockaddr(const sockaddr_in& a) {
  return reinterpret_cast<const sockaddr*>(&a);
}

fd_holder tcp_socket(int flags = 0) {
  fd_holder fd(::socket(AF_INET, SOCK_STREAM | flags, 0));
  REQUIRE(fd.get() >= 0);
  return fd;
}

sockaddr_in local_address(int fd) {
  sockaddr_in a{};
  socklen_t length = sizeof a;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &length) == 0);
  return a;
}

// A socket bound to 127.0.0.1 on an ephemeral port; listening when backlog is set.
fd_holder bound_socket(std::optional<int> backlog) {
  fd_holder fd = tcp_socket();
  const sockaddr_in any_port = loopback(0);
  REQUIRE(::bind(fd.get(), as_sockaddr(any_port), sizeof any_port) == 0);
  if (backlog) REQUIRE(::listen(fd.get(), *backlog) == 0);
  return fd;
}

// The errno of a call that must fail; 0 if it succeeded.
template <typename Call>
int error_of(Call call) {
  errno = 0;
  return call() < 0 ? errno : 0;
}

bool wait_for(int fd, short events, std::chrono::milliseconds deadline) {
  pollfd p{fd, events, 0};
  return ::poll(&p, 1, static_cast<int>(deadline.count())) == 1;
}

ssize_t send_text(int fd, std::string_view text) {
  return ::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
}

// The kernel gave `observed`; what a user pastes for it must be explained as that errno,
// with the expected cause, and so must the kernel's own message for it.
void check_explained(int observed, std::string_view pasted, cause expected) {
  INFO("kernel: " << observed << " (" << std::strerror(observed) << "), pasted: '" << pasted
                  << "'");
  const auto r = deadpeer::lookup(pasted);
  REQUIRE(r.has_value());
  REQUIRE(r->error.has_value());
  CHECK(r->error->platform == "linux");
  CHECK(r->error->number == observed);
  CHECK(r->cause == expected);
  const auto by_message = deadpeer::lookup(std::strerror(observed));
  REQUIRE(by_message.has_value());
  CHECK(by_message->error.value().number == observed);
  // ETIMEDOUT's cause needs the connection's activity; the tests that meet it say which.
  if (!deadpeer::depends_on_activity(*r->error))
    CHECK(deadpeer::classify({observed, std::generic_category()}, {}).cause == expected);
}

}  // namespace

TEST_CASE("kernel: connecting to a closed loopback port is ECONNREFUSED") {
  // Bound but not listening: the port is ours, and nothing accepts on it.
  const fd_holder closed = bound_socket(std::nullopt);
  const sockaddr_in target = local_address(closed.get());
  const fd_holder client = tcp_socket();
  const int observed =
      error_of([&] { return ::connect(client.get(), as_sockaddr(target), sizeof target); });
  CHECK(observed == ECONNREFUSED);
  check_explained(observed, "Connection refused", cause::connection_refused);
  check_explained(observed, "dial tcp 127.0.0.1:1: connect: connection refused",
                  cause::connection_refused);
}

namespace {

struct connected_pair {
  fd_holder listener = bound_socket(8);
  fd_holder client = tcp_socket();
  fd_holder server;

  connected_pair() {
    const sockaddr_in target = local_address(listener.get());
    REQUIRE(::connect(client.get(), as_sockaddr(target), sizeof target) == 0);
    server = fd_holder(::accept(listener.get(), nullptr, nullptr));
    REQUIRE(server.get() >= 0);
  }
};

void abortive_close(fd_holder& fd) {
  const linger abort_now{1, 0};
  REQUIRE(::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &abort_now, sizeof abort_now) == 0);
  fd.reset();
}

}  // namespace

TEST_CASE("kernel: writing after the peer's reset is ECONNRESET, then EPIPE") {
  connected_pair pair;
  abortive_close(pair.server);
  REQUIRE(wait_for(pair.client.get(), POLLERR, 5000ms));  // the RST has been processed

  const int first = error_of([&] { return send_text(pair.client.get(), "still writing"); });
  const int second = error_of([&] { return send_text(pair.client.get(), "and again"); });
  CHECK((first == ECONNRESET || first == EPIPE));
  CHECK(second == EPIPE);
  check_explained(second, "Broken pipe", cause::broken_pipe);
  check_explained(second, "BrokenPipeError: [Errno 32] Broken pipe", cause::broken_pipe);
  if (first == ECONNRESET) {
    check_explained(first, "Connection reset by peer", cause::peer_reset);
    check_explained(first, "java.net.SocketException: Connection reset", cause::peer_reset);
    check_explained(first, "[Errno 104] Connection reset by peer", cause::peer_reset);
  }
}

TEST_CASE(
    "kernel: a server that answers and closes while the client still sends: EOF, then "
    "EPIPE or ECONNRESET (what Windows reports as 10053)") {
  connected_pair pair;
  REQUIRE(send_text(pair.client.get(), "PUT /upload, part 1") > 0);
  // The server reads what arrived, answers an error and closes: its receive queue is
  // empty, so the close sends FIN.
  std::array<char, 256> buffer{};
  REQUIRE(wait_for(pair.server.get(), POLLIN, 5000ms));
  REQUIRE(::recv(pair.server.get(), buffer.data(), buffer.size(), 0) > 0);
  REQUIRE(send_text(pair.server.get(), "413 too large") > 0);
  pair.server.reset();

  // The client reads the answer, then EOF: the FIN.
  REQUIRE(wait_for(pair.client.get(), POLLIN, 5000ms));
  CHECK(::recv(pair.client.get(), buffer.data(), buffer.size(), 0) == 13);
  REQUIRE(wait_for(pair.client.get(), POLLIN | POLLRDHUP, 5000ms));
  CHECK(::recv(pair.client.get(), buffer.data(), buffer.size(), 0) == 0);

  // It keeps sending: the closed server's kernel answers with RST.
  CHECK(send_text(pair.client.get(), "PUT /upload, part 2") > 0);
  REQUIRE(wait_for(pair.client.get(), POLLERR, 5000ms));
  const int observed = error_of([&] { return send_text(pair.client.get(), "part 3"); });
  INFO(std::strerror(observed));
  CHECK((observed == EPIPE || observed == ECONNRESET));
  check_explained(observed, std::strerror(observed),
                  observed == EPIPE ? cause::broken_pipe : cause::peer_reset);
  // The explanation of 10053 tells this story.
  const auto wsa = deadpeer::lookup(
      "An established connection was aborted by the software in "
      "your host machine");
  REQUIRE(wsa.has_value());
  CHECK(wsa->error.value().number == 10053);
  CHECK(deadpeer::explain(wsa->cause).on_the_wire.find("EOF on read, then EPIPE or ECONNRESET") !=
        std::string_view::npos);
}

TEST_CASE(
    "kernel: a connection reset in the listen queue is still accepted, and recv gives "
    "ECONNRESET, not ECONNABORTED") {
  const fd_holder listener = bound_socket(8);
  const sockaddr_in target = local_address(listener.get());
  fd_holder client = tcp_socket();
  REQUIRE(::connect(client.get(), as_sockaddr(target), sizeof target) == 0);
  const sockaddr_in client_address = local_address(client.get());
  REQUIRE(wait_for(listener.get(), POLLIN, 5000ms));  // queued, not accepted

  deadpeer::sock_diag diag;
  const auto endpoint = [](const sockaddr_in& a) {
    return boost::asio::ip::tcp::endpoint(boost::asio::ip::address_v4(ntohl(a.sin_addr.s_addr)),
                                          ntohs(a.sin_port));
  };
  REQUIRE(diag.find(endpoint(target), endpoint(client_address)).has_value());
  abortive_close(client);
  // Wait until the kernel has processed the RST: the queued connection leaves its table.
  const auto deadline = steady::now() + 5s;
  while (diag.find(endpoint(target), endpoint(client_address)).has_value()) {
    REQUIRE(steady::now() < deadline);
    std::this_thread::sleep_for(1ms);
  }

  const fd_holder accepted(::accept(listener.get(), nullptr, nullptr));
  INFO("accept: " << std::strerror(errno));
  REQUIRE(accepted.get() >= 0);  // Linux does not report ECONNABORTED here
  std::array<char, 16> buffer{};
  const int observed =
      error_of([&] { return ::recv(accepted.get(), buffer.data(), buffer.size(), 0); });
  CHECK(observed == ECONNRESET);
  check_explained(observed, "ConnectionResetError: [Errno 104] Connection reset by peer",
                  cause::peer_reset);
  CHECK(deadpeer::explain(cause::local_abort).typical.find("accept() does not report it") !=
        std::string_view::npos);
}

TEST_CASE("kernel: bind to a port in use is EADDRINUSE") {
  const fd_holder taken = bound_socket(1);
  const sockaddr_in address = local_address(taken.get());
  const fd_holder second = tcp_socket();
  const int observed =
      error_of([&] { return ::bind(second.get(), as_sockaddr(address), sizeof address); });
  CHECK(observed == EADDRINUSE);
  check_explained(observed, "bind: Address already in use", cause::address_in_use);
}

TEST_CASE("kernel: bind to an address this host does not have is EADDRNOTAVAIL") {
  const fd_holder fd = tcp_socket();
  sockaddr_in elsewhere = loopback(0);
  REQUIRE(::inet_pton(AF_INET, "192.0.2.1", &elsewhere.sin_addr) == 1);  // TEST-NET-1
  const int observed =
      error_of([&] { return ::bind(fd.get(), as_sockaddr(elsewhere), sizeof elsewhere); });
  CHECK(observed == EADDRNOTAVAIL);
  check_explained(observed, "Cannot assign requested address", cause::address_unavailable);
}

TEST_CASE("kernel: socket() with a protocol the type does not have is EPROTONOSUPPORT") {
  const int observed = error_of([] {
    const int fd = ::socket(AF_INET, SOCK_STREAM, IPPROTO_UDP);
    if (fd >= 0) ::close(fd);
    return fd;
  });
  CHECK(observed == EPROTONOSUPPORT);
  check_explained(observed, "socket: Protocol not supported", cause::invalid_call);
}

TEST_CASE("kernel: misused calls are EINVAL, ENOPROTOOPT and EDESTADDRREQ") {
  const fd_holder bound = bound_socket(std::nullopt);
  const sockaddr_in again = loopback(0);
  const int twice = error_of([&] { return ::bind(bound.get(), as_sockaddr(again), sizeof again); });
  CHECK(twice == EINVAL);
  check_explained(twice, "Invalid argument", cause::invalid_call);

  constexpr int no_such_option = 0x7fff;
  const int value = 1;
  const int option = error_of(
      [&] { return ::setsockopt(bound.get(), IPPROTO_TCP, no_such_option, &value, sizeof value); });
  CHECK(option == ENOPROTOOPT);
  check_explained(option, "setsockopt: Protocol not available", cause::invalid_call);

  const fd_holder udp(::socket(AF_INET, SOCK_DGRAM, 0));
  REQUIRE(udp.get() >= 0);
  const int nowhere = error_of([&] { return send_text(udp.get(), "to whom?"); });
  CHECK(nowhere == EDESTADDRREQ);
  check_explained(nowhere, "Destination address required", cause::invalid_call);
}

TEST_CASE(
    "kernel: a non-blocking connect is EINPROGRESS, then EALREADY, and a connected "
    "socket is EISCONN") {
  // listen(0) holds one established connection; the kernel then drops further SYNs (the
  // accept queue is full), so the next connect stays in SYN_SENT.
  const fd_holder listener = bound_socket(0);
  const sockaddr_in target = local_address(listener.get());
  const fd_holder filler = tcp_socket();
  REQUIRE(::connect(filler.get(), as_sockaddr(target), sizeof target) == 0);
  REQUIRE(wait_for(listener.get(), POLLIN, 5000ms));

  const fd_holder pending = tcp_socket(SOCK_NONBLOCK);
  const int started =
      error_of([&] { return ::connect(pending.get(), as_sockaddr(target), sizeof target); });
  CHECK(started == EINPROGRESS);
  check_explained(started, "Operation now in progress", cause::not_a_failure);
  const int again =
      error_of([&] { return ::connect(pending.get(), as_sockaddr(target), sizeof target); });
  CHECK(again == EALREADY);
  check_explained(again, "Operation already in progress", cause::not_a_failure);

  const int connected =
      error_of([&] { return ::connect(filler.get(), as_sockaddr(target), sizeof target); });
  CHECK(connected == EISCONN);
  check_explained(connected, "Transport endpoint is already connected", cause::not_a_failure);
}

namespace {

std::optional<int> read_sysctl(const char* path) {
  std::ifstream in(path);
  int value = 0;
  if (in >> value) return value;
  return std::nullopt;
}

}  // namespace

TEST_CASE(
    "kernel: an unanswered SYN is retried, then connect fails with ETIMEDOUT "
    "(--while connecting)") {
  const fd_holder listener = bound_socket(0);
  const sockaddr_in target = local_address(listener.get());
  const fd_holder filler = tcp_socket();
  REQUIRE(::connect(filler.get(), as_sockaddr(target), sizeof target) == 0);
  REQUIRE(wait_for(listener.get(), POLLIN, 5000ms));

  // TCP_USER_TIMEOUT also bounds SYN_SENT, so the test ends in seconds, not minutes.
  const fd_holder pending = tcp_socket(SOCK_NONBLOCK);
  const unsigned int user_timeout_ms = 2500;
  REQUIRE(::setsockopt(pending.get(), IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms,
                       sizeof user_timeout_ms) == 0);
  const auto started = steady::now();
  REQUIRE(error_of([&] { return ::connect(pending.get(), as_sockaddr(target), sizeof target); }) ==
          EINPROGRESS);

  // Record when the kernel's retransmission count goes up while the SYN is unanswered.
  std::array<std::optional<std::chrono::milliseconds>, 2> retransmitted{};
  while (!wait_for(pending.get(), POLLOUT, 10ms)) {
    REQUIRE(steady::now() - started < 10s);
    tcp_info info{};
    socklen_t length = sizeof info;
    REQUIRE(::getsockopt(pending.get(), IPPROTO_TCP, TCP_INFO, &info, &length) == 0);
    for (std::size_t i = 0; i < retransmitted.size(); ++i) {
      if (!retransmitted[i] && info.tcpi_total_retrans > i)
        retransmitted[i] =
            std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - started);
    }
  }
  int observed = 0;
  socklen_t length = sizeof observed;
  REQUIRE(::getsockopt(pending.get(), SOL_SOCKET, SO_ERROR, &observed, &length) == 0);
  const auto failed_after =
      std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - started);
  INFO("failed after " << failed_after.count() << " ms");
  CHECK(observed == ETIMEDOUT);
  CHECK(failed_after >= std::chrono::milliseconds(user_timeout_ms) - 100ms);

  // The first retry comes after the initial 1 s RTO. With tcp_syn_linear_timeouts the
  // second follows 1 s later; classic doubling waits 2 s.
  REQUIRE(retransmitted[0].has_value());
  INFO("first retransmission after " << retransmitted[0]->count() << " ms");
  CHECK(*retransmitted[0] >= 900ms);
  CHECK(*retransmitted[0] < 1600ms);
  if (retransmitted[1]) {
    const auto gap = *retransmitted[1] - *retransmitted[0];
    INFO("second after " << gap.count() << " ms more");
    const auto linear = read_sysctl("/proc/sys/net/ipv4/tcp_syn_linear_timeouts");
    if (linear && *linear >= 2) {
      CHECK(gap < 1600ms);
    } else {
      CHECK(gap >= 1800ms);
    }
  }

  check_explained(observed, "Connection timed out", cause::keepalive_timeout);
  const auto pasted = deadpeer::lookup("TimeoutError: [Errno 110] Connection timed out");
  REQUIRE(pasted.has_value());
  REQUIRE(pasted->error.has_value());
  CHECK(deadpeer::depends_on_activity(*pasted->error));
  CHECK(deadpeer::cause_while(*pasted->error, deadpeer::activity::connecting) ==
        cause::connect_timeout);
  deadpeer::connection_context connecting;
  connecting.op = deadpeer::connection_context::operation::connecting;
  connecting.user_timeout_armed = true;
  CHECK(deadpeer::classify({observed, std::generic_category()}, connecting).cause ==
        cause::connect_timeout);
}

TEST_CASE("kernel: socket() past RLIMIT_NOFILE is EMFILE (in a child process)") {
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // Only async-signal-safe calls here; the errno is the exit status.
    const rlimit none{0, 0};
    if (::setrlimit(RLIMIT_NOFILE, &none) != 0) ::_exit(255);
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ::_exit(fd < 0 ? errno : 0);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  const int observed = WEXITSTATUS(status);
  CHECK(observed == EMFILE);
  check_explained(observed, "accept4: Too many open files", cause::resource_exhausted);
  CHECK(deadpeer::explain(cause::resource_exhausted).typical.find("not a problem of the peer") !=
        std::string_view::npos);
}
