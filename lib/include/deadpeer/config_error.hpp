// Configuration errors are the one place deadpeer throws: bad durations, keepalive
// specs or presets are found at start-up, where a program can print the message and
// exit with a usage error. Everything on the I/O path reports std::error_code instead.
#pragma once

#include <stdexcept>
#include <string>

namespace deadpeer {

/// A value given by a user (flag, config file, API argument) that cannot be used.
/// what() quotes the offending input and says what would be accepted.
class config_error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

}  // namespace deadpeer
