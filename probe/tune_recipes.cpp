// The recipes. Facts each depends on are in the text it prints: Redis's anetKeepAlive
// derives interval N/3 and count 3 from one number; MQTT 3.1.1 §3.1.2.10 lets the broker
// end a client after 1.5 keep alive periods of silence; gRPC keepalive is an HTTP/2 PING
// answered within a timeout, and servers refuse pings more frequent than their minimum.
#include "tune_recipes.hpp"

#include <deadpeer/duration.hpp>

#include <algorithm>

namespace probe {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using deadpeer::format_duration;

std::string n(long long v) { return std::to_string(v); }

}  // namespace

const std::vector<std::string>& recipe_names() {
  static const std::vector<std::string> names{"sysctl", "c",     "nginx", "go",  "java",
                                              "grpc",   "redis", "mqtt",  "wrap"};
  return names;
}

int redis_tcp_keepalive_for(milliseconds bound) {
  const auto worst = [](int s) { return seconds(s + 3 * std::max(1, s / 3)); };
  int best = 1;
  for (int s = 1; worst(s) <= bound && s <= 32767; ++s) best = s;
  return best;
}

int mqtt_keep_alive_for(milliseconds bound) {
  return std::clamp(static_cast<int>(bound.count() * 2 / 3 / 1000), 1, 65535);
}

std::vector<recipe> keepalive_recipes(const deadpeer::keepalive_settings& s,
                                      const deadpeer::detection_bound& worst) {
  const long long idle = s.idle.count(), interval = s.interval.count(), count = s.count;
  const long long user_timeout_ms = s.user_timeout.count();
  const bool user_timeout = user_timeout_ms > 0;
  const milliseconds bound = worst.idle.value_or(s.idle + s.interval * s.count);
  const auto spec = [&] {
    auto o = deadpeer::to_options(s);
    o.user_timeout.reset();
    return deadpeer::to_string(o);
  }();
  std::vector<recipe> out;

  out.push_back(
      {"sysctl", "host-wide defaults (/etc/sysctl.d/90-keepalive.conf, then sysctl --system)",
       "net.ipv4.tcp_keepalive_time = " + n(idle) + "\nnet.ipv4.tcp_keepalive_intvl = " +
           n(interval) + "\nnet.ipv4.tcp_keepalive_probes = " + n(count) +
           "\n# These change every socket on the host, and only sockets whose program enabled\n"
           "# SO_KEEPALIVE: a program that never asks for keepalive gets none from them.\n"
           "# There is no sysctl for TCP_USER_TIMEOUT; busy connections stay bounded by\n"
           "# net.ipv4.tcp_retries2 (15: about 17 minutes)."});

  std::string c = "int on = 1, idle = " + n(idle) + ", interval = " + n(interval) +
                  ", count = " + n(count) + ";\n";
  if (user_timeout) c += "unsigned int user_timeout_ms = " + n(user_timeout_ms) + ";\n";
  c += "setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);\n"
       "setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);\n"
       "setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);\n"
       "setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);\n";
  if (user_timeout)
    c += "setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);\n";
  c += "// on the listening socket (Linux copies them to the sockets it accepts) and on each\n"
       "// socket you connect; <sys/socket.h>, <netinet/in.h>, <netinet/tcp.h>";
  out.push_back({"c", "setsockopt in C (Linux)", c});

  out.push_back({"nginx", "nginx: the listen directive (client connections it accepts)",
                 "listen 8080 so_keepalive=" + n(idle) + ":" + n(interval) + ":" + n(count) +
                     ";\n# nginx has no user timeout setting; proxy_read_timeout and "
                     "send_timeout bound busy connections"});

  std::string go = "ka := net.KeepAliveConfig{Enable: true, Idle: " + n(idle) +
                   " * time.Second, Interval: " + n(interval) + " * time.Second, Count: " +
                   n(count) +
                   "}\ndialer := net.Dialer{KeepAliveConfig: ka}        // outgoing\n"
                   "lc := net.ListenConfig{KeepAliveConfig: ka}       // accepted\n"
                   "// Go 1.23 or later";
  if (user_timeout)
    go += "; user timeout in the Control func of both:\n"
          "//   unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, " +
          n(user_timeout_ms) + ")";
  out.push_back({"go", "Go: net.KeepAliveConfig", go});

  std::string java = "socket.setKeepAlive(true);\n"
                     "socket.setOption(ExtendedSocketOptions.TCP_KEEPIDLE, " + n(idle) + ");\n"
                     "socket.setOption(ExtendedSocketOptions.TCP_KEEPINTERVAL, " + n(interval) + ");\n"
                     "socket.setOption(ExtendedSocketOptions.TCP_KEEPCOUNT, " + n(count) + ");\n"
                     "// jdk.net.ExtendedSocketOptions, Java 11 or later";
  if (user_timeout)
    java += "; the JDK has no user timeout:\n// with Netty's epoll transport,\n"
            "// .childOption(EpollChannelOption.TCP_USER_TIMEOUT, " + n(user_timeout_ms) + ")";
  out.push_back({"java", "Java: socket options", java});

  const long long timeout_ms = (bound - s.idle).count();
  out.push_back(
      {"grpc",
       "gRPC: keepalive pings over HTTP/2 (the client side; works through proxies that keep TCP up)",
       "grpc.keepalive_time_ms = " + n(idle * 1000) + "\ngrpc.keepalive_timeout_ms = " +
           n(timeout_ms) + "\ngrpc.keepalive_permit_without_calls = 1\n"
           "// grpc-go: keepalive.ClientParameters{Time: " + n(idle) + " * time.Second,\n"
           "//   Timeout: " +
           (timeout_ms % 1000 == 0 ? n(timeout_ms / 1000) + " * time.Second"
                                   : n(timeout_ms) + " * time.Millisecond") +
           ", PermitWithoutStream: true}\n"
           "// worst case time + timeout = " + format_duration(bound) +
           ". The server must allow pings this often:\n"
           "// grpc.http2.min_ping_interval_without_data_ms (C core) or\n"
           "// keepalive.EnforcementPolicy{MinTime, PermitWithoutStream: true} (grpc-go) at most\n"
           "// " + n(idle) + "s; both default to 5 minutes and answer faster pings with GOAWAY\n"
           "// too_many_pings."});

  const int redis = redis_tcp_keepalive_for(bound);
  out.push_back({"redis", "Redis: redis.conf (connections of its clients)",
                 "tcp-keepalive " + n(redis) +
                     "\n# Redis sets idle " + n(redis) + "s, interval " + n(std::max(1, redis / 3)) +
                     "s and count 3 from this one number: worst case " +
                     n(redis + 3 * std::max(1, redis / 3)) + "s"});

  const int mqtt = mqtt_keep_alive_for(bound);
  out.push_back({"mqtt", "MQTT (mosquitto and other brokers): the client's keep alive",
                 "keep alive = " + n(mqtt) + " s in the client's CONNECT\n"
                     "# the broker ends a client silent for 1.5 x " + n(mqtt) + " = " +
                     format_duration(milliseconds(mqtt * 1500)) +
                     ";\n# mosquitto.conf max_keepalive " + n(mqtt) +
                     " keeps clients from asking for longer.\n"
                     "# This is the application's heartbeat: it also notices a hung client."});

  std::string wrap = "probe wrap --keepalive " + spec;
  if (user_timeout) wrap += " --user-timeout " + format_duration(s.user_timeout);
  wrap += " -- <program> [args]\nprobe doctor --pid <PID of the program>\n"
          "# wrap applies it to a program you cannot rebuild; doctor reads it back from its\n"
          "# sockets and shows the worst case in force";
  out.push_back({"wrap", "no rebuild: apply with probe wrap, verify with probe doctor", wrap});
  return out;
}

}  // namespace probe
