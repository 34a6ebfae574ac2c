// See json_text.hpp: Boost.JSON's serializer for everything but doubles.
#include <deadpeer/json_text.hpp>

#include <boost/json/serialize.hpp>

#include <charconv>
#include <cmath>
#include <cstdint>

namespace deadpeer {
namespace json = boost::json;

namespace {

void append_number(std::string& out, double x) {
  if (!std::isfinite(x)) {
    out += "null";
    return;
  }
  char text[64];
  // Whole numbers up to 2^53 are exact in a double: print them as the integers they are.
  constexpr double exact_limit = 9007199254740992.0;
  const auto [end, error] =
      (x == std::floor(x) && std::fabs(x) <= exact_limit)
          ? std::to_chars(text, text + sizeof text, static_cast<std::int64_t>(x))
          : std::to_chars(text, text + sizeof text, x, std::chars_format::fixed);
  if (error != std::errc{}) {  // a fixed form longer than the buffer (|x| beyond 1e60)
    out += json::serialize(json::value(x));
    return;
  }
  out.append(text, end);
}

}  // namespace

void append_json_text(std::string& out, const json::value& v, json_layout layout) {
  const bool rows = layout == json_layout::rows;
  switch (v.kind()) {
    case json::kind::double_:
      append_number(out, v.get_double());
      return;
    case json::kind::object: {
      out += '{';
      bool first = true;
      for (const auto& [key, member] : v.get_object()) {
        if (!first) out += rows ? ", " : ",";
        first = false;
        out += json::serialize(key);
        out += rows ? ": " : ":";
        append_json_text(out, member, layout);
      }
      out += '}';
      return;
    }
    case json::kind::array: {
      out += '[';
      bool first = true;
      for (const auto& element : v.get_array()) {
        if (rows)
          out += first ? "\n  " : ",\n  ";
        else if (!first)
          out += ',';
        first = false;
        append_json_text(out, element, layout);
      }
      out += rows && !first ? "\n]" : "]";
      return;
    }
    default:
      out += json::serialize(v);
      return;
  }
}

std::string json_text(const json::value& v, json_layout layout) {
  std::string out;
  append_json_text(out, v, layout);
  return out;
}

}  // namespace deadpeer
