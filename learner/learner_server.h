// The rlhf-learner process minus flags: the LearnerService on a GrpcServer, the
// training thread (batches from the handler -> Trainer::Step -> publish weights ->
// checkpoint), the lease-expiry / metrics thread, and the weight publisher.
//
//   RLHF_ASSIGN_OR_RETURN(auto server, LearnerServer::Create(options, policy, prompts, registry));
//   RLHF_RETURN_IF_ERROR(server->Start());       // restores from checkpoint_dir if present
//   server->WaitDone(absl::InfiniteDuration());  // total_steps trained (or Shutdown)
//   server->Shutdown(absl::Now() + absl::Seconds(5));
//
// Shutdown after Start writes a final checkpoint of the last trained step (if newer
// than the last one), so a graceful stop redoes nothing.
//
// Restart: with a checkpoint_dir, Start() restores the newest complete trainer
// checkpoint (core/rl_training/learner_state.h) and the handler state (leases, buffered
// trajectories, counters; learner_handler.h) and re-publishes the restored weights.
//
// Thread-safety: Start/Shutdown from one thread; accessors are thread-safe.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <prometheus/registry.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "learner/learner_handler.h"
#include "learner/learner_service.h"
#include "core/rl_training/learner_state.h"
#include "core/rl_training/trainer.h"
#include "rlhf/v1/config.pb.h"
#include "services/server.h"
#include "services/weights/transport.h"

namespace rlhf::learner {

struct LearnerServerOptions {
  services::GrpcServerOptions grpc;          // name/host/port/TLS/token of the service
  LearnerHandlerOptions handler;
  weights::WeightTransportOptions weights;
  TrainerOptions trainer;
  rlhf::v1::SamplingConfig sampling;         // handed to actors at Register
  rlhf::v1::KlEstimator kl_estimator = rlhf::v1::KL_ESTIMATOR_K1;
  int kl_top_k = 32;                         // EXACT: distribution entries per step (0 = full row)
  absl::Duration heartbeat_interval = absl::Seconds(2);
  std::string checkpoint_dir;                // empty = nothing persisted (tests only)
  int checkpoint_every = 20;                 // steps; the last step is always saved
  int keep_checkpoints = 3;
  // The policy's tokenizer, copied into every checkpoint (LearnerCheckpointerOptions);
  // null = none recorded.
  std::shared_ptr<const Tokenizer> tokenizer = nullptr;
  absl::Duration poll_interval = absl::Milliseconds(100);  // expiry + metrics refresh
  // A GetStats caller counts as an active poller for this long after its last call
  // (FinalStatsPending).
  absl::Duration stats_poller_window = absl::Seconds(1);
  // The PPO-ptx term: when trainer.ptx_coef > 0, each step also trains on
  // ptx_batch_size of these texts (token ids, [BOS] text [EOS], >= 2 tokens each),
  // taken in order from position step * ptx_batch_size (mod size): a pure function of
  // the step, so a restored learner continues the same sequence. Must be non-empty when
  // ptx_coef > 0 (Create fails otherwise rather than silently dropping the term).
  std::vector<std::vector<int32_t>> pretrain;
  int ptx_batch_size = 8;
};

// A handler batch -> the trainer's trajectories: one group_id per leased prompt (its
// prompt_id, so RLOO/GRPO group exactly the G samples of one prompt), versions capped at
// trainer_version, exact_kl carried when sent. Pure.
std::vector<Trajectory> TrajectoriesForStep(const LearnerHandler::Batch& batch,
                                            int64_t trainer_version);

class LearnerMetrics;

class LearnerServer {
 public:
  // `policy` is the initial policy and `value` the initial value model (PPO only, e.g.
  // the reward model as in InstructGPT; null otherwise); both are ignored when a
  // checkpoint is restored. `registry` may be null (no metrics).
  static absl::StatusOr<std::unique_ptr<LearnerServer>> Create(
      const LearnerServerOptions& options, TransformerLM policy,
      std::vector<std::vector<int32_t>> prompts, std::shared_ptr<prometheus::Registry> registry,
      TransformerLM value = nullptr);
  ~LearnerServer();

  absl::Status Start();
  // True once total_steps are trained and the final weights/checkpoint are out.
  bool WaitDone(absl::Duration timeout);
  void Shutdown(absl::Time deadline);

  int port() const;
  std::string rendezvous_address() const;
  LearnerHandler& handler() { return *handler_; }
  // True while an active GetStats poller (one call within options.stats_poller_window)
  // has not yet been answered with done = true; rlhf-learner waits for it after its last
  // step, so `rlhf run` records the last step from GetStats.
  bool FinalStatsPending() const;
  // The training thread's last error ("" if none).
  std::string last_error() const;

 private:
  LearnerServer(const LearnerServerOptions& options, TransformerLM policy,
                std::vector<std::vector<int32_t>> prompts,
                std::shared_ptr<prometheus::Registry> registry, TransformerLM value);
  void TrainLoop();
  void PollLoop();
  absl::Status PublishCurrent();  // flattens, records the hash, publishes
  absl::Status Checkpoint();
  // The pretraining texts of the step after `step` (empty when ptx is off).
  std::vector<std::vector<int32_t>> PtxBatch(int64_t step) const;

  const LearnerServerOptions options_;
  TransformerLM initial_policy_;
  TransformerLM initial_value_;  // PPO only
  std::vector<std::vector<int32_t>> prompts_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<LearnerHandler> handler_;
  std::unique_ptr<weights::WeightPublisher> publisher_;
  // Snapshot buffers recycled between versions (fresh memory faults on every page).
  weights::BufferPool flat_pool_{2};
  std::unique_ptr<Trainer> trainer_;  // used by the training thread only after Start
  std::unique_ptr<LearnerCheckpointer> checkpointer_;
  std::unique_ptr<services::RpcMetrics> rpc_metrics_;
  std::unique_ptr<LearnerMetrics> metrics_;
  std::unique_ptr<LearnerServiceImpl> service_;
  std::unique_ptr<services::GrpcServer> server_;
  std::atomic<bool> stop_{false};
  // Step of the newest checkpoint (training thread, then Shutdown after joining it).
  int64_t last_checkpoint_step_ = -1;
  absl::Notification done_;
  std::thread train_thread_, poll_thread_;
  mutable absl::Mutex error_mu_;
  std::string last_error_ ABSL_GUARDED_BY(error_mu_);
};

}  // namespace rlhf::learner
