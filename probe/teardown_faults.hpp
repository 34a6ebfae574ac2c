// Teardown faults: a close the peer never finishes, and how long the closing side's kernel
// then holds the socket. fin-drop (the victim's ACK of the server's FIN is lost: an orphan
// in FIN_WAIT1 retransmitting its FIN), fin-wait2 (the victim acknowledges, its own FIN is
// lost) and time-wait (a complete close: the reference) each measure, from close() to the
// moment sock_diag no longer finds the socket, against the teardown bound of the sysctls in
// the server's namespace (deadpeer/teardown_bound.hpp).
#pragma once

#include "experiment.hpp"

#include <deadpeer/teardown_bound.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace probe {

/// fin-drop, fin-wait2 or time-wait.
bool is_teardown_fault(std::string_view fault);

/// The state a teardown fault measures: fin-drop FIN_WAIT1, fin-wait2 FIN_WAIT2, time-wait
/// TIME_WAIT. Throws std::invalid_argument for another fault.
deadpeer::teardown_state teardown_state_of(std::string_view fault);

/// The teardown settings a trial runs with: config.teardown once the lab has been read and
/// the connection's RTO is known; else this namespace's sysctls with config.orphan_retries
/// and config.fin_timeout, an RTO of 200 ms plus one tick, and one FIN's round trip
/// (kernel_notice_bound) for each exchange the state waits for.
deadpeer::teardown_settings teardown_settings_of(const experiment_config& config);

/// The teardown bound for these settings at this kernel's HZ, and its arithmetic.
deadpeer::teardown_bound teardown_bound_of(const experiment_config& config);

/// The configuration key of a teardown fault ("teardown FIN_WAIT1 orphan_retries=2").
std::string teardown_config_key(const experiment_config& config);

/// Runs the trials of a teardown fault in the lab and stores them.
std::vector<trial_result> run_teardown_experiment(const experiment_config& config,
                                                  std::int64_t run_id, int first_trial,
                                                  const trial_callback& progress);

}  // namespace probe
