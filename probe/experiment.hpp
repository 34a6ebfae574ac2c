// Fault experiments: start (or reach) a heartbeat-server, run a victim process that
// heartbeats until steady, inject one real fault at t0 (CLOCK_MONOTONIC), and learn from
// the server's /events long-poll when and how the death was noticed. Every trial is
// stored, including the ones that were missed or noticed too early.
//
// Faults are injected right after a heartbeat exchange (or right after the handshake
// when heartbeats are off), so the measured latency is the full detection time — the
// worst case the settings allow — and can be held against the computed bound.
#pragma once

#include <deadpeer/connect_bound.hpp>
#include <deadpeer/detector.hpp>
#include <deadpeer/keepalive.hpp>
#include <deadpeer/store.hpp>
#include <deadpeer/teardown_bound.hpp>

#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <memory>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace probe {

namespace lab {
class network;
}

/// What one fault is, for --help and for planning a trial.
struct fault_kind {
  std::string_view name;
  std::string_view description;
  bool needs_lab;        ///< network namespaces (CAP_NET_ADMIN)
  bool needs_heartbeat;  ///< cannot be measured without heartbeats
  bool server_side;      ///< the fault hits the server; the client's session must notice
};
const std::vector<fault_kind>& fault_kinds();
const fault_kind& find_fault(std::string_view name);  // throws usage_error

/// Target mode: a server we did not write, measured from outside (sock_diag).
struct target_settings {
  std::string command;  ///< --target-cmd: started by probe in the lab's server namespace
  std::optional<boost::asio::ip::tcp::endpoint> address;  ///< --target: already listening
  unsigned short port = 0;  ///< --target-port: where --target-cmd listens
  std::string greeting = "raw";  ///< what the victim says (greeting.hpp)
  /// --target-side client: the target is a client program (in the victim namespace) that
  /// connects to probe's answering server; {host} and {port} in the command are replaced.
  bool client_side = false;
};

struct experiment_config {
  std::string fault = "crash";
  int trials = 5;
  std::optional<std::chrono::milliseconds> heartbeat = std::chrono::milliseconds(500);
  std::string detector = "fixed";                       ///< fixed or phi
  std::optional<std::chrono::milliseconds> dead_after;  ///< fixed; default 3 x heartbeat
  double phi_threshold = 8.0;
  std::optional<deadpeer::keepalive_options> keepalive;  ///< on the server's sockets
  std::optional<std::chrono::milliseconds> user_timeout;
  std::optional<boost::asio::ip::tcp::endpoint> server;  ///< external; else embedded
  std::optional<unsigned short> server_control_port;     ///< its control API port
  std::optional<std::chrono::milliseconds> limit;        ///< per-trial hard limit
  std::optional<target_settings> target;                ///< measure this instead of deadpeer
  /// Connect faults: net.ipv4.tcp_syn_retries set in the victim namespace (--syn-retries).
  int syn_retries = 3;
  /// Connect faults: the SYN retry sysctls as read in the lab (set by the trial loop);
  /// nullopt: this namespace's tcp_syn_linear_timeouts stands in for the lab's.
  std::optional<deadpeer::syn_retry_settings> syn_settings;
  /// Teardown faults (teardown_faults.hpp): net.ipv4.tcp_orphan_retries (fin-drop) and
  /// tcp_fin_timeout (fin-wait2) set in the server namespace (--orphan-retries, --fin-timeout).
  int orphan_retries = 2;
  std::chrono::milliseconds fin_timeout{2000};
  /// Teardown faults: the settings as read in the lab and the connection's RTO (set by the
  /// trial loop); nullopt: this namespace's sysctls with the two above.
  std::optional<deadpeer::teardown_settings> teardown;
  /// early-reject (early_reject.hpp): how the server closes after its early answer,
  /// naive (close() with the body unread: RST) or graceful (FIN, drain, close).
  std::string server_close = "naive";
  // lossy and stall (noise_faults.hpp): a live victim under noise; any verdict is false.
  std::chrono::milliseconds duration{10'000};  ///< --duration: how long each trial lasts
  int loss_basis_points = 500;                 ///< lossy: drop chance each way, 1/100 % (500 = 5%)
  std::chrono::milliseconds pause_min{200}, pause_max{2000};  ///< stall: pause lengths
  std::chrono::milliseconds pause_gap{2000};  ///< stall: mean time from one pause to the next
  std::uint64_t seed = 1;                     ///< stall: the pause schedule's seed
  std::string db = "results.db";
  bool json = false;

  /// Canonical text of the settings under test (same text = same configuration).
  std::string config_key() const;
  /// Keepalive options as the server applies them (keepalive + user timeout).
  std::optional<deadpeer::keepalive_options> server_keepalive() const;
  std::chrono::milliseconds effective_dead_after() const;
  /// The server's detector for these settings, and its description.
  deadpeer::detector_config detector_settings() const;
  std::string detector_description() const;
  /// The worst-case detection time the settings promise for this fault; nullopt: none.
  std::optional<std::chrono::milliseconds> bound() const;
  std::chrono::milliseconds hard_limit() const;
};

/// Outcome of one trial, as stored.
struct trial_result {
  int trial = 0;
  std::string outcome;  ///< detected, missed, premature
  double latency_ms = -1;
  std::string detected_by, cause, error_name;
  int error_number = 0;
  std::string note;
  std::int64_t wire_mono_ns = 0;  ///< the detecting side's FIN/RST on the wire; 0: none seen
  std::string wire_segment;       ///< "FIN", "RST", "none", or "" when the wire was not observed
  std::string details;  ///< the fault's own figures, a JSON object ("" for none)

  void add_note(const std::string& text) { note += (note.empty() ? "" : "; ") + text; }
};

/// The embedded server's reaper period (half-close is noticed within two of them).
inline constexpr std::chrono::milliseconds embedded_reap_interval{100};
/// A FIN or RST on loopback or the lab's veth: a round trip plus scheduling.
inline constexpr std::chrono::milliseconds kernel_notice_bound{20};
/// How late the server's PING can leave after it falls due: its event loop's 1 ms timing
/// wheel and the wake-up.
inline constexpr std::chrono::milliseconds server_ping_slack{2};
/// A target's trial ends `missed` after this, unless --limit says otherwise.
inline constexpr std::chrono::milliseconds target_default_limit{60'000};

/// Called after each trial (progress).
using trial_callback = std::function<void(const experiment_config&, const trial_result&)>;

/// Runs `trials` trials of one configuration (starting at index `first_trial`) under run
/// `run_id` and stores them. Throws usage_error for impossible combinations and
/// std::runtime_error when the environment fails (server, lab, victim).
std::vector<trial_result> run_experiment(const experiment_config& config, std::int64_t run_id,
                                         int first_trial, const trial_callback& progress);

/// Inserts the runs row for this invocation and returns its id.
std::int64_t begin_run(const std::string& db, const std::string& command,
                       const std::string& config_json);

/// Trials already stored for this configuration and fault (for resuming sweeps).
int stored_trials(const std::string& db, const std::string& config_key, const std::string& fault);

/// For a lab fault without CAP_NET_ADMIN: runs `probe <command> <args>` again inside a new
/// user, network and mount namespace where this user is root (unshare, as lab.md
/// describes). Returns only when that is not possible (already tried, or no unshare);
/// the caller then reports why the lab is unavailable.
void run_again_in_user_namespace(const std::string& command, const std::vector<std::string>& args);

/// Stores one trial (the settings, the fault instant and the detection instant).
void store_trial(deadpeer::event_store& store, const experiment_config& config, std::int64_t run_id,
                 const trial_result& r, std::int64_t t0, std::int64_t detected_ns,
                 const std::string& detector_text);

/// This program's own path (to run it again as a victim).
std::string self_executable();

class child_process;
/// Injects a victim-side fault (crash, crash-rst, linger0, hang, half-close, cable-pull,
/// link-down, reboot) on `victim`, or on the lab for the network ones. Returns the instant
/// the path was healed (reboot), else 0.
std::int64_t inject_fault(const std::string& fault, lab::network* network, child_process& victim);

class wire_observer;
/// The wire observer of one side of the lab (its veth end, in its namespace: the side
/// whose FIN or RST is watched) or of lo when there is no lab; nullptr when packet sockets
/// are not permitted (`why` says so).
enum class lab_side { server, victim };
std::unique_ptr<wire_observer> open_wire_observer(const lab::network* network, std::string& why,
                                                  lab_side side = lab_side::server);
/// After a decision at `decided_ns`: waits up to 200 ms for the FIN or RST the observer
/// watches and records it in `r` (wire_segment "none" when there was none).
void record_wire(wire_observer* wire, trial_result& r, std::int64_t decided_ns);

/// True once SIGINT or SIGTERM arrived; experiments stop between steps and clean up.
bool interrupted();
void install_interrupt_handler();

}  // namespace probe
