// The two parties every victim-side trial needs: heartbeat-server embedded in probe (on
// its own io_context thread, ephemeral ports, a temporary database) and a heartbeating
// victim (`probe connect` as a child process), shared by the trial loops of every fault.
//
// What this module decides:
// - The embedded server asks the victim for exactly the configured interval (min = max =
//   default), so the bound the experiment computes is the one in force.
// - Inside a lab the server's listener and control API live in the server namespace; the
//   victim runs in the victim namespace. Without a lab both use 127.0.0.1.
// - A victim is returned only once steady: connected, and with heartbeats three answered
//   PINGs, so a fault can follow at once.
// - The server records into the experiment's results database (--db), not a file of its
//   own: each victim's end is a `connections` row, and its heartbeat arrivals (the last
//   10000, every victim) an `arrivals` row, so `probe qos --from-db results.db` replays the
//   lab's own links. Only without a results database does it keep a temporary one.
#pragma once

#include "experiment.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/json/value.hpp>

#include <deadpeer/server.hpp>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace probe {

namespace lab {
class network;
}
class child_process;

class embedded_server {
 public:
  /// Starts the server; `on_event` (may be empty) gets every event line the server
  /// publishes, on the server's thread. Throws what deadpeer::server throws.
  embedded_server(const experiment_config& config, const lab::network* network,
                  std::function<void(const std::string&)> on_event = {});
  /// Stops the server gracefully (bounded wait) and removes its temporary directory.
  ~embedded_server();
  embedded_server(const embedded_server&) = delete;
  embedded_server& operator=(const embedded_server&) = delete;

  /// Where a victim connects: the lab's server address, or 127.0.0.1.
  std::string address() const;
  unsigned short port() const { return port_; }
  unsigned short control_port() const { return control_port_; }

  /// The server's row of /connections for `client_id`, or null when it holds none (or the
  /// control API did not answer).
  boost::json::value connection(const std::string& client_id) const;

 private:
  static inline int counter_ = 0;
  std::filesystem::path dir_;
  const lab::network* network_;
  boost::asio::io_context io_;
  std::unique_ptr<deadpeer::server> server_;
  std::thread thread_;
  unsigned short port_ = 0;
  unsigned short control_port_ = 0;
};

/// A heartbeat client (`probe_path connect`) to `server` ("host:port") as a child process,
/// in the victim namespace when there is a lab, returned once steady. `extra` arguments
/// are appended (e.g. a --dead-after for the victim's own detector). Throws
/// std::runtime_error, quoting what the client printed, when it does not get there.
std::unique_ptr<child_process> start_steady_client(const lab::network* network,
                                                   const std::string& probe_path,
                                                   const std::string& server, const std::string& id,
                                                   const experiment_config& config,
                                                   const std::vector<std::string>& extra);

}  // namespace probe
