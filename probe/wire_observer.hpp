// The second observer of every trial: the wire. An application can say it decided at
// instant T; the wire says when its FIN or RST actually left. probe stores both and the
// report flags trials where they disagree, so accuracy is proven on every run rather than
// checked once by hand with tcpdump.
//
// What this module decides:
// - An AF_PACKET socket (SOCK_DGRAM: packets from their IP header) on one interface of
//   one namespace: the lab's veth end of the detecting side, or lo for trials on this
//   host's loopback. A classic BPF filter in the kernel passes only TCP segments with FIN
//   or RST (IPv4, and IPv6 without extension headers), so the queue holds a handful of
//   packets per trial and nothing else is copied.
// - No thread: the socket queues what passes the filter; the trial reads it afterwards.
//   watch() discards what is queued from earlier trials.
// - Instants are the kernel's receive timestamps (SO_TIMESTAMPNS, CLOCK_REALTIME) moved
//   to CLOCK_MONOTONIC by an offset sampled when watch() is called, so they compare with
//   the fault and decision instants of the trial. On loopback each segment is seen twice
//   (leaving and arriving); the first is kept.
// - It needs CAP_NET_RAW; without it the observer is unavailable and trials say so.
#pragma once

#include <boost/asio/ip/tcp.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace probe {

struct wire_segment {
  std::int64_t mono_ns = 0;  ///< when it crossed the interface (CLOCK_MONOTONIC)
  bool reset = false;        ///< RST; otherwise FIN
};

class wire_observer {
 public:
  /// Opens the socket on `interface` in the calling thread's network namespace. Throws
  /// std::system_error (EPERM without CAP_NET_RAW, ENODEV for an unknown interface).
  explicit wire_observer(const std::string& interface);
  ~wire_observer();
  wire_observer(const wire_observer&) = delete;
  wire_observer& operator=(const wire_observer&) = delete;

  /// From now on: the first FIN or RST sent from `from` to `to`. Forgets earlier packets.
  void watch(const boost::asio::ip::tcp::endpoint& from, const boost::asio::ip::tcp::endpoint& to);
  /// The first such segment queued so far (reads the queue without waiting).
  std::optional<wire_segment> first_seen();

 private:
  int fd_ = -1;
  std::int64_t realtime_minus_mono_ns_ = 0;
  boost::asio::ip::tcp::endpoint from_, to_;
  std::optional<wire_segment> seen_;
};

/// "" when this process can open a wire observer, otherwise why not (no CAP_NET_RAW).
std::string wire_unavailable_reason();

}  // namespace probe
