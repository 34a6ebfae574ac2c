// Keepalive options as users write them, the kernel's limits, presets and system
// defaults. Validation happens here, before any socket exists, so a wrong value is a
// start-up error with a message rather than an EINVAL from setsockopt much later.
#include <deadpeer/keepalive.hpp>

#include <deadpeer/config_error.hpp>
#include <deadpeer/duration.hpp>

#include <array>
#include <charconv>
#include <ctime>
#include <fstream>

namespace deadpeer {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

[[noreturn]] void fail_spec(std::string_view spec, const std::string& why) {
  throw config_error("invalid keepalive \"" + std::string(spec) + "\": " + why +
                     " (expected idle:interval:count[:user_timeout], e.g. 60s:10s:5 or "
                     "1s:1s:10:2500ms; an empty field keeps the system default; or \"off\")");
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

// Idle and interval: a duration whose value is whole seconds (the kernel's unit).
seconds parse_whole_seconds(std::string_view spec, std::string_view field, std::string_view text) {
  std::string why;
  const auto d = try_parse_duration(text, why);
  if (!d) fail_spec(spec, std::string(field) + " \"" + std::string(text) + "\": " + why);
  if (d->count() % 1000 != 0)
    fail_spec(spec, std::string(field) + " \"" + std::string(text) +
                        "\" is not a whole number of seconds; the kernel takes " +
                        std::string(field) + " in seconds");
  return std::chrono::duration_cast<seconds>(*d);
}

int parse_count(std::string_view spec, std::string_view text) {
  int value = 0;
  const auto* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec == std::errc::result_out_of_range)
    fail_spec(spec, "count \"" + std::string(text) + "\" is out of range 1..127");
  if (ec != std::errc() || ptr != end)
    fail_spec(spec, "count \"" + std::string(text) + "\" is not a plain number of probes");
  return value;
}

std::string format_seconds(seconds s) {
  return format_duration(milliseconds(s));
}

// Reads one integer from a /proc/sys file; nullopt when absent or unparsable.
std::optional<long> read_proc_integer(const char* path) {
  std::ifstream in(path);
  long value = 0;
  if (in >> value) return value;
  return std::nullopt;
}

// The first limit `o` breaks, in words; nullopt when it is within the kernel's limits.
std::optional<std::string> limit_problem(const keepalive_options& o) {
  if (o.idle && (*o.idle < seconds(1) || *o.idle > max_keepalive_idle))
    return "idle " + format_seconds(*o.idle) +
           " is outside the kernel's range 1s..32767s (TCP_KEEPIDLE)";
  if (o.interval && (*o.interval < seconds(1) || *o.interval > max_keepalive_interval))
    return "interval " + format_seconds(*o.interval) +
           " is outside the kernel's range 1s..32767s (TCP_KEEPINTVL)";
  if (o.count && (*o.count < 1 || *o.count > max_keepalive_count))
    return "count " + std::to_string(*o.count) +
           " is outside the kernel's range 1..127 (TCP_KEEPCNT)";
  if (o.user_timeout && (*o.user_timeout < milliseconds(0) || *o.user_timeout > max_user_timeout))
    return "user timeout " + format_duration(*o.user_timeout) +
           " is outside the kernel's range 0..2147483647ms (TCP_USER_TIMEOUT)";
  return std::nullopt;
}

}  // namespace

void validate(const keepalive_options& o) {
  if (const auto problem = limit_problem(o)) fail_spec(to_string(o), *problem);
}

keepalive_options parse_keepalive(std::string_view input) {
  const std::string_view spec = trim(input);
  if (spec.empty()) fail_spec(input, "empty");
  if (spec == "off") {
    keepalive_options off;
    off.enabled = false;
    return off;
  }

  std::array<std::string_view, 4> fields{};
  std::size_t n = 0;
  std::string_view rest = spec;
  while (true) {
    const auto colon = rest.find(':');
    if (n == fields.size()) fail_spec(input, "too many fields");
    fields[n++] = trim(rest.substr(0, colon));
    if (colon == std::string_view::npos) break;
    rest.remove_prefix(colon + 1);
  }
  if (n < 3) fail_spec(input, "needs at least three fields");

  keepalive_options o;
  if (!fields[0].empty()) o.idle = parse_whole_seconds(input, "idle", fields[0]);
  if (!fields[1].empty()) o.interval = parse_whole_seconds(input, "interval", fields[1]);
  if (!fields[2].empty()) o.count = parse_count(input, fields[2]);
  if (n == 4 && !fields[3].empty()) {
    std::string why;
    o.user_timeout = try_parse_duration(fields[3], why);
    if (!o.user_timeout)
      fail_spec(input, "user timeout \"" + std::string(fields[3]) + "\": " + why);
  }
  if (!o.idle && !o.interval && !o.count && !o.user_timeout)
    fail_spec(input, "every field is empty; write \"off\" to disable keepalive");
  if (const auto problem = limit_problem(o)) fail_spec(input, *problem);
  return o;
}

std::string to_string(const keepalive_options& o) {
  if (!o.enabled) return "off";
  std::string s = (o.idle ? format_seconds(*o.idle) : "") + ":" +
                  (o.interval ? format_seconds(*o.interval) : "") + ":" +
                  (o.count ? std::to_string(*o.count) : "");
  if (o.user_timeout) s += ":" + format_duration(*o.user_timeout);
  return s;
}

keepalive_options overlay(const keepalive_options& base, const keepalive_options& top) {
  keepalive_options o = base;
  o.enabled = base.enabled && top.enabled;
  if (top.idle) o.idle = top.idle;
  if (top.interval) o.interval = top.interval;
  if (top.count) o.count = top.count;
  if (top.user_timeout) o.user_timeout = top.user_timeout;
  return o;
}

kernel_defaults read_kernel_defaults() {
  kernel_defaults d;
  const auto idle = read_proc_integer("/proc/sys/net/ipv4/tcp_keepalive_time");
  const auto interval = read_proc_integer("/proc/sys/net/ipv4/tcp_keepalive_intvl");
  const auto count = read_proc_integer("/proc/sys/net/ipv4/tcp_keepalive_probes");
  const auto retries2 = read_proc_integer("/proc/sys/net/ipv4/tcp_retries2");
  if (idle && interval && count && retries2) {
    d.idle = seconds(*idle);
    d.interval = seconds(*interval);
    d.count = static_cast<int>(*count);
    d.retries2 = static_cast<int>(*retries2);
    d.from_system = true;
  }
#ifdef CLOCK_MONOTONIC_COARSE
  // The coarse clocks advance once per jiffy: their resolution is 1/HZ.
  timespec tick{};
  if (::clock_getres(CLOCK_MONOTONIC_COARSE, &tick) == 0 && tick.tv_sec == 0 && tick.tv_nsec > 0)
    d.hz = static_cast<int>((1'000'000'000L + tick.tv_nsec / 2) / tick.tv_nsec);
#endif
  return d;
}

keepalive_settings resolve(const keepalive_options& o, const kernel_defaults& d) {
  return keepalive_settings{.enabled = o.enabled,
                            .idle = o.idle.value_or(d.idle),
                            .interval = o.interval.value_or(d.interval),
                            .count = o.count.value_or(d.count),
                            .user_timeout = o.user_timeout.value_or(milliseconds(0))};
}

keepalive_options to_options(const keepalive_settings& s) {
  return keepalive_options{.enabled = s.enabled,
                           .idle = s.idle,
                           .interval = s.interval,
                           .count = s.count,
                           .user_timeout = s.user_timeout};
}

std::span<const keepalive_preset> keepalive_presets() {
  using namespace std::chrono_literals;
  static const std::array<keepalive_preset, 5> presets{{
      {"linux-default",
       "Linux's own 7200s:75s:9, no user timeout: a dead idle peer goes unnoticed for 2h11m; "
       "a baseline, not a recommendation",
       {.enabled = true, .idle = 7200s, .interval = 75s, .count = 9, .user_timeout = 0ms}},
      {"lan",
       "data-centre or LAN peers behind no NAT: 30s:5s:3 notices an idle dead peer in 45s, "
       "user timeout 45s bounds busy connections the same",
       {.enabled = true, .idle = 30s, .interval = 5s, .count = 3, .user_timeout = 45s}},
      {"mobile",
       "phones behind carrier-grade NAT, which may drop an idle mapping after 2.5-5 min: "
       "idle 120s keeps it alive; 120s:15s:4 detects in 3 min",
       {.enabled = true, .idle = 120s, .interval = 15s, .count = 4, .user_timeout = 3min}},
      {"iot",
       "battery or metered devices on flaky links: few probes, patient (240s:30s:5, 6m30s "
       "bound) so short radio dropouts do not cost a reconnect",
       {.enabled = true, .idle = 240s, .interval = 30s, .count = 5, .user_timeout = 390s}},
      {"aggressive",
       "fail-fast on a reliable local path: 1s:1s:3 detects in 4s, user timeout 4s; expect "
       "false positives on anything lossy",
       {.enabled = true, .idle = 1s, .interval = 1s, .count = 3, .user_timeout = 4s}},
  }};
  return presets;
}

const keepalive_preset& find_keepalive_preset(std::string_view name) {
  std::string known;
  for (const auto& p : keepalive_presets()) {
    if (p.name == name) return p;
    known += (known.empty() ? "" : ", ") + std::string(p.name);
  }
  throw config_error("unknown keepalive preset \"" + std::string(name) + "\" (known: " + known +
                     ")");
}

}  // namespace deadpeer
