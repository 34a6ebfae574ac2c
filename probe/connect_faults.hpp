// Connect-phase faults: a handshake that never completes. syn-drop (the victim's SYNs are
// lost), synack-drop (the server's SYN-ACKs are lost, so both sides retry) and backlog-full
// (a listener whose accept queue is full drops new SYNs) all end the victim's connect() with
// ETIMEDOUT after its SYN retries; each trial measures when, against the connect bound of
// the SYN retry sysctls in the victim's namespace (deadpeer/connect_bound.hpp).
#pragma once

#include "experiment.hpp"

#include <deadpeer/connect_bound.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace probe {

/// syn-drop, synack-drop or backlog-full.
bool is_connect_fault(std::string_view fault);

/// The listen backlog of backlog-full's listener: this many queued connections plus one
/// fill its accept queue (the kernel calls it full above the backlog).
inline constexpr int connect_fault_backlog = 1;

/// The SYN retry settings a connect trial runs with: config.syn_settings once the lab has
/// been read, else config.syn_retries with this namespace's other sysctls.
deadpeer::syn_retry_settings connect_settings_of(const experiment_config& config);

/// The connect bound for these settings at this kernel's HZ (the latest the victim's
/// connect() can fail), and its arithmetic.
deadpeer::connect_bound connect_bound_of(const experiment_config& config);

/// The configuration key of a connect fault ("connect syn_retries=3").
std::string connect_config_key(const experiment_config& config);

/// A failed connect() in words for any command: the classified cause (deadpeer::classify,
/// operation connecting), the errno, and what the cause means on the wire, e.g.
/// "connection_refused (ECONNREFUSED, errno 111): ...".
std::string describe_connect_failure(int error_number);

/// Runs the trials of a connect fault in the lab and stores them.
std::vector<trial_result> run_connect_experiment(const experiment_config& config,
                                                 std::int64_t run_id, int first_trial,
                                                 const trial_callback& progress);

}  // namespace probe
