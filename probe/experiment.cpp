// The trial loop. One embedded server per configuration (in-process, on its own thread,
// ephemeral ports, a temporary database), one victim process per trial, one fault per
// victim. The server's /events long-poll gives the detection instant in the same
// CLOCK_MONOTONIC as t0, so latency is a subtraction, not an estimate.
#include "experiment.hpp"

#include "child_process.hpp"
#include "connect_faults.hpp"
#include "cli.hpp"
#include "early_reject.hpp"
#include "embedded_server.hpp"
#include "http_client.hpp"
#include "lab.hpp"
#include "noise_faults.hpp"
#include "target.hpp"
#include "teardown_faults.hpp"
#include "wire_observer.hpp"

#include <deadpeer/cause.hpp>
#include <deadpeer/clock.hpp>
#include <deadpeer/detector.hpp>
#include <deadpeer/duration.hpp>
#include <deadpeer/endpoint.hpp>
#include <deadpeer/server.hpp>
#include <deadpeer/store.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/json.hpp>

#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <future>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

namespace probe {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
namespace fs = std::filesystem;
using std::chrono::milliseconds;
using tcp = asio::ip::tcp;

// Where the server is and how to ask it for events.
struct server_access {
  std::string address;                     // what the victim connects to
  std::string control_host = "127.0.0.1";  // where its control API listens
  unsigned short port = 0;
  unsigned short control_port = 0;
  const lab::network* network = nullptr;  // control API lives in the server namespace

  json::object events_after(std::uint64_t since, milliseconds wait) const {
    http_response r;
    auto get = [&] {
      r = http_get(
          control_host, control_port,
          "/events?since=" + std::to_string(since) + "&wait=" + std::to_string(wait.count()),
          wait + std::chrono::seconds(5));
    };
    if (network)
      network->in_server_ns(get);
    else
      get();
    if (r.status != 200)
      throw std::runtime_error("the server's /events answered " + std::to_string(r.status));
    return json::parse(r.body).as_object();
  }
};

// Waits for the end of `client_id`'s connection until `deadline_ns`. nullopt: none.
std::optional<json::object> wait_for_end(const server_access& server, const std::string& client_id,
                                         std::uint64_t& since, std::int64_t deadline_ns) {
  while (!interrupted()) {
    const auto left_ms = (deadline_ns - deadpeer::monotonic_ns()) / 1'000'000;
    if (left_ms <= 0) return std::nullopt;
    const auto body =
        server.events_after(since, milliseconds(std::min<std::int64_t>(left_ms, 500)));
    for (const auto& e : body.at("events").as_array()) {
      const auto& event = e.as_object();
      since = std::max<std::uint64_t>(since, static_cast<std::uint64_t>(event.at("id").as_int64()));
      if (event.at("client_id").as_string() == client_id) return event;
    }
  }
  return std::nullopt;
}

// The newest event id, so a trial only looks at ends after its own start.
std::uint64_t latest_event_id(const server_access& server) {
  return static_cast<std::uint64_t>(server.events_after(0, milliseconds(0)).at("next").as_int64());
}

std::optional<unsigned short> victim_local_port(const server_access& server,
                                                const std::string& client_id) {
  http_response r;
  auto get = [&] { r = http_get(server.control_host, server.control_port, "/connections"); };
  if (server.network)
    server.network->in_server_ns(get);
  else
    get();
  const auto connections = json::parse(r.body);
  for (const auto& c : connections.as_array()) {
    const auto& o = c.as_object();
    if (o.at("client_id").as_string() != client_id) continue;
    const std::string peer(o.at("peer").as_string());
    return static_cast<unsigned short>(std::stoi(peer.substr(peer.rfind(':') + 1)));
  }
  return std::nullopt;
}

// Bytes waiting unread in the victim's receive queue for its connection (Recv-Q).
long unread_bytes(unsigned short victim_port) {
  child_process ss(
      {"ss", "-tnH", "state", "established", "( sport = :" + std::to_string(victim_port) + " )"});
  const auto line = ss.read_line(std::chrono::seconds(5));
  (void)ss.wait(std::chrono::seconds(5));
  if (!line) return 0;
  std::istringstream fields(*line);
  long recv_q = 0;
  fields >> recv_q;
  return recv_q;
}

// heartbeat-server beside probe (build tree or install), else on PATH.
std::string server_executable(const std::string& probe_path) {
  const auto dir = fs::path(probe_path).parent_path();
  for (const auto& candidate :
       {dir / "heartbeat-server", dir / ".." / "heartbeat-server" / "heartbeat-server"})
    if (fs::exists(candidate)) return candidate.lexically_normal().string();
  return "heartbeat-server";
}

// Server-side faults: the server is its own process, the victim is the server, and the
// client's session reports when it noticed (machine-readable "end ..." line).
std::vector<trial_result> run_server_faults(const experiment_config& config, std::int64_t run_id,
                                            int first_trial, const trial_callback& progress,
                                            lab::network* network) {
  deadpeer::event_store store({.path = config.db});
  const auto limit = config.hard_limit();
  const auto probe_path = self_executable();
  const auto server_path = server_executable(probe_path);
  const std::string detector_text = config.heartbeat ? config.detector_description() : "";
  const fs::path dir =
      fs::temp_directory_path() / ("deadpeer-probe-server-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  // The client decides here: the wire to watch is its FIN or RST, on its side.
  std::string wire_why;
  const auto wire = open_wire_observer(network, wire_why, lab_side::victim);
  if (!wire) std::cerr << "probe: the wire is not observed in these trials: " << wire_why << "\n";
  std::vector<trial_result> results;
  for (int i = 0; i < config.trials && !interrupted(); ++i) {
    trial_result r;
    r.trial = first_trial + i;
    const auto listen_address = network ? network->topo().server_addr : "127.0.0.1";
    std::vector<std::string> server_argv =
        network ? network->server_exec_prefix() : std::vector<std::string>{};
    for (const auto& a : std::vector<std::string>{
             server_path, "--listen", listen_address + ":0", "--control", "off", "--db",
             (dir / "server.db").string(), "--heartbeat", config.heartbeat ? "on" : "off",
             "--interval-min", "10ms", "--interval-default",
             deadpeer::format_duration(config.heartbeat.value_or(milliseconds(1000)))})
      server_argv.push_back(a);
    child_process server(server_argv);
    const auto listening = server.wait_for_line("listening on", std::chrono::seconds(10));
    if (!listening) throw std::runtime_error("heartbeat-server did not start: " + server.output());
    const auto port = listening->substr(listening->rfind(':') + 1);

    std::vector<std::string> extra;
    if (config.heartbeat)  // the client's detector is what is measured here
      extra.insert(extra.end(),
                   {"--dead-after", deadpeer::format_duration(config.effective_dead_after())});
    if (const auto k = config.server_keepalive())
      extra.insert(extra.end(), {"--keepalive", deadpeer::to_string(*k)});
    std::unique_ptr<child_process> client_process;
    try {
      client_process = start_steady_client(network, probe_path, listen_address + ":" + port,
                                           "client-" + std::to_string(r.trial), config, extra);
    } catch (const std::runtime_error&) {
      if (interrupted()) break;  // Ctrl-C during warm-up: no trial happened
      throw;
    }
    child_process& client = *client_process;
    bool wire_watched = false;
    const auto& said = client.output();
    auto at = said.rfind("local ", 0) == 0 ? 0 : said.find("\nlocal ");
    if (at != std::string::npos && at > 0) ++at;
    if (wire && at != std::string::npos) {
      const auto text = said.substr(at + 6);
      wire->watch(deadpeer::parse_endpoint(text.substr(0, text.find('\n'))),
                  tcp::endpoint(asio::ip::make_address(listen_address),
                                static_cast<unsigned short>(std::stoi(port))));
      wire_watched = true;
    }

    const auto t0 = deadpeer::monotonic_ns();
    if (config.fault == "server-crash") server.signal(SIGKILL);
    if (config.fault == "server-hang") server.signal(SIGSTOP);
    if (config.fault == "server-cable-pull") network->cable_pull();

    const auto end_line = client.wait_for_line("end cause=", limit);
    std::int64_t detected_ns = 0;
    if (end_line) {
      std::map<std::string, std::string> fields;
      std::istringstream words(end_line->substr(4));
      for (std::string word; words >> word;)
        if (const auto eq = word.find('='); eq != std::string::npos)
          fields[word.substr(0, eq)] = word.substr(eq + 1);
      detected_ns = std::stoll(fields["decided_mono_ns"]);
      r.latency_ms = static_cast<double>(detected_ns - t0) / 1e6;
      r.cause = fields["cause"];
      r.detected_by = fields["detected_by"];
      r.error_number = std::stoi(fields["errno"]);
      r.error_name = std::string(deadpeer::linux_errno_name(r.error_number));
      r.outcome = detected_ns < t0 ? "premature" : "detected";
      r.add_note("silence " + fields["silence_ms"] + " ms (client side)");
      if (wire_watched) record_wire(wire.get(), r, detected_ns);
    } else {
      r.outcome = interrupted() ? "interrupted" : "missed";
      if (!interrupted()) r.add_note("not detected within " + deadpeer::format_duration(limit));
    }
    if (network) network->cable_heal();
    server.signal(SIGKILL);
    client.signal(SIGKILL);
    (void)server.wait(std::chrono::seconds(5));
    (void)client.wait(std::chrono::seconds(5));
    store_trial(store, config, run_id, r, t0, detected_ns, detector_text);
    if (progress) progress(config, r);
    results.push_back(std::move(r));
  }
  store.flush();
  std::error_code ignored;
  fs::remove_all(dir, ignored);
  return results;
}

}  // namespace

std::vector<trial_result> run_experiment(const experiment_config& config, std::int64_t run_id,
                                         int first_trial, const trial_callback& progress) {
  const auto& fault = find_fault(config.fault);
  if (fault.needs_heartbeat && !config.heartbeat)
    throw usage_error("--fault " + config.fault +
                      " needs heartbeats (the server's PING is the unread data); drop "
                      "--heartbeat off");
  if (config.server && fault.needs_lab)
    throw usage_error("--fault " + config.fault +
                      " builds its own network namespaces and runs its own server; drop --server");
  if (config.server && config.fault == "half-close")
    throw usage_error(
        "--fault half-close needs a server started with --on-eof reap; measure it "
        "with the embedded server (drop --server)");

  if (config.target) return run_target_experiment(config, run_id, first_trial, progress);
  if (is_teardown_fault(config.fault))
    return run_teardown_experiment(config, run_id, first_trial, progress);
  if (is_connect_fault(config.fault)) return run_connect_experiment(config, run_id, first_trial, progress);
  if (config.fault == "early-reject")
    return run_early_reject_experiment(config, run_id, first_trial, progress);
  if (config.fault == "lossy" || config.fault == "stall")
    return run_noise_experiment(config, run_id, first_trial, progress);

  std::unique_ptr<lab::network> network;
  if (fault.needs_lab) {
    if (const auto why = lab::unavailable_reason())
      throw std::runtime_error("--fault " + config.fault + " needs the network lab: " + *why);
    network = std::make_unique<lab::network>();
  }
  if (fault.server_side) {
    if (config.server)
      throw usage_error("--fault " + config.fault +
                        " starts its own heartbeat-server; drop --server");
    return run_server_faults(config, run_id, first_trial, progress, network.get());
  }
  std::unique_ptr<embedded_server> embedded;
  server_access server;
  server.network = network.get();
  if (config.server) {
    server.address = config.server->address().to_string();
    server.control_host = server.address;
    server.port = config.server->port();
    server.control_port =
        config.server_control_port.value_or(static_cast<unsigned short>(config.server->port() + 1));
  } else {
    embedded = std::make_unique<embedded_server>(config, network.get());
    server.address = network ? network->topo().server_addr : "127.0.0.1";
    server.port = embedded->port();
    server.control_port = embedded->control_port();
  }

  deadpeer::event_store store({.path = config.db});
  const std::string detector_text = config.heartbeat ? config.detector_description() : "";
  const auto limit = config.hard_limit();
  const auto probe_path = self_executable();
  std::string wire_why;
  const auto wire = open_wire_observer(network.get(), wire_why);
  if (!wire) std::cerr << "probe: the wire is not observed in these trials: " << wire_why << "\n";
  std::vector<trial_result> results;

  for (int i = 0; i < config.trials && !interrupted(); ++i) {
    trial_result r;
    r.trial = first_trial + i;
    const std::string id = "victim-" + std::to_string(::getpid()) + "-" + std::to_string(run_id) +
                           "-" + std::to_string(r.trial) + "-" + config.fault;
    std::uint64_t since = latest_event_id(server);
    std::unique_ptr<child_process> victim_process;
    try {
      victim_process = start_steady_client(
          network.get(), probe_path,
          deadpeer::format_endpoint(
              tcp::endpoint(asio::ip::make_address(server.address), server.port)),
          id, config, {});
    } catch (const std::runtime_error&) {
      if (interrupted()) break;  // Ctrl-C during warm-up: no trial happened
      throw;
    }
    child_process& victim = *victim_process;
    std::optional<unsigned short> victim_port;
    if (config.fault == "crash-rst") {
      // Freeze the victim, let the server's next PING land unread, then kill it.
      victim_port = victim_local_port(server, id);
      victim.signal(SIGSTOP);
      const auto wait_until = deadpeer::monotonic_ns() + 5'000'000'000;
      while (victim_port && unread_bytes(*victim_port) == 0 &&
             deadpeer::monotonic_ns() < wait_until)
        std::this_thread::sleep_for(milliseconds(5));
    }

    bool wire_watched = false;
    if (wire) {
      if (!victim_port) victim_port = victim_local_port(server, id);
      if (victim_port) {
        const auto victim_address = network ? network->topo().victim_addr : "127.0.0.1";
        wire->watch(tcp::endpoint(asio::ip::make_address(server.address), server.port),
                    tcp::endpoint(asio::ip::make_address(victim_address), *victim_port));
        wire_watched = true;
      }
    }

    const auto t0 = deadpeer::monotonic_ns();
    const auto heal_ns = inject_fault(config.fault, network.get(), victim);

    const auto event = wait_for_end(server, id, since, t0 + limit.count() * 1'000'000);
    if (event) {
      const auto decided = event->at("decided_mono_ns").as_int64();
      r.latency_ms = static_cast<double>(decided - t0) / 1e6;
      r.detected_by = std::string(event->at("detected_by").as_string());
      r.cause = std::string(event->at("cause").as_string());
      r.error_number = static_cast<int>(event->at("errno").as_int64());
      r.error_name = std::string(event->at("error").as_string());
      r.outcome = decided < t0 ? "premature" : "detected";
      // The server's own view: silence from the last byte heard to its verdict.
      std::ostringstream silence;
      silence << "silence " << std::fixed << std::setprecision(1)
              << event->at("silence_ms").to_number<double>() << " ms";
      r.add_note(silence.str());
      if (heal_ns != 0)
        r.add_note("detected " + std::to_string((decided - heal_ns) / 1'000'000) +
                   " ms after healing");
      if (wire_watched) record_wire(wire.get(), r, decided);
    } else {
      r.outcome = interrupted() ? "interrupted" : "missed";
      if (!interrupted()) r.add_note("not detected within " + deadpeer::format_duration(limit));
    }

    // Clean up: heal the network, end the victim (SIGKILL ends a stopped one too).
    if (network) {
      network->cable_heal();
      network->link_up();
    }
    victim.signal(SIGKILL);
    (void)victim.wait(std::chrono::seconds(5));

    store_trial(store, config, run_id, r, t0, event ? event->at("decided_mono_ns").as_int64() : 0,
                detector_text);
    if (progress) progress(config, r);
    results.push_back(std::move(r));
  }
  store.flush();
  return results;
}

}  // namespace probe
