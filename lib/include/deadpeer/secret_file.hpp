// Secrets (auth tokens) come from files, never from the command line, where every user of
// the host can read them in ps. The secret is the file's first line, without trailing
// spaces or CR (a file written on Windows).
#pragma once

#include <string>

namespace deadpeer {

/// The secret in `path`. Throws config_error, quoting the path, for a directory, a file
/// that cannot be read, or an empty first line.
std::string read_secret_file(const std::string& path);

}  // namespace deadpeer
