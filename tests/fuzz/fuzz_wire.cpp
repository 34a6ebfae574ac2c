// The frame decoder fed arbitrary bytes split at arbitrary points. Checked beyond "no
// crash": the incremental decoder and decode_one agree on every frame, a decoder that
// failed stays failed, and every frame decoded re-encodes to bytes that decode to itself.
#include <deadpeer/wire.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <span>
#include <variant>

namespace wire = deadpeer::wire;

namespace {

void require(bool ok) {
  if (!ok) std::abort();  // a broken property: libFuzzer keeps the input
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  // The first byte chooses where the stream is split; the second the frame limit.
  const std::size_t chunk = 1 + data[0] % 17;
  const std::uint32_t max_frame = data[1] % 2 ? wire::handshake_max_frame : wire::default_max_frame;
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data + 2), size - 2);

  wire::decoder incremental(max_frame);
  std::size_t offset = 0;  // where decode_one would start the next frame
  bool failed = false;
  for (std::size_t fed = 0; fed < bytes.size();) {
    const auto n = std::min(chunk, bytes.size() - fed);
    incremental.feed(bytes.subspan(fed, n));
    fed += n;
    for (;;) {
      auto next = incremental.next();
      if (std::holds_alternative<std::monostate>(next)) break;
      if (failed) require(std::holds_alternative<wire::decode_error>(next));  // stays failed
      const auto one = wire::decode_one(bytes.subspan(offset, fed - offset), max_frame);
      if (const auto* error = std::get_if<wire::decode_error>(&next)) {
        const auto* same = std::get_if<wire::decode_error>(&one.result);
        require(failed || (same && same->code == error->code));
        failed = true;
        break;
      }
      const auto& frame = std::get<wire::frame>(next);
      const auto* same = std::get_if<wire::frame>(&one.result);
      require(same && *same == frame);
      offset += one.consumed;
      // Round trip: what we would send for this frame decodes to the same frame.
      const auto encoded = wire::encode(frame);
      const auto again = wire::decode_one(encoded, std::numeric_limits<std::uint32_t>::max());
      const auto* back = std::get_if<wire::frame>(&again.result);
      require(back && *back == frame && again.consumed == encoded.size());
    }
    if (failed) break;
  }
  return 0;
}
