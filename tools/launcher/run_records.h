// Run records: <run_dir>/metrics.jsonl, one JSON object per learner step, read from the
// learner's GetStats RPC through a learner::LearnerClient (the gRPC client in `rlhf run`,
// learner/fake_learner_client.h in tests). Nothing is parsed from logs or /metrics.
//
//   RunRecorder recorder(client.get(), run_dir + "/metrics.jsonl", resumed_last_step,
//                        absl::Now());
//   while (running) (void)recorder.Poll(absl::Now() + absl::Seconds(1));  // a few per second
//
// A record is {"step", "policy_version", "actors_connected", every entry of the step's
// trainer statistics (reward_mean, kl_mean, beta, ...), "trajectories_<outcome>_total"
// for accepted / dropped_stale / rejected / trained, "time_unix_s" (when the learner
// finished the step), "elapsed_s"}, plus "final": true on the record of a finished run's
// last step (LearnerStats.done). Every step gets its record however many finish between
// two polls: the learner keeps the records of its last steps (LearnerStats.recent_steps,
// persisted with its state) and GetStats returns those after the last one written.
// rlhf-learner keeps answering GetStats after its last step while a poller is active
// (learner/main.cc), so the last step gets its record.
//
// Thread-safety: RunRecorder is used by one thread; the free functions are pure.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "learner/learner_client.h"
#include "rlhf/v1/config.pb.h"
#include "rlhf/v1/learner.pb.h"
#include "services/channel.h"

namespace rlhf::launcher {

// The record of one step without the time fields, "final": true when `final`.
// Non-finite trainer statistics are left out (JSON has no NaN).
nlohmann::json LearnerRecordFromStep(const rlhf::v1::StepRecord& step, bool final);

// How `rlhf run` reaches the learner at `target` as a client: the bearer token read
// from security.token_file, TLS with security.tls_ca as roots when the servers have a
// certificate (security.tls_cert), and with security.require_client_cert the
// certificate and key the actors also present. NotFound / InvalidArgument for an
// unreadable or empty token file.
absl::StatusOr<services::ChannelOptions> LearnerChannelOptions(
    const rlhf::v1::SecurityConfig& security, const std::string& target);

class RunRecorder {
 public:
  // `client` is not owned and must outlive the recorder. Records are appended to
  // `jsonl_path`; steps <= `last_step` (a resumed run's last record) are not written
  // again. elapsed_s counts from `start`.
  RunRecorder(learner::LearnerClient* client, std::string jsonl_path, int64_t last_step,
              absl::Time start);

  // One GetStats answered by `deadline`, asking for the steps after the last one written
  // (LearnerStats.recent_steps); appends a record for each, oldest first. The RPC's error
  // otherwise (the learner may be starting, restarting or gone: the caller polls again).
  absl::Status Poll(absl::Time deadline);

  // The newest step written (or the `last_step` given).
  int64_t last_step() const { return last_step_; }
  // Steps that will never get a record: the learner no longer kept them when asked (a
  // poller more than LearnerHandlerOptions.step_records_kept steps behind). The caller
  // says so where the user sees it; metrics.jsonl simply has no line for them.
  int64_t steps_missed() const { return steps_missed_; }

 private:
  learner::LearnerClient* const client_;
  const std::string jsonl_path_;
  int64_t last_step_;
  int64_t steps_missed_ = 0;
  const absl::Time start_;
};

}  // namespace rlhf::launcher
