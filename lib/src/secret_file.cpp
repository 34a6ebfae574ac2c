// See secret_file.hpp.
#include <deadpeer/secret_file.hpp>

#include <deadpeer/config_error.hpp>

#include <filesystem>
#include <fstream>
#include <system_error>

namespace deadpeer {

std::string read_secret_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw config_error("\"" + path + "\" is a directory; give the file holding the token");
  std::ifstream in(path);
  if (!in) throw config_error("\"" + path + "\": cannot be read");
  std::string secret;
  std::getline(in, secret);
  while (!secret.empty() && (secret.back() == '\r' || secret.back() == ' '))
    secret.pop_back();
  if (secret.empty()) throw config_error("\"" + path + "\": the first line is empty");
  return secret;
}

}  // namespace deadpeer
