// The learner's bookkeeping, with no gRPC and no LibTorch: actors, prompt leases, the
// prompt cursor, buffered trajectories, staleness and accounting. The LearnerService
// (learner_service.h) is a thin adapter over it; the training thread takes batches from
// it and reports steps back.
//
// Leases: LeasePrompts hands out up to prompts_per_lease prompts; each must come back
// with exactly samples_per_prompt trajectories in ONE submission of that lease. A lease
// expires when its actor has been silent (no call of any kind) for lease_timeout; its
// prompts go to the front of the re-issue queue (new prompt ids). Leases are only handed
// out while outstanding + buffered prompts < prompts_per_step * (max_staleness + 1) and
// while the actor's weights are recent enough to be trainable when it submits.
//
// Submissions are validated completely before anything changes (InvalidArgument naming
// the field); a repeated submission of a completed lease is acknowledged as a duplicate
// and changes nothing; a submission with no trajectories releases the lease (re-issued,
// counted as expired); groups sampled more than max_staleness versions ago are dropped
// (counted) and their prompts re-issued.
//
// Accounting invariant (LearnerStats): prompts_leased == prompts_trained +
//   prompts_reissued + prompts_outstanding + prompts_buffered (+ the batch in training).
//
// Durability: with a StateStore, every mutation that an acknowledgement depends on is
// durable BEFORE the call returns, so an acked trajectory survives a crash (a lease is
// made durable by the submission that completes it: LeasePrompts does not wait). The hot path
// (Register, LeasePrompts, Submit) decides under the mutex, appends one record of the
// decision to the store's log, applies it with the same ApplyLocked that replays it
// after a restart, and waits for the log's group commit outside the mutex
// (state_store.h); the rare operations (training steps, checkpoints, expiry,
// deregistration) write a whole snapshot, which also empties the log. A call whose
// append or snapshot fails changes nothing and answers UNAVAILABLE (RESOURCE_EXHAUSTED
// for a full disk) naming the cause: retriable. A failed sync breaks the store: that
// call and every later one that would acknowledge something fail until a restart
// recovers from the disk.
//
// Ownership: a lease is submitted or released only by the actor it was issued to
// (PERMISSION_DENIED otherwise, also for duplicates of completed leases). Batches taken by training
// stay in the state until a checkpoint covering their step is reported (OnCheckpointed);
// Restore(step) puts the batches of steps after the restored checkpoint back at the front of the
// buffer.
//
// Thread-safety: all methods are thread-safe (one mutex).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "learner/state_store.h"
#include "rlhf/v1/learner.pb.h"

namespace rlhf::learner {

struct LearnerHandlerOptions {
  int prompts_per_step = 32;       // prompt groups per training step
  int samples_per_prompt = 4;      // trajectories per leased prompt (G)
  int prompts_per_lease = 8;       // max prompts per lease
  int max_staleness = 1;           // versions; 0 = synchronous (on-policy)
  int64_t total_steps = 60;        // after this many steps leases answer WAIT_DONE
  absl::Duration lease_timeout = absl::Seconds(30);  // actor silence that expires leases
  absl::Duration retry_after = absl::Milliseconds(100);  // hint when nothing is leased
  int32_t vocab_size = 259;        // token ids must be < vocab_size
  int64_t max_seq_len = 128;       // prompt + response tokens
  int max_remembered_leases = 100000;  // completed/expired lease ids kept for dedup
  // Door checks of what the trainer assumes (issue 23): log-probs in [min_logprob, 0],
  // |reward| <= max_abs_reward, |kl_t| <= max_abs_kl. Outside: INVALID_ARGUMENT.
  double max_abs_reward = 1e6;
  double max_abs_kl = 1e6;
  double min_logprob = -1e6;
  size_t max_name_bytes = 256;     // RegisterRequest.actor_name
  size_t max_id_bytes = 128;       // actor and lease ids (ours are ~20 bytes)
  // A trainer checkpoint past step 0 with no (or an empty) handler state: false =
  // Restore refuses (FailedPrecondition); true = the accounting starts over at that
  // step (restore_note() says what was lost).
  bool allow_state_reset = false;
  bool require_exact_kl = false;   // kl_estimator EXACT: every trajectory carries exact_kl
  // true: the hot path appends log records (group commit). false: every mutation writes
  // a whole snapshot under the mutex, as before the log (bench/learner_log_bench.cc
  // measures one against the other).
  bool log_records = true;
  // A log longer than this is folded into a snapshot (bounds replay after a crash;
  // training steps snapshot anyway). Bytes.
  int64_t max_log_bytes = int64_t{256} << 20;
  // LearnerStats.recent_steps keeps the records of this many last steps, at least 1 (the
  // newest is the last step's statistics; persisted with the state, so every snapshot
  // carries them): a GetStats poller that falls this many steps behind loses the oldest.
  int step_records_kept = 64;
};

class LearnerHandler {
 public:
  using Clock = std::function<absl::Time()>;
  struct Batch {
    int64_t step = 0;  // the trainer step this batch feeds (current step + 1)
    std::vector<rlhf::v1::BufferedGroup> groups;
  };
  // Called for every accepted group with its staleness (versions behind), e.g. metrics.
  using StalenessHook = std::function<void(int64_t staleness)>;

  // prompts: the prompt set (token ids), cycled in order. store may be null (nothing
  // persisted). clock null = absl::Now.
  static absl::StatusOr<std::unique_ptr<LearnerHandler>> Create(
      const LearnerHandlerOptions& options, std::vector<std::vector<int32_t>> prompts,
      StateStore* store, Clock clock = nullptr);

  // Loads the persisted state (if any) for a trainer restored at `trainer_step` with
  // `policy_version`: batches of later steps are re-buffered and their counters rolled
  // back; restored actors get a fresh lease_timeout of grace. Call before serving.
  absl::Status Restore(int64_t trainer_step, int64_t policy_version);

  absl::StatusOr<rlhf::v1::RegisterResponse> Register(const rlhf::v1::RegisterRequest& request);
  // NotFound for an unknown (or expired) actor: the actor must re-register.
  absl::StatusOr<rlhf::v1::HeartbeatResponse> Heartbeat(const rlhf::v1::HeartbeatRequest& request);
  // Its outstanding leases are expired at once (re-issued).
  absl::Status Deregister(const rlhf::v1::DeregisterRequest& request);
  absl::StatusOr<rlhf::v1::LeasePromptsResponse> LeasePrompts(
      const rlhf::v1::LeasePromptsRequest& request);
  absl::StatusOr<rlhf::v1::SubmitTrajectoriesResponse> Submit(
      const rlhf::v1::SubmitTrajectoriesRequest& request);
  // Removes actors silent for > lease_timeout and expires their leases. Returns the
  // number of leases expired. Called periodically by the service.
  int ExpireSilentActors();

  // Training side. Blocks up to `timeout` for prompts_per_step trainable groups (all
  // of the current version when max_staleness == 0); nullopt on timeout or when done.
  std::optional<Batch> WaitForBatch(absl::Duration timeout);
  // The batch was trained: step/version advance, counters move, buffered groups that
  // became too stale are dropped and re-issued. Persists.
  // weights_hash: the hash of the new version's weights, set together with the version.
  absl::Status OnTrained(const Batch& batch, int64_t new_version,
                         const std::map<std::string, double>& step_stats,
                         uint64_t weights_hash = 0);
  // The batch could not be trained: its groups go back to the front of the buffer.
  void OnTrainFailed(const Batch& batch);
  // The trainer refused the batch (values it cannot use): it is dropped, counted
  // (batches_dropped) and its prompts re-issued, so it is never retried as it was.
  // Persists.
  absl::Status OnTrainRejected(const Batch& batch, const absl::Status& why);
  // Optimizer steps the trainer skipped for a non-finite loss/gradient (counted).
  void AddNonfiniteSkipped(int64_t n);
  // Non-empty when Restore reset the accounting (allow_state_reset): what was lost.
  std::string restore_note() const;
  // A checkpoint of trainer step `step` is durable: forget batches up to it. Persists.
  absl::Status OnCheckpointed(int64_t step);

  // The accounting, with recent_steps cut to the steps after `steps_after` (0: all kept).
  rlhf::v1::LearnerStats Stats(int64_t steps_after = 0) const;
  std::vector<std::string> ActorIds() const;
  bool IsActor(const std::string& actor_id) const;
  bool done() const;
  int64_t version() const;
  void set_staleness_hook(StalenessHook hook);
  // Records the hash of the latest published weights (reported in Stats()).
  void set_weights_hash(uint64_t hash);

 private:
  struct Actor {
    std::string name;
    absl::Time last_seen;
  };
  LearnerHandler(const LearnerHandlerOptions& options, std::vector<std::vector<int32_t>> prompts,
                 StateStore* store, Clock clock);

  absl::Status PersistLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The hot path's commit: appends `record` to the log and applies it (or, without the
  // log, applies it and writes a snapshot, rolled back on failure). *seq = what the
  // caller must Sync (outside the mutex) before acknowledging; 0 = nothing to wait for.
  absl::Status RecordLocked(rlhf::v1::LearnerLogRecord record, int64_t* seq)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Applies a decided record: live (after its append) and when replaying the log.
  void ApplyLocked(rlhf::v1::LearnerLogRecord record) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits until record `seq` is durable (no-op for 0). Called without the mutex.
  absl::Status AwaitDurable(int64_t seq) ABSL_LOCKS_EXCLUDED(mu_);
  // The seq an acknowledgement of the current state must wait for.
  int64_t AckSeqLocked() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // The state to roll back to if the next persist fails (empty without a store).
  struct Snapshot {
    std::optional<rlhf::v1::LearnerState> state;
    std::map<std::string, absl::Time> last_seen;
  };
  Snapshot SnapshotLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Persists; on failure restores `before` and returns a retriable error.
  absl::Status CommitLocked(const Snapshot& before) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  rlhf::v1::LearnerState ToProtoLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FromProtoLocked(const rlhf::v1::LearnerState& state) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool TouchLocked(const std::string& actor_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ExpireLeaseLocked(const std::string& lease_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReissueLocked(int64_t source_index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RememberLocked(std::deque<std::string>& order, std::set<std::string>& set,
                      const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropStaleLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool BatchReadyLocked() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  int64_t EffectiveVersionLocked() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::Status ValidateLocked(const rlhf::v1::SubmitTrajectoriesRequest& request,
                              const rlhf::v1::LearnerState::Lease& lease) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const LearnerHandlerOptions options_;
  const std::vector<std::vector<int32_t>> prompts_;
  StateStore* const store_;
  const Clock clock_;

  mutable absl::Mutex mu_;
  std::string run_id_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Actor> actors_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, rlhf::v1::LearnerState::Lease> leases_ ABSL_GUARDED_BY(mu_);
  std::deque<rlhf::v1::BufferedGroup> buffer_ ABSL_GUARDED_BY(mu_);
  std::deque<int64_t> reissue_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> completed_order_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> completed_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> completed_owner_ ABSL_GUARDED_BY(mu_);  // lease -> actor
  std::deque<std::string> expired_order_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> expired_ ABSL_GUARDED_BY(mu_);
  std::vector<rlhf::v1::TrainedBatch> trained_ ABSL_GUARDED_BY(mu_);  // since checkpoint
  std::optional<Batch> in_training_ ABSL_GUARDED_BY(mu_);
  rlhf::v1::LearnerStats stats_ ABSL_GUARDED_BY(mu_);
  int64_t next_prompt_id_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t cursor_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_lease_number_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t next_actor_number_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t checkpointed_step_ ABSL_GUARDED_BY(mu_) = 0;
  std::set<int64_t> trained_sources_ ABSL_GUARDED_BY(mu_);
  StalenessHook staleness_hook_ ABSL_GUARDED_BY(mu_);
  std::string restore_note_ ABSL_GUARDED_BY(mu_);
};

}  // namespace rlhf::learner
