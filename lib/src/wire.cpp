// Frame encoding and incremental decoding for the heartbeat protocol (docs/protocol.md).
//
// What this module decides, and why:
// - Strict parsing. Every field is checked, bytes left after the last field are an error,
//   unknown BYE reasons and ERROR codes are errors. New fields or codes come with a new
//   protocol version, so strictness costs no compatibility and catches framing bugs at once.
// - Header errors are found as early as the bytes allow: a zero or oversized length as soon
//   as the 4 length bytes are in, an unknown type as soon as the type byte is in, so a peer
//   cannot make us buffer a body we would reject anyway. A body is parsed once complete.
// - HELLO's magic and version, and WELCOME's version, are checked before the rest of the
//   body, so a newer peer with a different layout gets unsupported_version, not
//   malformed_frame.
// - The checks are in protocol.md §9's order, so two implementations report the same code.
// - Encoding a frame the decoder would refuse (too long a client id, an unknown code...)
//   is a programming error: encode() throws std::invalid_argument and appends nothing. A
//   version byte other than 1 is still encodable, so the version check can be tested.
// - The decoder's buffer is compacted only when the consumed prefix dominates it, so a
//   stream of small frames costs no memmove per frame.
#include <deadpeer/wire.hpp>

#include <limits>
#include <stdexcept>
#include <type_traits>

namespace deadpeer::wire {
namespace {

constexpr std::size_t length_size = 4;
constexpr std::size_t header_size = length_size + 1;
// Compaction happens when at least this many consumed bytes lead the buffer and they are
// at least half of it: the memmove then costs no more than the bytes it lets us reuse.
constexpr std::size_t compact_threshold = 4096;

// ---- UTF-8 --------------------------------------------------------------------------

// Well-formed UTF-8 per RFC 3629 (Unicode Table 3-7), and no U+0000.
bool valid_utf8(std::span<const std::byte> s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto b0 = static_cast<unsigned>(s[i]);
    if (b0 == 0) return false;
    if (b0 < 0x80) {
      ++i;
      continue;
    }
    std::size_t extra = 0;
    unsigned lo = 0x80;
    unsigned hi = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      extra = 1;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      extra = 2;
      if (b0 == 0xE0) lo = 0xA0;  // no overlong forms
      if (b0 == 0xED) hi = 0x9F;  // no surrogates
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      extra = 3;
      if (b0 == 0xF0) lo = 0x90;  // no overlong forms
      if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
    } else {
      return false;  // continuation byte first, C0/C1 (overlong), or F5..FF
    }
    if (s.size() - i - 1 < extra) return false;
    for (std::size_t k = 1; k <= extra; ++k) {
      const auto b = static_cast<unsigned>(s[i + k]);
      const unsigned low = k == 1 ? lo : 0x80;
      const unsigned high = k == 1 ? hi : 0xBF;
      if (b < low || b > high) return false;
    }
    i += extra + 1;
  }
  return true;
}

bool valid_utf8(std::string_view s) {
  return valid_utf8(std::as_bytes(std::span(s)));
}

// ---- value rules shared by encoder and decoder --------------------------------------

bool known(error_code c) {
  const auto v = static_cast<std::uint16_t>(c);
  return v >= static_cast<std::uint16_t>(error_code::malformed_frame) &&
         v <= static_cast<std::uint16_t>(error_code::internal_error);
}

bool known(bye_reason r) {
  return static_cast<std::uint16_t>(r) <= static_cast<std::uint16_t>(bye_reason::idle);
}

bool known(std::uint8_t type) {
  return type >= static_cast<std::uint8_t>(frame_type::hello) &&
         type <= static_cast<std::uint8_t>(frame_type::error);
}

// The WELCOME value rules (protocol.md §4.2); empty when they hold.
std::string welcome_problem(const welcome& w) {
  if (w.min_interval_ms == 0) return "WELCOME min interval is 0";
  if (w.min_interval_ms > w.max_interval_ms) return "WELCOME min interval exceeds max interval";
  if (w.interval_ms < w.min_interval_ms || w.interval_ms > w.max_interval_ms)
    return "WELCOME interval " + std::to_string(w.interval_ms) + " ms is outside its range " +
           std::to_string(w.min_interval_ms) + ".." + std::to_string(w.max_interval_ms) + " ms";
  if (w.dead_after_ms <= w.interval_ms)
    return "WELCOME dead-after " + std::to_string(w.dead_after_ms) +
           " ms is not above the interval " + std::to_string(w.interval_ms) + " ms";
  if (w.max_frame < handshake_max_frame)
    return "WELCOME max frame " + std::to_string(w.max_frame) + " is below " +
           std::to_string(handshake_max_frame);
  return {};
}

template <typename T>
constexpr frame_type type_for = std::is_same_v<T, hello>     ? frame_type::hello
                                : std::is_same_v<T, welcome> ? frame_type::welcome
                                : std::is_same_v<T, ping>    ? frame_type::ping
                                : std::is_same_v<T, pong>    ? frame_type::pong
                                : std::is_same_v<T, data>    ? frame_type::data
                                : std::is_same_v<T, bye>     ? frame_type::bye
                                                             : frame_type::error;
static_assert(std::is_same_v<std::variant_alternative_t<6, frame>, error>);

// ---- encoding -----------------------------------------------------------------------

[[noreturn]] void refuse(const std::string& why) {
  throw std::invalid_argument("wire::encode: " + why);
}

void validate(const hello& h) {
  if (h.client_id.empty() || h.client_id.size() > max_client_id)
    refuse("HELLO client id length " + std::to_string(h.client_id.size()) + " is outside 1.." +
           std::to_string(max_client_id));
  if (!valid_utf8(h.client_id)) refuse("HELLO client id is not valid UTF-8");
  if (h.auth_token.size() > max_auth_token)
    refuse("HELLO auth token length " + std::to_string(h.auth_token.size()) + " exceeds " +
           std::to_string(max_auth_token));
}

void validate(const welcome& w) {
  if (auto problem = welcome_problem(w); !problem.empty()) refuse(problem);
}

void validate(const ping&) {}
void validate(const pong&) {}

void validate(const data& d) {
  if (d.payload.size() > std::numeric_limits<std::uint32_t>::max() - 1)
    refuse("DATA payload of " + std::to_string(d.payload.size()) + " bytes cannot be framed");
}

void validate(const bye& b) {
  if (!known(b.reason))
    refuse("BYE reason " + std::to_string(static_cast<std::uint16_t>(b.reason)) + " is unknown");
}

void validate(const error& e) {
  if (!known(e.code))
    refuse("ERROR code " + std::to_string(static_cast<std::uint16_t>(e.code)) + " is unknown");
  if (e.text.size() > max_error_text)
    refuse("ERROR text length " + std::to_string(e.text.size()) + " exceeds " +
           std::to_string(max_error_text));
  if (!valid_utf8(e.text)) refuse("ERROR text is not valid UTF-8");
}

std::size_t body_size(const hello& h) {
  return 4 + 1 + 1 + h.client_id.size() + 4 + 1 + h.auth_token.size();
}
std::size_t body_size(const welcome&) {
  return 1 + 4 + 4 + 8 + 4 + 4 + 4;
}
std::size_t body_size(const ping&) {
  return 16;
}
std::size_t body_size(const pong&) {
  return 16;
}
std::size_t body_size(const data& d) {
  return d.payload.size();
}
std::size_t body_size(const bye&) {
  return 2;
}
std::size_t body_size(const error& e) {
  return 2 + 1 + e.text.size();
}

class writer {
 public:
  explicit writer(std::vector<std::byte>& out) : out_(out) {}

  void u8(std::uint8_t v) { out_.push_back(static_cast<std::byte>(v)); }
  void u16(std::uint16_t v) { put(v, 2); }
  void u32(std::uint32_t v) { put(v, 4); }
  void u64(std::uint64_t v) { put(v, 8); }
  void bytes(std::span<const std::byte> b) { out_.insert(out_.end(), b.begin(), b.end()); }
  void bytes(std::string_view s) { bytes(std::as_bytes(std::span(s))); }
  // A u8 length and the bytes; the caller has checked the size.
  void short_string(std::string_view s) {
    u8(static_cast<std::uint8_t>(s.size()));
    bytes(s);
  }

 private:
  void put(std::uint64_t v, int size) {
    for (int shift = (size - 1) * 8; shift >= 0; shift -= 8)
      out_.push_back(static_cast<std::byte>((v >> shift) & 0xFF));
  }
  std::vector<std::byte>& out_;
};

void write_body(writer& w, const hello& h) {
  w.bytes(hello_magic);
  w.u8(h.version);
  w.short_string(h.client_id);
  w.u32(h.requested_interval_ms);
  w.short_string(h.auth_token);
}

void write_body(writer& w, const welcome& m) {
  w.u8(m.version);
  w.u32(m.interval_ms);
  w.u32(m.dead_after_ms);
  w.u64(m.session_id);
  w.u32(m.max_frame);
  w.u32(m.min_interval_ms);
  w.u32(m.max_interval_ms);
}

void write_body(writer& w, const ping& p) {
  w.u64(p.sequence);
  w.u64(p.timestamp_ns);
}

void write_body(writer& w, const pong& p) {
  w.u64(p.sequence);
  w.u64(p.timestamp_ns);
}

void write_body(writer& w, const data& d) {
  w.bytes(d.payload);
}
void write_body(writer& w, const bye& b) {
  w.u16(static_cast<std::uint16_t>(b.reason));
}

void write_body(writer& w, const error& e) {
  w.u16(static_cast<std::uint16_t>(e.code));
  w.short_string(e.text);
}

// ---- decoding -----------------------------------------------------------------------

// Reads fields from a complete body. Each accessor returns false when the field does not
// fit; the caller turns that into malformed_frame naming the field.
class reader {
 public:
  explicit reader(std::span<const std::byte> body) : body_(body) {}

  bool u8(std::uint8_t& v) {
    std::uint64_t x = 0;
    if (!get(x, 1)) return false;
    v = static_cast<std::uint8_t>(x);
    return true;
  }
  bool u16(std::uint16_t& v) {
    std::uint64_t x = 0;
    if (!get(x, 2)) return false;
    v = static_cast<std::uint16_t>(x);
    return true;
  }
  bool u32(std::uint32_t& v) {
    std::uint64_t x = 0;
    if (!get(x, 4)) return false;
    v = static_cast<std::uint32_t>(x);
    return true;
  }
  bool u64(std::uint64_t& v) { return get(v, 8); }
  bool bytes(std::size_t n, std::span<const std::byte>& out) {
    if (remaining() < n) return false;
    out = body_.subspan(pos_, n);
    pos_ += n;
    return true;
  }
  std::span<const std::byte> rest() {
    auto r = body_.subspan(pos_);
    pos_ = body_.size();
    return r;
  }
  std::size_t remaining() const { return body_.size() - pos_; }

 private:
  bool get(std::uint64_t& v, std::size_t size) {
    if (remaining() < size) return false;
    v = 0;
    for (std::size_t i = 0; i < size; ++i)
      v = (v << 8) | static_cast<std::uint64_t>(body_[pos_ + i]);
    pos_ += size;
    return true;
  }
  std::span<const std::byte> body_;
  std::size_t pos_ = 0;
};

using parse_result = std::variant<frame, decode_error>;

decode_error bad(error_code code, std::string detail) {
  return {code, std::move(detail)};
}

decode_error truncated(std::string_view what) {
  return bad(error_code::malformed_frame, std::string(what) + " is cut short by the frame length");
}

std::string as_string(std::span<const std::byte> b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// Hex of at most a few bytes, for details that must stay ASCII.
std::string hex(std::span<const std::byte> b) {
  constexpr char digits[] = "0123456789abcdef";
  std::string s;
  for (auto x : b) {
    const auto v = static_cast<unsigned>(x);
    s += digits[v >> 4];
    s += digits[v & 0xF];
  }
  return s;
}

parse_result finish(reader& r, std::string_view name, frame f) {
  if (r.remaining() != 0)
    return bad(error_code::malformed_frame, std::to_string(r.remaining()) +
                                                " unexpected bytes after the last field of " +
                                                std::string(name));
  return f;
}

parse_result parse_hello(reader& r) {
  hello h;
  std::span<const std::byte> magic;
  if (!r.bytes(hello_magic.size(), magic)) return truncated("HELLO magic");
  if (as_string(magic) != hello_magic)
    return bad(error_code::unsupported_version,
               "HELLO magic is 0x" + hex(magic) + ", expected \"DPHB\" (0x44504842)");
  if (!r.u8(h.version)) return truncated("HELLO version");
  if (h.version != protocol_version)
    return bad(error_code::unsupported_version, "HELLO version " + std::to_string(h.version) +
                                                    " is not supported (this side speaks " +
                                                    std::to_string(protocol_version) + ")");
  std::uint8_t id_length = 0;
  if (!r.u8(id_length)) return truncated("HELLO client id length");
  if (id_length == 0 || id_length > max_client_id)
    return bad(error_code::invalid_client_id, "HELLO client id length " +
                                                  std::to_string(id_length) + " is outside 1.." +
                                                  std::to_string(max_client_id));
  std::span<const std::byte> id;
  if (!r.bytes(id_length, id)) return truncated("HELLO client id");
  if (!valid_utf8(id))
    return bad(error_code::invalid_client_id, "HELLO client id is not valid UTF-8 (or has NUL)");
  h.client_id = as_string(id);
  if (!r.u32(h.requested_interval_ms)) return truncated("HELLO requested interval");
  std::uint8_t token_length = 0;
  if (!r.u8(token_length)) return truncated("HELLO token length");
  std::span<const std::byte> token;
  if (!r.bytes(token_length, token)) return truncated("HELLO token");
  h.auth_token = as_string(token);
  return finish(r, "HELLO", std::move(h));
}

parse_result parse_welcome(reader& r) {
  welcome w;
  if (!r.u8(w.version)) return truncated("WELCOME version");
  if (w.version != protocol_version)
    return bad(error_code::unsupported_version, "WELCOME version " + std::to_string(w.version) +
                                                    " is not supported (this side speaks " +
                                                    std::to_string(protocol_version) + ")");
  if (!r.u32(w.interval_ms)) return truncated("WELCOME interval");
  if (!r.u32(w.dead_after_ms)) return truncated("WELCOME dead-after");
  if (!r.u64(w.session_id)) return truncated("WELCOME session id");
  if (!r.u32(w.max_frame)) return truncated("WELCOME max frame");
  if (!r.u32(w.min_interval_ms)) return truncated("WELCOME min interval");
  if (!r.u32(w.max_interval_ms)) return truncated("WELCOME max interval");
  auto result = finish(r, "WELCOME", w);
  if (std::holds_alternative<frame>(result))
    if (auto problem = welcome_problem(w); !problem.empty())
      return bad(error_code::malformed_frame, std::move(problem));
  return result;
}

template <typename PingOrPong>
parse_result parse_ping_pong(reader& r, std::string_view name) {
  PingOrPong p;
  if (!r.u64(p.sequence)) return truncated(std::string(name) + " sequence");
  if (!r.u64(p.timestamp_ns)) return truncated(std::string(name) + " timestamp");
  return finish(r, name, p);
}

parse_result parse_data(reader& r) {
  const auto payload = r.rest();
  data d;
  d.payload.assign(payload.begin(), payload.end());
  return d;
}

parse_result parse_bye(reader& r) {
  std::uint16_t reason = 0;
  if (!r.u16(reason)) return truncated("BYE reason");
  if (!known(static_cast<bye_reason>(reason)))
    return bad(error_code::malformed_frame, "BYE reason " + std::to_string(reason) + " is unknown");
  return finish(r, "BYE", bye{static_cast<bye_reason>(reason)});
}

parse_result parse_error(reader& r) {
  std::uint16_t code = 0;
  if (!r.u16(code)) return truncated("ERROR code");
  if (!known(static_cast<error_code>(code)))
    return bad(error_code::malformed_frame, "ERROR code " + std::to_string(code) + " is unknown");
  std::uint8_t text_length = 0;
  if (!r.u8(text_length)) return truncated("ERROR text length");
  std::span<const std::byte> text;
  if (!r.bytes(text_length, text)) return truncated("ERROR text");
  if (!valid_utf8(text))
    return bad(error_code::malformed_frame, "ERROR text is not valid UTF-8 (or has NUL)");
  return finish(r, "ERROR", error{static_cast<error_code>(code), as_string(text)});
}

parse_result parse(frame_type type, std::span<const std::byte> body) {
  reader r(body);
  switch (type) {
    case frame_type::hello:
      return parse_hello(r);
    case frame_type::welcome:
      return parse_welcome(r);
    case frame_type::ping:
      return parse_ping_pong<ping>(r, "PING");
    case frame_type::pong:
      return parse_ping_pong<pong>(r, "PONG");
    case frame_type::data:
      return parse_data(r);
    case frame_type::bye:
      return parse_bye(r);
    case frame_type::error:
      return parse_error(r);
  }
  return bad(error_code::unknown_frame_type, "unreachable");  // known() was checked
}

std::uint32_t load_u32(const std::byte* p) {
  return static_cast<std::uint32_t>(p[0]) << 24 | static_cast<std::uint32_t>(p[1]) << 16 |
         static_cast<std::uint32_t>(p[2]) << 8 | static_cast<std::uint32_t>(p[3]);
}

}  // namespace

void encode(const frame& f, std::vector<std::byte>& out) {
  std::visit(
      [&out](const auto& v) {
        validate(v);  // before touching `out`: a refused frame appends nothing
        const std::size_t body = body_size(v);
        out.reserve(out.size() + header_size + body);
        writer w(out);
        w.u32(static_cast<std::uint32_t>(1 + body));
        w.u8(static_cast<std::uint8_t>(type_for<std::decay_t<decltype(v)>>));
        write_body(w, v);
      },
      f);
}

std::vector<std::byte> encode(const frame& f) {
  std::vector<std::byte> out;
  encode(f, out);
  return out;
}

void decoder::feed(std::span<const std::byte> bytes) {
  if (failed_) return;  // the stream lost its framing; nothing after the error matters
  if (consumed_ == buffer_.size()) {
    buffer_.clear();
    consumed_ = 0;
  } else if (consumed_ >= compact_threshold && consumed_ * 2 >= buffer_.size()) {
    buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(consumed_));
    consumed_ = 0;
  }
  buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
}

decoded decode_one(std::span<const std::byte> bytes, std::uint32_t max_frame) {
  const std::size_t available = bytes.size();
  if (available < length_size) return {};
  const std::byte* p = bytes.data();
  const std::uint32_t length = load_u32(p);
  if (length == 0) return {bad(error_code::malformed_frame, "frame length is 0"), 0};
  if (length > max_frame)
    return {bad(error_code::frame_too_large, "frame length " + std::to_string(length) +
                                                 " exceeds the maximum " +
                                                 std::to_string(max_frame)),
            0};
  if (available < header_size) return {};
  const auto type = static_cast<std::uint8_t>(p[length_size]);
  if (!known(type))
    return {bad(error_code::unknown_frame_type,
                "frame type 0x" + hex(std::span(p + length_size, 1)) + " is unknown"),
            0};
  if (available - length_size < length) return {};
  auto parsed = parse(static_cast<frame_type>(type), std::span(p + header_size, length - 1));
  const std::size_t consumed = length_size + length;
  if (auto* e = std::get_if<decode_error>(&parsed)) return {std::move(*e), consumed};
  return {std::move(std::get<frame>(parsed)), consumed};
}

std::size_t frame_size_needed(std::span<const std::byte> bytes) {
  if (bytes.size() < length_size) return length_size;
  return length_size + load_u32(bytes.data());
}

std::variant<std::monostate, frame, decode_error> decoder::next() {
  if (failed_) return *failed_;
  auto one = decode_one(std::span(buffer_).subspan(consumed_), max_frame_);
  consumed_ += one.consumed;
  if (auto* e = std::get_if<decode_error>(&one.result)) {
    failed_ = std::move(*e);
    return *failed_;
  }
  return std::move(one.result);
}

std::string_view to_string(frame_type t) {
  switch (t) {
    case frame_type::hello:
      return "hello";
    case frame_type::welcome:
      return "welcome";
    case frame_type::ping:
      return "ping";
    case frame_type::pong:
      return "pong";
    case frame_type::data:
      return "data";
    case frame_type::bye:
      return "bye";
    case frame_type::error:
      return "error";
  }
  return "unknown";
}

std::string_view to_string(error_code c) {
  switch (c) {
    case error_code::malformed_frame:
      return "malformed_frame";
    case error_code::frame_too_large:
      return "frame_too_large";
    case error_code::unsupported_version:
      return "unsupported_version";
    case error_code::unknown_frame_type:
      return "unknown_frame_type";
    case error_code::unexpected_frame:
      return "unexpected_frame";
    case error_code::invalid_client_id:
      return "invalid_client_id";
    case error_code::auth_failed:
      return "auth_failed";
    case error_code::too_many_pings:
      return "too_many_pings";
    case error_code::server_full:
      return "server_full";
    case error_code::handshake_timeout:
      return "handshake_timeout";
    case error_code::internal_error:
      return "internal_error";
  }
  return "unknown";
}

std::string_view to_string(bye_reason r) {
  switch (r) {
    case bye_reason::normal:
      return "normal";
    case bye_reason::going_away:
      return "going_away";
    case bye_reason::superseded:
      return "superseded";
    case bye_reason::idle:
      return "idle";
  }
  return "unknown";
}

frame_type type_of(const frame& f) {
  return std::visit([](const auto& v) { return type_for<std::decay_t<decltype(v)>>; }, f);
}

}  // namespace deadpeer::wire
