// The event loop's I/O (server_loop.hpp says why it is shaped this way). Invariants:
// a slot is `open` from accept until its engine's end is decided and its close begins,
// `draining` while a graceful close waits for the peer's FIN, `free` after finish();
// every non-free slot has exactly one wheel entry (or none when nothing is due), and its
// descriptor is in the epoll set with EPOLLIN unless reading has stopped (peer's FIN with
// end_on_eof off), plus EPOLLOUT while bytes are unsent.
#include "server_loop.hpp"

#include <deadpeer/clock.hpp>
#include <deadpeer/endpoint.hpp>
#include <deadpeer/log.hpp>
#include <deadpeer/tcp_info.hpp>

#include <boost/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <iostream>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

namespace deadpeer::detail {
namespace {

namespace json = boost::json;
using tcp = boost::asio::ip::tcp;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr std::uint32_t chunk_slots = 1024;
constexpr std::uint32_t no_slot = UINT32_MAX;
constexpr std::uint64_t listener_tag = UINT64_MAX;
constexpr std::uint64_t wake_tag = UINT64_MAX - 1;
constexpr std::size_t read_buffer_size = 64 * 1024;
constexpr std::int64_t never_ns = INT64_MAX;
constexpr std::int64_t limit_log_period_ns = 10'000'000'000;

std::int64_t ns(steady_clock::time_point t) {
  return t == steady_clock::time_point::max() ? never_ns : to_monotonic_ns(t);
}

std::int64_t unix_ms_now() {
  return std::chrono::duration_cast<milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool is_errno(const std::error_code& ec) {
  return ec &&
         (ec.category() == std::system_category() || ec.category() == std::generic_category());
}

double ms(std::int64_t v) {
  return static_cast<double>(v) / 1e6;
}

tcp::endpoint endpoint_of(const sockaddr_storage& address) {
  tcp::endpoint e;
  std::memcpy(e.data(), &address,
              address.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in));
  return e;
}

}  // namespace

// One connection: about 300 bytes plus its client id past 15 characters, a partial frame
// or unsent bytes only while it has them.
struct server_loop::connection {
  std::optional<protocol_engine> engine;
  std::unique_ptr<std::vector<std::byte>> unsent;  ///< what the kernel did not take yet
  std::string client_id;
  tcp::endpoint peer;
  std::int64_t opened_unix_ms = 0;
  std::int64_t reap_at_ns = 0;  ///< half-closed peer: reap at this tick (0: none)
  std::int64_t drain_deadline_ns = 0;
  std::uint64_t drained_bytes = 0;
  double rtt_min_ms = 0, rtt_max_ms = 0, rtt_sum_ms = 0, rtt_last_ms = 0;
  std::uint32_t rtt_samples = 0;
  std::uint32_t dead_after_ms = 0;
  std::uint32_t generation = 0;
  std::uint32_t next_free = no_slot;
  int fd = -1;
  phase state = phase::free;
  bool admitted = false;
  bool established = false;
  bool reading = true;
  bool want_write = false;
};

// The engine's events for the connection being handled (`slot`).
struct server_loop::observer final : engine_observer {
  server_loop& loop;
  std::uint32_t slot = no_slot;
  explicit observer(server_loop& l) : loop(l) {}

  std::optional<wire::error> admit(const wire::hello& hello) override {
    auto& c = loop.at(slot);
    std::optional<connection_ref> superseded;
    const connection_ref self{loop.index_, slot, c.generation};
    // Refused or not, the end names the id the peer asked for (who tried a wrong token).
    c.client_id = hello.client_id;
    if (auto refusal = loop.host_.admit(hello, c.peer, self, superseded)) return refusal;
    c.admitted = true;
    if (superseded) {
      if (superseded->loop == loop.index_)
        loop.deferred_supersede_.push_back(*superseded);
      else
        loop.host_.supersede(*superseded);
    }
    return std::nullopt;
  }
  void on_established(const session_established& e) override {
    auto& c = loop.at(slot);
    c.established = true;
    c.dead_after_ms = static_cast<std::uint32_t>(e.dead_after.count());
    loop.established_.fetch_add(1, std::memory_order_relaxed);
    loop.start_recording(slot);
  }
  void on_data(std::span<const std::byte> payload) override {
    loop.host_.data(loop.at(slot).client_id, payload);
  }
  void on_rtt(std::chrono::nanoseconds rtt) override {
    auto& c = loop.at(slot);
    const double value = static_cast<double>(rtt.count()) / 1e6;
    c.rtt_min_ms = c.rtt_samples == 0 ? value : std::min(c.rtt_min_ms, value);
    c.rtt_max_ms = std::max(c.rtt_max_ms, value);
    c.rtt_sum_ms += value;
    c.rtt_last_ms = value;
    ++c.rtt_samples;
    loop.rtt_histogram_.observe(value / 1000.0);
  }
};

server_loop::server_loop(loop_host& host, const loop_settings& settings, std::uint32_t index,
                         int listener)
    : host_(host),
      settings_(settings),
      index_(index),
      listener_(listener),
      wheel_(milliseconds(1), 65536, monotonic_ns()),
      free_head_(no_slot),
      read_buffer_(read_buffer_size),
      observer_(std::make_unique<observer>(*this)),
      current_(settings.first),
      generations_{settings.first},
      rtt_histogram_(
          {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}) {
  epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  reserve_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (epoll_ < 0 || wake_ < 0)
    throw std::system_error(errno, std::generic_category(), "event loop: epoll or eventfd");
  epoll_event listen_event{};
  listen_event.events = EPOLLIN;
  listen_event.data.u64 = listener_tag;
  epoll_event wake_event{};
  wake_event.events = EPOLLIN;
  wake_event.data.u64 = wake_tag;
  if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, listener_, &listen_event) != 0 ||
      ::epoll_ctl(epoll_, EPOLL_CTL_ADD, wake_, &wake_event) != 0)
    throw std::system_error(errno, std::generic_category(), "event loop: epoll_ctl");
}

server_loop::~server_loop() {
  for (std::uint32_t slot = 0; slot < slots_; ++slot)
    if (at(slot).fd >= 0) ::close(at(slot).fd);
  if (listener_ >= 0) ::close(listener_);
  if (reserve_ >= 0) ::close(reserve_);
  if (wake_ >= 0) ::close(wake_);
  if (epoll_ >= 0) ::close(epoll_);
}

server_loop::connection& server_loop::at(std::uint32_t slot) const {
  return chunks_[slot / chunk_slots][slot % chunk_slots];
}

std::uint32_t server_loop::allocate() {
  if (free_head_ == no_slot) {
    chunks_.push_back(std::make_unique<connection[]>(chunk_slots));
    // Push in reverse so low slots are used first.
    for (std::uint32_t i = chunk_slots; i-- > 0;) {
      at(slots_ + i).next_free = free_head_;
      free_head_ = slots_ + i;
    }
    slots_ += chunk_slots;
    wheel_.reserve(slots_);
  }
  const std::uint32_t slot = free_head_;
  free_head_ = at(slot).next_free;
  return slot;
}

std::uint64_t server_loop::tag(std::uint32_t slot) const {
  return (static_cast<std::uint64_t>(at(slot).generation) << 32) | slot;
}

bool server_loop::post(std::function<void(server_loop&)> task) {
  {
    std::lock_guard lock(tasks_mutex_);
    if (finished_) return false;
    tasks_.push_back(std::move(task));
  }
  const std::uint64_t one = 1;
  [[maybe_unused]] const auto written = ::write(wake_, &one, sizeof one);
  return true;
}

void server_loop::run_tasks() {
  std::uint64_t count = 0;
  [[maybe_unused]] const auto got = ::read(wake_, &count, sizeof count);
  std::vector<std::function<void(server_loop&)>> tasks;
  {
    std::lock_guard lock(tasks_mutex_);
    tasks.swap(tasks_);
  }
  for (auto& task : tasks) {
    try {
      task(*this);
    } catch (const std::exception& e) {
      log_line(log_level::error) << "deadpeer server: loop " << index_
                                 << ": task failed: " << e.what();
    }
  }
}

void server_loop::run() {
  std::array<epoll_event, 256> events{};
  for (;;) {
    if (stopping_ && live_ == 0) break;
    auto now = monotonic_ns();
    if (stopping_ && now >= stop_deadline_ns_) {
      // The grace period is over: whatever is still closing is closed now.
      for (std::uint32_t slot = 0; slot < slots_; ++slot)
        if (at(slot).state != phase::free) finish(slot);
      break;
    }
    std::int64_t wake_at = wheel_.next_wakeup(now).value_or(never_ns);
    if (stopping_) wake_at = std::min(wake_at, stop_deadline_ns_);
    timespec timeout{};
    timespec* timeout_ptr = nullptr;
    if (wake_at != never_ns) {
      const std::int64_t wait_ns = std::max<std::int64_t>(0, wake_at - now);
      timeout.tv_sec = static_cast<time_t>(wait_ns / 1'000'000'000);
      timeout.tv_nsec = static_cast<long>(wait_ns % 1'000'000'000);
      timeout_ptr = &timeout;
    }
    const int n = ::epoll_pwait2(epoll_, events.data(), static_cast<int>(events.size()),
                                 timeout_ptr, nullptr);
    if (n < 0 && errno != EINTR) {
      log_line(log_level::error) << "deadpeer server: loop " << index_
                                 << ": epoll_wait: " << std::strerror(errno);
      break;
    }
    for (int i = 0; i < n; ++i) {
      const auto& e = events[static_cast<std::size_t>(i)];
      if (e.data.u64 == listener_tag) {
        try {
          accept_ready();
        } catch (const std::exception& x) {
          log_line(log_level::warning)
              << "deadpeer server: loop " << index_ << ": accept: " << x.what();
        }
        continue;
      }
      if (e.data.u64 == wake_tag) {
        run_tasks();
        continue;
      }
      const auto slot = static_cast<std::uint32_t>(e.data.u64 & 0xFFFFFFFFu);
      const auto generation = static_cast<std::uint32_t>(e.data.u64 >> 32);
      if (slot >= slots_) continue;
      guarded(slot, [&] {
        // An event for a slot closed (and perhaps reused) earlier in this batch is stale.
        if (at(slot).state == phase::free || at(slot).generation != generation) return;
        if (e.events & EPOLLOUT) on_writable(slot);
        if (at(slot).state == phase::free || at(slot).generation != generation) return;
        if (e.events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(slot);
      });
    }
    now = monotonic_ns();
    wheel_.expire(now, [this](std::uint32_t slot) { guarded(slot, [&] { on_deadline(slot); }); });
  }
  std::lock_guard lock(tasks_mutex_);
  finished_ = true;
  tasks_.clear();
}

// Runs one connection's handling. An exception (a bug, or memory exhausted) ends that
// connection, recorded with its cause, and the loop goes on serving the others.
template <typename F>
void server_loop::guarded(std::uint32_t slot, F&& handle) {
  try {
    handle();
  } catch (const std::exception& e) {
    log_line(log_level::warning) << "deadpeer server: loop " << index_ << ": " << e.what();
    auto& c = at(slot);
    if (c.state == phase::free) return;
    out_.clear();
    if (c.state == phase::open && c.engine && !c.engine->ended())
      c.engine->fail(cause::unknown, detected_by::application, {}, steady_clock::now());
    finish(slot);
  }
}

void server_loop::accept_ready() {
  // Bounded per wake-up so a connection flood cannot starve the connections held.
  for (int i = 0; i < 64 && listener_ >= 0; ++i) {
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    int fd = ::accept4(listener_, reinterpret_cast<sockaddr*>(&address), &length,
                       SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0 && (errno == EMFILE || errno == ENFILE) && reserve_ >= 0) {
      // Out of descriptors after all: give up the spare one to answer this newcomer.
      ::close(reserve_);
      reserve_ = -1;
      fd = ::accept4(listener_, reinterpret_cast<sockaddr*>(&address), &length,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) {
        host_.count("accepted");
        refuse_now(fd, "server is at its descriptor limit");
      }
      reserve_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      continue;
    }
    if (fd < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
      log_line(log_level::warning) << "deadpeer server: accept: " << std::strerror(errno);
      return;
    }
    host_.count("accepted");
    if (stopping_) {
      refuse_now(fd, "server is shutting down");
      continue;
    }
    if (settings_.held->load(std::memory_order_relaxed) >= settings_.descriptor_budget) {
      refuse_now(fd, "server is at its descriptor limit");
      continue;
    }
    settings_.held->fetch_add(1, std::memory_order_relaxed);
    ++live_;
    const std::uint32_t slot = allocate();
    auto& c = at(slot);
    c.fd = fd;
    c.state = phase::open;
    c.peer = endpoint_of(address);
    c.opened_unix_ms = unix_ms_now();
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::error_code keepalive_error;
    if (current_->keepalive) keepalive_error = apply_keepalive(fd, *current_->keepalive);
    if (!keepalive_known_) {
      std::error_code ignored;
      keepalive_in_force_ = read_keepalive(fd, ignored);
      keepalive_known_ = true;
    }
    const auto now = steady_clock::now();
    c.engine.emplace(
        current_->engine, now, host_.next_session_id(),
        static_cast<std::uint32_t>(fd) * 2654435761u ^ static_cast<std::uint32_t>(ns(now)), out_);
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = tag(slot);
    if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &event) != 0) {
      fail(slot, errno, connection_context::operation::other);
      after_engine(slot);
      continue;
    }
    if (keepalive_error) {
      fail(slot, keepalive_error.value(), connection_context::operation::other);
      after_engine(slot);
      continue;
    }
    reschedule(slot);
  }
}

// Past the descriptor budget (or while stopping) a newcomer still gets an answer: ERROR
// server_full and our FIN, with whatever it already sent read first so that our close
// does not turn into an RST that could destroy the ERROR.
void server_loop::refuse_now(int fd, std::string_view text) {
  host_.count("rejected:server_full");
  static const std::vector<std::byte> full =
      wire::encode(wire::error{wire::error_code::server_full, "connection limit reached"});
  (void)text;
  [[maybe_unused]] const auto got = ::recv(fd, read_buffer_.data(), read_buffer_.size(), 0);
  [[maybe_unused]] const auto sent = ::send(fd, full.data(), full.size(), MSG_NOSIGNAL);
  ::shutdown(fd, SHUT_WR);
  ::close(fd);
  ++refused_since_log_;
  const auto now = monotonic_ns();
  if (now - last_limit_log_ns_ >= limit_log_period_ns) {
    log_line(log_level::warning) << "deadpeer server: " << text << " (" << settings_.held->load()
                                 << " held, budget " << settings_.descriptor_budget << "); refused "
                                 << refused_since_log_ << " newcomer(s) with ERROR server_full";
    last_limit_log_ns_ = now;
    refused_since_log_ = 0;
  }
}

void server_loop::on_readable(std::uint32_t slot) {
  auto& c = at(slot);
  if (c.state == phase::draining) {
    // Graceful close: read and discard until the peer's FIN, bounded in bytes.
    const auto n = ::recv(c.fd, read_buffer_.data(), read_buffer_.size(), 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n > 0) c.drained_bytes += static_cast<std::uint64_t>(n);
    if (n <= 0 || c.drained_bytes > settings_.options->close_drain_bytes) finish(slot);
    return;
  }
  if (!c.reading) {
    // Half-closed and waiting for the reaper; only an error (the peer's RST) or a hang-up
    // wakes us here. Report the error, or stop watching so the loop does not spin.
    int error = 0;
    socklen_t length = sizeof error;
    ::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &error, &length);
    if (error != 0) {
      observer_->slot = slot;
      fail(slot, error, connection_context::operation::reading);
      after_engine(slot);
    } else {
      ::epoll_ctl(epoll_, EPOLL_CTL_DEL, c.fd, nullptr);
    }
    return;
  }
  const auto n = ::recv(c.fd, read_buffer_.data(), read_buffer_.size(), 0);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  const auto now = steady_clock::now();
  observer_->slot = slot;
  if (n > 0) {
    const bool after_handshake = c.established;
    c.engine->receive(std::span(read_buffer_.data(), static_cast<std::size_t>(n)), now, out_,
                      *observer_);
    // A recorded connection's arrival: each read after the one that brought the HELLO.
    if (after_handshake && !recordings_.empty())
      if (const auto it = recordings_.find(slot); it != recordings_.end()) it->second.add(ns(now));
  } else if (n == 0) {
    c.engine->receive_eof(now, *observer_);
    if (!c.engine->ended()) {
      // A half-close: stop reading (the FIN stays readable) and let the reaper look at
      // it at its next tick.
      c.reading = false;
      watch(c, slot);
      const std::int64_t tick = settings_.options->reap_interval.count() * 1'000'000;
      c.reap_at_ns = (ns(now) / tick + 1) * tick;
    }
  } else {
    fail(slot, errno, connection_context::operation::reading);
  }
  after_engine(slot);
}

void server_loop::on_writable(std::uint32_t slot) {
  auto& c = at(slot);
  if (!write_unsent(c)) {
    if (c.state == phase::draining) {
      finish(slot);
      return;
    }
    fail(slot, errno, connection_context::operation::writing);
    after_engine(slot);
    return;
  }
  if (c.unsent) return;
  watch(c, slot);
  if (c.state == phase::draining) {
    ::shutdown(c.fd, SHUT_WR);
    if (!c.reading) finish(slot);  // the peer's FIN came already
  }
}

void server_loop::on_deadline(std::uint32_t slot) {
  auto& c = at(slot);
  if (c.state == phase::free) return;
  const auto now = steady_clock::now();
  if (c.state == phase::draining) {
    if (ns(now) >= c.drain_deadline_ns)
      finish(slot);
    else
      reschedule(slot);
    return;
  }
  observer_->slot = slot;
  if (c.reap_at_ns != 0 && ns(now) >= c.reap_at_ns) {
    std::error_code ec;
    const auto kernel = read_tcp_info(c.fd, ec);
    host_.count(kernel && kernel->state != "CLOSE_WAIT" ? "reaped:half_closed"
                                                        : "reaped:close_wait");
    c.engine->abort(cause::reaped, detected_by::reaper, now);
  } else {
    // Bytes waiting in the socket are life: read them before judging the silence. A loop
    // that fell behind (more ready sockets than one epoll batch, a starved CPU) would
    // otherwise declare dead a peer whose PING it simply has not read yet. A deadline
    // fires only when the peer is late, so this recv is rare.
    if (c.reading) {
      const auto generation = c.generation;
      on_readable(slot);
      if (at(slot).state != phase::open || at(slot).generation != generation || c.engine->ended())
        return;
      observer_->slot = slot;
    }
    c.engine->on_timeout(steady_clock::now(), out_);
  }
  after_engine(slot);
}

// After any engine call for `slot`: send what it produced, act on an end, move the
// connection's deadline; then end the sessions this one superseded on this loop.
void server_loop::after_engine(std::uint32_t slot) {
  auto& c = at(slot);
  flush(slot);
  if (c.engine->ended())
    start_close(slot);
  else
    reschedule(slot);
  if (!deferred_supersede_.empty()) run_deferred();
}

void server_loop::run_deferred() {
  auto refs = std::move(deferred_supersede_);
  deferred_supersede_.clear();
  for (const auto& ref : refs)
    supersede(ref);
}

void server_loop::supersede(connection_ref ref) {
  if (ref.slot >= slots_) return;
  auto& c = at(ref.slot);
  if (c.state != phase::open || c.generation != ref.generation || c.engine->ended()) return;
  c.engine->close(wire::bye_reason::superseded, cause::superseded, steady_clock::now(), out_);
  after_engine(ref.slot);
}

bool server_loop::send_data(connection_ref ref, std::span<const std::byte> payload) {
  if (ref.slot >= slots_) return false;
  auto& c = at(ref.slot);
  if (c.state != phase::open || c.generation != ref.generation || !c.established ||
      c.engine->ended())
    return false;
  c.engine->send_data(payload, steady_clock::now(), out_);
  after_engine(ref.slot);
  return true;
}

void server_loop::flush(std::uint32_t slot) {
  auto& c = at(slot);
  if (out_.empty()) return;
  if (c.state == phase::free || c.fd < 0) {
    out_.clear();
    return;
  }
  if (c.unsent) {
    // Something is queued already: everything goes behind it, in order.
    c.unsent->insert(c.unsent->end(), out_.urgent.begin(), out_.urgent.end());
    c.unsent->insert(c.unsent->end(), out_.ordered.begin(), out_.ordered.end());
    out_.clear();
    return;
  }
  // One syscall: PONGs first, then the rest.
  std::array<iovec, 2> parts{};
  std::size_t count = 0;
  std::size_t total = 0;
  for (auto* b : {&out_.urgent, &out_.ordered}) {
    if (b->empty()) continue;
    parts[count++] = iovec{b->data(), b->size()};
    total += b->size();
  }
  msghdr message{};
  message.msg_iov = parts.data();
  message.msg_iovlen = count;
  const auto sent = ::sendmsg(c.fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (sent < 0 && errno != EAGAIN && errno != EINTR) {
    const int error = errno;
    out_.clear();
    if (!c.engine->ended()) fail(slot, error, connection_context::operation::writing);
    return;
  }
  std::size_t done = sent > 0 ? static_cast<std::size_t>(sent) : 0;
  if (done < total) {
    // The kernel took part of it: keep the rest and wait until the socket is writable.
    c.unsent = std::make_unique<std::vector<std::byte>>();
    c.unsent->reserve(total - done);
    for (auto* b : {&out_.urgent, &out_.ordered}) {
      if (done >= b->size()) {
        done -= b->size();
        continue;
      }
      c.unsent->insert(c.unsent->end(), b->begin() + static_cast<std::ptrdiff_t>(done), b->end());
      done = 0;
    }
    watch(c, slot);
  }
  out_.clear();
}

// Sends queued bytes; false on a socket error (errno set).
bool server_loop::write_unsent(connection& c) {
  if (!c.unsent) return true;
  auto& bytes = *c.unsent;
  const auto sent = ::send(c.fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  if (sent < 0) return errno == EAGAIN || errno == EINTR;
  bytes.erase(bytes.begin(), bytes.begin() + sent);
  if (bytes.empty()) c.unsent.reset();
  return true;
}

// Brings the epoll registration in line with what the connection waits for.
void server_loop::watch(connection& c, std::uint32_t slot) {
  const bool want_write = static_cast<bool>(c.unsent);
  epoll_event event{};
  event.events =
      (c.reading || c.state == phase::draining ? EPOLLIN : 0u) | (want_write ? EPOLLOUT : 0u);
  event.data.u64 = tag(slot);
  ::epoll_ctl(epoll_, EPOLL_CTL_MOD, c.fd, &event);
  c.want_write = want_write;
}

void server_loop::fail(std::uint32_t slot, int error, connection_context::operation op) {
  auto& c = at(slot);
  const std::error_code ec(error, std::generic_category());
  const auto verdict = classify_socket_end(
      c.fd, ec, op, c.engine->established() && c.engine->sent_since_heard(), keepalive_in_force_);
  c.engine->fail(verdict.cause, verdict.detected_by, ec, steady_clock::now());
}

// A connection was just established: record its arrivals when recording is on and it is
// the sample's turn.
void server_loop::start_recording(std::uint32_t slot) {
  const auto& options = *settings_.options;
  if (options.record_arrivals == 0) return;
  const auto candidate = settings_.record_candidates->fetch_add(1, std::memory_order_relaxed);
  if (candidate % options.record_sample != 0) return;
  recordings_.insert_or_assign(slot, arrival_ring(options.record_arrivals));
}

void server_loop::start_close(std::uint32_t slot) {
  auto& c = at(slot);
  if (c.state != phase::open) return;
  const auto mode = c.engine->end_mode();
  if (mode == close_mode::abortive) {
    const linger abort_now{1, 0};
    ::setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &abort_now, sizeof abort_now);
  }
  if (mode != close_mode::graceful) {
    finish(slot);
    return;
  }
  // Graceful: our last frame is sent or queued; FIN once it is out, then wait for the
  // peer's FIN (closing with unread data would send RST and could destroy that frame).
  c.state = phase::draining;
  c.drain_deadline_ns =
      monotonic_ns() + std::chrono::nanoseconds(settings_.options->close_drain_time).count();
  if (!c.unsent) {
    ::shutdown(c.fd, SHUT_WR);
    if (!c.reading) {  // the peer's FIN came already
      finish(slot);
      return;
    }
  }
  watch(c, slot);
  reschedule(slot);
}

// The slot goes back on the free list; its generation changes so old references miss.
void server_loop::free_slot(std::uint32_t slot) {
  auto& c = at(slot);
  c.state = phase::free;
  ++c.generation;
  c.next_free = free_head_;
  free_head_ = slot;
  if (!recordings_.empty()) recordings_.erase(slot);
  --live_;
  settings_.held->fetch_sub(1, std::memory_order_relaxed);
}

void server_loop::finish(std::uint32_t slot) {
  auto& c = at(slot);
  if (c.state == phase::free) return;
  wheel_.cancel(slot);
  if (c.fd >= 0) ::close(c.fd);
  c.fd = -1;
  if (!c.engine || !c.engine->ended()) {
    // Only when setting up an accepted connection failed: nothing was spoken on it.
    if (!c.engine) {
      free_slot(slot);
      return;
    }
    c.engine->fail(cause::unknown, detected_by::application, {}, steady_clock::now());
  }
  auto& end = c.engine->end();
  end.closed_ns = monotonic_ns();
  const connection_ref self{index_, slot, c.generation};
  if (c.admitted) host_.release(c.client_id, c.peer, self);
  if (c.established) established_.fetch_sub(1, std::memory_order_relaxed);
  if (end.cause == cause::handshake_timeout && end.detected_by == detected_by::reaper)
    host_.count("reaped:handshake");

  connection_record r;
  r.session_id = c.engine->session_id();
  r.client_id = c.client_id;
  r.peer_address = format_endpoint(c.peer);
  r.opened_mono_ns = end.opened_ns;
  r.ended_mono_ns = end.decided_ns;
  r.last_heard_mono_ns = end.last_heard_ns;
  r.opened_unix_ms = c.opened_unix_ms;
  r.ended_unix_ms = c.opened_unix_ms + (end.decided_ns - end.opened_ns) / 1'000'000;
  r.cause = std::string(deadpeer::to_string(end.cause));
  r.detected_by = std::string(deadpeer::to_string(end.detected_by));
  r.error_number = is_errno(end.error) ? end.error.value() : 0;
  if (r.error_number != 0) {
    const auto name = linux_errno_name(r.error_number);
    r.error_name = name.empty() ? end.error.message() : std::string(name);
  }
  r.protocol_error = end.protocol_error ? std::string(wire::to_string(*end.protocol_error)) : "";
  r.close_mode = end.graceful ? "graceful" : end.abortive ? "abortive" : "plain";
  r.rtt = {c.rtt_samples, c.rtt_min_ms,
           c.rtt_samples ? c.rtt_sum_ms / static_cast<double>(c.rtt_samples) : 0.0, c.rtt_max_ms};
  const auto own = std::find_if(generations_.begin(), generations_.end(),
                                [&](const auto* g) { return &g->engine == &c.engine->config(); });
  const auto& made_with = own != generations_.end() ? **own : *current_;
  r.keepalive = made_with.keepalive_spec;
  r.heartbeat_interval_ms = settings_.options->heartbeat ? c.engine->interval().count() : 0;
  r.dead_after_ms = c.dead_after_ms;
  r.detector = made_with.detector_description;
  r.frames_received = end.frames_received;
  r.frames_sent = end.frames_sent;
  if (!recordings_.empty()) {
    if (const auto it = recordings_.find(slot); it != recordings_.end()) {
      if (it->second.size() > 0)
        r.arrivals = arrival_trace{.interval_ms = r.heartbeat_interval_ms,
                                   .seen = it->second.seen(),
                                   .mono_ns = it->second.ordered()};
      recordings_.erase(it);
    }
  }
  const connection_end ended{
      .end = end, .client_id = c.client_id, .peer = c.peer, .session_id = r.session_id};

  // Free the slot before reporting, so nothing reported can reach it again.
  c.engine.reset();
  c.unsent.reset();
  std::string().swap(c.client_id);
  c.reap_at_ns = c.drain_deadline_ns = 0;
  c.drained_bytes = 0;
  c.rtt_min_ms = c.rtt_max_ms = c.rtt_sum_ms = c.rtt_last_ms = 0;
  c.rtt_samples = c.dead_after_ms = 0;
  c.admitted = c.established = c.want_write = false;
  c.reading = true;
  free_slot(slot);
  try {
    host_.ended(std::move(r), ended);
  } catch (const std::exception& e) {
    log_line(log_level::error) << "deadpeer server: recording an end failed: " << e.what();
  }
}

void server_loop::reschedule(std::uint32_t slot) {
  auto& c = at(slot);
  std::int64_t due = never_ns;
  if (c.state == phase::draining)
    due = c.drain_deadline_ns;
  else if (c.state == phase::open) {
    due = ns(c.engine->next_timeout());
    if (c.reap_at_ns != 0) due = std::min(due, c.reap_at_ns);
  }
  if (due == never_ns)
    wheel_.cancel(slot);
  else
    wheel_.schedule(slot, due);
}

void server_loop::begin_stop(std::chrono::milliseconds grace) {
  const auto deadline = monotonic_ns() + std::chrono::nanoseconds(grace).count();
  if (stopping_) {
    stop_deadline_ns_ = std::min(stop_deadline_ns_, deadline);
    return;
  }
  stopping_ = true;
  stop_deadline_ns_ = deadline;
  if (listener_ >= 0) {
    ::epoll_ctl(epoll_, EPOLL_CTL_DEL, listener_, nullptr);
    ::close(listener_);
    listener_ = -1;
  }
  for (std::uint32_t slot = 0; slot < slots_; ++slot) {
    auto& c = at(slot);
    if (c.state != phase::open || c.engine->ended()) continue;
    observer_->slot = slot;
    c.engine->close(wire::bye_reason::going_away, cause::local_close, steady_clock::now(), out_);
    after_engine(slot);
  }
}

void server_loop::accept_with(const connection_settings& settings) {
  if (current_->keepalive_spec != settings.keepalive_spec) keepalive_known_ = false;
  current_ = &settings;
  generations_.push_back(&settings);
}

json::array server_loop::connections_json() const {
  json::array list;
  const auto now = monotonic_ns();
  for (std::uint32_t slot = 0; slot < slots_; ++slot) {
    const auto& c = at(slot);
    if (c.state == phase::free) continue;
    json::object o;
    o["session_id"] = c.engine->session_id();
    o["client_id"] = c.client_id;
    o["peer"] = format_endpoint(c.peer);
    o["state"] = c.state == phase::draining ? "closing"
                 : c.established            ? "established"
                                            : "handshaking";
    o["loop"] = index_;
    o["age_ms"] = ms(now - to_monotonic_ns(c.engine->opened()));
    o["last_heard_ms_ago"] = ms(now - to_monotonic_ns(c.engine->last_heard()));
    o["interval_ms"] = c.engine->interval().count();
    o["dead_after_ms"] = c.dead_after_ms;
    if (const auto learned = c.engine->learned()) {
      // What the detector has learned of this link (docs/detectors.md), rounded to 0.1 ms.
      const auto tenth = [](double v) { return std::round(v * 10) / 10; };
      o["detector"] = json::object{{"mean_gap_ms", tenth(learned->mean_gap_ms)},
                                   {"spread_ms", tenth(learned->spread_ms)},
                                   {"longest_gap_ms", tenth(learned->longest_gap_ms)},
                                   {"timeout_ms", tenth(learned->timeout_ms)}};
    }
    json::object rtt;
    rtt["samples"] = c.rtt_samples;
    rtt["min_ms"] = c.rtt_min_ms;
    rtt["mean_ms"] = c.rtt_samples ? c.rtt_sum_ms / static_cast<double>(c.rtt_samples) : 0.0;
    rtt["max_ms"] = c.rtt_max_ms;
    rtt["last_ms"] = c.rtt_last_ms;
    o["rtt"] = std::move(rtt);
    std::error_code ec;
    if (const auto k = read_tcp_info(c.fd, ec)) {
      json::object kernel;
      kernel["state"] = k->state;
      kernel["rtt_us"] = k->rtt_us;
      kernel["rto_us"] = k->rto_us;
      kernel["unacked"] = k->unacked;
      kernel["retransmits"] = k->retransmits;
      kernel["probes"] = k->probes;
      kernel["backoff"] = k->backoff;
      kernel["last_data_recv_ms"] = k->last_data_recv_ms;
      o["kernel"] = std::move(kernel);
    }
    list.push_back(std::move(o));
  }
  return list;
}

json::array server_loop::arrivals_json() const {
  json::array list;
  for (const auto& [slot, ring] : recordings_) {
    const auto& c = at(slot);
    if (c.state == phase::free || !c.engine) continue;
    json::object o;
    o["session_id"] = c.engine->session_id();
    o["client_id"] = c.client_id;
    o["peer"] = format_endpoint(c.peer);
    o["loop"] = index_;
    o["interval_ms"] = settings_.options->heartbeat ? c.engine->interval().count() : 0;
    o["count"] = ring.size();
    o["seen"] = ring.seen();
    list.push_back(std::move(o));
  }
  return list;
}

std::optional<arrival_snapshot> server_loop::arrivals_of(std::uint64_t session_id,
                                                         std::uint64_t since,
                                                         std::size_t limit) const {
  for (const auto& [slot, ring] : recordings_) {
    const auto& c = at(slot);
    if (c.state == phase::free || !c.engine || c.engine->session_id() != session_id) continue;
    arrival_snapshot s;
    s.session_id = session_id;
    s.client_id = c.client_id;
    s.peer = format_endpoint(c.peer);
    s.interval_ms = settings_.options->heartbeat ? c.engine->interval().count() : 0;
    s.seen = ring.seen();
    s.count = ring.size();
    s.origin_ns = ring.origin_ns();
    s.mono_ns = ring.after(since, limit);
    s.first = s.mono_ns.empty() ? 0 : std::max(since + 1, ring.first_kept());
    return s;
  }
  return std::nullopt;
}

}  // namespace deadpeer::detail
