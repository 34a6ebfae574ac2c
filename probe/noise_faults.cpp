// lossy and stall: a live, heartbeating victim under noise for a fixed time, and the server's
// false verdicts (noise_faults.hpp says what is decided and why). The embedded server runs
// in-process as for the other faults; its on_event hook wakes the trial loop the moment a
// connection ends, so a verdict is timed by the server's own CLOCK_MONOTONIC instant and
// no trial ever polls or sleeps on a guess.
#include "noise_faults.hpp"

#include "child_process.hpp"
#include "cli.hpp"
#include "embedded_server.hpp"
#include "http_client.hpp"
#include "lab.hpp"

#include <deadpeer/json_text.hpp>
#include <deadpeer/clock.hpp>
#include <deadpeer/duration.hpp>
#include <deadpeer/endpoint.hpp>
#include <deadpeer/server.hpp>
#include <deadpeer/store.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/json.hpp>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <iomanip>
#include <iostream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

namespace probe {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
namespace fs = std::filesystem;
using std::chrono::milliseconds;
using tcp = asio::ip::tcp;

constexpr std::int64_t ns_per_ms = 1'000'000;

double ms_between(std::int64_t from_ns, std::int64_t to_ns) {
  return static_cast<double>(to_ns - from_ns) / 1e6;
}

std::string one_decimal(double value) {
  std::ostringstream text;
  text << std::fixed << std::setprecision(1) << value;
  return text.str();
}

// Connection ends as the embedded server announces them (on_event, on its own thread),
// waited for by the trial loop with a deadline.
class verdict_watch {
 public:
  void on_event(const std::string& text) {
    json::object event;
    try {
      event = json::parse(text).as_object();
    } catch (const std::exception&) {
      return;  // not an end we could read; the trial then sees none
    }
    {
      std::lock_guard lock(mutex_);
      ends_.push_back(std::move(event));
    }
    changed_.notify_all();
  }

  /// The end of `client_id`'s connection, waiting until `deadline_ns` (CLOCK_MONOTONIC);
  /// nullopt when there was none by then or Ctrl-C came. Calls `tick` at least every
  /// 100 ms while waiting (the victim's output is drained there).
  std::optional<json::object> wait(const std::string& client_id, std::int64_t deadline_ns,
                                   const std::function<void()>& tick) {
    for (;;) {
      {
        std::unique_lock lock(mutex_);
        for (auto it = ends_.begin(); it != ends_.end(); ++it)
          if (const auto* id = it->if_contains("client_id");
              id != nullptr && id->is_string() && id->as_string() == client_id) {
            auto found = std::move(*it);
            ends_.erase(it);
            return found;
          }
        const auto left_ns = deadline_ns - deadpeer::monotonic_ns();
        if (left_ns <= 0 || interrupted()) return std::nullopt;
        const auto step = std::min<std::int64_t>(left_ns, 100 * ns_per_ms);
        changed_.wait_for(lock, std::chrono::nanoseconds(step));
      }
      if (tick) tick();
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<json::object> ends_;
};

// What the victim said during the trial: its answered PINGs and whether it saw its end.
struct victim_log {
  std::uint64_t pings_answered = 0;
  double rtt_max_ms = 0;
  std::string end_line;

  void drain(child_process& victim) {
    // Bounded: what is already in the pipe, a few hundred lines at most between ticks.
    for (int lines = 0; lines < 10000; ++lines) {
      const auto line = victim.read_line(milliseconds(2));  // 2: read_line rounds down
      if (!line) return;
      if (line->starts_with("rtt ")) {
        ++pings_answered;
        double rtt = 0;
        const auto text = line->substr(4);
        std::from_chars(text.data(), text.data() + text.size(), rtt);
        rtt_max_ms = std::max(rtt_max_ms, rtt);
      } else if (line->starts_with("end cause=")) {
        end_line = *line;
      }
    }
  }
};

// Fills a premature trial from the server's end event.
void record_verdict(trial_result& r, const json::object& event, std::int64_t t0,
                    json::object& details) {
  const auto decided = event.at("decided_mono_ns").as_int64();
  r.outcome = "premature";
  r.latency_ms = ms_between(t0, decided);
  r.detected_by = std::string(event.at("detected_by").as_string());
  r.cause = std::string(event.at("cause").as_string());
  r.error_number = static_cast<int>(event.at("errno").as_int64());
  r.error_name = std::string(event.at("error").as_string());
  const double silence_ms = event.at("silence_ms").to_number<double>();
  json::object verdict;
  verdict["at_ms"] = r.latency_ms;
  verdict["cause"] = r.cause;
  verdict["detected_by"] = r.detected_by;
  verdict["silence_ms"] = silence_ms;
  details["verdict"] = std::move(verdict);
  r.add_note("false verdict " + deadpeer::format_duration(milliseconds(
                                    static_cast<std::int64_t>(r.latency_ms))) +
             " into the trial after a silence of " + one_decimal(silence_ms) + " ms");
}

void add_victim_figures(json::object& details, const victim_log& log,
                        const json::value& connection) {
  details["victim_pings_answered"] = log.pings_answered;
  details["victim_rtt_max_ms"] = log.rtt_max_ms;
  if (!log.end_line.empty()) details["victim_end"] = log.end_line.substr(4);
  if (const auto* c = connection.if_object()) {
    // The server pings only when the victim has been silent for 1.1 to 1.2 intervals.
    const auto& rtt = c->at("rtt").as_object();
    details["server_pings_answered"] = rtt.at("samples");
    details["server_rtt_max_ms"] = rtt.at("max_ms");
    if (const auto* kernel = c->if_contains("kernel"))
      details["server_retransmits_now"] = kernel->as_object().at("retransmits");
  }
}

// One lossy trial from t0: loss on, wait out the duration or the first verdict, loss off.
std::optional<json::object> lossy_trial(const experiment_config& config, lab::network& network,
                                        verdict_watch& watch, const std::string& id,
                                        child_process& victim, victim_log& log, std::int64_t& t0,
                                        json::object& details) {
  network.loss_start(config.loss_basis_points);
  t0 = deadpeer::monotonic_ns();  // the rules are in force once nft has returned
  auto event = watch.wait(id, t0 + config.duration.count() * ns_per_ms, [&] { log.drain(victim); });
  const auto counts = network.loss_counts();
  network.loss_stop();
  details["loss_percent"] = static_cast<double>(config.loss_basis_points) / 100;
  details["packets_in"] = counts.in_packets;
  details["dropped_in"] = counts.in_dropped;
  details["packets_out"] = counts.out_packets;
  details["dropped_out"] = counts.out_dropped;
  return event;
}

// One stall trial from t0: the victim paused and resumed on its schedule until the duration
// ends or the first verdict comes.
std::optional<json::object> stall_trial(const experiment_config& config, verdict_watch& watch,
                                        const std::string& id, int trial, child_process& victim,
                                        victim_log& log, std::int64_t& t0, json::object& details,
                                        std::string& where) {
  const noise::pause_settings settings{.min = config.pause_min,
                                       .max = config.pause_max,
                                       .mean_gap = config.pause_gap,
                                       .min_gap = *config.heartbeat,
                                       .seed = config.seed};
  const auto schedule = noise::pause_schedule(settings, trial, config.duration);
  const auto tick = [&] { log.drain(victim); };
  json::array injected;
  std::int64_t longest_ns = 0, paused_ns = 0;
  std::optional<json::object> event;
  t0 = deadpeer::monotonic_ns();
  for (const auto& p : schedule) {
    if ((event = watch.wait(id, t0 + p.start.count() * ns_per_ms, tick)) || interrupted()) break;
    victim.signal(SIGSTOP);
    const auto stopped = deadpeer::monotonic_ns();
    event = watch.wait(id, stopped + p.length.count() * ns_per_ms, tick);
    victim.signal(SIGCONT);
    const auto resumed = deadpeer::monotonic_ns();
    injected.push_back(json::array{ms_between(t0, stopped), ms_between(stopped, resumed)});
    longest_ns = std::max(longest_ns, resumed - stopped);
    paused_ns += resumed - stopped;
    if (event) {
      const auto decided = event->at("decided_mono_ns").as_int64();
      if (decided >= stopped && decided <= resumed) {
        where = "during a pause of " + deadpeer::format_duration(p.length) + ", " +
                one_decimal(ms_between(stopped, decided)) + " ms into it";
        details["verdict_pause_ms"] = ms_between(stopped, decided);
        details["verdict_pause_length_ms"] = p.length.count();
      }
      break;
    }
    if (interrupted()) break;
  }
  if (!event && !interrupted())
    event = watch.wait(id, t0 + config.duration.count() * ns_per_ms, tick);
  details["pause_min_ms"] = config.pause_min.count();
  details["pause_max_ms"] = config.pause_max.count();
  details["pause_gap_ms"] = config.pause_gap.count();
  details["seed"] = config.seed;
  details["pauses_planned"] = schedule.size();
  details["pauses_injected"] = injected.size();
  details["longest_pause_ms"] = static_cast<double>(longest_ns) / 1e6;
  details["paused_ms"] = static_cast<double>(paused_ns) / 1e6;
  details["pauses"] = std::move(injected);  // [start_ms, length_ms] as injected
  return event;
}

}  // namespace

std::string noise_key(const experiment_config& config) {
  const auto duration = " duration=" + deadpeer::format_duration(config.duration);
  if (config.fault == "lossy") return "loss=" + noise::format_loss(config.loss_basis_points) + duration;
  return "pause=" + deadpeer::format_duration(config.pause_min) + ".." +
         deadpeer::format_duration(config.pause_max) +
         " gap=" + deadpeer::format_duration(config.pause_gap) +
         " seed=" + std::to_string(config.seed) + duration;
}

std::vector<trial_result> run_noise_experiment(const experiment_config& config,
                                               std::int64_t run_id, int first_trial,
                                               const trial_callback& progress) {
  if (!config.heartbeat)
    throw usage_error("--fault " + config.fault +
                      " measures the heartbeat detector's false verdicts: drop --heartbeat off");
  if (config.server)
    throw usage_error("--fault " + config.fault +
                      " measures the embedded server's detector; drop --server");
  const bool lossy = config.fault == "lossy";
  std::unique_ptr<lab::network> network;
  if (lossy) {
    if (const auto why = lab::unavailable_reason())
      throw std::runtime_error("--fault lossy needs the network lab: " + *why);
    network = std::make_unique<lab::network>();
  }
  verdict_watch watch;
  embedded_server server(config, network.get(),
                         [&watch](const std::string& text) { watch.on_event(text); });
  deadpeer::event_store store({.path = config.db});
  const std::string detector_text = config.detector_description();

  std::vector<trial_result> results;
  for (int i = 0; i < config.trials && !interrupted(); ++i) {
    trial_result r;
    r.trial = first_trial + i;
    const std::string id = "noise-" + std::to_string(::getpid()) + "-" + std::to_string(run_id) +
                           "-" + std::to_string(r.trial) + "-" + config.fault;
    std::unique_ptr<child_process> victim;
    try {
      // The victim's own detector never fires within the trial: only the server's is measured.
      victim = start_steady_client(
          network.get(), self_executable(),
          deadpeer::format_endpoint(
              tcp::endpoint(asio::ip::make_address(server.address()), server.port())),
          id, config, {"--dead-after", deadpeer::format_duration(config.duration + milliseconds(60'000))});
    } catch (const std::runtime_error&) {
      if (interrupted()) break;  // Ctrl-C during warm-up: no trial happened
      throw;
    }
    victim_log log;
    json::object details;
    details["duration_ms"] = config.duration.count();
    std::int64_t t0 = deadpeer::monotonic_ns();
    std::string where;
    std::optional<json::object> event;
    try {
      event = lossy ? lossy_trial(config, *network, watch, id, *victim, log, t0, details)
                    : stall_trial(config, watch, id, r.trial, *victim, log, t0, details, where);
    } catch (...) {
      if (network) network->loss_stop();
      victim->signal(SIGKILL);
      throw;
    }
    const auto ended = deadpeer::monotonic_ns();
    log.drain(*victim);
    std::int64_t decided = 0;
    if (event) {
      decided = event->at("decided_mono_ns").as_int64();
      record_verdict(r, *event, t0, details);
      if (!where.empty()) r.add_note(where);
      details["observed_ms"] = std::max(0.0, r.latency_ms);
      add_victim_figures(details, log, nullptr);
    } else if (interrupted()) {
      r.outcome = "interrupted";
    } else {
      r.outcome = "survived";
      details["observed_ms"] = ms_between(t0, ended);
      add_victim_figures(details, log, server.connection(id));
      r.add_note("no false verdict in " + deadpeer::format_duration(config.duration));
    }
    if (lossy)
      r.add_note("dropped " + std::to_string(details.at("dropped_in").as_uint64()) + "/" +
                 std::to_string(details.at("packets_in").as_uint64()) + " packets in, " +
                 std::to_string(details.at("dropped_out").as_uint64()) + "/" +
                 std::to_string(details.at("packets_out").as_uint64()) + " out");
    else if (const auto* n = details.if_contains("pauses_injected"))
      r.add_note(std::to_string(n->as_uint64()) + " pauses, the longest " +
                 one_decimal(details.at("longest_pause_ms").to_number<double>()) + " ms");
    r.details = deadpeer::json_text(details);

    victim->signal(SIGCONT);
    victim->signal(SIGKILL);
    (void)victim->wait(std::chrono::seconds(5));
    store_trial(store, config, run_id, r, t0, decided, detector_text);
    if (progress) progress(config, r);
    results.push_back(std::move(r));
  }
  store.flush();
  return results;
}

namespace noise {

int parse_loss(std::string_view text) {
  const std::string given(text);
  if (text.ends_with('%')) text.remove_suffix(1);
  double percent = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), percent);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() ||
      !std::isfinite(percent))
    throw usage_error("--loss \"" + given + "\": expected a percentage such as 5% or 0.5%");
  const double basis_points = percent * 100;
  const auto rounded = std::llround(basis_points);
  if (std::abs(basis_points - static_cast<double>(rounded)) > 1e-6)
    throw usage_error("--loss " + given + ": the finest step is 0.01%");
  if (rounded < 1 || rounded > 10000)
    throw usage_error("--loss " + given + " is outside 0.01%..100%");
  return static_cast<int>(rounded);
}

std::string format_loss(int basis_points) {
  std::string text = std::to_string(basis_points / 100);
  if (const int rest = basis_points % 100; rest != 0) {
    text += "." + std::string(rest < 10 ? "0" : "") + std::to_string(rest);
    while (text.back() == '0')
      text.pop_back();
  }
  return text + "%";
}

std::pair<milliseconds, milliseconds> parse_pause_range(std::string_view text) {
  const auto dots = text.find("..");
  auto one = [&](std::string_view part) {
    std::string why;
    const auto d = deadpeer::try_parse_duration(part, why);
    if (!d || d->count() <= 0)
      throw usage_error("--pause \"" + std::string(text) +
                        "\": expected MIN..MAX such as 200ms..2s, or one duration" +
                        (why.empty() ? std::string() : " (" + why + ")"));
    return *d;
  };
  if (dots == std::string_view::npos) {
    const auto d = one(text);
    return {d, d};
  }
  const auto min = one(text.substr(0, dots)), max = one(text.substr(dots + 2));
  if (max < min)
    throw usage_error("--pause " + std::string(text) + ": the longest is shorter than the shortest");
  return {min, max};
}

std::vector<pause> pause_schedule(const pause_settings& settings, int trial, milliseconds duration) {
  // splitmix64 of (seed, trial): neighbouring seeds and trials give unrelated streams.
  std::uint64_t z = settings.seed + 0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(trial);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  std::mt19937_64 bits(z ^ (z >> 31));
  // [0, 1) from the top 53 bits: the same numbers with every standard library.
  auto uniform = [&] { return static_cast<double>(bits() >> 11) * 0x1.0p-53; };

  const double min_ms = std::max(1.0, static_cast<double>(settings.min.count()));
  const double max_ms = std::max(min_ms, static_cast<double>(settings.max.count()));
  const double min_gap_ms = static_cast<double>(settings.min_gap.count());
  const double extra_gap_ms =
      std::max(0.0, static_cast<double>(settings.mean_gap.count()) - min_gap_ms);
  std::vector<pause> pauses;
  double now_ms = 0;
  const double end_ms = static_cast<double>(duration.count());
  while (pauses.size() < 100000) {
    const double gap = min_gap_ms - extra_gap_ms * std::log1p(-uniform());  // exponential
    const double length = min_ms * std::pow(max_ms / min_ms, uniform());   // log-uniform
    const auto start = static_cast<std::int64_t>(std::llround(now_ms + gap));
    if (static_cast<double>(start) >= end_ms) break;
    auto length_ms = std::min<std::int64_t>(std::llround(length), duration.count() - start);
    pauses.push_back({milliseconds(start), milliseconds(length_ms)});
    now_ms = static_cast<double>(start + length_ms);
  }
  return pauses;
}

}  // namespace noise
}  // namespace probe
