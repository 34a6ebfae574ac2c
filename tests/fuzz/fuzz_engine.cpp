// The protocol engine fed arbitrary sequences of bytes, FINs, timer wake-ups and calls, at
// arbitrary times, in both roles. Checked beyond "no crash": everything the engine asks
// the driver to send is a well-formed frame stream, an ended engine stays ended, and its
// next timeout never lies in the past of a wake-up it was just given.
#include <deadpeer/engine.hpp>
#include <deadpeer/wire.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <span>
#include <variant>

namespace wire = deadpeer::wire;
using namespace std::chrono_literals;

namespace {

void require(bool ok) {
  if (!ok) std::abort();
}

// Reads the input front to back; past its end every read is 0.
struct reader {
  const std::uint8_t* at;
  const std::uint8_t* end;
  bool done() const { return at >= end; }
  std::uint8_t byte() { return at < end ? *at++ : 0; }
  std::span<const std::byte> bytes(std::size_t n) {
    n = std::min<std::size_t>(n, static_cast<std::size_t>(end - at));
    const std::span<const std::byte> out(reinterpret_cast<const std::byte*>(at), n);
    at += n;
    return out;
  }
};

// What the engine sent, decoded as the peer would: it must never be malformed.
struct sent_stream {
  wire::decoder decoder{std::numeric_limits<std::uint32_t>::max()};
  void take(deadpeer::engine_output& out) {
    decoder.feed(out.urgent);
    decoder.feed(out.ordered);
    out.clear();
    for (;;) {
      auto next = decoder.next();
      require(!std::holds_alternative<wire::decode_error>(next));
      if (std::holds_alternative<std::monostate>(next)) break;
    }
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  reader in{data, data + size};
  deadpeer::engine_config config;
  const auto flags = in.byte();
  config.role = flags & 1 ? deadpeer::session_role::client : deadpeer::session_role::server;
  config.end_on_eof = (flags & 2) != 0;
  config.min_interval = 10ms;
  config.requested_interval = 100ms;
  config.default_interval = 100ms;
  if (flags & 4)
    config.detector = deadpeer::fixed_detector_config{.interval = 100ms, .multiplier = 3.0, .timeout = 0ms};
  deadpeer::validate(config);

  auto now = std::chrono::steady_clock::time_point{} + 1h;
  deadpeer::engine_output out;
  deadpeer::engine_observer observer;
  sent_stream peer;
  deadpeer::protocol_engine engine(config, now, 7, 12345, out);
  peer.take(out);
  bool ended = false;
  while (!in.done()) {
    const auto op = in.byte() % 6;
    now += std::chrono::milliseconds(in.byte() * (in.byte() % 4 == 0 ? 100 : 1));
    switch (op) {
      case 0:
      case 1:
        engine.receive(in.bytes(in.byte()), now, out, observer);
        break;
      case 2:
        engine.receive_eof(now, observer);
        break;
      case 3:
        engine.on_timeout(now, out);
        require(engine.ended() || engine.next_timeout() > now - 1ms);
        break;
      case 4: {
        const auto payload = in.bytes(in.byte());
        engine.send_data(payload, now, out);
        break;
      }
      case 5:
        engine.close(wire::bye_reason::normal, deadpeer::cause::local_close, now, out);
        break;
    }
    if (ended) require(engine.ended());
    ended = engine.ended();
    peer.take(out);
  }
  return 0;
}
