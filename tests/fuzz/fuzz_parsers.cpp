// The parsers of user input: durations, keepalive specs, endpoints, pasted error texts
// (explain) and Host headers (the control API). Checked beyond "no crash": a parser either
// accepts or throws its own error type (config_error, never anything else), and what it
// accepts prints back to text that parses to the same value.
#include <deadpeer/cause.hpp>
#include <deadpeer/config_error.hpp>
#include <deadpeer/control_api.hpp>
#include <deadpeer/duration.hpp>
#include <deadpeer/endpoint.hpp>
#include <deadpeer/keepalive.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

namespace {

void require(bool ok) {
  if (!ok) std::abort();
}

template <typename F>
void refused_cleanly(F parse) {
  try {
    parse();
  } catch (const deadpeer::config_error&) {
  }  // anything else escapes and is reported by libFuzzer
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  refused_cleanly([&] {
    const auto d = deadpeer::parse_duration(text);
    require(deadpeer::parse_duration(deadpeer::format_duration(d)) == d);
  });
  refused_cleanly([&] {
    const auto k = deadpeer::parse_keepalive(text);
    require(deadpeer::parse_keepalive(deadpeer::to_string(k)) == k);
  });
  refused_cleanly([&] {
    const auto e = deadpeer::parse_endpoint(text);
    require(deadpeer::parse_endpoint(deadpeer::format_endpoint(e)) == e);
  });
  if (const auto found = deadpeer::lookup(text)) {
    // What decided it is a part of the input.
    require(found->matched.empty() ||
            (found->matched.data() >= text.data() &&
             found->matched.data() + found->matched.size() <= text.data() + text.size()));
  }
  const deadpeer::control_access access{.host_names = {"deadpeer.internal"}, .bearer_token = {}};
  if (deadpeer::host_allowed(text, access)) require(!text.empty());
  return 0;
}
