// The early-reject experiment: an HTTP-like upload answered with an error before its body
// was read, and what the client then sees, depending on how the server closes.
//
// What this module decides:
// - Both ends are probe's own, on loopback (no lab: nothing here depends on the path): a
//   server thread that reads the request header, answers `413 Payload Too Large` with
//   `Connection: close` and closes, and a client on the trial's thread that writes a large
//   body as fast as its socket takes it while reading whatever comes back (one poll loop,
//   as an uploading HTTP client that watches for an early answer does).
// - `--server-close naive`: close() right after the answer, with body bytes still unread
//   in the receive buffer (the server waits, bounded, until there are some, so every
//   trial is that case): the kernel sends RST instead of FIN (RFC 2525 §2.17).
//   `graceful`: shutdown(SHUT_WR) after the answer (FIN), then read and discard until the
//   client's EOF or a bounded deadline, then close: nothing unread, no RST.
// - A trial detects nothing, it records what the client saw: outcome `observed`, and in
//   `details` (JSON) the client's first error (errno name, deadpeer::classify's cause),
//   whether the whole answer was read (and whether before that error: a client that gives
//   up at its first failed write never sees it), the body bytes sent before the error,
//   and the sequence of events with their instants. The latency is from the server's
//   answer to the client's first EOF or error. There is no bound.
#pragma once

#include "experiment.hpp"

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

namespace probe {

/// The values --server-close accepts.
inline constexpr std::array<std::string_view, 2> server_close_modes{"naive", "graceful"};
/// The body the client tries to upload: several MB, far more than both sockets' buffers.
inline constexpr std::uint64_t early_reject_body_bytes = 8ull << 20;

/// Runs `config.trials` early-reject trials with `config.server_close` and stores them.
/// Throws usage_error for settings that do not apply (an external server, a target,
/// keepalive options) and std::runtime_error when the loopback pair cannot be set up.
std::vector<trial_result> run_early_reject_experiment(const experiment_config& config,
                                                      std::int64_t run_id, int first_trial,
                                                      const trial_callback& progress);

}  // namespace probe
