#include "wire_observer.hpp"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/ip.h>
#include <netinet/ip6.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

namespace probe {
namespace {

namespace ip = boost::asio::ip;
using tcp = ip::tcp;

std::int64_t clock_ns(clockid_t clock) {
  timespec t{};
  ::clock_gettime(clock, &t);
  return static_cast<std::int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

// Passes TCP segments with FIN or RST (flags & 0x05) of IPv4, and of IPv6 whose next
// header is TCP; drops everything else in the kernel. Offsets are from the IP header
// (SOCK_DGRAM packet sockets carry no link header).
constexpr sock_filter fin_or_rst_filter[] = {
    BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 0),                    // 0: A = version/IHL byte
    BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 4),                   // 1: A = IP version
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 4, 0, 5),             // 2: IPv4? else 8
    BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 9),                    // 3: protocol
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_TCP, 0, 10),  // 4: TCP? else drop
    BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, 0),                   // 5: X = IPv4 header length
    BPF_STMT(BPF_LD | BPF_B | BPF_IND, 13),                   // 6: A = TCP flags
    BPF_STMT(BPF_JMP | BPF_JA, 4),                            // 7: to 12
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 6, 0, 6),             // 8: IPv6? else drop
    BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 6),                    // 9: next header
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_TCP, 0, 4),   // 10: TCP? else drop
    BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 40 + 13),              // 11: A = TCP flags
    BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0x05),                // 12: FIN | RST
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0),             // 13: neither? drop
    BPF_STMT(BPF_RET | BPF_K, 128),                           // 14: keep the headers
    BPF_STMT(BPF_RET | BPF_K, 0),                             // 15: drop
};

struct parsed_segment {
  tcp::endpoint from, to;
  bool fin = false, reset = false;
};

std::optional<parsed_segment> parse(const unsigned char* p, std::size_t n) {
  if (n < 1) return std::nullopt;
  parsed_segment s;
  std::size_t tcp_at = 0;
  if ((p[0] >> 4) == 4) {
    if (n < 20) return std::nullopt;
    tcp_at = static_cast<std::size_t>(p[0] & 0x0F) * 4;
    ip::address_v4::bytes_type src, dst;
    std::memcpy(src.data(), p + 12, 4);
    std::memcpy(dst.data(), p + 16, 4);
    s.from.address(ip::address_v4(src));
    s.to.address(ip::address_v4(dst));
  } else if ((p[0] >> 4) == 6) {
    if (n < 40) return std::nullopt;
    tcp_at = 40;
    ip::address_v6::bytes_type src, dst;
    std::memcpy(src.data(), p + 8, 16);
    std::memcpy(dst.data(), p + 24, 16);
    s.from.address(ip::address_v6(src));
    s.to.address(ip::address_v6(dst));
  } else {
    return std::nullopt;
  }
  if (n < tcp_at + 14) return std::nullopt;
  s.from.port(static_cast<unsigned short>(p[tcp_at] << 8 | p[tcp_at + 1]));
  s.to.port(static_cast<unsigned short>(p[tcp_at + 2] << 8 | p[tcp_at + 3]));
  const unsigned flags = p[tcp_at + 13];
  s.fin = (flags & 0x01) != 0;
  s.reset = (flags & 0x04) != 0;
  return s;
}

}  // namespace

wire_observer::wire_observer(const std::string& interface) {
  fd_ = ::socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(ETH_P_ALL));
  if (fd_ < 0)
    throw std::system_error(errno, std::generic_category(), "wire observer: AF_PACKET socket");
  auto fail = [&](const std::string& what) {
    const int e = errno;
    ::close(fd_);
    fd_ = -1;
    throw std::system_error(e, std::generic_category(), "wire observer: " + what);
  };
  // The filter first, so nothing unfiltered is queued between bind and attach.
  const sock_fprog program{.len = static_cast<unsigned short>(std::size(fin_or_rst_filter)),
                           .filter = const_cast<sock_filter*>(fin_or_rst_filter)};
  if (::setsockopt(fd_, SOL_SOCKET, SO_ATTACH_FILTER, &program, sizeof program) != 0)
    fail("attach the FIN/RST filter");
  const int on = 1;
  if (::setsockopt(fd_, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) != 0) fail("SO_TIMESTAMPNS");
  const unsigned index = ::if_nametoindex(interface.c_str());
  if (index == 0) fail("no interface " + interface);
  sockaddr_ll where{};
  where.sll_family = AF_PACKET;
  where.sll_protocol = htons(ETH_P_ALL);
  where.sll_ifindex = static_cast<int>(index);
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&where), sizeof where) != 0)
    fail("bind to " + interface);
}

wire_observer::~wire_observer() {
  if (fd_ >= 0) ::close(fd_);
}

void wire_observer::watch(const tcp::endpoint& from, const tcp::endpoint& to) {
  from_ = from;
  to_ = to;
  seen_.reset();
  unsigned char discard[256];
  while (::recv(fd_, discard, sizeof discard, 0) >= 0) {
  }
  realtime_minus_mono_ns_ = clock_ns(CLOCK_REALTIME) - clock_ns(CLOCK_MONOTONIC);
}

std::optional<wire_segment> wire_observer::first_seen() {
  unsigned char packet[256];
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(timespec))];
  while (!seen_) {
    iovec data{.iov_base = packet, .iov_len = sizeof packet};
    msghdr m{};
    m.msg_iov = &data;
    m.msg_iovlen = 1;
    m.msg_control = control;
    m.msg_controllen = sizeof control;
    const auto n = ::recvmsg(fd_, &m, 0);
    if (n < 0) break;  // EAGAIN: nothing more queued
    const auto s = parse(packet, static_cast<std::size_t>(n));
    if (!s || s->from != from_ || s->to != to_) continue;
    std::int64_t realtime_ns = clock_ns(CLOCK_REALTIME);  // if the kernel gave no stamp
    for (auto* c = CMSG_FIRSTHDR(&m); c != nullptr; c = CMSG_NXTHDR(&m, c))
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
        timespec t{};
        std::memcpy(&t, CMSG_DATA(c), sizeof t);
        realtime_ns = static_cast<std::int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
      }
    seen_ = wire_segment{.mono_ns = realtime_ns - realtime_minus_mono_ns_, .reset = s->reset};
  }
  return seen_;
}

std::string wire_unavailable_reason() {
  const int fd = ::socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(ETH_P_ALL));
  if (fd < 0)
    return std::string("no packet socket (") + std::strerror(errno) +
           "): the wire observer needs CAP_NET_RAW";
  ::close(fd);
  return "";
}

}  // namespace probe
