// sock_diag over NETLINK_INET_DIAG: requests are inet_diag_req_v2, answers inet_diag_msg
// (linux/inet_diag.h). Of the attributes after the fixed part only INET_DIAG_INFO (a
// struct tcp_info, as long as the kernel's version of it) is read.
#include <deadpeer/sock_diag.hpp>

#include "tcp_snapshot_of.hpp"

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <system_error>

namespace deadpeer {
namespace {

namespace ip = boost::asio::ip;
using tcp = ip::tcp;

std::system_error netlink_error(int error, const char* what) {
  return std::system_error(error, std::generic_category(), std::string("sock_diag: ") + what);
}

void put_address(const ip::address& a, std::uint32_t (&to)[4]) {
  std::memset(to, 0, sizeof to);
  if (a.is_v4()) {
    const auto bytes = a.to_v4().to_bytes();
    std::memcpy(to, bytes.data(), bytes.size());
  } else {
    const auto bytes = a.to_v6().to_bytes();
    std::memcpy(to, bytes.data(), bytes.size());
  }
}

ip::address get_address(std::uint8_t family, const std::uint32_t (&from)[4]) {
  if (family == AF_INET) {
    ip::address_v4::bytes_type b;
    std::memcpy(b.data(), from, b.size());
    return ip::address_v4(b);
  }
  ip::address_v6::bytes_type b;
  std::memcpy(b.data(), from, b.size());
  return ip::address_v6(b);
}

socket_entry entry_of(const nlmsghdr& h) {
  const auto& m = *static_cast<const inet_diag_msg*>(NLMSG_DATA(&h));
  socket_entry e;
  e.local = tcp::endpoint(get_address(m.idiag_family, m.id.idiag_src), ntohs(m.id.idiag_sport));
  e.remote = tcp::endpoint(get_address(m.idiag_family, m.id.idiag_dst), ntohs(m.id.idiag_dport));
  e.state = static_cast<tcp_state>(m.idiag_state);
  e.timer = static_cast<socket_timer>(m.idiag_timer);
  e.timer_expires = std::chrono::milliseconds(m.idiag_expires);
  e.retransmits = m.idiag_retrans;
  e.receive_queue = m.idiag_rqueue;
  e.send_queue = m.idiag_wqueue;
  e.uid = m.idiag_uid;
  e.inode = m.idiag_inode;
  // Attributes follow the fixed part; a shorter tcp_info (an older kernel) is zero-filled.
  auto left = static_cast<int>(h.nlmsg_len) - static_cast<int>(NLMSG_LENGTH(sizeof m));
  for (auto* a = reinterpret_cast<const rtattr*>(reinterpret_cast<const char*>(&m) +
                                                 NLMSG_ALIGN(sizeof m));
       RTA_OK(a, left); a = RTA_NEXT(a, left)) {
    if (a->rta_type != INET_DIAG_INFO) continue;
    ::tcp_info info{};
    std::memcpy(&info, RTA_DATA(a), std::min<std::size_t>(RTA_PAYLOAD(a), sizeof info));
    e.info = snapshot_of(info);
  }
  return e;
}

struct request {
  nlmsghdr header;
  inet_diag_req_v2 body;
};

}  // namespace

std::string_view to_string(tcp_state state) {
  switch (state) {
    case tcp_state::established:
      return "ESTABLISHED";
    case tcp_state::syn_sent:
      return "SYN_SENT";
    case tcp_state::syn_recv:
      return "SYN_RECV";
    case tcp_state::fin_wait1:
      return "FIN_WAIT1";
    case tcp_state::fin_wait2:
      return "FIN_WAIT2";
    case tcp_state::time_wait:
      return "TIME_WAIT";
    case tcp_state::close:
      return "CLOSE";
    case tcp_state::close_wait:
      return "CLOSE_WAIT";
    case tcp_state::last_ack:
      return "LAST_ACK";
    case tcp_state::listen:
      return "LISTEN";
    case tcp_state::closing:
      return "CLOSING";
    case tcp_state::new_syn_recv:
      return "NEW_SYN_RECV";
  }
  return "UNKNOWN";
}

std::string_view to_string(socket_timer timer) {
  switch (timer) {
    case socket_timer::none:
      return "none";
    case socket_timer::retransmit:
      return "retransmit";
    case socket_timer::keepalive:
      return "keepalive";
    case socket_timer::time_wait:
      return "time_wait";
    case socket_timer::zero_window_probe:
      return "zero_window_probe";
  }
  return "unknown";
}

sock_diag::sock_diag() {
  fd_ = ::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd_ < 0) throw netlink_error(errno, "cannot open a NETLINK_SOCK_DIAG socket");
  // The kernel answers at once; a bound wait turns a lost answer into an error.
  timeval two_seconds{.tv_sec = 2, .tv_usec = 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &two_seconds, sizeof two_seconds);
}

sock_diag::~sock_diag() {
  if (fd_ >= 0) ::close(fd_);
}

namespace {

// Sends one request and calls on_message for every inet_diag_msg of the answer (its header). Returns
// the errno of an NLMSG_ERROR answer (0 when none).
template <typename F>
int exchange(int fd, const request& r, F&& on_message) {
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(fd, &r, sizeof r, 0, reinterpret_cast<const sockaddr*>(&kernel), sizeof kernel) < 0)
    throw netlink_error(errno, "send");
  const bool dump = (r.header.nlmsg_flags & NLM_F_DUMP) != 0;
  alignas(nlmsghdr) std::array<char, 32768> buffer;
  for (;;) {
    const auto n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw netlink_error(errno, "receive");
    }
    auto left = static_cast<int>(n);
    bool answered = false;
    for (auto* h = reinterpret_cast<nlmsghdr*>(buffer.data()); NLMSG_OK(h, left);
         h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_seq != r.header.nlmsg_seq) continue;  // a late answer to an older request
      if (h->nlmsg_type == NLMSG_DONE) return 0;
      if (h->nlmsg_type == NLMSG_ERROR) {
        const auto* e = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
        return -e->error;
      }
      if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY &&
          h->nlmsg_len >= NLMSG_LENGTH(sizeof(inet_diag_msg))) {
        on_message(*h);
        answered = true;
      }
    }
    if (answered && !dump) return 0;
  }
}

}  // namespace

std::optional<socket_entry> sock_diag::find(const tcp::endpoint& local,
                                            const tcp::endpoint& remote) {
  request r{};
  r.header.nlmsg_len = sizeof r;
  r.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  r.header.nlmsg_flags = NLM_F_REQUEST;
  r.header.nlmsg_seq = ++sequence_;
  r.body.sdiag_family = local.address().is_v4() ? AF_INET : AF_INET6;
  r.body.sdiag_protocol = IPPROTO_TCP;
  r.body.idiag_states = ~0U;
  r.body.id.idiag_sport = htons(local.port());
  r.body.id.idiag_dport = htons(remote.port());
  put_address(local.address(), r.body.id.idiag_src);
  put_address(remote.address(), r.body.id.idiag_dst);
  r.body.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  r.body.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  std::optional<socket_entry> found;
  const int error = exchange(fd_, r, [&](const nlmsghdr& h) { found = entry_of(h); });
  if (error == ENOENT) return std::nullopt;
  if (error != 0) throw netlink_error(error, "lookup");
  // With no connection for the 4-tuple the kernel's lookup falls back to the listener.
  if (found && (found->state == tcp_state::listen || found->remote != remote)) return std::nullopt;
  return found;
}

std::vector<socket_entry> sock_diag::list(detail what) {
  std::vector<socket_entry> all;
  for (const int family : {AF_INET, AF_INET6}) {
    request r{};
    r.header.nlmsg_len = sizeof r;
    r.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    r.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    r.header.nlmsg_seq = ++sequence_;
    r.body.sdiag_family = static_cast<std::uint8_t>(family);
    r.body.sdiag_protocol = IPPROTO_TCP;
    r.body.idiag_states = ~0U;
    if (what == detail::tcp_info) r.body.idiag_ext = 1U << (INET_DIAG_INFO - 1);
    const int error = exchange(fd_, r, [&](const nlmsghdr& h) { all.push_back(entry_of(h)); });
    if (error != 0) throw netlink_error(error, "dump");
  }
  return all;
}

}  // namespace deadpeer
