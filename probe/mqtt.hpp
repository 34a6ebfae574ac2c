// The few MQTT 3.1.1 packets a load generator needs to hold idle clients on a broker:
// CONNECT, PINGREQ, DISCONNECT out; CONNACK and PINGRESP in. Written by hand because a
// keepalive comparison needs nothing else, and a client library would hide the framing
// whose cost is being compared. Pure: bytes in and out, no I/O.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace probe::mqtt {

inline constexpr std::byte connack_type{0x20};
inline constexpr std::byte pingresp_type{0xD0};
inline constexpr std::array<std::byte, 2> pingreq{std::byte{0xC0}, std::byte{0x00}};
inline constexpr std::array<std::byte, 2> disconnect{std::byte{0xE0}, std::byte{0x00}};
/// Longest remaining length this client accepts from a broker; it only expects 2 or 0.
inline constexpr std::uint32_t max_remaining_length = 4096;

/// Appends CONNECT with clean session, no will, no credentials.
void encode_connect(std::string_view client_id, std::uint16_t keep_alive_s,
                    std::vector<std::byte>& out);

/// One packet's fixed header found at the front of a buffer.
struct packet_header {
  std::byte first_byte{0};  ///< type in the high nibble, flags in the low one
  std::uint32_t remaining_length = 0;
  std::size_t header_size = 0;  ///< 2..5 bytes
};

enum class parse_status { need_more, complete, malformed };

/// Parses the fixed header at the front of `bytes`; `complete` means the whole packet
/// (header_size + remaining_length bytes) is there.
parse_status parse_header(std::span<const std::byte> bytes, packet_header& header);

}  // namespace probe::mqtt
