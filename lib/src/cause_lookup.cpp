// Reading what users paste into `probe explain`: a number, a name, a message, or a whole
// log line. What this module decides:
// - Whole-input forms are tried first and exactly (a decimal or hex number, an errno or
//   Winsock name, a cause name, a TCP state); only then is the input searched for known
//   texts. A bare number inside a line is never taken as an errno ("1.2.3.4:5" holds 4,
//   EINTR); only "errno 104", "[WinError 10054]", "os error 104" and the like are.
// - Search ignores case and needs word boundaries on both ends, so "Connection reset" in
//   "java.net.SocketException: Connection reset" matches but "peer" alone matches nothing.
//   When several texts occur, the longest match wins: "Connection reset by peer" beats
//   Java's "Connection reset", "Too many open files in system" beats "Too many open files".
// - TCP state names are recognised inside a line only in capitals, as ss and netstat print
//   them: "closing" is an English word, CLOSING is a state. '-' and '_' do not count
//   there, so ss's FIN-WAIT-1 is netstat's FIN_WAIT1.
// - Hex is Windows' notation (0x2746, HRESULT 0x80072746) and is accepted only for
//   Winsock numbers; a Linux errno is never printed in hex.
// - A text names the error it stands for, so the answer carries that error's number and
//   note; texts that are not errors (Java's "Socket closed", a TCP state) carry a cause.
// Long Windows messages are stored as a distinctive part, so a message cut short by a log
// ("... did not properly respond after a period of time...") still matches.
#include <deadpeer/cause.hpp>

#include "ascii_text.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace deadpeer {
namespace {

constexpr std::string_view strerror_ = "strerror";
constexpr std::string_view java = "java";
constexpr std::string_view dotnet = ".net";
constexpr std::string_view windows = "windows";
constexpr std::string_view python = "python";
constexpr std::string_view go = "go";
constexpr std::string_view node = "node.js";
constexpr std::string_view asio_ = "asio";
constexpr std::string_view tcp_state = "tcp state";

constexpr std::string_view state_syn_recv =
    "the server's half of a handshake: our SYN-ACK is out and the client's ACK has not come "
    "back. Many at once mean a SYN flood or clients whose ACKs are lost; such entries expire "
    "after tcp_synack_retries (default 5, about a minute) without the application ever "
    "seeing them";
constexpr std::string_view state_fin_wait1 =
    "we closed and our FIN is not yet acknowledged. Lingering here means the peer or the path "
    "is gone, or the peer's receive window is zero; an orphaned socket gives up after "
    "tcp_orphan_retries";
constexpr std::string_view state_fin_wait2 =
    "we closed and the peer acknowledged our FIN but has not closed its side yet (the peer "
    "sits in CLOSE_WAIT). An orphaned socket waits tcp_fin_timeout (60 s); many of them point "
    "at a peer application that does not close";

// Grouped by who prints them. Every text is unique ignoring case (checked below).
constexpr auto texts = std::to_array<known_text>({
    // glibc strerror(), as C, C++, Python, Java on Linux, nginx, curl and others print it.
    {"Interrupted system call", strerror_, "EINTR", cause::not_a_failure, {}},
    {"Bad file descriptor", strerror_, "EBADF", cause::local_close, {}},
    {"Resource temporarily unavailable", strerror_, "EAGAIN", cause::not_a_failure, {}},
    {"Broken pipe", strerror_, "EPIPE", cause::broken_pipe, {}},
    {"Network is down", strerror_, "ENETDOWN", cause::network_unreachable, {}},
    {"Network is unreachable", strerror_, "ENETUNREACH", cause::network_unreachable, {}},
    {"Network dropped connection on reset", strerror_, "ENETRESET", cause::keepalive_timeout, {}},
    {"Software caused connection abort", strerror_, "ECONNABORTED", cause::local_abort,
     "Java on Windows prints this text for Winsock 10053"},
    {"Connection reset by peer", strerror_, "ECONNRESET", cause::peer_reset, {}},
    {"Transport endpoint is not connected", strerror_, "ENOTCONN", cause::broken_pipe, {}},
    {"Cannot send after transport endpoint shutdown",
     strerror_,
     "ESHUTDOWN",
     cause::broken_pipe,
     {}},
    {"Connection timed out", strerror_, "ETIMEDOUT", cause::keepalive_timeout, {}},
    {"Connection refused", strerror_, "ECONNREFUSED", cause::connection_refused, {}},
    {"Host is down", strerror_, "EHOSTDOWN", cause::host_unreachable, {}},
    {"No route to host", strerror_, "EHOSTUNREACH", cause::host_unreachable, {}},
    {"Operation canceled", strerror_, "ECANCELED", cause::local_close,
     "Asio prints it for operation_aborted too"},
    {"Operation now in progress", strerror_, "EINPROGRESS", cause::not_a_failure, {}},
    {"Operation already in progress", strerror_, "EALREADY", cause::not_a_failure, {}},
    {"Transport endpoint is already connected", strerror_, "EISCONN", cause::not_a_failure, {}},
    {"No buffer space available", strerror_, "ENOBUFS", cause::resource_exhausted, {}},
    {"Cannot allocate memory", strerror_, "ENOMEM", cause::resource_exhausted, {}},
    {"Too many open files", strerror_, "EMFILE", cause::resource_exhausted, {}},
    {"Too many open files in system", strerror_, "ENFILE", cause::resource_exhausted, {}},
    {"Address already in use", strerror_, "EADDRINUSE", cause::address_in_use, {}},
    {"Cannot assign requested address", strerror_, "EADDRNOTAVAIL", cause::address_unavailable, {}},
    {"Invalid argument", strerror_, "EINVAL", cause::invalid_call, {}},
    {"Protocol not available", strerror_, "ENOPROTOOPT", cause::invalid_call, {}},
    {"Protocol wrong type for socket", strerror_, "EPROTOTYPE", cause::invalid_call, {}},
    {"Message too long", strerror_, "EMSGSIZE", cause::invalid_call, {}},
    {"Destination address required", strerror_, "EDESTADDRREQ", cause::invalid_call, {}},
    {"Socket operation on non-socket", strerror_, "ENOTSOCK", cause::local_close, {}},
    {"Socket type not supported", strerror_, "ESOCKTNOSUPPORT", cause::invalid_call, {}},
    {"Protocol not supported", strerror_, "EPROTONOSUPPORT", cause::invalid_call, {}},

    // Java (java.net.SocketException and friends) where it differs from strerror.
    {"Connection reset", java, "ECONNRESET", cause::peer_reset,
     "Java's SocketException text for an RST, on every platform"},
    {"Socket closed",
     java,
     {},
     cause::local_close,
     "Java: this program closed the socket, often from another thread while a read or write "
     "was blocked on it; nothing happened on the network"},
    {"connect timed out",
     java,
     {},
     cause::connect_timeout,
     "Java's own connect deadline (Socket.connect with a timeout) expired, before the kernel's "
     "SYN retries ran out"},
    {"Read timed out",
     java,
     {},
     cause::not_a_failure,
     "Java's SO_TIMEOUT on a read expired; the socket is still usable and the peer may be "
     "fine, it was only silent"},

    // Windows' Winsock messages, as .NET's SocketException and Python's WinError print them.
    {"An existing connection was forcibly closed by the remote host",
     windows,
     "WSAECONNRESET",
     cause::peer_reset,
     {}},
    {"An established connection was aborted by the software in your host machine",
     windows,
     "WSAECONNABORTED",
     cause::local_abort,
     {}},
    {"the connected party did not properly respond after a period of time",
     windows,
     "WSAETIMEDOUT",
     cause::keepalive_timeout,
     {}},
    {"No connection could be made because the target machine actively refused it",
     windows,
     "WSAECONNREFUSED",
     cause::connection_refused,
     {}},
    {"A socket operation was attempted to an unreachable host",
     windows,
     "WSAEHOSTUNREACH",
     cause::host_unreachable,
     {}},
    {"A socket operation was attempted to an unreachable network",
     windows,
     "WSAENETUNREACH",
     cause::network_unreachable,
     {}},
    {"A socket operation encountered a dead network",
     windows,
     "WSAENETDOWN",
     cause::network_unreachable,
     {}},
    {"A socket operation failed because the destination host was down",
     windows,
     "WSAEHOSTDOWN",
     cause::host_unreachable,
     {}},
    {"due to keep-alive activity detecting a failure",
     windows,
     "WSAENETRESET",
     cause::keepalive_timeout,
     {}},
    {"Only one usage of each socket address", windows, "WSAEADDRINUSE", cause::address_in_use, {}},
    {"The requested address is not valid in its context",
     windows,
     "WSAEADDRNOTAVAIL",
     cause::address_unavailable,
     {}},
    {"the system lacked sufficient buffer space or because a queue was full",
     windows,
     "WSAENOBUFS",
     cause::resource_exhausted,
     {}},
    {"Too many open sockets", windows, "WSAEMFILE", cause::resource_exhausted, {}},
    {"An invalid argument was supplied", windows, "WSAEINVAL", cause::invalid_call, {}},
    {"A non-blocking socket operation could not be completed immediately",
     windows,
     "WSAEWOULDBLOCK",
     cause::not_a_failure,
     {}},
    {"A blocking operation is currently executing",
     windows,
     "WSAEINPROGRESS",
     cause::not_a_failure,
     {}},
    {"A connect request was made on an already connected socket",
     windows,
     "WSAEISCONN",
     cause::not_a_failure,
     {}},
    {"because the socket is not connected", windows, "WSAENOTCONN", cause::broken_pipe, {}},
    {"had already been shut down in that direction",
     windows,
     "WSAESHUTDOWN",
     cause::broken_pipe,
     {}},
    {"An operation was attempted on something that is not a socket",
     windows,
     "WSAENOTSOCK",
     cause::local_close,
     {}},
    {"The I/O operation has been aborted because of either a thread exit or an application "
     "request",
     windows,
     "WSA_OPERATION_ABORTED",
     cause::local_close,
     {}},
    // .NET's SocketError names, as SocketErrorCode prints them.
    {"ConnectionReset", dotnet, "WSAECONNRESET", cause::peer_reset, {}},
    {"ConnectionAborted", dotnet, "WSAECONNABORTED", cause::local_abort, {}},
    {"ConnectionRefused", dotnet, "WSAECONNREFUSED", cause::connection_refused, {}},
    {"TimedOut", dotnet, "WSAETIMEDOUT", cause::keepalive_timeout, {}},
    {"HostUnreachable", dotnet, "WSAEHOSTUNREACH", cause::host_unreachable, {}},
    {"NetworkUnreachable", dotnet, "WSAENETUNREACH", cause::network_unreachable, {}},
    {"AddressAlreadyInUse", dotnet, "WSAEADDRINUSE", cause::address_in_use, {}},
    {"AddressNotAvailable", dotnet, "WSAEADDRNOTAVAIL", cause::address_unavailable, {}},
    {"TooManyOpenSockets", dotnet, "WSAEMFILE", cause::resource_exhausted, {}},
    {"NoBufferSpaceAvailable", dotnet, "WSAENOBUFS", cause::resource_exhausted, {}},
    {"OperationAborted", dotnet, "WSA_OPERATION_ABORTED", cause::local_close, {}},

    // Python's OSError subclasses, named after the errno they stand for.
    {"ConnectionResetError", python, "ECONNRESET", cause::peer_reset, {}},
    {"BrokenPipeError", python, "EPIPE", cause::broken_pipe, {}},
    {"ConnectionAbortedError", python, "ECONNABORTED", cause::local_abort, {}},
    {"ConnectionRefusedError", python, "ECONNREFUSED", cause::connection_refused, {}},
    {"TimeoutError", python, "ETIMEDOUT", cause::keepalive_timeout,
     "with [Errno 110] it is the kernel's ETIMEDOUT; with the bare text \"timed out\" it is "
     "the program's own settimeout() deadline, which says nothing about the connection"},
    {"InterruptedError", python, "EINTR", cause::not_a_failure, {}},
    {"BlockingIOError", python, "EAGAIN", cause::not_a_failure, {}},
    {"socket.timeout",
     python,
     {},
     cause::not_a_failure,
     "the program's own settimeout() deadline expired; the connection may be fine"},
    {"RemoteDisconnected",
     python,
     {},
     cause::peer_closed,
     "http.client: the server closed the connection (FIN) without sending a response"},

    // Go's net package and Node.js.
    {"use of closed network connection",
     go,
     {},
     cause::local_close,
     "Go: this program closed the connection and then used it, often one goroutine closing "
     "under another's read"},
    {"i/o timeout",
     go,
     {},
     cause::not_a_failure,
     "Go: a deadline the program set (SetDeadline) expired; nothing is known about the peer"},
    {"socket hang up", node, "ECONNRESET", cause::peer_reset,
     "Node.js: the server closed the connection before answering; Node reports code "
     "ECONNRESET even when the close was a plain FIN"},
    {"End of file",
     asio_,
     {},
     cause::peer_closed,
     "Asio's error::eof: the peer sent FIN and everything before it has been read"},

    // TCP states, as netstat spells them (ss writes '-' for '_').
    {"ESTABLISHED",
     tcp_state,
     {},
     cause::not_a_failure,
     "the handshake completed. It says nothing about whether the peer is still there: a "
     "connection to a pulled cable stays ESTABLISHED until a timer or a heartbeat notices",
     true},
    {"SYN_SENT",
     tcp_state,
     {},
     cause::connect_timeout,
     "our connect() sent a SYN and no SYN-ACK has come back yet. One that stays here is "
     "unanswered: the host is down, a firewall drops the SYN or the accept queue is full, and "
     "connect() will fail with ETIMEDOUT",
     true},
    {"SYN_RECV", tcp_state, {}, cause::not_a_failure, state_syn_recv, true},
    {"SYN_RECEIVED", tcp_state, {}, cause::not_a_failure, state_syn_recv, true},
    {"FIN_WAIT1", tcp_state, {}, cause::local_close, state_fin_wait1, true},
    {"FIN_WAIT2", tcp_state, {}, cause::local_close, state_fin_wait2, true},
    {"CLOSE_WAIT",
     tcp_state,
     {},
     cause::reaped,
     "the peer sent FIN, our kernel acknowledged it, and our program has not called close(). "
     "A few for a moment are normal; many, or old ones, are a leak in the program that holds "
     "them",
     true},
    {"LAST_ACK",
     tcp_state,
     {},
     cause::peer_closed,
     "the peer closed first, we closed too, and our FIN awaits its ACK. Lingering here means "
     "the peer went away right after its own FIN",
     true},
    {"TIME_WAIT",
     tcp_state,
     {},
     cause::not_a_failure,
     "the normal end of the side that closed first, held for 60 s so stray segments die out. "
     "Not a failure; tens of thousands toward one destination exhaust local ports and make "
     "connect() fail with EADDRNOTAVAIL",
     true},
    {"CLOSING",
     tcp_state,
     {},
     cause::local_close,
     "both sides closed at the same moment and our FIN is not yet acknowledged; brief unless "
     "the peer vanished",
     true},
});

using detail::lower;
using detail::same_ignoring_case;

constexpr bool is_word_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

// A state name compared as ss and netstat both print it: '-' and '_' are left out, so
// FIN-WAIT-1 is FIN_WAIT1 and SYN-RECV is SYN_RECV.
constexpr bool same_state(std::string_view a, std::string_view b, bool ignore_case) {
  const auto separator = [](char c) { return c == '-' || c == '_'; };
  std::size_t i = 0;
  std::size_t j = 0;
  while (true) {
    while (i < a.size() && separator(a[i]))
      ++i;
    while (j < b.size() && separator(b[j]))
      ++j;
    if (i == a.size() || j == b.size()) return i == a.size() && j == b.size();
    const char x = ignore_case ? lower(a[i]) : a[i];
    const char y = ignore_case ? lower(b[j]) : b[j];
    if (x != y) return false;
    ++i;
    ++j;
  }
}

constexpr bool texts_are_consistent() {
  for (const known_text& a : texts) {
    if (a.text.empty() || a.source.empty()) return false;
    if (!a.note.empty() && a.note.back() == '.') return false;  // notes are clauses
    if (a.is_tcp_state != (a.source == tcp_state)) return false;
    for (const known_text& b : texts) {
      if (&a != &b && same_ignoring_case(a.text, b.text)) return false;
    }
  }
  return true;
}
static_assert(texts_are_consistent());

std::optional<known_error> error_named(std::string_view name) {
  for (const known_error& e : known_errors()) {
    if (same_ignoring_case(e.name, name)) return e;
  }
  return std::nullopt;
}

std::optional<known_error> error_numbered(std::uint64_t number) {
  for (const known_error& e : known_errors()) {
    if (static_cast<std::uint64_t>(e.number) == number) return e;
  }
  return std::nullopt;
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && is_space(text.front()))
    text.remove_prefix(1);
  while (!text.empty() && is_space(text.back()))
    text.remove_suffix(1);
  return text;
}

// Digits only in the given base: no sign, no spaces, no suffix. Anything past the largest
// value of interest cannot match, so it is refused before it could overflow.
std::optional<std::uint64_t> parse_digits(std::string_view text, unsigned base) {
  if (text.empty()) return std::nullopt;
  constexpr std::uint64_t too_large = 0xFFFF'FFFFULL;
  std::uint64_t value = 0;
  for (const char c : text) {
    unsigned digit = 0;
    if (c >= '0' && c <= '9')
      digit = static_cast<unsigned>(c - '0');
    else if (base == 16 && lower(c) >= 'a' && lower(c) <= 'f')
      digit = static_cast<unsigned>(lower(c) - 'a' + 10);
    else
      return std::nullopt;
    if (value > too_large) return std::nullopt;
    value = value * base + digit;
  }
  return value;
}

// "0x2746" or the HRESULT that wraps a Win32 code, "0x80072746"; Winsock numbers only.
std::optional<known_error> winsock_from_hex(std::string_view text) {
  if (text.size() < 3 || text[0] != '0' || lower(text[1]) != 'x') return std::nullopt;
  const auto value = parse_digits(text.substr(2), 16);
  if (!value) return std::nullopt;
  constexpr std::uint64_t hresult_win32 = 0x8007'0000ULL;
  std::uint64_t code = *value;
  if ((code & 0xFFFF'0000ULL) == hresult_win32) code &= 0xFFFFULL;
  const auto e = error_numbered(code);
  if (!e || e->platform != "winsock") return std::nullopt;
  return e;
}

lookup_result result_for(const known_text& t) {
  if (!t.error_name.empty()) {
    if (const auto e = error_named(t.error_name)) return {e, e->cause, t, {}};
  }
  return {std::nullopt, t.cause, t, {}};
}

// The table's texts must name errors that exist, with the cause those errors have.
bool texts_agree_with_errors() {
  for (const known_text& t : texts) {
    if (t.error_name.empty()) continue;
    const auto e = error_named(t.error_name);
    if (!e || e->cause != t.cause) return false;
  }
  return true;
}

std::optional<lookup_result> whole_input(std::string_view text) {
  if (const auto number = parse_digits(text, 10)) {
    if (const auto e = error_numbered(*number)) return lookup_result{e, e->cause, {}, text};
    return std::nullopt;
  }
  if (const auto e = winsock_from_hex(text)) return lookup_result{e, e->cause, {}, text};
  if (const auto e = error_named(text)) return lookup_result{e, e->cause, {}, text};
  for (const cause c : known_causes()) {
    if (same_ignoring_case(to_string(c), text)) return lookup_result{std::nullopt, c, {}, text};
  }
  for (const known_text& t : texts) {
    if (t.is_tcp_state && same_state(t.text, text, true)) {
      auto r = result_for(t);
      r.matched = text;
      return r;
    }
  }
  return std::nullopt;
}

// The best candidate found so far in a line: the longest match wins, the first on a tie.
struct best_match {
  std::optional<lookup_result> result;
  std::size_t length = 0;

  void offer(lookup_result r, std::string_view matched) {
    if (matched.size() <= length) return;
    r.matched = matched;
    result = r;
    length = matched.size();
  }
};

bool bounded(std::string_view line, std::size_t at, std::size_t length) {
  const bool left = at == 0 || !is_word_char(line[at - 1]) || !is_word_char(line[at]);
  const std::size_t end = at + length;
  const bool right = end == line.size() || !is_word_char(line[end]) || !is_word_char(line[end - 1]);
  return left && right;
}

void find_texts(std::string_view line, const std::string& lowered, best_match& best) {
  for (const known_text& t : texts) {
    if (t.is_tcp_state) continue;
    std::string needle(t.text);
    for (char& c : needle)
      c = lower(c);
    for (std::size_t at = lowered.find(needle); at != std::string::npos;
         at = lowered.find(needle, at + 1)) {
      if (bounded(line, at, needle.size())) {
        best.offer(result_for(t), line.substr(at, needle.size()));
        break;
      }
    }
  }
}

// Words of the line: error names (Node's "read ECONNRESET"), TCP states in capitals,
// Winsock numbers in hex.
void find_words(std::string_view line, best_match& best) {
  std::size_t i = 0;
  while (i < line.size()) {
    if (!is_word_char(line[i]) && line[i] != '-') {
      ++i;
      continue;
    }
    std::size_t end = i;
    while (end < line.size() && (is_word_char(line[end]) || line[end] == '-'))
      ++end;
    const std::string_view word = line.substr(i, end - i);
    i = end;
    // Names never contain '-'; take the parts between dashes as words of their own.
    std::size_t part_start = 0;
    while (part_start <= word.size()) {
      std::size_t part_end = word.find('-', part_start);
      if (part_end == std::string_view::npos) part_end = word.size();
      const std::string_view part = word.substr(part_start, part_end - part_start);
      if (!part.empty()) {
        if (const auto e = error_named(part)) best.offer({e, e->cause, {}, {}}, part);
        if (const auto e = winsock_from_hex(part)) best.offer({e, e->cause, {}, {}}, part);
      }
      part_start = part_end + 1;
    }
    for (const known_text& t : texts) {
      if (t.is_tcp_state && same_state(t.text, word, false)) best.offer(result_for(t), word);
    }
  }
}

// "errno 104", "[Errno 104]", "errno=104", "os error 104", "[WinError 10054]",
// "error code 10054", "socket error 10054": a number that says what it is.
void find_numbers(std::string_view line, const std::string& lowered, best_match& best) {
  constexpr std::array<std::string_view, 5> keywords{"errno", "winerror", "os error", "error code",
                                                     "socket error"};
  for (const std::string_view keyword : keywords) {
    for (std::size_t at = lowered.find(keyword); at != std::string::npos;
         at = lowered.find(keyword, at + 1)) {
      if (at > 0 && is_word_char(line[at - 1])) continue;
      std::size_t digits = at + keyword.size();
      while (digits < line.size() && (line[digits] == ' ' || line[digits] == ':' ||
                                      line[digits] == '=' || line[digits] == '#'))
        ++digits;
      std::size_t end = digits;
      while (end < line.size() && line[end] >= '0' && line[end] <= '9' && end - digits < 8)
        ++end;
      if (end == digits || (end < line.size() && is_word_char(line[end]))) continue;
      const auto number = parse_digits(line.substr(digits, end - digits), 10);
      if (!number) continue;
      if (const auto e = error_numbered(*number))
        best.offer({e, e->cause, {}, {}}, line.substr(at, end - at));
    }
  }
}

}  // namespace

std::span<const known_text> known_texts() {
  return texts;
}

std::optional<lookup_result> lookup(std::string_view text) {
  static const bool consistent = texts_agree_with_errors();
  if (!consistent) return std::nullopt;  // a table bug; the unit tests say which row

  text = trim(text);
  if (text.empty()) return std::nullopt;
  if (auto r = whole_input(text)) return r;

  std::string lowered(text);
  for (char& c : lowered)
    c = lower(c);
  best_match best;
  find_texts(text, lowered, best);
  find_words(text, best);
  find_numbers(text, lowered, best);
  return best.result;
}

}  // namespace deadpeer
