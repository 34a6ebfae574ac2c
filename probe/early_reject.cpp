// The early-reject trial loop (early_reject.hpp says what it decides). Plain POSIX sockets
// and poll(): two sockets, two threads, every wait bounded by the trial's deadline.
#include "early_reject.hpp"

#include "cli.hpp"
#include "wire_observer.hpp"

#include <deadpeer/json_text.hpp>
#include <deadpeer/cause.hpp>
#include <deadpeer/clock.hpp>
#include <deadpeer/duration.hpp>
#include <deadpeer/store.hpp>

#include <boost/asio/error.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/json.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>

namespace probe {
namespace {

namespace json = boost::json;
using std::chrono::milliseconds;
using tcp = boost::asio::ip::tcp;

/// How long the naive server waits for body bytes to be unread before it closes (they
/// arrive within microseconds on loopback; the wait only makes every trial the same case).
constexpr milliseconds unread_wait_limit{1000};
/// How long the graceful server reads and discards the rest of the body at most.
constexpr milliseconds drain_limit{5000};
/// The answer is small; what the client keeps of what it reads.
constexpr std::size_t received_cap = 64 * 1024;
constexpr std::size_t chunk_bytes = 64 * 1024;

const std::string& answer() {
  static const std::string text = [] {
    const std::string body = "upload refused: the body is larger than 1 MiB\n";
    return "HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  }();
  return text;
}

std::string errno_text(int error) {
  const auto name = deadpeer::linux_errno_name(error);
  return name.empty() ? "errno " + std::to_string(error) : std::string(name);
}

class socket_guard {
 public:
  explicit socket_guard(int fd) : fd_(fd) {}
  ~socket_guard() { close(); }
  socket_guard(const socket_guard&) = delete;
  socket_guard& operator=(const socket_guard&) = delete;
  int get() const { return fd_; }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

// Waits for `events` on `fd` until `deadline_ns`; the revents, or 0 when the time passed.
short wait_for(int fd, short events, std::int64_t deadline_ns) {
  for (;;) {
    const auto left_ns = deadline_ns - deadpeer::monotonic_ns();
    if (left_ns <= 0) return 0;
    pollfd p{.fd = fd, .events = events, .revents = 0};
    const int ready = ::poll(&p, 1, static_cast<int>(left_ns / 1'000'000 + 1));
    if (ready > 0) return p.revents;
    if (ready < 0 && errno != EINTR) return POLLERR;
  }
}

double ms_between(std::int64_t from_ns, std::int64_t to_ns) {
  return static_cast<double>(to_ns - from_ns) / 1e6;
}

// --- the server ----------------------------------------------------------------------

struct server_view {
  std::int64_t answer_ns = 0;               // just before the answer was written
  std::int64_t closed_ns = 0;               // close() returned
  std::uint64_t read_before_answer = 0;     // the header (and whatever body came with it)
  int unread_at_close = -1;                 // naive: the receive queue when close() was called
  std::uint64_t drained = 0;                // graceful: bytes read and discarded after the answer
  std::string drain_end;                    // graceful: "EOF", "deadline" or an errno name
  std::string failure;                      // empty when it went as planned
};

// Accepts one connection on `listener` and rejects its upload the way `mode` says.
void serve_one(int listener, const std::string& mode, std::int64_t deadline_ns,
               server_view& view) {
  if ((wait_for(listener, POLLIN, deadline_ns) & POLLIN) == 0) {
    view.failure = "no client connected";
    return;
  }
  socket_guard conn(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
  if (conn.get() < 0) {
    view.failure = "accept: " + errno_text(errno);
    return;
  }
  // The request header, and whatever part of the body arrives with it.
  std::string request;
  char buffer[chunk_bytes];
  while (request.find("\r\n\r\n") == std::string::npos) {
    if (request.size() > received_cap || (wait_for(conn.get(), POLLIN, deadline_ns) & POLLIN) == 0) {
      view.failure = "no request header";
      return;
    }
    const auto n = ::recv(conn.get(), buffer, sizeof buffer, 0);
    if (n <= 0) {
      view.failure = n == 0 ? "the client closed before its header" : "recv: " + errno_text(errno);
      return;
    }
    request.append(buffer, static_cast<std::size_t>(n));
  }
  view.read_before_answer = request.size();

  view.answer_ns = deadpeer::monotonic_ns();
  const auto& text = answer();
  if (::send(conn.get(), text.data(), text.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(text.size())) {
    view.failure = "the answer could not be written";
    return;
  }

  if (mode == "naive") {
    // close() with body bytes unread: the kernel answers with RST, not FIN.
    (void)wait_for(conn.get(), POLLIN,
                   std::min(deadline_ns, deadpeer::monotonic_ns() + unread_wait_limit.count() * 1'000'000));
    int unread = 0;
    if (::ioctl(conn.get(), FIONREAD, &unread) == 0) view.unread_at_close = unread;
    conn.close();
    view.closed_ns = deadpeer::monotonic_ns();
    return;
  }

  // graceful: FIN after the answer, then read the rest until the client's EOF.
  ::shutdown(conn.get(), SHUT_WR);
  const auto drain_until =
      std::min(deadline_ns, deadpeer::monotonic_ns() + drain_limit.count() * 1'000'000);
  view.drain_end = "deadline";
  while ((wait_for(conn.get(), POLLIN, drain_until) & (POLLIN | POLLHUP | POLLERR)) != 0) {
    const auto n = ::recv(conn.get(), buffer, sizeof buffer, 0);
    if (n > 0) {
      view.drained += static_cast<std::uint64_t>(n);
      continue;
    }
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    view.drain_end = n == 0 ? "EOF" : errno_text(errno);
    break;
  }
  conn.close();
  view.closed_ns = deadpeer::monotonic_ns();
}

// --- the client ----------------------------------------------------------------------

struct client_view {
  struct event {
    std::string what;
    std::int64_t mono_ns;
  };
  std::vector<event> events;
  unsigned short local_port = 0;
  std::uint64_t body_sent = 0;          // body bytes send() accepted
  std::uint64_t sent_before_error = 0;  // of those, before the first error
  bool body_complete = false;
  std::string received;  // what it read (capped)
  std::uint64_t bytes_read = 0;
  std::int64_t answer_ns = 0;  // the whole answer was read
  int error = 0;               // the first error
  std::string error_op;        // "send" or "recv"
  std::int64_t error_ns = 0;
  std::int64_t eof_ns = 0;
  bool timed_out = false;

  void add(std::string what) { events.push_back({std::move(what), deadpeer::monotonic_ns()}); }
  void failed(int e, const char* op) {
    add(errno_text(e) + " on " + op);
    if (error != 0) return;
    error = e;
    error_op = op;
    error_ns = events.back().mono_ns;
    sent_before_error = body_sent;
  }
  // The answer is complete once its header and Content-Length bytes of body are in.
  bool answer_complete() const {
    const auto end = received.find("\r\n\r\n");
    if (end == std::string::npos) return false;
    std::string header = received.substr(0, end);
    std::transform(header.begin(), header.end(), header.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    const auto at = header.find("content-length:");
    const std::size_t length =
        at == std::string::npos ? 0 : std::stoul(header.substr(at + 15, header.find('\r', at) - at - 15));
    return received.size() >= end + 4 + length;
  }
};

// Uploads a large body to 127.0.0.1:`port` as fast as the socket takes it, reading
// whatever comes back, until both directions ended (or `deadline_ns`). `connected` is
// called once the socket is connected, before the first byte leaves.
client_view upload(unsigned short port, std::int64_t deadline_ns,
                   const std::function<void(unsigned short)>& connected) {
  client_view view;
  socket_guard fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) throw std::runtime_error("socket: " + errno_text(errno));
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0)
    throw std::runtime_error("connect to 127.0.0.1:" + std::to_string(port) + ": " +
                             errno_text(errno));
  sockaddr_in local{};
  socklen_t len = sizeof local;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local), &len);
  view.local_port = ntohs(local.sin_port);
  ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) | O_NONBLOCK);
  connected(view.local_port);

  const std::string header = "POST /upload HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
                             "\r\nContent-Type: application/octet-stream\r\nContent-Length: " +
                             std::to_string(early_reject_body_bytes) + "\r\n\r\n";
  std::size_t header_sent = 0;
  const std::string chunk(chunk_bytes, 'x');
  char buffer[chunk_bytes];
  bool reading = true, writing = true;

  auto read_available = [&] {
    for (int i = 0; i < 64 && reading; ++i) {  // until the queue is empty; bounded per wake-up
      const auto n = ::recv(fd.get(), buffer, sizeof buffer, 0);
      if (n > 0) {
        view.bytes_read += static_cast<std::uint64_t>(n);
        view.received.append(buffer, std::min(static_cast<std::size_t>(n),
                                              received_cap - std::min(received_cap, view.received.size())));
        if (view.answer_ns == 0 && view.answer_complete()) {
          view.add("answer");
          view.answer_ns = view.events.back().mono_ns;
        }
      } else if (n == 0) {
        view.add("EOF");
        view.eof_ns = view.events.back().mono_ns;
        reading = false;
      } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return;
      } else if (errno != EINTR) {
        view.failed(errno, "recv");
        reading = writing = false;  // the connection is gone
      }
    }
  };
  auto write_available = [&] {
    for (int i = 0; i < 64 && writing; ++i) {  // until the socket is full; bounded per wake-up
      const char* data = nullptr;
      std::size_t size = 0;
      if (header_sent < header.size()) {
        data = header.data() + header_sent;
        size = header.size() - header_sent;
      } else {
        data = chunk.data();
        size = static_cast<std::size_t>(
            std::min<std::uint64_t>(chunk.size(), early_reject_body_bytes - view.body_sent));
      }
      const auto n = ::send(fd.get(), data, size, MSG_NOSIGNAL);
      if (n >= 0) {
        const auto sent = static_cast<std::size_t>(n);
        if (header_sent < header.size())
          header_sent += sent;
        else
          view.body_sent += sent;
        if (view.body_sent == early_reject_body_bytes) {
          view.body_complete = true;
          view.add("body sent");
          writing = false;
        }
      } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return;
      } else if (errno != EINTR) {
        view.failed(errno, "send");
        writing = false;  // but read whatever came back
      }
    }
  };

  while ((reading || writing) && !interrupted()) {
    const short revents =
        wait_for(fd.get(), static_cast<short>((reading ? POLLIN : 0) | (writing ? POLLOUT : 0)),
                 std::min(deadline_ns, deadpeer::monotonic_ns() + 100'000'000));
    if (deadpeer::monotonic_ns() >= deadline_ns) {
      view.timed_out = true;
      view.add("no end within the limit");
      break;
    }
    if (reading && (revents & (POLLIN | POLLHUP | POLLERR)) != 0) read_available();
    if (writing && (revents & (POLLOUT | POLLHUP | POLLERR)) != 0) write_available();
  }
  if (view.error == 0) view.sent_before_error = view.body_sent;
  return view;
}

std::string sequence_of(const client_view& c) {
  std::string text;
  for (const auto& e : c.events)
    text += (text.empty() ? "" : ", ") + e.what;
  return text;
}

std::string fixed(double value, int digits) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(digits) << value;
  return out.str();
}

std::string mib(std::uint64_t bytes) {
  return fixed(static_cast<double>(bytes) / (1 << 20), 2) + " MiB";
}

int open_listener(unsigned short& port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket: " + errno_text(errno));
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof at;
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&at), sizeof at) != 0 || ::listen(fd, 16) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&at), &len) != 0) {
    const int e = errno;
    ::close(fd);
    throw std::runtime_error("cannot listen on 127.0.0.1: " + errno_text(e));
  }
  port = ntohs(at.sin_port);
  return fd;
}

}  // namespace

std::vector<trial_result> run_early_reject_experiment(const experiment_config& config,
                                                      std::int64_t run_id, int first_trial,
                                                      const trial_callback& progress) {
  if (config.server || config.target)
    throw usage_error("--fault early-reject runs its own server and client on loopback; drop " +
                      std::string(config.server ? "--server" : "the target options"));
  if (config.keepalive || config.user_timeout)
    throw usage_error("--fault early-reject is about what the client reads, not about timers; "
                      "drop --keepalive and --user-timeout");
  if (std::find(server_close_modes.begin(), server_close_modes.end(), config.server_close) ==
      server_close_modes.end())
    throw usage_error("--server-close \"" + config.server_close + "\": expected naive or graceful");
  // Heartbeats play no part: the trials are stored without them.
  auto stored = config;
  stored.heartbeat = std::nullopt;

  unsigned short port = 0;
  socket_guard listener(open_listener(port));
  deadpeer::event_store store({.path = config.db});
  const auto limit = config.hard_limit();
  std::string wire_why;
  const auto wire = open_wire_observer(nullptr, wire_why);
  if (!wire) std::cerr << "probe: the wire is not observed in these trials: " << wire_why << "\n";
  const auto loopback = boost::asio::ip::make_address("127.0.0.1");

  std::vector<trial_result> results;
  for (int i = 0; i < config.trials && !interrupted(); ++i) {
    trial_result r;
    r.trial = first_trial + i;
    const auto deadline_ns = deadpeer::monotonic_ns() + limit.count() * 1'000'000;
    server_view server;
    std::thread server_thread(
        [&] { serve_one(listener.get(), config.server_close, deadline_ns, server); });
    client_view client;
    try {
      client = upload(port, deadline_ns, [&](unsigned short local_port) {
        if (wire) wire->watch(tcp::endpoint(loopback, port), tcp::endpoint(loopback, local_port));
      });
    } catch (...) {
      server_thread.join();
      throw;
    }
    server_thread.join();
    if (!server.failure.empty() && !interrupted())
      throw std::runtime_error("the early-reject server failed: " + server.failure);

    const auto t0 = server.answer_ns;
    std::int64_t end_ns = 0;
    for (const auto ns : {client.eof_ns, client.error_ns})
      if (ns != 0 && (end_ns == 0 || ns < end_ns)) end_ns = ns;
    const auto sequence = sequence_of(client);
    deadpeer::classification seen{deadpeer::cause::unknown, deadpeer::detected_by::none};
    if (client.error != 0) {
      seen = deadpeer::classify(
          std::error_code(client.error, std::system_category()),
          {.op = client.error_op == "send" ? deadpeer::connection_context::operation::writing
                                           : deadpeer::connection_context::operation::reading,
           .data_in_flight = true});
      r.error_number = client.error;
      r.error_name = errno_text(client.error);
    } else if (client.eof_ns != 0) {
      seen = deadpeer::classify(boost::system::error_code(boost::asio::error::eof), {});
    }
    if (interrupted() && end_ns == 0) {
      r.outcome = "interrupted";
    } else if (end_ns != 0 && t0 != 0) {
      r.outcome = "observed";
      r.latency_ms = ms_between(t0, end_ns);
      r.cause = std::string(deadpeer::to_string(seen.cause));
      r.detected_by = std::string(deadpeer::to_string(seen.detected_by));
    } else {
      r.outcome = "missed";
      r.add_note("the client saw neither EOF nor an error within " +
                 deadpeer::format_duration(limit));
    }

    std::optional<wire_segment> segment;
    if (wire) {
      segment = wire->first_seen();
      r.wire_segment = segment ? (segment->reset ? "RST" : "FIN") : "none";
      if (segment) r.wire_mono_ns = segment->mono_ns;
    }
    const bool answered = client.answer_ns != 0;
    const bool answered_first = answered && (client.error_ns == 0 || client.answer_ns < client.error_ns);

    json::object d;
    d["server_close"] = config.server_close;
    d["answer_read"] = answered;
    d["answer_before_error"] = answered_first;
    d["status"] = client.received.substr(0, client.received.find("\r\n"));
    d["bytes_read"] = client.bytes_read;
    d["error"] = client.error != 0 ? errno_text(client.error) : "";
    d["errno"] = client.error;
    d["error_op"] = client.error_op;
    d["cause"] = r.cause;
    d["detected_by"] = r.detected_by;
    d["clean_eof"] = client.error == 0 && client.eof_ns != 0;
    d["body_bytes"] = early_reject_body_bytes;
    d["body_bytes_sent"] = client.sent_before_error;
    d["body_complete"] = client.body_complete;
    d["sequence"] = sequence;
    json::array events;
    for (const auto& e : client.events)
      events.push_back({{"event", e.what}, {"after_answer_ms", t0 != 0 ? ms_between(t0, e.mono_ns) : 0.0}});
    d["events"] = std::move(events);
    json::object s;
    s["read_before_answer"] = server.read_before_answer;
    if (config.server_close == "naive") {
      s["unread_at_close"] = server.unread_at_close;
    } else {
      s["drained"] = server.drained;
      s["drain_end"] = server.drain_end;
    }
    if (t0 != 0 && server.closed_ns != 0) s["closed_after_answer_ms"] = ms_between(t0, server.closed_ns);
    s["segment"] = r.wire_segment;
    d["server"] = std::move(s);
    r.details = deadpeer::json_text(d);

    // The note says what happened in words, then what it looks like elsewhere.
    if (config.server_close == "naive")
      r.add_note("the server closed with " + std::to_string(server.unread_at_close) +
                 " bytes unread, so its kernel sent " +
                 (segment ? std::string(segment->reset ? "RST" : "FIN") + " (seen on the wire)"
                          : std::string("RST")) +
                 " instead of a FIN");
    else
      r.add_note("the server sent FIN after its answer and read the rest of the body (" +
                 mib(server.drained) + ") until " +
                 (server.drain_end == "EOF" ? std::string("the client's EOF") : server.drain_end) +
                 ", then closed");
    r.add_note("the client saw: " + sequence + "; answer " +
               (answered ? answered_first ? "read" : "read only after the error" : "LOST") + "; " +
               mib(client.sent_before_error) + " of the body sent" +
               (client.error != 0 ? " before " + errno_text(client.error) : ""));
    r.add_note(
        "on Linux a FIN followed by RST to further data shows as EOF, then EPIPE (or "
        "ECONNRESET) on the next write; Windows reports it as 10053 (probe explain 10053)");

    store_trial(store, stored, run_id, r, t0, end_ns, "");
    if (progress) progress(config, r);
    results.push_back(std::move(r));
  }
  store.flush();
  return results;
}

}  // namespace probe
