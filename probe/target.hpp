// Target mode: how long does a server we did not write (a broker, a cache, a web server,
// the user's own service) hold the connection of a client that died, with its own settings?
//
// What this module decides:
// - The target runs inside the lab's server namespace (--target-cmd, started and stopped by
//   probe) so every network fault applies; a target that already listens (--target
//   HOST:PORT) is reached on this host's network, where only the faults that need no lab
//   (crash, hang) apply.
// - The victim is `probe speak` with the user's greeting, in the victim namespace; the
//   fault follows right after an answer from the target (an exchange), or right after the
//   greeting for raw and send, so the time measured is the whole time the target takes.
// - Detection is seen without knowing the target's protocol: sock_diag in the target's
//   namespace, asked every millisecond for the target's socket of the victim's 4-tuple.
//   Detected is the first poll where that socket is gone or in a state the target's own
//   close() leads to (FIN_WAIT1/2, LAST_ACK, CLOSING, TIME_WAIT). CLOSE_WAIT is not
//   detection: the kernel took the victim's FIN, the target has not acted on it.
// - A trial the target never ends is `missed` at the limit (default 60s), with a note
//   that says why from the socket itself: no keepalive timer, a keepalive timer that is
//   still far off, or a CLOSE_WAIT the target never closed.
#pragma once

#include "experiment.hpp"

namespace probe {

/// Runs `config.trials` trials against config.target and stores them. Throws usage_error
/// for faults that do not apply, std::runtime_error when the target or the lab fails.
std::vector<trial_result> run_target_experiment(const experiment_config& config,
                                                std::int64_t run_id, int first_trial,
                                                const trial_callback& progress);

}  // namespace probe
