// The diagnosis: sockets grouped per process and place, then each rule of doctor.hpp as
// one function over a group. Ages come from TCP_INFO (milliseconds since the last data
// or ACK); a socket without TCP_INFO is counted but never aged.
#include "doctor.hpp"

#include "cli.hpp"

#include <deadpeer/endpoint.hpp>

#include <algorithm>
#include <set>

namespace probe::doctor {
namespace {

using deadpeer::socket_entry;
using deadpeer::socket_timer;
using deadpeer::tcp_state;
using std::chrono::milliseconds;

milliseconds ms(std::uint32_t v) { return milliseconds(v); }

// How long the socket has carried nothing: no data either way and no ACK.
std::optional<milliseconds> idle_for(const socket_entry& s) {
  if (!s.info) return std::nullopt;
  return ms(std::min({s.info->last_data_recv_ms, s.info->last_data_sent_ms,
                      s.info->last_ack_recv_ms}));
}

bool in_scope(const socket_entry& s, const process_ref& owner, const scope& only) {
  if (only.pid && owner.pid != *only.pid) return false;
  if (only.port && s.local.port() != *only.port && s.remote.port() != *only.port) return false;
  return true;
}

bool connected(tcp_state s) { return s != tcp_state::listen && s != tcp_state::time_wait; }

// Keepalive of one socket: read from it, or seen in its timer; nullopt when neither says.
std::optional<bool> keepalive_of(const socket_entry& s, const host_snapshot& host) {
  if (const auto read = host.settings.find(s.inode); read != host.settings.end())
    return read->second.enabled;
  if (s.state != tcp_state::established) return std::nullopt;
  if (s.timer == socket_timer::keepalive) return true;
  if (s.timer == socket_timer::none) return false;
  return std::nullopt;  // a retransmission or probe timer hides the keepalive timer
}

std::string in_process(const process_ref& p) {
  return p.pid == 0 ? std::string("held by a process doctor cannot see")
                    : "in PID " + std::to_string(p.pid) + " (" + p.program + ")";
}

finding about(finding_kind kind, const group& g) {
  finding f;
  f.kind = kind;
  f.process = g.process;
  f.where = g.where.describe();
  return f;
}

std::string plural(int n, std::string_view one, std::string_view many) {
  return std::to_string(n) + " " + std::string(n == 1 ? one : many);
}

coverage coverage_of(const std::vector<const socket_entry*>& sockets, const host_snapshot& host) {
  coverage c;
  std::optional<deadpeer::detection_bound> worst_bound;
  bool timer_seen = false;
  for (const auto* s : sockets) {
    ++c.sockets;
    if (const auto on = keepalive_of(*s, host)) ++(*on ? c.keepalive_on : c.keepalive_off);
    timer_seen = timer_seen || s->timer == socket_timer::keepalive;
    const auto read = host.settings.find(s->inode);
    if (read == host.settings.end()) continue;
    ++c.settings_read;
    const auto bound = deadpeer::compute_bound(read->second, host.defaults);
    const auto longer = [](const deadpeer::detection_bound& a, const deadpeer::detection_bound& b) {
      if (a.idle.has_value() != b.idle.has_value()) return !a.idle.has_value();
      return (a.idle ? *a.idle : milliseconds(0)) + a.busy > (b.idle ? *b.idle : milliseconds(0)) + b.busy;
    };
    if (!worst_bound || longer(bound, *worst_bound)) {
      worst_bound = bound;
      c.worst = read->second;
    }
  }
  if (c.settings_read > 0) {
    c.user_timeout_known = true;
    c.bound = *worst_bound;
    c.basis = "read from " + std::to_string(c.settings_read) + " of " + std::to_string(c.sockets) +
              " sockets";
    return c;
  }
  // Nothing read: the system's values, keepalive as the timers show it.
  deadpeer::keepalive_options assumed;
  assumed.enabled = c.keepalive_off == 0 && (timer_seen || c.keepalive_on > 0);
  c.worst = deadpeer::resolve(assumed, host.defaults);
  c.bound = deadpeer::compute_bound(c.worst, host.defaults);
  c.basis = std::string("assumed: keepalive ") + (c.worst.enabled ? "on (timer seen)" : "off") +
            " with the system's values; user timeout unknown" +
            (host.settings_unreadable.empty() ? "" : " (" + host.settings_unreadable + ")");
  return c;
}

void close_wait_rule(const group& g, const std::vector<const socket_entry*>& sockets,
                     const thresholds& limits, std::vector<finding>& out) {
  finding f = about(finding_kind::close_wait_leak, g);
  for (const auto* s : sockets) {
    if (s->state != tcp_state::close_wait) continue;
    const auto age = s->info ? ms(s->info->last_data_recv_ms) : milliseconds(0);
    if (s->info && age < limits.close_wait_over) continue;
    ++f.count;
    f.worst = std::max(f.worst, age);
  }
  if (f.count == 0) return;
  f.verdict = plural(f.count, "CLOSE_WAIT socket", "CLOSE_WAIT sockets") + " " +
              in_process(g.process) + " " + f.where + ", oldest " + describe_duration(f.worst) +
              " since its last data: the peer closed its side and the program never closed "
              "its own. Each holds a descriptor and memory until the program exits; no "
              "keepalive will help, the peer is already gone.";
  f.advice = "fix the program: close the socket when a read returns 0 (end of stream) or an "
             "error. Until then, restarting it frees them.";
  out.push_back(std::move(f));
}

void idle_rule(const group& g, const std::vector<const socket_entry*>& sockets,
               const host_snapshot& host, const thresholds& limits, std::vector<finding>& out) {
  finding f = about(finding_kind::idle_without_keepalive, g);
  for (const auto* s : sockets) {
    const auto idle = idle_for(*s);
    if (s->state != tcp_state::established || s->send_queue != 0 || !idle ||
        *idle < limits.idle_over || keepalive_of(*s, host) != false)
      continue;
    ++f.count;
    f.worst = std::max(f.worst, *idle);
  }
  if (f.count == 0) return;
  f.verdict = plural(f.count, "ESTABLISHED socket", "ESTABLISHED sockets") + " " +
              in_process(g.process) + " " + f.where + " without keepalive, silent for over " +
              describe_duration(limits.idle_over) + " (the longest " +
              describe_duration(f.worst) +
              "): if their peers are gone (cable pulled, NAT entry expired, host rebooted), "
              "nothing will ever notice. Ghost candidates.";
  f.advice = "turn keepalive on: without a rebuild, restart it as `probe wrap --keepalive "
             "60s:10s:5 -- <program>`; in the code, SO_KEEPALIVE with TCP_KEEPIDLE/INTVL/CNT "
             "(`probe tune --detect-within 2m` prints them for many frameworks).";
  out.push_back(std::move(f));
}

void retransmitting_rule(const group& g, const std::vector<const socket_entry*>& sockets,
                         const host_snapshot& host, std::vector<finding>& out) {
  finding f = about(finding_kind::retransmitting, g);
  finding stalled = about(finding_kind::peer_not_reading, g);
  const auto give_up = deadpeer::retransmission_give_up_time(host.defaults.retries2);
  unsigned most_retransmits = 0;
  bool all_user_timeouts_known = true;
  for (const auto* s : sockets) {
    if (!s->info) continue;
    const auto read = host.settings.find(s->inode);
    const auto user_timeout =
        read != host.settings.end() ? read->second.user_timeout : milliseconds(0);
    all_user_timeouts_known = all_user_timeouts_known && read != host.settings.end();
    const auto since_ack = ms(s->info->last_ack_recv_ms);
    if (s->timer == socket_timer::zero_window_probe) {
      ++stalled.count;
      stalled.worst = std::max(stalled.worst, since_ack);
      continue;
    }
    if (s->send_queue == 0 || (s->info->retransmits == 0 && s->info->backoff == 0)) continue;
    const auto limit = user_timeout.count() > 0 ? user_timeout : give_up;
    ++f.count;
    f.worst = std::max(f.worst, std::max(milliseconds(0), limit - since_ack));
    most_retransmits = std::max(most_retransmits, s->info->retransmits);
  }
  if (f.count > 0) {
    f.verdict = plural(f.count, "socket", "sockets") + " " + in_process(g.process) + " " +
                f.where + " with unacknowledged data being retransmitted (up to " +
                plural(static_cast<int>(most_retransmits), "retransmission", "retransmissions") +
                "): the peer went silent while we were sending. The kernel gives up in at "
                "most " + describe_duration(f.worst) + " more" +
                (all_user_timeouts_known ? "" : " (tcp_retries2 " +
                                                    std::to_string(host.defaults.retries2) +
                                                    "; sooner if a user timeout is set)") +
                "; until then the program's writes succeed into the send buffer.";
    f.advice = "bound it with TCP_USER_TIMEOUT (`probe wrap --user-timeout 30s`, or "
               "setsockopt); a peer that is only slow answers within its RTT.";
    out.push_back(std::move(f));
  }
  if (stalled.count > 0) {
    stalled.verdict = plural(stalled.count, "socket", "sockets") + " " + in_process(g.process) +
                      " " + stalled.where +
                      " probing a zero window: the peer is alive (its kernel answers) but its "
                      "program stopped reading, for " + describe_duration(stalled.worst) +
                      " so far. Keepalive never fires on these; without a user timeout they "
                      "wait as long as the peer's kernel answers.";
    stalled.advice = "look at the peer program (stuck or overloaded); bound the wait with "
                     "TCP_USER_TIMEOUT or an application write deadline.";
    out.push_back(std::move(stalled));
  }
}

void fin_wait2_rule(const group& g, const std::vector<const socket_entry*>& sockets,
                    const host_snapshot& host, std::vector<finding>& out) {
  finding f = about(finding_kind::fin_wait2_held, g);
  for (const auto* s : sockets) {
    const auto idle = idle_for(*s);
    if (s->state != tcp_state::fin_wait2 || !idle || *idle < host.fin_timeout) continue;
    ++f.count;
    f.worst = std::max(f.worst, *idle);
  }
  if (f.count == 0) return;
  f.verdict = plural(f.count, "FIN_WAIT2 socket", "FIN_WAIT2 sockets") + " " +
              in_process(g.process) + " " + f.where + ", the oldest " +
              describe_duration(f.worst) +
              ": the program shut down its sending side and the peer never closed its own. "
              "tcp_fin_timeout (" + describe_duration(host.fin_timeout) +
              ") ends only sockets no process holds; these stay until the program closes them.";
  f.advice = "close the socket after shutdown() with a deadline for the peer's end of stream.";
  out.push_back(std::move(f));
}

}  // namespace

std::string_view to_string(finding_kind kind) {
  switch (kind) {
    case finding_kind::close_wait_leak:
      return "close-wait-leak";
    case finding_kind::idle_without_keepalive:
      return "idle-without-keepalive";
    case finding_kind::retransmitting:
      return "retransmitting";
    case finding_kind::peer_not_reading:
      return "peer-not-reading";
    case finding_kind::fin_wait2_held:
      return "fin-wait2-held";
    case finding_kind::time_wait_ports:
      return "time-wait-ports";
  }
  return "unknown";
}

std::string place::describe() const {
  if (listening_port) return "on port " + std::to_string(*listening_port);
  if (remote) return "to " + deadpeer::format_endpoint(*remote);
  return "elsewhere";
}

report diagnose(const host_snapshot& host, const scope& only, const thresholds& limits) {
  report r;
  std::set<unsigned short> listening;
  for (const auto& s : host.sockets)
    if (s.state == tcp_state::listen) listening.insert(s.local.port());

  std::map<std::pair<process_ref, place>, std::vector<const socket_entry*>> grouped;
  std::map<std::string, int> time_wait_by_destination;
  r.closing.port_range_size = host.port_range_last - host.port_range_first + 1;
  for (const auto& s : host.sockets) {
    const auto owner_at = host.owners.find(s.inode);
    const process_ref owner = owner_at != host.owners.end() ? owner_at->second : process_ref{};
    if (!in_scope(s, owner, only)) continue;
    ++r.sockets_seen;
    switch (s.state) {
      case tcp_state::time_wait:
        ++r.closing.time_wait;
        ++time_wait_by_destination[deadpeer::format_endpoint(s.remote)];
        break;
      case tcp_state::fin_wait2:
        ++(s.inode == 0 ? r.closing.fin_wait2_orphaned : r.closing.fin_wait2_held);
        break;
      case tcp_state::fin_wait1:
        ++r.closing.fin_wait1;
        break;
      case tcp_state::last_ack:
        ++r.closing.last_ack;
        break;
      case tcp_state::closing:
        ++r.closing.closing;
        break;
      default:
        break;
    }
    if (s.inode == 0 || !connected(s.state)) continue;  // orphans are counted, not grouped
    place where;
    if (listening.contains(s.local.port()))
      where.listening_port = s.local.port();
    else
      where.remote = s.remote;
    grouped[{owner, where}].push_back(&s);
  }

  for (const auto& [key, sockets] : grouped) {
    group g;
    g.process = key.first;
    g.where = key.second;
    for (const auto* s : sockets) ++g.states[std::string(deadpeer::to_string(s->state))];
    g.keepalive = coverage_of(sockets, host);
    close_wait_rule(g, sockets, limits, r.findings);
    idle_rule(g, sockets, host, limits, r.findings);
    retransmitting_rule(g, sockets, host, r.findings);
    fin_wait2_rule(g, sockets, host, r.findings);
    r.groups.push_back(std::move(g));
  }

  for (const auto& [destination, count] : time_wait_by_destination) {
    if (count <= r.closing.busiest_destination_time_wait) continue;
    r.closing.busiest_destination_time_wait = count;
    r.closing.busiest_destination = destination;
  }
  // Connections to one destination share its address and port: each needs its own local
  // port, and TIME_WAIT holds the port for 60 s after an active close.
  if (r.closing.port_range_size > 0 &&
      r.closing.busiest_destination_time_wait * 2 >= r.closing.port_range_size) {
    finding f;
    f.kind = finding_kind::time_wait_ports;
    f.where = "host";
    f.count = r.closing.busiest_destination_time_wait;
    f.verdict = plural(f.count, "TIME_WAIT socket", "TIME_WAIT sockets") + " toward " +
                r.closing.busiest_destination + ", against " +
                std::to_string(r.closing.port_range_size) +
                " local ports (net.ipv4.ip_local_port_range): new connections to it will "
                "fail with EADDRNOTAVAIL when the range runs out.";
    f.advice = "reuse connections (keep-alive pools) instead of opening one per request, or "
               "let the server close first; net.ipv4.tcp_tw_reuse = 1 lets outgoing "
               "connections reuse TIME_WAIT ports safely.";
    r.findings.push_back(std::move(f));
  }
  std::stable_sort(r.findings.begin(), r.findings.end(),
                   [](const finding& a, const finding& b) { return a.kind < b.kind; });
  return r;
}

}  // namespace probe::doctor
