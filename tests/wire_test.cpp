#include <deadpeer/wire.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace wire = deadpeer::wire;
using bytes = std::vector<std::byte>;

namespace {

bytes from_hex(std::string_view hex) {
  bytes out;
  std::istringstream in{std::string(hex)};
  std::string pair;
  while (in >> pair)
    out.push_back(static_cast<std::byte>(std::stoul(pair, nullptr, 16)));
  return out;
}

std::string to_hex(std::span<const std::byte> b) {
  constexpr char digits[] = "0123456789abcdef";
  std::string s;
  for (auto x : b) {
    if (!s.empty()) s += ' ';
    s += digits[static_cast<unsigned>(x) >> 4];
    s += digits[static_cast<unsigned>(x) & 0xF];
  }
  return s;
}

bytes raw(std::string_view s) {
  const auto b = std::as_bytes(std::span(s));
  return {b.begin(), b.end()};
}

bytes concat(std::initializer_list<bytes> parts) {
  bytes out;
  for (const auto& p : parts)
    out.insert(out.end(), p.begin(), p.end());
  return out;
}

bytes be(std::uint64_t v, int size) {
  bytes out;
  for (int shift = (size - 1) * 8; shift >= 0; shift -= 8)
    out.push_back(static_cast<std::byte>((v >> shift) & 0xFF));
  return out;
}

// A frame with a correct length prefix around an arbitrary (possibly wrong) body.
bytes framed(std::uint8_t type, const bytes& body) {
  return concat({be(body.size() + 1, 4), bytes{static_cast<std::byte>(type)}, body});
}

using result = std::variant<std::monostate, wire::frame, wire::decode_error>;

result decode_one(const bytes& b, std::uint32_t max_frame = wire::default_max_frame) {
  wire::decoder d(max_frame);
  d.feed(b);
  return d.next();
}

wire::frame decode_frame(const bytes& b) {
  auto r = decode_one(b);
  if (auto* e = std::get_if<wire::decode_error>(&r)) FAIL("decode error: " << e->detail);
  REQUIRE(std::holds_alternative<wire::frame>(r));
  return std::get<wire::frame>(r);
}

bool printable_ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c <= 0x7e; });
}

// The documented examples (docs/protocol.md §10).
struct example {
  const char* name;
  wire::frame frame;
  const char* hex;
};

std::vector<example> examples() {
  return {
      {"HELLO", wire::hello{1, "sensor-17", 5000, "s3cret"},
       "00 00 00 1b 01 44 50 48 42 01 09 73 65 6e 73 6f 72 2d 31 37 00 00 13 88 06 73 33 63 72 "
       "65 74"},
      {"WELCOME", wire::welcome{1, 5000, 15000, 0x0123456789abcdefULL, 65536, 1000, 60000},
       "00 00 00 1e 02 01 00 00 13 88 00 00 3a 98 01 23 45 67 89 ab cd ef 00 01 00 00 00 00 03 "
       "e8 00 00 ea 60"},
      {"PING", wire::ping{1, 12345678901234ULL},
       "00 00 00 11 03 00 00 00 00 00 00 00 01 00 00 0b 3a 73 ce 2f f2"},
      {"PONG", wire::pong{1, 12345678901234ULL},
       "00 00 00 11 04 00 00 00 00 00 00 00 01 00 00 0b 3a 73 ce 2f f2"},
      {"DATA", wire::data{raw("hi")}, "00 00 00 03 05 68 69"},
      {"empty DATA", wire::data{}, "00 00 00 01 05"},
      {"BYE", wire::bye{wire::bye_reason::going_away}, "00 00 00 03 06 00 01"},
      {"ERROR", wire::error{wire::error_code::too_many_pings, "ping interval below 2500 ms"},
       "00 00 00 1f 07 00 08 1b 70 69 6e 67 20 69 6e 74 65 72 76 61 6c 20 62 65 6c 6f 77 20 32 "
       "35 30 30 20 6d 73"},
  };
}

wire::welcome valid_welcome() {
  return {1, 5000, 15000, 42, 65536, 1000, 60000};
}

}  // namespace

TEST_CASE("the documented examples encode to exactly their bytes and decode back") {
  for (const auto& ex : examples()) {
    INFO(ex.name);
    const auto encoded = wire::encode(ex.frame);
    CHECK(to_hex(encoded) == ex.hex);
    CHECK(decode_frame(from_hex(ex.hex)) == ex.frame);
  }
}

TEST_CASE("docs/protocol.md still shows the examples the encoder produces") {
  const auto doc =
      std::filesystem::path(__FILE__).parent_path().parent_path() / "docs" / "protocol.md";
  std::ifstream in(doc);
  INFO("reading " << doc.string());
  REQUIRE(in.good());
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  for (const auto& ex : examples()) {
    INFO(ex.name);
    CHECK(text.find(std::string(ex.hex) + "\n") != std::string::npos);
  }
  // The "bad frame" table, with the errors it claims.
  const std::pair<const char*, wire::error_code> bad[] = {
      {"47 45 54 20", wire::error_code::frame_too_large},
      {"00 00 00 00", wire::error_code::malformed_frame},
      {"00 00 00 01 09", wire::error_code::unknown_frame_type},
      {"00 00 00 03 06 00 09", wire::error_code::malformed_frame},
      {"00 00 00 04 06 00 00 00", wire::error_code::malformed_frame},
  };
  for (const auto& [hex, code] : bad) {
    INFO(hex);
    CHECK(text.find(std::string("| `") + hex + "`") != std::string::npos);
    wire::decoder d;  // before the handshake: 1024
    d.feed(from_hex(hex));
    auto r = d.next();
    REQUIRE(std::holds_alternative<wire::decode_error>(r));
    CHECK(std::get<wire::decode_error>(r).code == code);
  }
}

TEST_CASE("every frame type round-trips, limits included") {
  std::string utf8_64;  // 64 bytes of multi-byte UTF-8: 16 x U+1D11E (4 bytes each)
  for (int i = 0; i < 16; ++i)
    utf8_64 += "\xF0\x9D\x84\x9E";
  REQUIRE(utf8_64.size() == wire::max_client_id);
  std::string token_255;
  for (int i = 0; i < 255; ++i)
    token_255 += static_cast<char>(i);  // opaque: NUL and 0xfe ok
  std::string text_255(255, 'x');
  bytes payload_max(wire::default_max_frame - 1);
  for (std::size_t i = 0; i < payload_max.size(); ++i)
    payload_max[i] = static_cast<std::byte>(i * 7);
  constexpr auto u32_max = std::numeric_limits<std::uint32_t>::max();
  constexpr auto u64_max = std::numeric_limits<std::uint64_t>::max();

  std::vector<wire::frame> frames = {
      wire::hello{1, "a", 0, ""},
      wire::hello{1, utf8_64, u32_max, token_255},
      wire::hello{1, "capteur-\xC3\xA9-\xE2\x82\xAC", 1, "t"},
      wire::welcome{1, 1, 2, 0, wire::handshake_max_frame, 1, 1},
      wire::welcome{1, u32_max - 1, u32_max, u64_max, u32_max, 1, u32_max},
      valid_welcome(),
      wire::ping{0, 0},
      wire::ping{u64_max, u64_max},
      wire::pong{0, 0},
      wire::pong{u64_max, 0x8000000000000001ULL},
      wire::data{},
      wire::data{bytes{std::byte{0}}},
      wire::data{payload_max},
      wire::error{wire::error_code::internal_error, ""},
      wire::error{wire::error_code::malformed_frame, text_255},
  };
  for (auto r : {wire::bye_reason::normal, wire::bye_reason::going_away,
                 wire::bye_reason::superseded, wire::bye_reason::idle})
    frames.push_back(wire::bye{r});
  for (std::uint16_t c = 1; c <= 11; ++c)
    frames.push_back(wire::error{static_cast<wire::error_code>(c), "why \xE2\x9C\x93"});

  for (const auto& f : frames) {
    INFO(wire::to_string(wire::type_of(f)));
    const auto encoded = wire::encode(f);
    CHECK(encoded.size() <= 4 + std::size_t{wire::default_max_frame});
    CHECK(decode_frame(encoded) == f);
  }
}

TEST_CASE("frame sizes follow the layout tables") {
  CHECK(wire::encode(wire::hello{1, std::string(64, 'c'), 0, std::string(255, 't')}).size() ==
        4 + 331);
  CHECK(wire::encode(wire::error{wire::error_code::auth_failed, std::string(255, 'e')}).size() ==
        4 + 259);
  CHECK(wire::encode(valid_welcome()).size() == 4 + 30);
  CHECK(wire::encode(wire::ping{}).size() == 4 + 17);
  CHECK(wire::encode(wire::pong{}).size() == 4 + 17);
  CHECK(wire::encode(wire::bye{}).size() == 4 + 3);
  CHECK(wire::encode(wire::data{bytes(10)}).size() == 4 + 11);
}

TEST_CASE("type_of and to_string name every enumerator") {
  CHECK(wire::type_of(wire::hello{}) == wire::frame_type::hello);
  CHECK(wire::type_of(wire::welcome{}) == wire::frame_type::welcome);
  CHECK(wire::type_of(wire::ping{}) == wire::frame_type::ping);
  CHECK(wire::type_of(wire::pong{}) == wire::frame_type::pong);
  CHECK(wire::type_of(wire::data{}) == wire::frame_type::data);
  CHECK(wire::type_of(wire::bye{}) == wire::frame_type::bye);
  CHECK(wire::type_of(wire::error{}) == wire::frame_type::error);

  using ft = wire::frame_type;
  CHECK(wire::to_string(ft::hello) == "hello");
  CHECK(wire::to_string(ft::welcome) == "welcome");
  CHECK(wire::to_string(ft::ping) == "ping");
  CHECK(wire::to_string(ft::pong) == "pong");
  CHECK(wire::to_string(ft::data) == "data");
  CHECK(wire::to_string(ft::bye) == "bye");
  CHECK(wire::to_string(ft::error) == "error");

  using ec = wire::error_code;
  CHECK(wire::to_string(ec::malformed_frame) == "malformed_frame");
  CHECK(wire::to_string(ec::frame_too_large) == "frame_too_large");
  CHECK(wire::to_string(ec::unsupported_version) == "unsupported_version");
  CHECK(wire::to_string(ec::unknown_frame_type) == "unknown_frame_type");
  CHECK(wire::to_string(ec::unexpected_frame) == "unexpected_frame");
  CHECK(wire::to_string(ec::invalid_client_id) == "invalid_client_id");
  CHECK(wire::to_string(ec::auth_failed) == "auth_failed");
  CHECK(wire::to_string(ec::too_many_pings) == "too_many_pings");
  CHECK(wire::to_string(ec::server_full) == "server_full");
  CHECK(wire::to_string(ec::handshake_timeout) == "handshake_timeout");
  CHECK(wire::to_string(ec::internal_error) == "internal_error");

  using br = wire::bye_reason;
  CHECK(wire::to_string(br::normal) == "normal");
  CHECK(wire::to_string(br::going_away) == "going_away");
  CHECK(wire::to_string(br::superseded) == "superseded");
  CHECK(wire::to_string(br::idle) == "idle");

  CHECK(wire::to_string(static_cast<ft>(0x42)) == "unknown");
  CHECK(wire::to_string(static_cast<ec>(999)) == "unknown");
  CHECK(wire::to_string(static_cast<br>(999)) == "unknown");
}

TEST_CASE("a frame split at every byte boundary decodes the same") {
  for (const auto& ex : examples()) {
    INFO(ex.name);
    const auto b = wire::encode(ex.frame);
    for (std::size_t split = 0; split <= b.size(); ++split) {
      INFO("split at " << split);
      wire::decoder d;
      d.feed(std::span(b).first(split));
      if (split < b.size()) {
        CHECK(std::holds_alternative<std::monostate>(d.next()));
        CHECK(d.buffered() == split);
        d.feed(std::span(b).subspan(split));
      }
      auto r = d.next();
      REQUIRE(std::holds_alternative<wire::frame>(r));
      CHECK(std::get<wire::frame>(r) == ex.frame);
      CHECK(std::holds_alternative<std::monostate>(d.next()));
      CHECK(d.buffered() == 0);
    }
  }
}

TEST_CASE("a frame fed one byte at a time appears only with its last byte") {
  for (const auto& ex : examples()) {
    INFO(ex.name);
    const auto b = wire::encode(ex.frame);
    wire::decoder d;
    for (std::size_t i = 0; i < b.size(); ++i) {
      d.feed(std::span(b).subspan(i, 1));
      auto r = d.next();
      if (i + 1 < b.size()) {
        CHECK(std::holds_alternative<std::monostate>(r));
      } else {
        REQUIRE(std::holds_alternative<wire::frame>(r));
        CHECK(std::get<wire::frame>(r) == ex.frame);
      }
    }
  }
}

TEST_CASE("many frames in one feed come out in order") {
  const auto exs = examples();
  bytes stream;
  std::vector<wire::frame> expected;
  for (int round = 0; round < 200; ++round)
    for (const auto& ex : exs) {
      wire::encode(ex.frame, stream);  // appends
      expected.push_back(ex.frame);
    }
  wire::decoder d;
  d.feed(stream);
  CHECK(d.buffered() == stream.size());
  for (const auto& want : expected) {
    auto r = d.next();
    REQUIRE(std::holds_alternative<wire::frame>(r));
    CHECK(std::get<wire::frame>(r) == want);
  }
  CHECK(std::holds_alternative<std::monostate>(d.next()));
  CHECK(d.buffered() == 0);
}

namespace {

// A random string of valid UTF-8 (no NUL) of at most `max_bytes` bytes, with code points
// of every encoded length.
std::string random_utf8(std::mt19937& rng, std::size_t min_bytes, std::size_t max_bytes) {
  std::uniform_int_distribution<int> width(1, 4);
  const std::size_t target = std::uniform_int_distribution<std::size_t>(min_bytes, max_bytes)(rng);
  std::string s;
  while (s.size() < target) {
    std::uint32_t cp = 0;
    switch (width(rng)) {
      case 1:
        cp = std::uniform_int_distribution<std::uint32_t>(1, 0x7F)(rng);
        break;
      case 2:
        cp = std::uniform_int_distribution<std::uint32_t>(0x80, 0x7FF)(rng);
        break;
      case 3:
        do
          cp = std::uniform_int_distribution<std::uint32_t>(0x800, 0xFFFF)(rng);
        while (cp >= 0xD800 && cp <= 0xDFFF);
        break;
      default:
        cp = std::uniform_int_distribution<std::uint32_t>(0x10000, 0x10FFFF)(rng);
    }
    std::string enc;
    if (cp < 0x80) {
      enc += static_cast<char>(cp);
    } else if (cp < 0x800) {
      enc += static_cast<char>(0xC0 | (cp >> 6));
      enc += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      enc += static_cast<char>(0xE0 | (cp >> 12));
      enc += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      enc += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      enc += static_cast<char>(0xF0 | (cp >> 18));
      enc += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      enc += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      enc += static_cast<char>(0x80 | (cp & 0x3F));
    }
    if (s.size() + enc.size() > max_bytes) break;
    s += enc;
  }
  if (s.size() < min_bytes) s += 'x';
  return s;
}

std::string random_bytes_string(std::mt19937& rng, std::size_t max) {
  std::string s(std::uniform_int_distribution<std::size_t>(0, max)(rng), '\0');
  for (auto& c : s)
    c = static_cast<char>(std::uniform_int_distribution<int>(0, 255)(rng));
  return s;
}

wire::frame random_frame(std::mt19937& rng) {
  auto u32 = [&] { return std::uniform_int_distribution<std::uint32_t>()(rng); };
  auto u64 = [&] { return std::uniform_int_distribution<std::uint64_t>()(rng); };
  switch (std::uniform_int_distribution<int>(1, 7)(rng)) {
    case 1:
      return wire::hello{1, random_utf8(rng, 1, wire::max_client_id), u32(),
                         random_bytes_string(rng, wire::max_auth_token)};
    case 2: {
      wire::welcome w;
      w.min_interval_ms = std::uniform_int_distribution<std::uint32_t>(1, 100000)(rng);
      w.max_interval_ms =
          std::uniform_int_distribution<std::uint32_t>(w.min_interval_ms, 10'000'000)(rng);
      w.interval_ms =
          std::uniform_int_distribution<std::uint32_t>(w.min_interval_ms, w.max_interval_ms)(rng);
      w.dead_after_ms =
          std::uniform_int_distribution<std::uint32_t>(w.interval_ms + 1, 4 * w.interval_ms)(rng);
      w.session_id = u64();
      w.max_frame = std::uniform_int_distribution<std::uint32_t>(wire::handshake_max_frame,
                                                                 std::uint32_t{1} << 30)(rng);
      return w;
    }
    case 3:
      return wire::ping{u64(), u64()};
    case 4:
      return wire::pong{u64(), u64()};
    case 5: {
      // Mostly small payloads, sometimes up to the default maximum.
      const std::size_t max =
          std::uniform_int_distribution<int>(0, 9)(rng) == 0 ? wire::default_max_frame - 1 : 200;
      bytes payload(std::uniform_int_distribution<std::size_t>(0, max)(rng));
      for (auto& b : payload)
        b = static_cast<std::byte>(std::uniform_int_distribution<int>(0, 255)(rng));
      return wire::data{std::move(payload)};
    }
    case 6:
      return wire::bye{
          static_cast<wire::bye_reason>(std::uniform_int_distribution<int>(0, 3)(rng))};
    default:
      return wire::error{
          static_cast<wire::error_code>(std::uniform_int_distribution<int>(1, 11)(rng)),
          random_utf8(rng, 0, wire::max_error_text)};
  }
}

}  // namespace

TEST_CASE("random frames round-trip through random split points") {
  std::mt19937 rng(20240611);
  constexpr int count = 4000;
  std::vector<wire::frame> frames;
  bytes stream;
  for (int i = 0; i < count; ++i) {
    frames.push_back(random_frame(rng));
    wire::encode(frames.back(), stream);
  }

  wire::decoder d(wire::default_max_frame);
  std::size_t fed = 0;
  std::size_t taken_bytes = 0;
  std::size_t taken = 0;
  std::uniform_int_distribution<std::size_t> chunk(1, 3000);
  while (fed < stream.size()) {
    const std::size_t n = std::min(chunk(rng), stream.size() - fed);
    d.feed(std::span(stream).subspan(fed, n));
    fed += n;
    for (;;) {
      auto r = d.next();
      if (auto* e = std::get_if<wire::decode_error>(&r))
        FAIL("frame " << taken << ": " << e->detail);
      if (std::holds_alternative<std::monostate>(r)) break;
      REQUIRE(taken < frames.size());
      const auto& got = std::get<wire::frame>(r);
      if (!(got == frames[taken])) FAIL("frame " << taken << " differs after decoding");
      taken_bytes += wire::encode(got).size();
      ++taken;
    }
    REQUIRE(d.buffered() == fed - taken_bytes);
  }
  CHECK(taken == frames.size());
  CHECK(d.buffered() == 0);
}

TEST_CASE("length problems are reported from the 4 length bytes alone") {
  SECTION("oversized before the handshake") {
    wire::decoder d;  // handshake_max_frame
    CHECK(d.max_frame() == wire::handshake_max_frame);
    d.feed(from_hex("00 00 04"));
    CHECK(std::holds_alternative<std::monostate>(d.next()));
    d.feed(from_hex("01"));  // 1025: no type byte, no body needed
    auto r = d.next();
    REQUIRE(std::holds_alternative<wire::decode_error>(r));
    CHECK(std::get<wire::decode_error>(r).code == wire::error_code::frame_too_large);
  }
  SECTION("exactly the maximum is waited for, not refused") {
    wire::decoder d;
    d.feed(from_hex("00 00 04 00 05"));
    CHECK(std::holds_alternative<std::monostate>(d.next()));
    d.feed(bytes(1023));
    auto r = d.next();
    REQUIRE(std::holds_alternative<wire::frame>(r));
    CHECK(std::get<wire::data>(std::get<wire::frame>(r)).payload.size() == 1023);
  }
  SECTION("the largest length under the default maximum") {
    wire::decoder d(wire::default_max_frame);
    d.feed(from_hex("ff ff ff ff"));
    auto r = d.next();
    REQUIRE(std::holds_alternative<wire::decode_error>(r));
    CHECK(std::get<wire::decode_error>(r).code == wire::error_code::frame_too_large);
    CHECK(std::get<wire::decode_error>(r).detail ==
          "frame length 4294967295 exceeds the maximum 65536");
  }
  SECTION("zero length") {
    wire::decoder d;
    d.feed(from_hex("00 00 00 00"));
    auto r = d.next();
    REQUIRE(std::holds_alternative<wire::decode_error>(r));
    CHECK(std::get<wire::decode_error>(r).code == wire::error_code::malformed_frame);
  }
}

TEST_CASE("an unknown type is reported from the 5 header bytes alone") {
  for (const char* type : {"00", "08", "7f", "ff"}) {
    INFO(type);
    wire::decoder d;
    d.feed(from_hex(std::string("00 00 03 ff ") + type));  // a 1023-byte body never sent
    auto r = d.next();
    REQUIRE(std::holds_alternative<wire::decode_error>(r));
    CHECK(std::get<wire::decode_error>(r).code == wire::error_code::unknown_frame_type);
  }
}

namespace {

bytes hello_body(std::string_view magic, std::uint8_t version, const bytes& id,
                 std::uint32_t interval, const bytes& token) {
  return concat({raw(magic), bytes{std::byte{version}}, bytes{static_cast<std::byte>(id.size())},
                 id, be(interval, 4), bytes{static_cast<std::byte>(token.size())}, token});
}

bytes welcome_body(const wire::welcome& w) {
  return concat({bytes{std::byte{w.version}}, be(w.interval_ms, 4), be(w.dead_after_ms, 4),
                 be(w.session_id, 8), be(w.max_frame, 4), be(w.min_interval_ms, 4),
                 be(w.max_interval_ms, 4)});
}

bytes drop_last(bytes b, std::size_t n = 1) {
  // erase, not resize: GCC 12 with the sanitizers misreads resize() as a possible growth
  b.erase(b.end() - static_cast<std::ptrdiff_t>(std::min(n, b.size())), b.end());
  return b;
}

bytes plus(bytes b, std::initializer_list<std::uint8_t> extra) {
  for (auto x : extra)
    b.push_back(static_cast<std::byte>(x));
  return b;
}

}  // namespace

TEST_CASE("every decode error reachable from bytes, with a short ASCII detail") {
  using ec = wire::error_code;
  const bytes id = raw("sensor-17");
  const bytes token = raw("s3cret");
  const bytes good_hello = hello_body("DPHB", 1, id, 5000, token);
  auto welcome_with = [](auto change) {
    auto w = valid_welcome();
    change(w);
    return framed(0x02, welcome_body(w));
  };
  auto hello_with_id = [&](const bytes& client_id) {
    return framed(0x01, hello_body("DPHB", 1, client_id, 5000, token));
  };
  const bytes ping_body = concat({be(1, 8), be(2, 8)});

  struct bad_case {
    const char* what;
    bytes input;
    ec code;
  };
  const std::vector<bad_case> cases = {
      // header
      {"zero length", from_hex("00 00 00 00"), ec::malformed_frame},
      {"length over max", from_hex("00 01 00 01"), ec::frame_too_large},
      {"type 0", from_hex("00 00 00 01 00"), ec::unknown_frame_type},
      {"type 8", from_hex("00 00 00 01 08"), ec::unknown_frame_type},
      // HELLO
      {"HELLO wrong magic", framed(0x01, hello_body("DPHX", 1, id, 5000, token)),
       ec::unsupported_version},
      {"HELLO lower-case magic", framed(0x01, hello_body("dphb", 1, id, 5000, token)),
       ec::unsupported_version},
      {"HELLO version 0", framed(0x01, hello_body("DPHB", 0, id, 5000, token)),
       ec::unsupported_version},
      {"HELLO version 2", framed(0x01, hello_body("DPHB", 2, id, 5000, token)),
       ec::unsupported_version},
      {"HELLO version 2, other layout", framed(0x01, plus(raw("DPHB"), {0x02, 0xff})),
       ec::unsupported_version},
      {"HELLO empty body", framed(0x01, {}), ec::malformed_frame},
      {"HELLO magic cut", framed(0x01, raw("DPH")), ec::malformed_frame},
      {"HELLO version cut", framed(0x01, raw("DPHB")), ec::malformed_frame},
      {"HELLO id length cut", framed(0x01, plus(raw("DPHB"), {0x01})), ec::malformed_frame},
      {"HELLO empty id", hello_with_id({}), ec::invalid_client_id},
      {"HELLO 65-byte id", hello_with_id(bytes(65, std::byte{'a'})), ec::invalid_client_id},
      {"HELLO id length 200, bytes absent", framed(0x01, plus(raw("DPHB"), {0x01, 200, 'a'})),
       ec::invalid_client_id},
      {"HELLO id cut", framed(0x01, plus(raw("DPHB"), {0x01, 5, 'a', 'b'})), ec::malformed_frame},
      {"HELLO id NUL", hello_with_id(from_hex("61 00 62")), ec::invalid_client_id},
      {"HELLO id lone continuation", hello_with_id(from_hex("61 80")), ec::invalid_client_id},
      {"HELLO id overlong NUL", hello_with_id(from_hex("c0 80")), ec::invalid_client_id},
      {"HELLO id overlong 2-byte", hello_with_id(from_hex("c1 bf")), ec::invalid_client_id},
      {"HELLO id overlong 3-byte", hello_with_id(from_hex("e0 80 af")), ec::invalid_client_id},
      {"HELLO id overlong 4-byte", hello_with_id(from_hex("f0 8f bf bf")), ec::invalid_client_id},
      {"HELLO id surrogate", hello_with_id(from_hex("ed a0 80")), ec::invalid_client_id},
      {"HELLO id above U+10FFFF", hello_with_id(from_hex("f4 90 80 80")), ec::invalid_client_id},
      {"HELLO id byte f5", hello_with_id(from_hex("f5 80 80 80")), ec::invalid_client_id},
      {"HELLO id byte ff", hello_with_id(from_hex("ff")), ec::invalid_client_id},
      {"HELLO id cut sequence", hello_with_id(from_hex("61 e2 82")), ec::invalid_client_id},
      {"HELLO id bad second continuation", hello_with_id(from_hex("e2 82 41")),
       ec::invalid_client_id},
      {"HELLO interval cut", framed(0x01, plus(raw("DPHB"), {0x01, 1, 'a', 0, 0, 0x13})),
       ec::malformed_frame},
      {"HELLO token length cut", framed(0x01, drop_last(hello_body("DPHB", 1, id, 5000, {}))),
       ec::malformed_frame},
      {"HELLO token cut", framed(0x01, drop_last(good_hello)), ec::malformed_frame},
      {"HELLO trailing byte", framed(0x01, plus(good_hello, {0})), ec::malformed_frame},
      // WELCOME
      {"WELCOME version 2", welcome_with([](auto& w) { w.version = 2; }), ec::unsupported_version},
      {"WELCOME version 0", welcome_with([](auto& w) { w.version = 0; }), ec::unsupported_version},
      {"WELCOME empty", framed(0x02, {}), ec::malformed_frame},
      {"WELCOME cut", framed(0x02, drop_last(welcome_body(valid_welcome()))), ec::malformed_frame},
      {"WELCOME trailing byte", framed(0x02, plus(welcome_body(valid_welcome()), {0})),
       ec::malformed_frame},
      {"WELCOME min interval 0", welcome_with([](auto& w) { w.min_interval_ms = 0; }),
       ec::malformed_frame},
      {"WELCOME min above max", welcome_with([](auto& w) { w.min_interval_ms = 70000; }),
       ec::malformed_frame},
      {"WELCOME interval below min", welcome_with([](auto& w) { w.interval_ms = 999; }),
       ec::malformed_frame},
      {"WELCOME interval above max", welcome_with([](auto& w) {
         w.interval_ms = 60001;
         w.dead_after_ms = 200000;
       }),
       ec::malformed_frame},
      {"WELCOME dead-after equal to interval",
       welcome_with([](auto& w) { w.dead_after_ms = w.interval_ms; }), ec::malformed_frame},
      {"WELCOME max frame 1023", welcome_with([](auto& w) { w.max_frame = 1023; }),
       ec::malformed_frame},
      // PING, PONG
      {"PING cut", framed(0x03, drop_last(ping_body)), ec::malformed_frame},
      {"PING sequence only", framed(0x03, be(1, 8)), ec::malformed_frame},
      {"PING trailing byte", framed(0x03, plus(ping_body, {0})), ec::malformed_frame},
      {"PONG cut", framed(0x04, drop_last(ping_body)), ec::malformed_frame},
      {"PONG empty", framed(0x04, {}), ec::malformed_frame},
      {"PONG trailing byte", framed(0x04, plus(ping_body, {0})), ec::malformed_frame},
      // BYE
      {"BYE empty", framed(0x06, {}), ec::malformed_frame},
      {"BYE cut", framed(0x06, from_hex("00")), ec::malformed_frame},
      {"BYE reason 4", framed(0x06, from_hex("00 04")), ec::malformed_frame},
      {"BYE reason 65535", framed(0x06, from_hex("ff ff")), ec::malformed_frame},
      {"BYE trailing byte", framed(0x06, from_hex("00 00 00")), ec::malformed_frame},
      // ERROR
      {"ERROR empty", framed(0x07, {}), ec::malformed_frame},
      {"ERROR code cut", framed(0x07, from_hex("00")), ec::malformed_frame},
      {"ERROR code 0", framed(0x07, from_hex("00 00 00")), ec::malformed_frame},
      {"ERROR code 12", framed(0x07, from_hex("00 0c 00")), ec::malformed_frame},
      {"ERROR code 65535", framed(0x07, from_hex("ff ff 00")), ec::malformed_frame},
      {"ERROR text length cut", framed(0x07, from_hex("00 01")), ec::malformed_frame},
      {"ERROR text cut", framed(0x07, from_hex("00 01 03 61 62")), ec::malformed_frame},
      {"ERROR text bad UTF-8", framed(0x07, from_hex("00 01 02 c3 28")), ec::malformed_frame},
      {"ERROR text NUL", framed(0x07, from_hex("00 01 01 00")), ec::malformed_frame},
      {"ERROR trailing byte", framed(0x07, from_hex("00 01 01 61 62")), ec::malformed_frame},
  };
  for (const auto& c : cases) {
    INFO(c.what << ": " << to_hex(c.input));
    auto r = decode_one(c.input);
    REQUIRE(std::holds_alternative<wire::decode_error>(r));
    const auto& e = std::get<wire::decode_error>(r);
    CHECK(e.code == c.code);
    CHECK(!e.detail.empty());
    CHECK(e.detail.size() <= wire::max_error_text);
    CHECK(printable_ascii(e.detail));
    // The detail can be sent back as the ERROR text as is.
    CHECK_NOTHROW(wire::encode(wire::error{e.code, e.detail}));
  }
}

TEST_CASE("UTF-8 edge code points are valid in a client id") {
  for (const char* hex : {"7f", "c2 80", "df bf", "e0 a0 80", "ed 9f bf", "ee 80 80", "ef bf bf",
                          "f0 90 80 80", "f4 8f bf bf"}) {
    INFO(hex);
    const auto id = from_hex(hex);
    const auto f = decode_frame(framed(0x01, hello_body("DPHB", 1, id, 0, {})));
    CHECK(std::get<wire::hello>(f).client_id ==
          std::string(reinterpret_cast<const char*>(id.data()), id.size()));
  }
}

TEST_CASE("the decoder stays failed with the same error") {
  wire::decoder d;
  bytes input = wire::encode(wire::ping{7, 8});
  const bytes bad = framed(0x06, from_hex("00 09"));
  input.insert(input.end(), bad.begin(), bad.end());
  wire::encode(wire::pong{7, 8}, input);
  d.feed(input);

  auto first = d.next();  // frames before the error are still delivered
  REQUIRE(std::holds_alternative<wire::frame>(first));
  CHECK(std::get<wire::frame>(first) == wire::frame{wire::ping{7, 8}});

  auto r = d.next();
  REQUIRE(std::holds_alternative<wire::decode_error>(r));
  const auto error = std::get<wire::decode_error>(r);
  CHECK(error.code == wire::error_code::malformed_frame);

  const auto buffered = d.buffered();
  d.feed(wire::encode(wire::ping{9, 9}));  // ignored
  CHECK(d.buffered() == buffered);
  d.set_max_frame(wire::default_max_frame);
  for (int i = 0; i < 3; ++i) {
    auto again = d.next();
    REQUIRE(std::holds_alternative<wire::decode_error>(again));
    CHECK(std::get<wire::decode_error>(again).code == error.code);
    CHECK(std::get<wire::decode_error>(again).detail == error.detail);
  }
}

TEST_CASE("set_max_frame raises the limit after the handshake") {
  const bytes big = wire::encode(wire::data{bytes(2000, std::byte{0x5a})});

  SECTION("a frame over 1024 is refused before WELCOME") {
    wire::decoder d;
    d.feed(big);
    auto r = d.next();
    REQUIRE(std::holds_alternative<wire::decode_error>(r));
    CHECK(std::get<wire::decode_error>(r).code == wire::error_code::frame_too_large);
  }
  SECTION("client: WELCOME and a big frame arrive in one read") {
    wire::decoder d;
    bytes input = wire::encode(valid_welcome());
    input.insert(input.end(), big.begin(), big.end());
    d.feed(input);
    auto w = d.next();
    REQUIRE(std::holds_alternative<wire::frame>(w));
    d.set_max_frame(std::get<wire::welcome>(std::get<wire::frame>(w)).max_frame);
    CHECK(d.max_frame() == wire::default_max_frame);
    auto r = d.next();
    REQUIRE(std::holds_alternative<wire::frame>(r));
    CHECK(std::get<wire::data>(std::get<wire::frame>(r)).payload.size() == 2000);
  }
  SECTION("the negotiated maximum is exact") {
    wire::decoder d;
    d.set_max_frame(wire::default_max_frame);
    d.feed(wire::encode(wire::data{bytes(wire::default_max_frame - 1)}));
    CHECK(std::holds_alternative<wire::frame>(d.next()));
    d.feed(wire::encode(wire::data{bytes(wire::default_max_frame)}));
    auto r = d.next();
    REQUIRE(std::holds_alternative<wire::decode_error>(r));
    CHECK(std::get<wire::decode_error>(r).code == wire::error_code::frame_too_large);
  }
  SECTION("the limit can also be lowered") {
    wire::decoder d(wire::default_max_frame);
    d.set_max_frame(16);
    d.feed(wire::encode(wire::ping{}));  // length 17
    auto r = d.next();
    REQUIRE(std::holds_alternative<wire::decode_error>(r));
    CHECK(std::get<wire::decode_error>(r).code == wire::error_code::frame_too_large);
  }
}

TEST_CASE("encode refuses frames the protocol forbids and appends nothing") {
  std::string bad_utf8 = "ab\xC3";
  auto w = [](auto change) {
    auto m = valid_welcome();
    change(m);
    return wire::frame{m};
  };
  const std::vector<std::pair<const char*, wire::frame>> cases = {
      {"empty client id", wire::hello{1, "", 0, ""}},
      {"65-byte client id", wire::hello{1, std::string(65, 'a'), 0, ""}},
      {"client id not UTF-8", wire::hello{1, bad_utf8, 0, ""}},
      {"client id with NUL", wire::hello{1, std::string("a\0b", 3), 0, ""}},
      {"256-byte token", wire::hello{1, "a", 0, std::string(256, 't')}},
      {"default WELCOME (fields not filled)", wire::welcome{}},
      {"WELCOME min 0", w([](auto& m) { m.min_interval_ms = 0; })},
      {"WELCOME interval out of range", w([](auto& m) { m.interval_ms = 70000; })},
      {"WELCOME dead-after not above interval", w([](auto& m) { m.dead_after_ms = 4000; })},
      {"WELCOME max frame below 1024", w([](auto& m) { m.max_frame = 100; })},
      {"BYE reason 4", wire::bye{static_cast<wire::bye_reason>(4)}},
      {"ERROR code 0", wire::error{static_cast<wire::error_code>(0), ""}},
      {"ERROR code 12", wire::error{static_cast<wire::error_code>(12), ""}},
      {"256-byte ERROR text", wire::error{wire::error_code::internal_error, std::string(256, 'e')}},
      {"ERROR text not UTF-8", wire::error{wire::error_code::internal_error, bad_utf8}},
  };
  for (const auto& [what, f] : cases) {
    INFO(what);
    bytes out = from_hex("de ad");
    CHECK_THROWS_AS(wire::encode(f, out), std::invalid_argument);
    CHECK(to_hex(out) == "de ad");
    CHECK_THROWS_AS(wire::encode(f), std::invalid_argument);
  }
}

TEST_CASE("encode appends, and any version byte is encodable for tests") {
  bytes out = from_hex("aa");
  wire::encode(wire::bye{}, out);
  CHECK(to_hex(out) == "aa 00 00 00 03 06 00 00");

  auto r = decode_one(wire::encode(wire::hello{2, "a", 0, ""}));
  REQUIRE(std::holds_alternative<wire::decode_error>(r));
  CHECK(std::get<wire::decode_error>(r).code == wire::error_code::unsupported_version);

  auto w = valid_welcome();
  w.version = 9;
  r = decode_one(wire::encode(w));
  REQUIRE(std::holds_alternative<wire::decode_error>(r));
  CHECK(std::get<wire::decode_error>(r).code == wire::error_code::unsupported_version);
}
