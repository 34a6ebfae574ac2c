// Number formatting shared by probe report's text formats and its plot (private).
#pragma once

#include <string>

namespace probe::report::detail {

/// Shortest text that reads back as the same double ("842.123456", "1.5", "4000").
std::string number_text(double value);
/// snprintf of one double into a std::string.
std::string printf_text(const char* format, double value);

}  // namespace probe::report::detail
