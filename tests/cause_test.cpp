#include <deadpeer/cause.hpp>

#include <catch2/catch.hpp>

#include <boost/asio/error.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/system/error_code.hpp>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <future>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

using deadpeer::cause;
using deadpeer::classification;
using deadpeer::classify;
using deadpeer::connection_context;
using deadpeer::detected_by;
using op = connection_context::operation;

namespace {

// The enumerations are contiguous from 0 and end with invalid_call / none; the test
// "no enumerator after the last one" keeps these loops honest.
constexpr int cause_count = static_cast<int>(cause::invalid_call) + 1;
constexpr int detected_by_count = static_cast<int>(detected_by::none) + 1;

connection_context make_context(op operation, bool in_flight, bool keepalive, bool user_timeout) {
  connection_context c;
  c.op = operation;
  c.data_in_flight = in_flight;
  c.keepalive_armed = keepalive;
  c.user_timeout_armed = user_timeout;
  return c;
}

const connection_context idle_with_keepalive = make_context(op::reading, false, true, false);

std::error_code errno_code(int value) {
  return {value, std::generic_category()};
}

std::error_code asio_code(boost::system::error_code ec) {
  return ec;
}

bool same(classification a, classification b) {
  return a.cause == b.cause && a.detected_by == b.detected_by;
}

std::string describe(classification c) {
  return std::string(deadpeer::to_string(c.cause)) + "/" +
         std::string(deadpeer::to_string(c.detected_by));
}

}  // namespace

TEST_CASE("a zero error code is not a failure") {
  const classification c = classify(std::error_code{}, idle_with_keepalive);
  CHECK(c.cause == cause::not_a_failure);
  CHECK(c.detected_by == detected_by::none);
  CHECK(classify(asio_code({}), {}).cause == cause::not_a_failure);
}

TEST_CASE("ETIMEDOUT is attributed to the timer that can have fired") {
  struct row {
    connection_context context;
    classification expected;
  };
  const std::array rows{
      // connecting: SYN retries, or the user timeout when one is armed (Linux >= 5.4)
      row{make_context(op::connecting, false, false, false),
          {cause::connect_timeout, detected_by::retransmission}},
      row{make_context(op::connecting, false, true, false),
          {cause::connect_timeout, detected_by::retransmission}},
      row{make_context(op::connecting, false, false, true),
          {cause::connect_timeout, detected_by::user_timeout}},
      row{make_context(op::connecting, true, true, true),
          {cause::connect_timeout, detected_by::user_timeout}},
      // data in flight: keepalive never probes, whatever it is set to
      row{make_context(op::writing, true, false, true),
          {cause::user_timeout, detected_by::user_timeout}},
      row{make_context(op::reading, true, true, true),
          {cause::user_timeout, detected_by::user_timeout}},
      row{make_context(op::writing, true, false, false),
          {cause::retransmission_timeout, detected_by::retransmission}},
      row{make_context(op::reading, true, true, false),
          {cause::retransmission_timeout, detected_by::retransmission}},
      // idle
      row{make_context(op::reading, false, true, false),
          {cause::keepalive_timeout, detected_by::keepalive}},
      row{make_context(op::reading, false, true, true),
          {cause::keepalive_timeout, detected_by::keepalive}},
      row{make_context(op::other, false, true, false),
          {cause::keepalive_timeout, detected_by::keepalive}},
      row{make_context(op::reading, false, false, true),
          {cause::user_timeout, detected_by::user_timeout}},
      row{make_context(op::reading, false, false, false),
          {cause::retransmission_timeout, detected_by::retransmission}},
  };
  for (const row& r : rows) {
    INFO("op " << static_cast<int>(r.context.op) << " in_flight " << r.context.data_in_flight
               << " keepalive " << r.context.keepalive_armed << " user_timeout "
               << r.context.user_timeout_armed);
    const classification generic = classify(errno_code(ETIMEDOUT), r.context);
    INFO("got " << describe(generic) << ", expected " << describe(r.expected));
    CHECK(same(generic, r.expected));
    CHECK(
        same(classify(std::error_code(ETIMEDOUT, std::system_category()), r.context), r.expected));
    CHECK(same(classify(asio_code(boost::asio::error::timed_out), r.context), r.expected));
  }
}

TEST_CASE("each errno maps to one cause and one layer") {
  struct row {
    int value;
    classification expected;
  };
  const std::array rows{
      row{ECONNRESET, {cause::peer_reset, detected_by::reset}},
      row{ECONNABORTED, {cause::local_abort, detected_by::reset}},
      row{EPIPE, {cause::broken_pipe, detected_by::reset}},
      row{ENOTCONN, {cause::broken_pipe, detected_by::application}},
      row{ESHUTDOWN, {cause::broken_pipe, detected_by::application}},
      row{EHOSTUNREACH, {cause::host_unreachable, detected_by::icmp}},
      row{EHOSTDOWN, {cause::host_unreachable, detected_by::icmp}},
      row{ENETUNREACH, {cause::network_unreachable, detected_by::icmp}},
      row{ENETDOWN, {cause::network_unreachable, detected_by::icmp}},
      row{ENETRESET, {cause::keepalive_timeout, detected_by::keepalive}},
      row{ECONNREFUSED, {cause::connection_refused, detected_by::reset}},
      row{EAGAIN, {cause::not_a_failure, detected_by::none}},
      row{EWOULDBLOCK, {cause::not_a_failure, detected_by::none}},
      row{EINTR, {cause::not_a_failure, detected_by::none}},
      row{ECANCELED, {cause::local_close, detected_by::application}},
      row{EBADF, {cause::local_close, detected_by::application}},
      row{ENOBUFS, {cause::resource_exhausted, detected_by::application}},
      row{EMFILE, {cause::resource_exhausted, detected_by::application}},
      row{EADDRNOTAVAIL, {cause::address_unavailable, detected_by::application}},
      row{EINPROGRESS, {cause::not_a_failure, detected_by::none}},
      row{EPROTONOSUPPORT, {cause::invalid_call, detected_by::application}},
      row{ENOSPC, {cause::unknown, detected_by::application}},
  };
  for (const row& r : rows) {
    for (const auto* category : {&std::generic_category(), &std::system_category()}) {
      const classification got = classify({r.value, *category}, idle_with_keepalive);
      INFO("errno " << r.value << " in " << category->name() << ": got " << describe(got)
                    << ", expected " << describe(r.expected));
      CHECK(same(got, r.expected));
    }
  }
}

TEST_CASE("an errno that the standard library does not list still classifies") {
  // libstdc++ maps only the errno values it knows to generic conditions.
  CHECK(classify(std::error_code(4095, std::system_category()), {}).cause == cause::unknown);
}

TEST_CASE("asio error codes classify like the errno behind them") {
  namespace error = boost::asio::error;
  SECTION("eof is the peer's FIN") {
    const classification c = classify(asio_code(error::eof), idle_with_keepalive);
    CHECK(c.cause == cause::peer_closed);
    CHECK(c.detected_by == detected_by::eof);
  }
  SECTION("a boost::system::error_code converts implicitly") {
    const boost::system::error_code ec = error::connection_reset;
    const classification c = classify(ec, idle_with_keepalive);
    CHECK(c.cause == cause::peer_reset);
    CHECK(c.detected_by == detected_by::reset);
  }
  SECTION("the converted code keeps its errno meaning") {
    const std::error_code ec = asio_code(error::connection_reset);
    CHECK(ec == std::errc::connection_reset);
    CHECK(classify(ec, {}).cause == cause::peer_reset);
  }
  SECTION("other asio codes") {
    CHECK(classify(asio_code(error::connection_aborted), {}).cause == cause::local_abort);
    CHECK(classify(asio_code(error::broken_pipe), {}).cause == cause::broken_pipe);
    CHECK(classify(asio_code(error::connection_refused), {}).cause == cause::connection_refused);
    CHECK(classify(asio_code(error::host_unreachable), {}).cause == cause::host_unreachable);
    CHECK(classify(asio_code(error::network_unreachable), {}).cause == cause::network_unreachable);
    CHECK(classify(asio_code(error::network_down), {}).cause == cause::network_unreachable);
    CHECK(classify(asio_code(error::try_again), {}).cause == cause::not_a_failure);
    CHECK(classify(asio_code(error::would_block), {}).cause == cause::not_a_failure);
    CHECK(classify(asio_code(error::interrupted), {}).cause == cause::not_a_failure);
    CHECK(classify(asio_code(error::not_connected), {}).cause == cause::broken_pipe);
    CHECK(classify(asio_code(error::shut_down), {}).cause == cause::broken_pipe);
  }
  SECTION("our own cancel and close") {
    const classification aborted = classify(asio_code(error::operation_aborted), {});
    CHECK(aborted.cause == cause::local_close);
    CHECK(aborted.detected_by == detected_by::application);
    CHECK(classify(asio_code(error::bad_descriptor), {}).cause == cause::local_close);
  }
  SECTION("asio codes that say nothing about the peer") {
    CHECK(classify(asio_code(error::already_open), {}).cause == cause::unknown);
    CHECK(classify(asio_code(error::host_not_found), {}).cause == cause::unknown);
    CHECK(classify(asio_code(error::not_found), {}).cause == cause::unknown);
  }
}

TEST_CASE("codes from unrelated categories are unknown") {
  const classification c = classify(std::make_error_code(std::future_errc::no_state), {});
  CHECK(c.cause == cause::unknown);
  CHECK(c.detected_by == detected_by::application);
  CHECK(classify(std::make_error_code(std::io_errc::stream), {}).cause == cause::unknown);
}

TEST_CASE("names round-trip for every enumerator") {
  std::set<std::string_view> cause_names;
  for (int i = 0; i < cause_count; ++i) {
    const auto c = static_cast<cause>(i);
    const std::string_view name = deadpeer::to_string(c);
    INFO("cause #" << i << " is " << name);
    CHECK_FALSE(name.empty());
    CHECK(name != "invalid");
    CHECK(name.find_first_not_of("abcdefghijklmnopqrstuvwxyz_") == std::string_view::npos);
    CHECK(deadpeer::cause_from_string(name) == c);
    cause_names.insert(name);
  }
  CHECK(cause_names.size() == static_cast<std::size_t>(cause_count));

  std::set<std::string_view> detected_by_names;
  for (int i = 0; i < detected_by_count; ++i) {
    const auto d = static_cast<detected_by>(i);
    const std::string_view name = deadpeer::to_string(d);
    INFO("detected_by #" << i << " is " << name);
    CHECK_FALSE(name.empty());
    CHECK(name != "invalid");
    CHECK(name.find_first_not_of("abcdefghijklmnopqrstuvwxyz_") == std::string_view::npos);
    CHECK(deadpeer::detected_by_from_string(name) == d);
    detected_by_names.insert(name);
  }
  CHECK(detected_by_names.size() == static_cast<std::size_t>(detected_by_count));

  CHECK(deadpeer::to_string(cause::peer_reset) == "peer_reset");
  CHECK(deadpeer::to_string(cause::heartbeat_timeout) == "heartbeat_timeout");
  CHECK(deadpeer::to_string(detected_by::keepalive) == "keepalive");
  CHECK(deadpeer::to_string(detected_by::user_timeout) == "user_timeout");
}

TEST_CASE("no enumerator after the last one the tests know") {
  // If this fails, an enumerator was added at the end: update cause_count/detected_by_count.
  CHECK(deadpeer::to_string(static_cast<cause>(cause_count)) == "invalid");
  CHECK(deadpeer::to_string(static_cast<detected_by>(detected_by_count)) == "invalid");
}

TEST_CASE("from_string rejects names that are not stored names") {
  for (const std::string_view bad : {"", "Peer_Reset", "peer_reset ", "peer", "invalid"}) {
    INFO("'" << bad << "'");
    CHECK_FALSE(deadpeer::cause_from_string(bad).has_value());
    CHECK_FALSE(deadpeer::detected_by_from_string(bad).has_value());
  }
  CHECK_FALSE(deadpeer::detected_by_from_string("peer_reset").has_value());
  CHECK_FALSE(deadpeer::cause_from_string("keepalive").has_value());
}

TEST_CASE("every cause has a three-part explanation") {
  std::set<std::string_view> seen;
  for (int i = 0; i < cause_count; ++i) {
    const auto c = static_cast<cause>(i);
    const deadpeer::cause_explanation& e = deadpeer::explain(c);
    INFO(deadpeer::to_string(c));
    for (const std::string_view part : {e.on_the_wire, e.typical, e.what_to_do}) {
      CHECK(part.size() > 40);
      CHECK(part.back() == '.');
      seen.insert(part);
    }
  }
  CHECK(seen.size() == static_cast<std::size_t>(3 * cause_count));  // none is shared
}

TEST_CASE("explanations tell apart the codes people confuse") {
  const auto mentions = [](cause c, std::string_view what) {
    const deadpeer::cause_explanation& e = deadpeer::explain(c);
    return e.on_the_wire.find(what) != std::string_view::npos ||
           e.typical.find(what) != std::string_view::npos ||
           e.what_to_do.find(what) != std::string_view::npos;
  };
  CHECK(mentions(cause::local_abort, "10053"));
  CHECK(mentions(cause::local_abort, "10054"));
  CHECK(mentions(cause::peer_reset, "10054"));
  CHECK(mentions(cause::peer_reset, "RFC 2525"));
  CHECK(mentions(cause::peer_reset, "SO_LINGER"));
  CHECK(mentions(cause::broken_pipe, "SIGPIPE"));
  CHECK(mentions(cause::keepalive_timeout, "hung"));
  CHECK(mentions(cause::reaped, "CLOSE_WAIT"));
  CHECK(mentions(cause::not_a_failure, "EINTR"));
}

TEST_CASE("the known-error table is consistent") {
  const auto errors = deadpeer::known_errors();
  REQUIRE(errors.size() >= 30);
  std::set<std::string_view> names;
  for (const deadpeer::known_error& e : errors) {
    INFO(e.name << " " << e.number);
    names.insert(e.name);
    if (e.platform == "linux") {
      CHECK(e.number < 200);
      CHECK(e.name.substr(0, 1) == "E");
    } else {
      REQUIRE(e.platform == "winsock");
      CHECK(e.number >= 995);
      CHECK(e.name.substr(0, 3) == "WSA");
    }
    CHECK_FALSE(deadpeer::to_string(e.cause).empty());
    CHECK_FALSE(deadpeer::explain(e.cause).on_the_wire.empty());
    CHECK_FALSE(deadpeer::explain(e.cause).typical.empty());
    CHECK_FALSE(deadpeer::explain(e.cause).what_to_do.empty());
  }
  CHECK(names.size() == errors.size());
  for (const char* required :
       {"ECONNRESET",     "WSAECONNRESET", "ECONNABORTED",   "WSAECONNABORTED", "ETIMEDOUT",
        "WSAETIMEDOUT",   "EPIPE",         "EHOSTUNREACH",   "WSAEHOSTUNREACH", "ENETUNREACH",
        "WSAENETUNREACH", "ENETDOWN",      "WSAENETDOWN",    "ECONNREFUSED",    "WSAECONNREFUSED",
        "EAGAIN",         "EWOULDBLOCK",   "WSAEWOULDBLOCK", "EINTR",           "WSAEINTR",
        "ENOTCONN",       "WSAENOTCONN",   "ESHUTDOWN",      "WSAESHUTDOWN",    "ENETRESET",
        "WSAENETRESET",   "EHOSTDOWN",     "WSAEHOSTDOWN"}) {
    INFO(required);
    CHECK(names.count(required) == 1);
  }
}

#ifdef __linux__
TEST_CASE("the Linux rows of the table agree with classify") {
  for (const deadpeer::known_error& e : deadpeer::known_errors()) {
    if (e.platform != "linux") continue;
    INFO(e.name);
    // ETIMEDOUT's table cause is its idle-with-keepalive reading.
    CHECK(classify(errno_code(e.number), idle_with_keepalive).cause == e.cause);
  }
}
#endif

TEST_CASE("Winsock and Linux twins map to the same cause") {
  const std::array<std::pair<int, int>, 23> twins{{
      {EINVAL, 10022},   {EMFILE, 10024},     {EINPROGRESS, 10036},
      {EALREADY, 10037}, {EADDRINUSE, 10048}, {EADDRNOTAVAIL, 10049},
      {ENOBUFS, 10055},  {EISCONN, 10056},    {104, 10054},
      {103, 10053},      {110, 10060},        {113, 10065},
      {101, 10051},      {100, 10050},        {111, 10061},
      {11, 10035},       {4, 10004},          {107, 10057},
      {108, 10058},      {102, 10052},        {112, 10064},
      {125, 995},        {9, 10038},
  }};
  for (const auto& [linux_number, winsock_number] : twins) {
    INFO(linux_number << " / " << winsock_number);
    const auto l = deadpeer::lookup(std::to_string(linux_number));
    const auto w = deadpeer::lookup(std::to_string(winsock_number));
    REQUIRE(l.has_value());
    REQUIRE(w.has_value());
    CHECK(l->error.value().platform == "linux");
    CHECK(w->error.value().platform == "winsock");
    CHECK(l->cause == w->cause);
  }
  // Every WSAExxx name whose Linux spelling exists agrees with it.
  for (const deadpeer::known_error& w : deadpeer::known_errors()) {
    if (w.platform != "winsock" || w.name.substr(0, 4) != "WSAE") continue;
    const auto l = deadpeer::lookup(w.name.substr(3));
    if (!l) continue;
    INFO(w.name);
    CHECK(l->cause == w.cause);
  }
}

TEST_CASE("lookup by number") {
  const auto reset = deadpeer::lookup("104");
  REQUIRE(reset.has_value());
  REQUIRE(reset->error.has_value());
  CHECK(reset->error->name == "ECONNRESET");
  CHECK(reset->error.value().platform == "linux");
  CHECK(reset->cause == cause::peer_reset);

  const auto aborted = deadpeer::lookup("10053");
  REQUIRE(aborted.has_value());
  REQUIRE(aborted->error.has_value());
  CHECK(aborted->error->name == "WSAECONNABORTED");
  CHECK(aborted->error.value().platform == "winsock");
  CHECK(aborted->cause == cause::local_abort);
  CHECK_FALSE(aborted->error->note.empty());

  const auto again = deadpeer::lookup("11");  // EAGAIN and EWOULDBLOCK share it
  REQUIRE(again.has_value());
  CHECK(again->cause == cause::not_a_failure);

  CHECK(deadpeer::lookup("110").value().cause == cause::keepalive_timeout);
  CHECK(deadpeer::lookup(" 10054\n").value().error.value().name == "WSAECONNRESET");
  CHECK(deadpeer::lookup("000104").value().error.value().name == "ECONNRESET");
}

TEST_CASE("lookup by name is case-insensitive and trims") {
  for (const char* text : {"ECONNRESET", "econnreset", "EConnReset", "  ECONNRESET\t"}) {
    INFO("'" << text << "'");
    const auto r = deadpeer::lookup(text);
    REQUIRE(r.has_value());
    REQUIRE(r->error.has_value());
    CHECK(r->error->number == 104);
    CHECK(r->cause == cause::peer_reset);
  }
  const auto wsa = deadpeer::lookup("wsaeconnaborted");
  REQUIRE(wsa.has_value());
  REQUIRE(wsa->error.has_value());
  CHECK(wsa->error->number == 10053);
  CHECK(wsa->cause == cause::local_abort);
  CHECK(deadpeer::lookup("EWOULDBLOCK").value().error.value().name == "EWOULDBLOCK");
  CHECK(deadpeer::lookup("epipe").value().cause == cause::broken_pipe);
}

TEST_CASE("lookup by cause name") {
  const auto r = deadpeer::lookup("heartbeat_timeout");
  REQUIRE(r.has_value());
  CHECK_FALSE(r->error.has_value());
  CHECK(r->cause == cause::heartbeat_timeout);
  for (int i = 0; i < cause_count; ++i) {
    const auto c = static_cast<cause>(i);
    const auto found = deadpeer::lookup(std::string(" ") + std::string(deadpeer::to_string(c)));
    INFO(deadpeer::to_string(c));
    REQUIRE(found.has_value());
    CHECK(found->cause == c);
    CHECK_FALSE(found->error.has_value());
  }
}

TEST_CASE("lookup refuses garbage without crashing") {
  for (const char* text : {"",
                           " ",
                           "\t\n",
                           "abc",
                           "104x",
                           "x104",
                           "-104",
                           "+104",
                           "1 04",
                           "10 053",
                           "0",
                           "134",
                           "9999",
                           "99999999999999999999",
                           "184467440737095516161844674407370955161",
                           "ECONNRESETX",
                           "WSA",
                           "E",
                           "peer",
                           "heartbeat timeout",
                           "0x68",
                           "104.0",
                           "１０４"}) {
    INFO("'" << text << "'");
    CHECK_FALSE(deadpeer::lookup(text).has_value());
  }
  CHECK_FALSE(deadpeer::lookup(std::string_view("104\0", 4)).has_value());
  CHECK_FALSE(deadpeer::lookup(std::string(100000, '9')).has_value());
}

// Real sockets on loopback. Every read blocks until the FIN or RST it waits for has
// arrived, so no sleep is needed and the order of events is fixed.
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

struct loopback_pair {
  asio::io_context io;
  tcp::socket client{io};
  tcp::socket server{io};

  loopback_pair() {
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    client.connect(acceptor.local_endpoint());
    acceptor.accept(server);
  }
};

boost::system::error_code read_error(tcp::socket& socket) {
  std::array<char, 64> buffer{};
  boost::system::error_code ec;
  const std::size_t n = socket.read_some(asio::buffer(buffer), ec);
  CHECK(n == 0);
  return ec;
}

}  // namespace

TEST_CASE("loopback: an abortive close (SO_LINGER {1, 0}) reads as peer_reset") {
  loopback_pair pair;
  pair.server.set_option(asio::socket_base::linger(true, 0));
  pair.server.close();

  const boost::system::error_code ec = read_error(pair.client);
  INFO(ec.message());
  CHECK(ec == asio::error::connection_reset);
  const classification c = classify(ec, make_context(op::reading, false, false, false));
  CHECK(c.cause == cause::peer_reset);
  CHECK(c.detected_by == detected_by::reset);
}

TEST_CASE("loopback: a clean close reads as peer_closed") {
  loopback_pair pair;
  pair.server.close();

  const boost::system::error_code ec = read_error(pair.client);
  INFO(ec.message());
  CHECK(ec == asio::error::eof);
  const classification c = classify(ec, make_context(op::reading, false, false, false));
  CHECK(c.cause == cause::peer_closed);
  CHECK(c.detected_by == detected_by::eof);
}

TEST_CASE("loopback: closing with unread data sends RST, not FIN (RFC 2525 2.17)") {
  loopback_pair pair;
  asio::write(pair.client, asio::buffer(std::string_view("a large upload the server rejects")));
  pair.server.wait(tcp::socket::wait_read);  // the data is queued, unread
  pair.server.close();

  const boost::system::error_code ec = read_error(pair.client);
  INFO(ec.message());
  CHECK(classify(ec, make_context(op::reading, false, false, false)).cause == cause::peer_reset);
}

TEST_CASE("loopback: after a reset, the first write reports it and later ones are EPIPE") {
  loopback_pair pair;
  pair.server.set_option(asio::socket_base::linger(true, 0));
  pair.server.close();
  pair.client.wait(tcp::socket::wait_read);  // returns once the RST has been processed

  const auto write_error = [&pair] {
    boost::system::error_code ec;
    pair.client.write_some(asio::buffer(std::string_view("still writing")), ec);
    return ec;
  };
  const connection_context writing = make_context(op::writing, true, false, false);
  const boost::system::error_code first = write_error();
  INFO("first: " << first.message());
  CHECK(classify(first, writing).cause == cause::peer_reset);
  const boost::system::error_code second = write_error();
  INFO("second: " << second.message());
  CHECK(second == asio::error::broken_pipe);
  const classification c = classify(second, writing);
  CHECK(c.cause == cause::broken_pipe);
  CHECK(c.detected_by == detected_by::reset);
}

// What users paste: messages, log lines, states, hex codes. Pure lookups, no sockets.
namespace {

struct pasted {
  std::string_view text;
  std::string_view error_name;  // empty: the answer carries no error number
  cause expected;
};

}  // namespace

TEST_CASE("the causes stored before the refusals keep their names") {
  // These strings are in existing databases: they must never change.
  const std::array<std::string_view, 19> stored{"peer_closed",
                                                "peer_reset",
                                                "local_abort",
                                                "keepalive_timeout",
                                                "user_timeout",
                                                "retransmission_timeout",
                                                "connect_timeout",
                                                "broken_pipe",
                                                "host_unreachable",
                                                "network_unreachable",
                                                "connection_refused",
                                                "heartbeat_timeout",
                                                "reaped",
                                                "superseded",
                                                "handshake_timeout",
                                                "protocol_error",
                                                "local_close",
                                                "not_a_failure",
                                                "unknown"};
  for (std::size_t i = 0; i < stored.size(); ++i) {
    INFO(stored[i]);
    CHECK(deadpeer::to_string(static_cast<cause>(i)) == stored[i]);
  }
  CHECK(deadpeer::known_causes().size() == static_cast<std::size_t>(cause_count));
  for (const std::string_view refusal :
       {"auth_failed", "too_many_pings", "server_full", "unsupported_version", "invalid_client_id",
        "internal_error"}) {
    INFO(refusal);
    REQUIRE(deadpeer::cause_from_string(refusal).has_value());
    CHECK(deadpeer::to_string(*deadpeer::cause_from_string(refusal)) == refusal);
  }
}

TEST_CASE("pasted messages and log lines find their error") {
  const std::array cases{
      pasted{"Connection reset by peer", "ECONNRESET", cause::peer_reset},
      pasted{"connection reset by peer", "ECONNRESET", cause::peer_reset},
      pasted{"Broken pipe", "EPIPE", cause::broken_pipe},
      pasted{"Software caused connection abort", "ECONNABORTED", cause::local_abort},
      pasted{"Connection timed out", "ETIMEDOUT", cause::keepalive_timeout},
      pasted{"No route to host", "EHOSTUNREACH", cause::host_unreachable},
      pasted{"Connection refused", "ECONNREFUSED", cause::connection_refused},
      pasted{"java.net.SocketException: Connection reset", "ECONNRESET", cause::peer_reset},
      pasted{"java.net.SocketException: Connection reset by peer", "ECONNRESET", cause::peer_reset},
      pasted{"java.net.SocketException: Socket closed", "", cause::local_close},
      pasted{"java.net.SocketTimeoutException: Read timed out", "", cause::not_a_failure},
      pasted{"java.net.SocketTimeoutException: connect timed out", "", cause::connect_timeout},
      pasted{"[Errno 104] Connection reset by peer", "ECONNRESET", cause::peer_reset},
      pasted{"ConnectionResetError: [Errno 104] Connection reset by peer", "ECONNRESET",
             cause::peer_reset},
      pasted{"BrokenPipeError: [Errno 32] Broken pipe", "EPIPE", cause::broken_pipe},
      pasted{"ConnectionAbortedError", "ECONNABORTED", cause::local_abort},
      pasted{"ConnectionRefusedError: [Errno 111] Connection refused", "ECONNREFUSED",
             cause::connection_refused},
      pasted{"TimeoutError: [Errno 110] Connection timed out", "ETIMEDOUT",
             cause::keepalive_timeout},
      pasted{"socket.timeout: timed out", "", cause::not_a_failure},
      pasted{"read tcp 1.2.3.4:5->6.7.8.9:10: read: connection reset by peer", "ECONNRESET",
             cause::peer_reset},
      pasted{"dial tcp 127.0.0.1:9: connect: connection refused", "ECONNREFUSED",
             cause::connection_refused},
      pasted{"write tcp 10.0.0.1:443->10.0.0.2:5000: use of closed network connection", "",
             cause::local_close},
      pasted{"Error: read ECONNRESET", "ECONNRESET", cause::peer_reset},
      pasted{"Error: connect ECONNREFUSED 127.0.0.1:8080", "ECONNREFUSED",
             cause::connection_refused},
      pasted{"System.Net.Sockets.SocketException (10054): An existing connection was forcibly "
             "closed by the remote host.",
             "WSAECONNRESET", cause::peer_reset},
      pasted{"An established connection was aborted by the software in your host machine",
             "WSAECONNABORTED", cause::local_abort},
      pasted{"A connection attempt failed because the connected party did not properly respond "
             "after a period of time...",
             "WSAETIMEDOUT", cause::keepalive_timeout},
      pasted{"No connection could be made because the target machine actively refused it. "
             "127.0.0.1:5000",
             "WSAECONNREFUSED", cause::connection_refused},
      pasted{"ConnectionAbortedError: [WinError 10053] An established connection was aborted "
             "by the software in your host machine",
             "WSAECONNABORTED", cause::local_abort},
      pasted{"SocketErrorCode: ConnectionReset", "WSAECONNRESET", cause::peer_reset},
      pasted{"accept: Too many open files", "EMFILE", cause::resource_exhausted},
      pasted{"Too many open files in system", "ENFILE", cause::resource_exhausted},
      pasted{"bind: Address already in use", "EADDRINUSE", cause::address_in_use},
      pasted{"connect() failed (99: Cannot assign requested address)", "EADDRNOTAVAIL",
             cause::address_unavailable},
      pasted{"upstream timed out (110: Connection timed out) while reading", "ETIMEDOUT",
             cause::keepalive_timeout},
      pasted{"recv failed, errno=104", "ECONNRESET", cause::peer_reset},
      pasted{"Connection reset by peer (os error 104)", "ECONNRESET", cause::peer_reset},
      pasted{"WSA error 0x2746", "WSAECONNRESET", cause::peer_reset},
      pasted{"0x2746", "WSAECONNRESET", cause::peer_reset},
      pasted{"0X2745", "WSAECONNABORTED", cause::local_abort},
      pasted{"0x80072746", "WSAECONNRESET", cause::peer_reset},
  };
  for (const pasted& p : cases) {
    INFO("'" << p.text << "'");
    const auto r = deadpeer::lookup(p.text);
    REQUIRE(r.has_value());
    CHECK(r->cause == p.expected);
    if (p.error_name.empty()) {
      CHECK_FALSE(r->error.has_value());
    } else {
      REQUIRE(r->error.has_value());
      CHECK(r->error->name == p.error_name);
    }
    CHECK_FALSE(r->matched.empty());
  }
}

TEST_CASE("the longest known text in a line wins") {
  const auto java = deadpeer::lookup("java.net.SocketException: Connection reset by peer");
  REQUIRE(java.has_value());
  CHECK(java->matched == "Connection reset by peer");
  REQUIRE(java->text.has_value());
  CHECK(java->text->source == "strerror");

  const auto system = deadpeer::lookup("socket: Too many open files in system");
  REQUIRE(system.has_value());
  CHECK(system->error.value().name == "ENFILE");

  // A Python exception name and its message agree; the longer one is reported.
  const auto python = deadpeer::lookup("BrokenPipeError: [Errno 32] Broken pipe");
  REQUIRE(python.has_value());
  CHECK(python->matched == "BrokenPipeError");
}

TEST_CASE("TCP states are recognised as ss and netstat print them") {
  for (const char* text : {"CLOSE_WAIT", "close-wait", "Close_Wait",
                           "tcp  1  0 10.0.0.1:80  10.0.0.2:5000  CLOSE_WAIT  1234/python3"}) {
    INFO("'" << text << "'");
    const auto r = deadpeer::lookup(text);
    REQUIRE(r.has_value());
    CHECK(r->cause == cause::reaped);
    REQUIRE(r->text.has_value());
    CHECK(r->text->is_tcp_state);
    CHECK_FALSE(r->error.has_value());
  }
  for (const char* state : {"SYN_SENT", "SYN_RECV", "SYN-RECV", "SYN_RECEIVED", "CLOSE_WAIT",
                            "FIN_WAIT1", "FIN-WAIT-1", "FIN_WAIT2", "FIN-WAIT-2", "LAST_ACK",
                            "TIME_WAIT", "TIME-WAIT", "CLOSING", "ESTABLISHED"}) {
    INFO(state);
    const auto r = deadpeer::lookup(state);
    REQUIRE(r.has_value());
    REQUIRE(r->text.has_value());
    CHECK(r->text->is_tcp_state);
    CHECK_FALSE(r->text->note.empty());
  }
  CHECK(deadpeer::lookup("SYN_SENT").value().cause == cause::connect_timeout);
  CHECK(deadpeer::lookup("TIME_WAIT").value().cause == cause::not_a_failure);
  // Inside a sentence, only capitals are a state: "closing" is an English word.
  CHECK_FALSE(deadpeer::lookup("error while closing the socket").has_value());
}

TEST_CASE("the errnos of local conditions are known by number and by name") {
  const std::array<std::pair<int, cause>, 16> local{{
      {EINPROGRESS, cause::not_a_failure},
      {EALREADY, cause::not_a_failure},
      {EISCONN, cause::not_a_failure},
      {ENOBUFS, cause::resource_exhausted},
      {EADDRINUSE, cause::address_in_use},
      {EADDRNOTAVAIL, cause::address_unavailable},
      {EMFILE, cause::resource_exhausted},
      {ENFILE, cause::resource_exhausted},
      {EINVAL, cause::invalid_call},
      {ENOPROTOOPT, cause::invalid_call},
      {EPROTOTYPE, cause::invalid_call},
      {EMSGSIZE, cause::invalid_call},
      {EDESTADDRREQ, cause::invalid_call},
      {ENOTSOCK, cause::local_close},
      {ESOCKTNOSUPPORT, cause::invalid_call},
      {EPROTONOSUPPORT, cause::invalid_call},
  }};
  for (const auto& [number, expected] : local) {
    INFO(number);
    const auto by_number = deadpeer::lookup(std::to_string(number));
    REQUIRE(by_number.has_value());
    REQUIRE(by_number->error.has_value());
    CHECK(by_number->cause == expected);
    CHECK_FALSE(by_number->error->note.empty());
    CHECK(classify(errno_code(number), {}).cause == expected);
    const auto by_name = deadpeer::lookup(by_number->error->name);
    REQUIRE(by_name.has_value());
    CHECK(by_name->error.value().number == number);
  }
  for (const int winsock : {10022, 10024, 10036, 10048, 10049, 10055, 10056}) {
    INFO(winsock);
    const auto r = deadpeer::lookup(std::to_string(winsock));
    REQUIRE(r.has_value());
    CHECK(r->error.value().platform == "winsock");
    CHECK_FALSE(r->error->note.empty());
  }
}

TEST_CASE("ETIMEDOUT is explained by what the connection was doing") {
  using deadpeer::activity;
  for (const char* text : {"ETIMEDOUT", "110", "WSAETIMEDOUT", "Connection timed out"}) {
    INFO(text);
    const auto r = deadpeer::lookup(text);
    REQUIRE(r.has_value());
    REQUIRE(r->error.has_value());
    CHECK(deadpeer::depends_on_activity(*r->error));
    CHECK(deadpeer::cause_while(*r->error, activity::connecting) == cause::connect_timeout);
    CHECK(deadpeer::cause_while(*r->error, activity::idle) == cause::keepalive_timeout);
    CHECK(deadpeer::cause_while(*r->error, activity::sending) == cause::retransmission_timeout);
  }
  const auto reset = deadpeer::lookup("ECONNRESET").value().error.value();
  CHECK_FALSE(deadpeer::depends_on_activity(reset));
  CHECK(deadpeer::cause_while(reset, activity::connecting) == cause::peer_reset);
  for (const activity a : {activity::connecting, activity::idle, activity::sending})
    CHECK(deadpeer::activity_from_string(deadpeer::to_string(a)) == a);
  CHECK_FALSE(deadpeer::activity_from_string("busy").has_value());
  CHECK(deadpeer::explain(cause::connect_timeout).on_the_wire.find("tcp_syn_linear_timeouts") !=
        std::string_view::npos);
  CHECK(deadpeer::explain(cause::retransmission_timeout).what_to_do.find("TCP_USER_TIMEOUT") !=
        std::string_view::npos);
}

TEST_CASE("the corrections are in the explanations") {
  const auto& aborted = deadpeer::explain(cause::local_abort);
  CHECK(aborted.on_the_wire.find("FIN") != std::string_view::npos);
  CHECK(aborted.on_the_wire.find("EPIPE or ECONNRESET") != std::string_view::npos);
  CHECK(aborted.typical.find("accept() does not report it") != std::string_view::npos);
  CHECK(deadpeer::lookup("10053").value().error.value().note.find("FIN") != std::string_view::npos);
  CHECK(deadpeer::explain(cause::host_unreachable).on_the_wire.find("3 s") !=
        std::string_view::npos);
}

TEST_CASE("every known text points at an error or a cause that exists") {
  std::set<std::string_view> sources;
  for (const deadpeer::known_text& t : deadpeer::known_texts()) {
    INFO(t.text);
    sources.insert(t.source);
    const auto r = deadpeer::lookup(t.text);
    REQUIRE(r.has_value());
    REQUIRE(r->text.has_value());
    CHECK(r->text->text == t.text);
    CHECK(r->cause == t.cause);
    if (!t.error_name.empty()) CHECK(r->error.value().name == t.error_name);
  }
  for (const char* source : {"strerror", "java", ".net", "windows", "python", "go", "tcp state"})
    CHECK(sources.count(source) == 1);
}

#ifdef __GLIBC__
TEST_CASE("strerror of every Linux row finds that row") {
  // The messages are glibc's: what a C, C++ or Python program on Linux prints.
  for (const deadpeer::known_error& e : deadpeer::known_errors()) {
    if (e.platform != "linux") continue;
    const std::string message = std::strerror(e.number);
    INFO(e.name << ": " << message);
    const auto r = deadpeer::lookup(message);
    REQUIRE(r.has_value());
    REQUIRE(r->error.has_value());
    CHECK(r->error->number == e.number);
  }
}
#endif
