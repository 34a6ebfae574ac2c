// Kernel keepalive, done right: options as users write them ("60s:10s:5"), validated
// against the kernel's own limits, applied to a socket and read back, and the bound
// calculator that says how long a dead peer can stay unnoticed with those options.
//
// The bound follows what Linux does (net/ipv4/tcp_timer.c), not what the option names
// suggest: keepalive probes are only sent on an idle connection; a busy connection is
// bounded by retransmission back-off or TCP_USER_TIMEOUT; and with TCP_USER_TIMEOUT set,
// TCP_KEEPCNT is ignored and the abort happens at the first probe due after the user
// timeout has elapsed.
#pragma once

#include <chrono>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#ifdef _WIN32
#include <winsock2.h>
#endif

namespace deadpeer {

/// Kernel limits for per-socket keepalive options (Linux include/net/tcp.h).
inline constexpr std::chrono::seconds max_keepalive_idle{32767};
inline constexpr std::chrono::seconds max_keepalive_interval{32767};
inline constexpr int max_keepalive_count = 127;
inline constexpr std::chrono::milliseconds max_user_timeout{2147483647};

/// Keepalive options as configured. An empty optional means "leave the system default".
struct keepalive_options {
  bool enabled = true;
  std::optional<std::chrono::seconds> idle;      ///< TCP_KEEPIDLE: silence before first probe
  std::optional<std::chrono::seconds> interval;  ///< TCP_KEEPINTVL: between probes
  std::optional<int> count;                      ///< TCP_KEEPCNT: unanswered probes to abort
  /// TCP_USER_TIMEOUT: how long sent data may stay unacknowledged; 0 turns it off.
  std::optional<std::chrono::milliseconds> user_timeout;

  friend bool operator==(const keepalive_options&, const keepalive_options&) = default;
};

/// Parses `idle:interval:count[:user_timeout]` with units ("60s:10s:5", "1s:1s:10:2500ms"),
/// an empty field keeping the system default ("30m::10"), or "off". Idle and interval
/// must be whole seconds, because the kernel takes seconds. Throws config_error quoting
/// the input and saying which field is wrong and why. The result is validated.
keepalive_options parse_keepalive(std::string_view spec);

/// `base` with every field that `top` sets replaced; `top` being "off" turns keepalive off.
/// Used to let a --keepalive spec refine a preset.
keepalive_options overlay(const keepalive_options& base, const keepalive_options& top);

/// Throws config_error unless every set field is within the kernel's limits:
/// idle and interval 1..32767 s, count 1..127, user timeout 0..2147483647 ms.
void validate(const keepalive_options& options);

/// The canonical spec string, parseable by parse_keepalive ("60s:10s:5", "off").
std::string to_string(const keepalive_options& options);

/// The system-wide values that apply where a socket option is not set.
struct kernel_defaults {
  std::chrono::seconds idle{7200};    ///< net.ipv4.tcp_keepalive_time
  std::chrono::seconds interval{75};  ///< net.ipv4.tcp_keepalive_intvl
  int count = 9;                      ///< net.ipv4.tcp_keepalive_probes
  int retries2 = 15;                  ///< net.ipv4.tcp_retries2
  bool from_system = false;  ///< true when read from /proc, false when these are Linux's defaults
  /// The kernel's timer tick (CONFIG_HZ), which sets how late its timers fire; 0 when
  /// unknown, and then bounds are the nominal arithmetic without timer slack.
  int hz = 0;
};

/// Reads /proc/sys/net/ipv4/tcp_keepalive_{time,intvl,probes} and tcp_retries2. Where a
/// file cannot be read (not Linux, no /proc), Linux's compiled-in defaults are returned
/// with from_system = false. The tick (hz) is the resolution of CLOCK_MONOTONIC_COARSE,
/// which is one jiffy.
kernel_defaults read_kernel_defaults();

/// Fully resolved keepalive settings: what the kernel will actually use.
struct keepalive_settings {
  bool enabled = false;
  std::chrono::seconds idle{7200};
  std::chrono::seconds interval{75};
  int count = 9;
  std::chrono::milliseconds user_timeout{0};  ///< 0: off

  friend bool operator==(const keepalive_settings&, const keepalive_settings&) = default;
};

/// Fills the unset fields of `options` from `defaults`.
keepalive_settings resolve(const keepalive_options& options, const kernel_defaults& defaults);

/// Same settings, as options with every field set.
keepalive_options to_options(const keepalive_settings& settings);

/// A named, documented starting point.
struct keepalive_preset {
  std::string_view name;
  std::string_view rationale;  ///< one line: who it is for and why these numbers
  keepalive_options options;
};

/// linux-default, lan, mobile, iot, aggressive.
std::span<const keepalive_preset> keepalive_presets();

/// The preset with that name; throws config_error listing the known names otherwise.
const keepalive_preset& find_keepalive_preset(std::string_view name);

/// Worst-case time from the peer's death to the kernel aborting the connection.
struct detection_bound {
  /// Idle connection (nothing unacknowledged): nullopt when keepalive is off (never).
  std::optional<std::chrono::milliseconds> idle;
  /// Busy connection (data unacknowledged): user timeout or retransmission back-off.
  std::chrono::milliseconds busy{0};
  std::string idle_arithmetic;  ///< the formula with the numbers filled in
  std::string busy_arithmetic;
};

/// Computes both bounds for resolved settings, the system's tcp_retries2 and the kernel's
/// timer tick. With hz known, every kernel timer is modelled as Linux's timer wheel runs it
/// (kernel/time/timer.c): a timer due in d ticks fires on the next boundary of its wheel
/// level's granularity after that (1 tick below 63 ticks, 8 below 504, 64 below 4032, and
/// 8 times more per level), so at HZ 250 a 1 s keepalive interval is 1024 ms and the first
/// probe can leave up to 36 ms after the idle time. The bound is then the latest the kernel
/// can abort, not the option arithmetic; the arithmetic strings show both terms.
detection_bound compute_bound(const keepalive_settings& settings, const kernel_defaults& kernel);
/// The nominal arithmetic (no timer slack): compute_bound with hz 0.
detection_bound compute_bound(const keepalive_settings& settings, int tcp_retries2);

/// How late the kernel's timer wheel fires a timer armed for `delay` at tick rate `hz`:
/// the latest firing after arming, and the spacing of a timer that re-arms itself from its
/// own callback (keepalive probes), which is exact. Both equal `delay` when hz is 0.
struct timer_wheel_timing {
  std::chrono::milliseconds latest;   ///< delay + granularity of its level + one tick
  std::chrono::milliseconds periodic;  ///< (floor(ticks / granularity) + 1) x granularity
  std::chrono::milliseconds granularity;
};
timer_wheel_timing kernel_timer_timing(std::chrono::milliseconds delay, int hz);

/// The kernel's model timeout for tcp_retries2 = `retries2` (tcp_model_timeout): the sum of
/// the back-off intervals, RTO starting at 200 ms (TCP_RTO_MIN) and doubling up to 120 s
/// (TCP_RTO_MAX). 15 (the default) gives 924.6 s. It is measured from the first
/// retransmission and checked only when a back-off fires, so the connection ends later:
/// compute_bound's busy figure (1044.8 s for 15) is when.
std::chrono::milliseconds retransmission_give_up_time(int retries2);

/// What a user asks the tuner for.
struct tune_request {
  std::chrono::milliseconds detect_within{0};         ///< target worst-case detection
  std::optional<std::chrono::milliseconds> nat_idle;  ///< NAT / load balancer idle timeout
};

/// The tuner's answer: a proposal, or the reason none exists.
struct tune_proposal {
  bool feasible = false;
  std::string reason;  ///< why the target cannot be met (when !feasible)
  keepalive_settings settings;
  detection_bound bound;
  std::vector<std::string> notes;  ///< why each value was chosen
};

/// Proposes keepalive settings whose idle and busy bounds are both within the target,
/// with the idle time below the NAT timeout so keepalive traffic keeps the mapping alive,
/// and a user timeout so busy connections are bounded too.
tune_proposal tune(const tune_request& request);

#ifdef _WIN32
using native_socket = SOCKET;
#else
using native_socket = int;
#endif

/// Applies the set fields of `options` to a TCP socket. Unset fields keep the socket's
/// current values. Linux is the verified platform; the macOS (TCP_KEEPALIVE,
/// TCP_KEEPINTVL, TCP_KEEPCNT) and Windows (SIO_KEEPALIVE_VALS / TCP_KEEP*) paths are
/// compiled but not verified by deadpeer's tests. Returns the first failing call's error.
std::error_code apply_keepalive(native_socket socket, const keepalive_options& options);

/// Reads back what the kernel holds for this socket (getsockopt).
keepalive_settings read_keepalive(native_socket socket, std::error_code& ec);

}  // namespace deadpeer
