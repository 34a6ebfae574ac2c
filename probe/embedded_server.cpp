// The embedded server and the steady victim (embedded_server.hpp says what is decided).
#include "embedded_server.hpp"

#include "child_process.hpp"
#include "http_client.hpp"
#include "lab.hpp"

#include <deadpeer/duration.hpp>

#include <boost/asio/post.hpp>
#include <boost/json.hpp>

#include <unistd.h>

#include <future>
#include <stdexcept>

namespace probe {

namespace asio = boost::asio;
namespace json = boost::json;
namespace fs = std::filesystem;
using std::chrono::milliseconds;
using tcp = asio::ip::tcp;

// Arrivals kept per victim: far more than a trial brings (10000 are 83 min at 500 ms), 80 kB.
constexpr std::size_t embedded_record_arrivals = 10000;

embedded_server::embedded_server(const experiment_config& config, const lab::network* network,
                                 std::function<void(const std::string&)> on_event)
    : dir_(fs::temp_directory_path() /
           ("deadpeer-probe-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++))),
      network_(network) {
  fs::create_directories(dir_);
  deadpeer::server_options o;
  o.listen = {asio::ip::make_address(address()), 0};
  o.control = tcp::endpoint{asio::ip::make_address("127.0.0.1"), 0};
  o.db_path = config.db.empty() ? (dir_ / "server.db").string() : config.db;
  o.record_arrivals = embedded_record_arrivals;
  o.keepalive = config.server_keepalive();
  o.heartbeat = config.heartbeat.has_value();
  const auto interval = config.heartbeat.value_or(milliseconds(1000));
  o.min_interval = std::min(milliseconds(10), interval);
  o.default_interval = interval;
  o.max_interval = interval;  // the victim asks for exactly this; dead-after must exceed it
  o.detector = config.detector_settings();
  o.reap_interval = embedded_reap_interval;
  o.end_on_eof = config.fault != "half-close";
  if (on_event) o.on_event = std::move(on_event);
  auto create = [&] { server_ = std::make_unique<deadpeer::server>(io_, o); };
  // Inside the lab the listener (and the control API) belong to the server namespace.
  if (network)
    network->in_server_ns(create);
  else
    create();
  server_->start();
  port_ = server_->local_endpoint().port();
  control_port_ = server_->control_endpoint()->port();
  thread_ = std::thread([this] { io_.run(); });
}

embedded_server::~embedded_server() {
  std::promise<void> stopped;
  asio::post(io_, [&] { server_->stop([&] { stopped.set_value(); }); });
  (void)stopped.get_future().wait_for(std::chrono::seconds(10));
  io_.stop();
  thread_.join();
  server_.reset();
  std::error_code ignored;
  fs::remove_all(dir_, ignored);
}

std::string embedded_server::address() const {
  return network_ ? network_->topo().server_addr : std::string("127.0.0.1");
}

json::value embedded_server::connection(const std::string& client_id) const {
  http_response r;
  auto get = [&] { r = http_get("127.0.0.1", control_port_, "/connections", milliseconds(5000)); };
  try {
    if (network_)
      network_->in_server_ns(get);
    else
      get();
    if (r.status != 200) return nullptr;
    const auto list = json::parse(r.body);
    for (const auto& c : list.as_array())
      if (c.as_object().at("client_id").as_string() == client_id) return c;
  } catch (const std::exception&) {
  }
  return nullptr;
}

std::unique_ptr<child_process> start_steady_client(const lab::network* network,
                                                   const std::string& probe_path,
                                                   const std::string& server, const std::string& id,
                                                   const experiment_config& config,
                                                   const std::vector<std::string>& extra) {
  std::vector<std::string> argv =
      network ? network->victim_exec_prefix() : std::vector<std::string>{};
  for (const auto& a : std::vector<std::string>{
           probe_path, "connect", "--server", server, "--id", id, "--verbose", "--lab-signals",
           "--heartbeat", config.heartbeat ? deadpeer::format_duration(*config.heartbeat) : "off"})
    argv.push_back(a);
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto client = std::make_unique<child_process>(argv);
  if (!client->wait_for_line("connected to", std::chrono::seconds(10)))
    throw std::runtime_error("the client " + id + " did not connect to " + server +
                             "; it printed: " + client->output());
  if (config.heartbeat)
    for (int beats = 0; beats < 3; ++beats)
      if (!client->wait_for_line("rtt ", *config.heartbeat * 5 + std::chrono::seconds(2)))
        throw std::runtime_error("the client " + id + " never became steady: " + client->output());
  return client;
}

}  // namespace probe
