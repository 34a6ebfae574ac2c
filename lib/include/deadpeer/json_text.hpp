// JSON as deadpeer writes it for people and for tools: numbers never in exponent form.
// Boost.JSON writes every double in scientific notation ("uptime_ms":3.036275939E3,
// "silence_ms":7.738E-3), which jq and spreadsheets read but people do not. Here a double
// holding a whole number (a count of ms or ns stored as double) is written as an integer,
// any other as the shortest plain decimal that reads back to the same double ("0.007738"),
// and a non-finite one, which JSON cannot carry, as null. Everything else is Boost's.
// Two layouts: compact (the control API, stored details) and rows (probe report --format
// json: one array element per line, ", " and ": " inside objects).
// Needs Boost.JSON (Boost::json) in the program that includes it.
#pragma once

#include <boost/json/value.hpp>

#include <string>

namespace deadpeer {

enum class json_layout { compact, rows };

/// Appends `v` to `out` as JSON with plain numbers.
void append_json_text(std::string& out, const boost::json::value& v,
                      json_layout layout = json_layout::compact);

/// `v` as JSON with plain numbers.
std::string json_text(const boost::json::value& v, json_layout layout = json_layout::compact);

}  // namespace deadpeer
