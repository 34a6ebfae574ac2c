#include "greeting.hpp"

#include "cli.hpp"
#include "mqtt.hpp"

#include <deadpeer/duration.hpp>

#include <algorithm>
#include <cctype>
#include <span>

namespace probe {
namespace {

using std::chrono::milliseconds;

constexpr milliseconds default_interval{5000};

std::string decode_escapes(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\' || i + 1 == text.size()) {
      out += text[i];
      continue;
    }
    switch (text[++i]) {
      case 'r':
        out += '\r';
        break;
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      case '\\':
        out += '\\';
        break;
      default:
        throw usage_error(std::string("--greeting send: unknown escape \\") + text[i] +
                          " (known: \\r \\n \\t \\\\)");
    }
  }
  return out;
}

milliseconds parse_period(std::string_view spec, std::string_view key, std::string_view value) {
  milliseconds d{0};
  try {
    d = deadpeer::parse_duration(std::string(value));
  } catch (const std::exception& e) {
    throw usage_error("--greeting " + std::string(spec) + ": " + std::string(key) + ": " +
                      e.what());
  }
  if (d < milliseconds(100))
    throw usage_error("--greeting " + std::string(spec) + ": " + std::string(key) +
                      " below 100ms would flood the server");
  return d;
}

std::vector<std::byte> bytes_of(std::string_view s) {
  const auto* p = reinterpret_cast<const std::byte*>(s.data());
  return {p, p + s.size()};
}

bool iequals_prefix(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() &&
         std::equal(prefix.begin(), prefix.end(), text.begin(), [](char a, char b) {
           return std::tolower(static_cast<unsigned char>(a)) ==
                  std::tolower(static_cast<unsigned char>(b));
         });
}

}  // namespace

greeting greeting::parse(std::string_view spec) {
  greeting g;
  g.spec = std::string(spec);
  const auto colon = spec.find(':');
  const auto name = spec.substr(0, colon);
  const auto rest = colon == std::string_view::npos ? std::string_view{} : spec.substr(colon + 1);
  auto keyed = [&](std::string_view key, bool required) {
    if (rest.empty()) {
      if (required)
        throw usage_error("--greeting " + std::string(spec) + ": write " + std::string(name) + ":" +
                          std::string(key) + "=DURATION");
      return default_interval;
    }
    const auto eq = rest.find('=');
    if (eq == std::string_view::npos || rest.substr(0, eq) != key)
      throw usage_error("--greeting " + std::string(spec) + ": expected " + std::string(key) +
                        "=DURATION after \"" + std::string(name) + ":\"");
    return parse_period(spec, key, rest.substr(eq + 1));
  };
  if (name == "raw" && colon == std::string_view::npos) {
    g.kind = protocol::raw;
  } else if (name == "send") {
    g.kind = protocol::send;
    g.text = decode_escapes(rest);
    if (g.text.empty()) throw usage_error("--greeting send: needs bytes, e.g. send:hello\\n");
  } else if (name == "mqtt") {
    g.kind = protocol::mqtt;
    g.interval = keyed("keepalive", true);
    if (g.interval > std::chrono::seconds(65535))
      throw usage_error("--greeting " + std::string(spec) + ": MQTT keep alive is at most 65535s");
  } else if (name == "http") {
    g.kind = protocol::http;
    g.interval = keyed("interval", false);
  } else if (name == "redis") {
    g.kind = protocol::redis;
    g.interval = keyed("interval", false);
  } else {
    throw usage_error("--greeting \"" + std::string(spec) +
                      "\": expected raw, send:TEXT, mqtt:keepalive=D, http[:interval=D] or "
                      "redis[:interval=D]");
  }
  return g;
}

std::vector<std::byte> greeting::opening(std::string_view client_id) const {
  std::vector<std::byte> out;
  if (kind == protocol::send) return bytes_of(text);
  if (kind == protocol::mqtt) {
    // Keep alive in whole seconds, rounded up: the client then pings no later than it says.
    const auto seconds = (interval.count() + 999) / 1000;
    mqtt::encode_connect(client_id, static_cast<std::uint16_t>(std::max<long long>(1, seconds)),
                         out);
  }
  return out;
}

std::vector<std::byte> greeting::request(std::string_view host) const {
  switch (kind) {
    case protocol::mqtt:
      return {mqtt::pingreq.begin(), mqtt::pingreq.end()};
    case protocol::http:
      return bytes_of("GET / HTTP/1.1\r\nHost: " + std::string(host) +
                      "\r\nUser-Agent: deadpeer-probe\r\nConnection: keep-alive\r\n\r\n");
    case protocol::redis:
      return bytes_of("*1\r\n$4\r\nPING\r\n");
    default:
      return {};
  }
}

int answer_reader::feed(std::string_view bytes) {
  if (!error_.empty()) return 0;
  buffer_.append(bytes);
  int answers = 0;
  while (error_.empty()) {
    const auto size = complete_answer();
    if (!size) break;
    buffer_.erase(0, *size);
    ++answers;
  }
  return answers;
}

std::optional<std::size_t> answer_reader::complete_answer() {
  switch (greeting_.kind) {
    case greeting::protocol::raw:
    case greeting::protocol::send:
      return std::nullopt;  // whatever a server says back is not an answer we wait for
    case greeting::protocol::mqtt: {
      mqtt::packet_header h;
      const auto* p = reinterpret_cast<const std::byte*>(buffer_.data());
      const auto status = mqtt::parse_header(std::span(p, buffer_.size()), h);
      if (status == mqtt::parse_status::need_more) return std::nullopt;
      if (status == mqtt::parse_status::malformed) {
        error_ = "malformed MQTT packet from the server";
        return std::nullopt;
      }
      const auto type = h.first_byte & std::byte{0xF0};
      if (!connected_) {
        if (type != mqtt::connack_type || h.remaining_length != 2 ||
            buffer_[h.header_size + 1] != 0) {
          error_ = "the broker did not accept CONNECT (no CONNACK with return code 0)";
          return std::nullopt;
        }
        connected_ = true;
      }
      return h.header_size + h.remaining_length;
    }
    case greeting::protocol::redis: {
      const auto end = buffer_.find("\r\n");
      if (end == std::string::npos) return std::nullopt;
      if (buffer_[0] != '+' && buffer_[0] != '-') {
        error_ = "unexpected Redis reply \"" + buffer_.substr(0, end) + "\"";
        return std::nullopt;
      }
      return end + 2;
    }
    case greeting::protocol::http: {
      const auto head_end = buffer_.find("\r\n\r\n");
      if (head_end == std::string::npos) return std::nullopt;
      if (!iequals_prefix(buffer_, "HTTP/1.")) {
        error_ = "the server did not answer with HTTP/1.x";
        return std::nullopt;
      }
      const std::string_view head(buffer_.data(), head_end);
      std::size_t body = 0;
      bool chunked = false;
      for (std::size_t at = head.find("\r\n"); at != std::string_view::npos;) {
        const auto next = head.find("\r\n", at + 2);
        const auto line =
            head.substr(at + 2, next == std::string_view::npos ? head.npos : next - at - 2);
        if (iequals_prefix(line, "content-length:")) {
          try {
            body = std::stoul(std::string(line.substr(15)));
          } catch (const std::exception&) {
            error_ = "bad Content-Length in the server's answer";
            return std::nullopt;
          }
        }
        if (iequals_prefix(line, "transfer-encoding:") && line.find("chunked") != line.npos)
          chunked = true;
        at = next;
      }
      if (chunked) {
        const auto last = buffer_.find("\r\n0\r\n\r\n", head_end + 2);
        if (last == std::string::npos) return std::nullopt;
        return last + 7;
      }
      if (buffer_.size() < head_end + 4 + body) return std::nullopt;
      return head_end + 4 + body;
    }
  }
  return std::nullopt;
}

}  // namespace probe
