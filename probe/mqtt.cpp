#include "mqtt.hpp"

namespace probe::mqtt {
namespace {

void put_u16(std::uint16_t value, std::vector<std::byte>& out) {
  out.push_back(static_cast<std::byte>(value >> 8));
  out.push_back(static_cast<std::byte>(value & 0xFF));
}

void put_remaining_length(std::uint32_t value, std::vector<std::byte>& out) {
  do {
    auto digit = static_cast<std::uint8_t>(value % 128);
    value /= 128;
    if (value > 0) digit |= 0x80;
    out.push_back(std::byte{digit});
  } while (value > 0);
}

}  // namespace

void encode_connect(std::string_view client_id, std::uint16_t keep_alive_s,
                    std::vector<std::byte>& out) {
  constexpr std::string_view protocol_name = "MQTT";
  constexpr std::uint8_t protocol_level = 4;  // 3.1.1
  constexpr std::uint8_t clean_session = 0x02;
  const auto remaining =
      static_cast<std::uint32_t>(2 + protocol_name.size() + 1 + 1 + 2 + 2 + client_id.size());
  out.push_back(std::byte{0x10});
  put_remaining_length(remaining, out);
  put_u16(static_cast<std::uint16_t>(protocol_name.size()), out);
  for (const char c : protocol_name)
    out.push_back(static_cast<std::byte>(c));
  out.push_back(std::byte{protocol_level});
  out.push_back(std::byte{clean_session});
  put_u16(keep_alive_s, out);
  put_u16(static_cast<std::uint16_t>(client_id.size()), out);
  for (const char c : client_id)
    out.push_back(static_cast<std::byte>(c));
}

parse_status parse_header(std::span<const std::byte> bytes, packet_header& header) {
  if (bytes.empty()) return parse_status::need_more;
  std::uint32_t value = 0;
  std::uint32_t multiplier = 1;
  for (std::size_t i = 1; i <= 4; ++i) {
    if (i >= bytes.size()) return parse_status::need_more;
    const auto digit = static_cast<std::uint8_t>(bytes[i]);
    value += (digit & 0x7Fu) * multiplier;
    if ((digit & 0x80u) == 0) {
      header.first_byte = bytes[0];
      header.remaining_length = value;
      header.header_size = i + 1;
      if (value > max_remaining_length) return parse_status::malformed;
      return bytes.size() >= header.header_size + value ? parse_status::complete
                                                        : parse_status::need_more;
    }
    multiplier *= 128;
  }
  return parse_status::malformed;
}

}  // namespace probe::mqtt
