// The learner's RL trainer (design.md §2): one policy update from a batch of
// trajectories. No gRPC and no protobuf here (services/config/trainer_config.h converts the
// rlhf.v1.RlConfig message into TrainerOptions); the LearnerService and the in-process
// loop (core/rl_training/inprocess_loop.h) both drive this class.
//
// One Step(batch):
//   1. validates the batch (InvalidArgument naming the trajectory and field; no state
//      changes on error);
//   2. packs prompt+response rows (MakeSequenceBatch) and scatters the behaviour and
//      reference log-probs into the [B, T] prompt+response frame;
//   3. per-token KL kl_t = estimator(blogp_t - rlogp_t) (k1/k2/k3, core/rl/kl.h), or,
//      for kl_estimator kExact, the trajectory's exact_kl_t (the reference server's
//      Σ_v μ(v|s_t) log μ/π_ref over the vocabulary, the seed's definition);
//      KL in the reward: r_t = -β kl_t + score at the last token; KL in the loss:
//      r_t = score at the last token and β·agg(k3(logp - rlogp)) is added to the loss;
//   4. advantages: REINFORCE (sequence return - moving-mean baseline), RLOO / GRPO over
//      the trajectories sharing a group_id, or PPO's GAE over the value model's values
//      of the behaviour-time state (computed once before the update);
//   5. epochs x minibatches (shuffled by the trainer's own seeded generator), each split
//      into grad_accum micro-batches whose losses are weighted so that the accumulated
//      gradient equals the full-minibatch gradient; per optimizer step a pretraining
//      batch adds -γ·mean log π (PPO-ptx) when ptx_coef > 0; global grad-norm clipping,
//      AdamW, linear warmup then constant or cosine LR;
//      an optimizer step whose loss or gradient norm is not finite is skipped (zeroed,
//      counted in nonfinite_updates_skipped) so NaN never reaches the weights; a batch
//      whose returns, KL or advantages are not finite is refused (InvalidArgument);
//   6. updates the KL controller with the batch's mean KL per sequence, bumps the
//      policy version and the step counter.
//
// Policy loss: PPO-clip for ALGORITHM PPO; otherwise the REINFORCE-family loss with
// truncated importance weights min(ρ_t, c) (ρ = 1 on-policy, so it is then exactly the
// seed's estimator return x Σ ∇log π).
//
// Device: the trainer runs on options.device (core/model/device.h); batches are packed on the host
// and each micro-batch's ids, masks and targets are moved to that device; statistics come back as
// host numbers.
//
// Value function (PPO only): a SEPARATE TransformerLM with scalar_head = true (lm_head
// may be false), given to Create(); InstructGPT initialises it from the reward model.
// A separate model keeps value-loss gradients out of the policy and lets the value
// model have its own optimizer (same lr/weight decay/clip settings). V(s_t) for
// response token t is the scalar output at position t-1 (the state that emitted t).
//
// Thread-safety: not thread-safe; one caller at a time (the learner serialises updates).
// The trainer shares ownership of the modules it is given (TransformerLM is a holder);
// callers may read weights between Step() calls (e.g. to publish them).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Generator.h>
#include <torch/optim/adamw.h>
#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/model/checkpoint.h"
#include "core/model/logprobs.h"
#include "core/model/model.h"
#include "core/rl/advantages.h"
#include "core/rl/kl.h"
#include "core/rl/kl_controller.h"
#include "core/rl/losses.h"

namespace rlhf {

enum class RlAlgorithm { kReinforce, kRloo, kGrpo, kPpo };
enum class KlPlacementMode { kInReward, kInLoss };

absl::string_view RlAlgorithmName(RlAlgorithm algorithm);

// Mirrors rlhf.v1.RlConfig (proto/rlhf/v1/config.proto); defaults are the documented
// proto defaults. Units: lr per optimizer step, KL in nats per sequence.
struct TrainerOptions {
  RlAlgorithm algorithm = RlAlgorithm::kReinforce;
  int epochs = 1;                  // passes over the batch per Step()
  int minibatch_size = 32;         // sequences per optimizer step
  int grad_accum = 1;              // micro-batches per minibatch (memory, not maths)
  double lr = 2e-5;
  double weight_decay = 0.0;
  double grad_clip = 1.0;          // global L2 norm; <= 0 disables
  int warmup_steps = 0;            // optimizer steps of linear warmup
  int decay_steps = 0;             // > 0: cosine decay to 10% of lr over this many
                                   // optimizer steps after warmup; 0 = constant
  KlPlacementMode kl_placement = KlPlacementMode::kInReward;
  KlEstimator kl_estimator = KlEstimator::kK1;  // kExact: Trajectory::exact_kl (in reward only)
  KlControllerOptions kl;          // initial β, adaptive, target, horizon
  double ptx_coef = 0.0;           // γ of PPO-ptx
  double entropy_coef = 0.0;       // loss -= coef * agg(entropy)
  double clip_eps = 0.2;           // PPO ratio clip
  double value_clip_eps = 0.2;     // PPO value clip; <= 0 disables
  double value_coef = 0.5;         // weight of the value loss (separate optimizer)
  double gamma = 1.0;              // discount (GAE and sequence returns)
  double lam = 0.95;               // GAE λ
  double is_truncation = 2.0;      // c of min(ρ, c); <= 0 = untruncated
  double baseline_decay = 0.9;     // REINFORCE moving-mean baseline
  LossAggregation aggregation = LossAggregation::kTokenMean;
  double grpo_eps = 1e-4;
  bool whiten_advantages = false;  // masked whitening of advantages over the batch
  double temperature = 1.0;        // log-prob temperature (LogProbTemperature of sampling)
  // Padding id for packing: the policy tokenizer's pad_id(), set where the process loads
  // the policy (padded positions are masked, so any in-vocabulary id gives the same numbers).
  int32_t pad_id = 0;
  uint64_t seed = 1;               // minibatch shuffling generator
  // Precision of the policy's (and value model's) forward/backward: kFloat32 (default) or
  // kBFloat16 = autocast (compat::AutocastGuard): matmuls in bf16 on the models' device,
  // master weights, gradients and AdamW state stay fp32. fp16 is refused (it would need
  // loss scaling, which the trainer does not do).
  torch::ScalarType train_dtype = torch::kFloat32;
  // Where the models train (core/model/device.h): Create() moves the policy and value
  // model there (a restored checkpoint loads on the host and moves too). Default CPU.
  torch::Device device = torch::kCPU;
};

// Checks ranges; the message names the field ("minibatch_size must be >= 1").
absl::Status ValidateTrainerOptions(const TrainerOptions& options);

// One sampled response and everything the update needs about it.
struct Trajectory {
  std::vector<int32_t> prompt;              // non-empty
  std::vector<int32_t> response;            // may be empty (then it carries no gradient)
  std::vector<float> behaviour_logprobs;    // [response.size()] at sampling time
  std::vector<float> reference_logprobs;    // [response.size()] under the frozen SFT model
  std::vector<float> exact_kl;              // [response.size()] when kl_estimator is kExact
                                            // (finite, >= 0 up to rounding); else unused
  float reward = 0;                         // sequence-level reward-model score
  int64_t policy_version = 0;               // version that sampled it
  int64_t group_id = 0;                     // samples of one prompt share it (RLOO/GRPO)
};

// Statistics of one Step(). Means are over the batch unless stated.
struct TrainStats {
  int64_t step = 0;                // trainer step after this update (1-based)
  int64_t policy_version = 0;      // version after this update
  int64_t num_sequences = 0;
  int64_t response_tokens = 0;     // real response tokens in the batch
  int64_t tokens_processed = 0;    // padded prompt+response tokens through forward+backward
                                   // (policy; all epochs; + ptx and value model tokens)
  int64_t optimizer_steps = 0;
  double policy_loss = 0;          // mean over optimizer steps
  double value_loss = 0;           // PPO only
  double ptx_loss = 0;             // -mean log π over pretraining tokens (unscaled)
  double kl_mean = 0;              // behaviour vs reference, nats per sequence (estimator)
  double kl_max = 0;               // max over sequences
  double beta = 0;                 // β used for this batch
  double next_beta = 0;            // β after the controller update
  double entropy = 0;              // mean per response token (first epoch)
  double clip_fraction = 0;        // PPO: |ρ-1| > ε; REINFORCE family: ρ > c
  double value_clip_fraction = 0;
  double approx_kl = 0;            // KL(behaviour || current), mean per token (k3)
  double grad_norm = 0;            // mean pre-clip global norm of the policy gradient
  double explained_variance = 0;   // PPO: old values vs returns
  double reward_mean = 0;          // RM score
  double reward_std = 0;
  double advantage_mean = 0;
  double return_mean = 0;          // per-sequence total of the shaped reward
  double mean_staleness = 0;       // policy_version - trajectory version (before update)
  double lr = 0;                   // at the last optimizer step
  double seconds = 0;              // wall time of Step()
  int64_t nonfinite_updates_skipped = 0;  // optimizer steps skipped: non-finite loss/gradient
};

// The statistics by name (every loss/KL/reward/optimizer figure plus tokens_processed;
// not step and policy_version, which callers report on their own): the learner's
// per-step stats (GetStats, Prometheus) and `rlhf rl --json_out` use these names.
std::map<std::string, double> TrainStatsByName(const TrainStats& s);

// Everything of the trainer that a checkpoint must hold besides model weights.
struct TrainerState {
  int64_t step = 0;
  int64_t policy_version = 0;
  int64_t optimizer_steps = 0;
  double beta = 0;
  double baseline = 0;
  bool baseline_initialized = false;
  std::string shuffle_rng_state;   // the trainer generator's opaque state bytes
  NamedTensors optimizer_tensors;  // "policy/<param>/exp_avg" ... "value/<param>/exp_avg_sq"
  std::vector<std::pair<std::string, int64_t>> optimizer_steps_by_param;
};

// Opaque generator state <-> lower-case hex (checkpoints store RNG states as text).
std::string GeneratorStateHex(const at::Generator& gen);
absl::Status SetGeneratorStateHex(at::Generator& gen, const std::string& hex);

class Trainer {
 public:
  // policy: lm_head required. value_model: required (scalar_head) for PPO, must be
  // null otherwise. Both must be float32 (master weights; see train_dtype); they are
  // moved to options.device. The trainer takes (shared) ownership and puts them in
  // train mode.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const TrainerOptions& options,
                                                         TransformerLM policy,
                                                         TransformerLM value_model = nullptr);

  // One update from `batch` (>= 1 trajectory; for RLOO/GRPO every group_id must have
  // >= 2 members) and optional pretraining texts (token ids, >= 2 tokens each; used
  // when ptx_coef > 0, all of them each optimizer step). Errors leave the trainer and
  // the models unchanged.
  absl::StatusOr<TrainStats> Step(const std::vector<Trajectory>& batch,
                                  const std::vector<std::vector<int32_t>>& pretrain = {});

  // Per-token log-probs of each response under the current policy (no grad), in the
  // same convention as Generate/ResponseLogProbs. For tests and diagnostics.
  absl::StatusOr<std::vector<std::vector<float>>> ResponseLogProbsOf(
      const std::vector<Trajectory>& batch);

  int64_t step() const { return step_; }
  int64_t policy_version() const { return policy_version_; }
  double beta() const { return kl_.beta(); }
  const TrainerOptions& options() const { return options_; }
  TransformerLM& policy() { return policy_; }
  TransformerLM& value_model() { return value_; }  // null unless PPO

  // Checkpoint support (core/rl_training/learner_state.h): export/import everything but weights.
  TrainerState ExportState() const;
  // Validates names/shapes of optimizer tensors against the models before changing
  // anything; InvalidArgument on mismatch.
  absl::Status RestoreState(const TrainerState& state);

 private:
  Trainer(const TrainerOptions& options, TransformerLM policy, TransformerLM value_model);

  // The named steps of Step(), in order (defined in trainer.cc).
  struct PackedBatch;
  struct Targets;
  struct UpdateTotals;
  struct MinibatchScale {  // the minibatch's aggregate that micro-batch losses share
    double tokens = 1;
    double sequences = 1;
  };
  struct MinibatchLosses {  // weighted sums over the micro-batches of one minibatch
    double policy = 0;
    double value = 0;
  };

  // 1. Validation: no state changes on error.
  absl::Status ValidateBatch(const std::vector<Trajectory>& batch,
                             const std::vector<std::vector<int32_t>>& pretrain) const;
  // 2. Packing into the [B, T] prompt+response frame, groups, the pretraining batch.
  absl::StatusOr<PackedBatch> Pack(const std::vector<Trajectory>& batch,
                                   const std::vector<std::vector<int32_t>>& pretrain) const;
  // 3-4. KL-shaped rewards and advantages (updates the REINFORCE baseline); fills the
  // batch statistics of `stats`. InvalidArgument when returns, KL or advantages are not
  // finite. May throw c10::Error (Step converts it).
  absl::StatusOr<Targets> ComputeTargets(const PackedBatch& packed, TrainStats* stats);
  // 5. Epochs x minibatches of optimizer steps. Throws c10::Error (Step converts it).
  UpdateTotals Update(const PackedBatch& packed, const Targets& targets);
  void AccumulateMicroBatch(const PackedBatch& packed, const Targets& targets,
                            const torch::Tensor& rows, const MinibatchScale& scale,
                            bool first_epoch, MinibatchLosses* losses, UpdateTotals* totals);
  void AccumulatePtx(const SequenceBatch& ptx, UpdateTotals* totals);
  // LR schedule, global-norm clipping and the AdamW steps of one minibatch. A non-finite
  // loss or gradient norm skips the step (gradients zeroed, counted): returns false.
  bool OptimizerStep(const MinibatchLosses& losses, UpdateTotals* totals);
  double LearningRate() const;  // for the next optimizer step

  TrainerOptions options_;
  TransformerLM policy_;
  TransformerLM value_;
  std::unique_ptr<torch::optim::AdamW> policy_opt_;
  std::unique_ptr<torch::optim::AdamW> value_opt_;
  KlController kl_;
  MovingMeanBaseline baseline_;
  at::Generator shuffle_gen_;
  int64_t step_ = 0;
  int64_t policy_version_ = 0;
  int64_t optimizer_steps_ = 0;
  torch::Device device_ = torch::kCPU;  // = options_.device, where the models are
};

}  // namespace rlhf
