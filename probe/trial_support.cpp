// What every trial loop shares: injecting a victim-side fault, the wire observer around
// the decision, storing a trial, the run row, resuming, Ctrl-C, and running probe again
// inside a user namespace when the lab needs privileges it lacks.
#include "experiment.hpp"

#include "child_process.hpp"
#include "lab.hpp"
#include "wire_observer.hpp"

#include <deadpeer/clock.hpp>
#include <deadpeer/store.hpp>

#include <sqlite3.h>

#include <signal.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <thread>

namespace probe {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

std::atomic<bool> interrupt_flag{false};

}  // namespace

std::unique_ptr<wire_observer> open_wire_observer(const lab::network* network, std::string& why,
                                                  lab_side side) {
  why = wire_unavailable_reason();
  if (!why.empty()) return nullptr;
  std::unique_ptr<wire_observer> w;
  const bool server = side == lab_side::server;
  auto open = [&] {
    w = std::make_unique<wire_observer>(!network ? "lo"
                                        : server ? network->topo().server_if
                                                 : network->topo().victim_if);
  };
  try {
    if (network && server)
      network->in_server_ns(open);
    else if (network)
      network->in_victim_ns(open);
    else
      open();
  } catch (const std::exception& e) {
    why = e.what();
  }
  return w;
}

void record_wire(wire_observer* wire, trial_result& r, std::int64_t decided_ns) {
  if (wire == nullptr || decided_ns == 0) return;
  // The close follows the decision at once; allow for the scheduler before saying none.
  const auto until = deadpeer::monotonic_ns() + 200'000'000;
  std::optional<wire_segment> seen;
  while (!(seen = wire->first_seen()) && deadpeer::monotonic_ns() < until)
    std::this_thread::sleep_for(milliseconds(2));
  if (!seen) {
    r.wire_segment = "none";
    r.add_note(
        "wire: no FIN or RST from the detecting side crossed the interface (none is sent "
        "after a reset from the peer; a cut cable or a link that is down stops it)");
    return;
  }
  r.wire_mono_ns = seen->mono_ns;
  r.wire_segment = seen->reset ? "RST" : "FIN";
  std::ostringstream text;
  text << "wire: " << r.wire_segment << " " << std::showpos << std::fixed << std::setprecision(2)
       << static_cast<double>(seen->mono_ns - decided_ns) / 1e6 << " ms from the decision";
  r.add_note(text.str());
}

std::int64_t inject_fault(const std::string& fault, lab::network* network, child_process& victim) {
  if (fault == "crash" || fault == "crash-rst") {
    victim.signal(SIGKILL);
  } else if (fault == "linger0") {
    victim.signal(SIGUSR1);
  } else if (fault == "hang") {
    victim.signal(SIGSTOP);
  } else if (fault == "half-close") {
    victim.signal(SIGUSR2);
  } else if (fault == "cable-pull") {
    network->cable_pull();
  } else if (fault == "link-down") {
    network->link_down();
  } else if (fault == "reboot") {
    network->cable_pull();
    network->destroy_victim_sockets();
    victim.signal(SIGKILL);
    (void)victim.wait(std::chrono::seconds(5));
    network->cable_heal();
    return deadpeer::monotonic_ns();
  }
  return 0;
}

std::string self_executable() {
  std::error_code ec;
  const auto path = fs::read_symlink("/proc/self/exe", ec);
  if (ec) throw std::runtime_error("cannot find the probe executable: " + ec.message());
  return path.string();
}

void run_again_in_user_namespace(const std::string& command, const std::vector<std::string>& args) {
  constexpr const char* marker = "DEADPEER_IN_USER_NAMESPACE";
  if (::geteuid() == 0 || std::getenv(marker) != nullptr) return;
  std::vector<std::string> argv{
      "unshare", "--user", "--net", "--mount", "--map-root-user", "sh", "-c",
      // lo for the embedded server, a private /run for ip netns.
      "ip link set lo up && mount -t tmpfs tmpfs /run && exec \"$0\" \"$@\"", self_executable(),
      command};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> raw;
  for (auto& a : argv)
    raw.push_back(a.data());
  raw.push_back(nullptr);
  ::setenv(marker, "1", 1);
  std::cerr << "probe: no CAP_NET_ADMIN here; running again inside a new user and network "
               "namespace (unshare --user --net --mount --map-root-user)"
            << std::endl;
  ::execvp("unshare", raw.data());
  ::unsetenv(marker);  // exec failed: the caller reports why the lab is unavailable
}

bool interrupted() {
  return interrupt_flag.load();
}

void install_interrupt_handler() {
  // The lab's handlers do the work: the first SIGINT/SIGTERM sets the flag, a second one
  // removes the labs and ends probe.
  lab::defer_interrupts(&interrupt_flag);
  child_process::stop_waiting_when(&interrupt_flag);
}

std::int64_t begin_run(const std::string& db, const std::string& command,
                       const std::string& config_json) {
  deadpeer::event_store store({.path = db});
  utsname u{};
  ::uname(&u);
  return store.begin_run(
      {.started_unix_ms = std::chrono::duration_cast<milliseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count(),
       .version = DEADPEER_VERSION,
       .host = std::string(u.nodename) + " " + u.release,
       .command = command,
       .config_json = config_json});
}

int stored_trials(const std::string& db, const std::string& config_key, const std::string& fault) {
  if (!fs::exists(db)) return 0;
  sqlite3* handle = nullptr;
  if (sqlite3_open_v2(db.c_str(), &handle, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    sqlite3_close(handle);
    return 0;
  }
  int count = 0;
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(handle, "SELECT count(*) FROM trials WHERE config_key = ? AND fault = ?",
                         -1, &stmt, nullptr) == SQLITE_OK) {
    sqlite3_bind_text(stmt, 1, config_key.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 2, fault.c_str(), -1, SQLITE_TRANSIENT);
    if (sqlite3_step(stmt) == SQLITE_ROW) count = sqlite3_column_int(stmt, 0);
  }
  sqlite3_finalize(stmt);
  sqlite3_close(handle);
  return count;
}

void store_trial(deadpeer::event_store& store, const experiment_config& config, std::int64_t run_id,
                 const trial_result& r, std::int64_t t0, std::int64_t detected_ns,
                 const std::string& detector_text) {
  const auto bound = config.bound();
  deadpeer::trial_record t;
  t.run_id = run_id;
  t.trial = r.trial;
  t.fault = config.fault;
  t.config_key = config.config_key();
  t.keepalive = config.target      ? "target"
                : config.keepalive ? deadpeer::to_string(*config.keepalive)
                                   : "system";
  t.heartbeat_interval_ms = config.heartbeat && !config.target ? config.heartbeat->count() : 0;
  t.detector = detector_text;
  t.user_timeout_ms = config.user_timeout ? config.user_timeout->count() : 0;
  t.bound_ms = bound ? bound->count() : -1;
  t.fault_mono_ns = t0;
  t.detected_mono_ns = detected_ns;
  t.latency_ms = r.latency_ms < 0 ? -1 : static_cast<std::int64_t>(r.latency_ms);
  t.latency_ms_exact = r.latency_ms;
  t.detected_by = r.detected_by;
  t.cause = r.cause;
  t.error_number = r.error_number;
  t.error_name = r.error_name;
  t.outcome = r.outcome;
  t.note = r.note;
  t.wire_mono_ns = r.wire_mono_ns;
  t.wire_segment = r.wire_segment;
  t.details = r.details;
  store.record(std::move(t));
}

}  // namespace probe
