// The settings of an experiment and what they promise: the faults probe knows, the
// canonical key that identifies a configuration (how sweeps resume), the server's
// detector, and the worst-case detection time each fault allows (the bound every trial is
// held against).
#include "experiment.hpp"

#include "cli.hpp"
#include "connect_faults.hpp"
#include "noise_faults.hpp"
#include "teardown_faults.hpp"

#include <deadpeer/detector.hpp>
#include <deadpeer/engine.hpp>
#include <deadpeer/duration.hpp>
#include <deadpeer/keepalive.hpp>

#include <chrono>
#include <string>

namespace probe {

using std::chrono::milliseconds;

const std::vector<fault_kind>& fault_kinds() {
  static const std::vector<fault_kind> kinds{
      {"crash", "SIGKILL the victim: its kernel sends FIN", false, false, false},
      {"crash-rst", "SIGKILL the victim with unread data in its receive buffer: RST", false, true,
       false},
      {"linger0", "the victim closes with SO_LINGER {1,0}: RST", false, false, false},
      {"hang", "SIGSTOP the victim: its kernel still ACKs, the application is dead", false, false,
       false},
      {"half-close", "the victim shuts down its sending side and goes quiet (CLOSE_WAIT)", false,
       false, false},
      {"cable-pull", "nftables drops everything to and from the victim's namespace", true, false,
       false},
      {"link-down", "the victim's veth link goes down", true, false, false},
      {"reboot",
       "drop, destroy the victim's socket without a FIN, heal: the next segment meets RST", true,
       false, false},
      {"server-crash", "SIGKILL a heartbeat-server process; the client must notice", false, false,
       true},
      {"server-hang", "SIGSTOP a heartbeat-server process; the client must notice", false, false,
       true},
      {"server-cable-pull",
       "cut the server's network (the client's keepalive or heartbeat must "
       "notice)",
       true, false, true},
      {"lossy",
       "a live victim under random loss both ways (nftables, --loss) for --duration: any verdict "
       "is false",
       true, false, false},
      {"stall",
       "a live victim paused at random (SIGSTOP/SIGCONT, --pause, --pause-gap, --seed) for "
       "--duration, like a GC: any verdict is false",
       false, false, false},
      {"early-reject",
       "an upload answered 413 and closed while the client still sends its body "
       "(--server-close naive|graceful): what the client reads, on loopback",
       false, false, true},
      {"syn-drop",
       "the victim's SYNs are dropped on their way in: its connect() fails after its SYN "
       "retries (--syn-retries)",
       true, false, false},
      {"synack-drop",
       "the server's SYN-ACKs are dropped: both sides retry, the victim's connect() fails",
       true, false, false},
      {"backlog-full",
       "a listener that never accepts, its queue full: new SYNs are dropped, connect() fails",
       true, false, false},
      {"fin-drop",
       "the server closes and the victim's ACK of its FIN is lost: the orphan in FIN_WAIT1 "
       "retransmits its FIN until tcp_orphan_retries (--orphan-retries) end it",
       true, false, false},
      {"fin-wait2",
       "the server closes, the victim acknowledges but its own FIN is lost: FIN_WAIT2 until "
       "tcp_fin_timeout (--fin-timeout)",
       true, false, false},
      {"time-wait",
       "a complete close by the server: TIME_WAIT for its fixed 60s (TCP_TIMEWAIT_LEN)", true,
       false, false},
  };
  return kinds;
}

const fault_kind& find_fault(std::string_view name) {
  std::string known;
  for (const auto& f : fault_kinds()) {
    if (f.name == name) return f;
    known += (known.empty() ? "" : ", ") + std::string(f.name);
  }
  throw usage_error("unknown fault \"" + std::string(name) + "\" (known: " + known + ")");
}

std::optional<deadpeer::keepalive_options> experiment_config::server_keepalive() const {
  if (!keepalive && !user_timeout) return std::nullopt;
  auto k = keepalive.value_or(deadpeer::keepalive_options{});
  if (user_timeout) k.user_timeout = user_timeout;
  return k;
}

milliseconds experiment_config::effective_dead_after() const {
  if (dead_after) return *dead_after;
  return heartbeat ? *heartbeat * 3 : milliseconds(0);
}

std::string experiment_config::config_key() const {
  if (is_connect_fault(fault)) return connect_config_key(*this);
  if (is_teardown_fault(fault)) return teardown_config_key(*this);
  if (target)
    return "target=" +
           (target->command.empty() ? target->address->address().to_string() + ":" +
                                          std::to_string(target->address->port())
                                    : target->command) +
           " greeting=" + target->greeting + (target->client_side ? " side=client" : "");
  // early-reject has no timers under test: the server's close is the whole configuration.
  if (fault == "early-reject") return "server_close=" + server_close;
  std::string key = "keepalive=" + (keepalive ? deadpeer::to_string(*keepalive) : "system");
  key += " user_timeout=" + (user_timeout ? deadpeer::format_duration(*user_timeout) : "none");
  key += " heartbeat=" + (heartbeat ? deadpeer::format_duration(*heartbeat) : "off");
  if (heartbeat) {
    key += " detector=" + detector;
    if (detector == "phi")
      key += " phi=" + std::to_string(phi_threshold);
    else if (detector == "fixed")
      key += " dead_after=" + deadpeer::format_duration(effective_dead_after());
  }
  if (fault == "lossy" || fault == "stall") key += " " + noise_key(*this);
  if (server) key += " server=external";
  return key;
}

deadpeer::detector_config experiment_config::detector_settings() const {
  const auto interval = heartbeat.value_or(milliseconds(1000));
  if (detector == "adaptive") {
    deadpeer::adaptive_detector_config a;
    a.interval = interval;
    return a;
  }
  if (detector == "phi") {
    deadpeer::phi_detector_config p;
    p.interval = interval;
    p.threshold = phi_threshold;
    return p;
  }
  return deadpeer::fixed_detector_config{
      .interval = interval, .multiplier = 3.0, .timeout = effective_dead_after()};
}

std::string experiment_config::detector_description() const {
  return deadpeer::make_detector(detector_settings(), std::chrono::steady_clock::now())->describe();
}

std::optional<milliseconds> experiment_config::bound() const {
  if (target) return std::nullopt;  // its settings are what is being found out
  if (is_teardown_fault(fault)) return teardown_bound_of(*this).latest;  // teardown_faults.hpp
  if (fault == "syn-drop" || fault == "synack-drop" || fault == "backlog-full")
    return connect_bound_of(*this).latest;  // connect_faults.hpp
  if (fault == "early-reject") return std::nullopt;
  if (fault == "lossy" || fault == "stall") return std::nullopt;
  const auto defaults = deadpeer::read_kernel_defaults();
  const auto k =
      deadpeer::resolve(server_keepalive().value_or(deadpeer::keepalive_options{}), defaults);
  const auto kernel = deadpeer::compute_bound(k, defaults);
  std::optional<milliseconds> heartbeat_bound;
  if (heartbeat) {
    // The silence the detector promises (what WELCOME announces: fixed, its timeout; phi, its
    // fresh verdict; adaptive, its cap) after the last arrival, which comes before the fault
    // or at most a round trip after it (a frame in flight). A fixed timeout is exact, so a
    // round trip and scheduling are all the slack it needs; phi's verdict depends on the
    // history it learned, so it gets one interval more.
    heartbeat_bound = deadpeer::dead_after_for(detector_settings(), *heartbeat) +
                      (detector == "phi" ? *heartbeat : kernel_notice_bound);
  }
  auto smallest = [](std::optional<milliseconds> a, std::optional<milliseconds> b) {
    if (!a) return b;
    if (!b) return a;
    return std::optional(std::min(*a, *b));
  };
  if (fault == "crash" || fault == "crash-rst" || fault == "linger0" || fault == "server-crash")
    return kernel_notice_bound;
  if (fault == "server-hang") return heartbeat_bound;
  if (fault == "half-close") return embedded_reap_interval * 2;  // ring bucket + one sweep
  if (fault == "hang") return heartbeat_bound;  // keepalive cannot see a hung process
  if (fault == "reboot") {
    // The first segment after healing meets RST: a keepalive probe or a PING.
    std::optional<milliseconds> keepalive_next;
    if (k.enabled)
      keepalive_next = deadpeer::kernel_timer_timing(k.idle, defaults.hz).latest +
                       deadpeer::kernel_timer_timing(k.interval, defaults.hz).latest;
    return smallest(keepalive_next, heartbeat ? std::optional(*heartbeat * 2) : std::nullopt);
  }
  // cable-pull, link-down, server-cable-pull: idle when heartbeats are off; with heartbeats the
  // server's next PING is the first segment left unacknowledged, and the kernel's busy bound
  // counts from it. Wherever the fault falls, the server's next frame leaves within 1.2
  // intervals of its last one (docs/protocol.md §6: at most 1.2 I after an answer, 1.1 I
  // after a PING) and at most that long after the fault.
  if (heartbeat) return smallest(heartbeat_bound, *heartbeat * 6 / 5 + server_ping_slack + kernel.busy);
  return kernel.idle;
}

milliseconds experiment_config::hard_limit() const {
  if (limit) return *limit;
  if (target) return target_default_limit;
  const auto b = bound();
  if (!b) return milliseconds(10'000);
  return std::min(*b * 3 + milliseconds(10'000), milliseconds(300'000));
}

}  // namespace probe
