// The RL loop in one process, no network: the generation engine (core/model/
// generation.h), the frozen reference model and a reward function are called directly,
// and the same Trainer as the LearnerService does the updates. Used by tests, the
// benchmark and for debugging.
//
// One step (synchronous, on-policy: max_staleness 0):
//   1. the prompt cursor hands out prompts_per_step prompts (a seeded permutation per
//      epoch over the prompt list; the cursor is part of the checkpoint);
//   2. Generate samples samples_per_prompt responses per prompt with the current policy
//      (per-sequence seeds from (seed, step, index): reproducible, resumable);
//   3. the reference model's log-probs of the responses (same temperature convention)
//      and the reward function's scores;
//   4. Trainer::Step with group_id = prompt slot (RLOO/GRPO groups) and, when the
//      trainer's ptx_coef > 0, ptx_batch_size pretraining texts (own cursor);
//   5. every checkpoint_every steps (and at the end) the complete learner state.
// A progress line per log_every steps goes to stderr: step, reward, KL, β, rate, ETA.
//
// Thread-compatible: one caller at a time; the loop owns the trainer.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/model/generation.h"
#include "core/model/model.h"
#include "core/rl_training/learner_state.h"
#include "core/rl_training/trainer.h"

namespace rlhf {

// Scores (prompt ids, response ids) pairs; returns one reward per pair.
using RewardFn = std::function<absl::StatusOr<std::vector<float>>(
    const std::vector<std::vector<int32_t>>& prompts,
    const std::vector<std::vector<int32_t>>& responses)>;

// A learned reward model as a RewardFn: the scalar head at the last real token of
// prompt + response, normalised (r - mean) / std. `rm` needs a scalar head; it is put in
// eval mode and only read (no grad). Scores in chunks of `batch_size` sequences, padded
// with `pad_id` (the reward model's tokenizer's pad_id()).
RewardFn RewardModelScorer(TransformerLM rm, double mean, double std, int32_t pad_id,
                           int64_t batch_size = 64);

struct InProcessLoopOptions {
  int64_t steps = 60;              // total trainer steps (a resumed run continues to this)
  int64_t prompts_per_step = 32;
  int64_t samples_per_prompt = 4;  // G of RLOO/GRPO
  SamplingOptions sampling;        // max_new_tokens, temperature, stop tokens ...
  int64_t ptx_batch_size = 8;      // pretraining texts per step (when ptx_coef > 0)
  uint64_t seed = 1;               // prompt order and sampling seeds
  std::string checkpoint_dir;      // "" = no checkpoints
  int64_t checkpoint_every = 20;   // steps; 0 = only at the end
  int keep_checkpoints = 3;
  // The policy's tokenizer, copied into every checkpoint (LearnerCheckpointerOptions);
  // null = none recorded.
  std::shared_ptr<const Tokenizer> tokenizer = nullptr;
  bool resume = false;             // continue from checkpoint_dir's newest checkpoint
  int64_t log_every = 1;           // progress line every N steps; 0 = quiet
};

// Where the loop is in its data; serialised into the checkpoint's cursor slot.
struct PromptCursor {
  int64_t epoch = 0;
  int64_t position = 0;      // next index into the epoch's permutation
  int64_t ptx_position = 0;  // next pretraining text (cycles in order)
  nlohmann::json ToJson() const;
  static absl::StatusOr<PromptCursor> FromJson(const nlohmann::json& j);
};

struct LoopStepStats {
  TrainStats train;
  double generate_seconds = 0;   // sampling
  double score_seconds = 0;      // reference log-probs + reward
  double train_seconds = 0;      // Trainer::Step
  int64_t generated_tokens = 0;
  double mean_response_length = 0;
};

class InProcessLoop {
 public:
  // prompts: policy prompts as token ids (e.g. [BOS] + bytes), >= 1, non-empty.
  // pretrain: token ids (>= 2 each); may be empty when the trainer's ptx_coef == 0.
  // reference: the frozen SFT model (eval mode, no grad). When options.resume and a
  // checkpoint exists, the trainer is replaced by one restored from it (same options).
  static absl::StatusOr<std::unique_ptr<InProcessLoop>> Create(
      const InProcessLoopOptions& options, std::unique_ptr<Trainer> trainer,
      TransformerLM reference, RewardFn reward, std::vector<std::vector<int32_t>> prompts,
      std::vector<std::vector<int32_t>> pretrain = {});

  // One synchronous step (see the file comment).
  absl::StatusOr<LoopStepStats> RunStep();
  // Steps until trainer().step() == options.steps, checkpointing on the way and at the
  // end. `on_step` (optional) sees every step's statistics.
  absl::Status Run(const std::function<void(const LoopStepStats&)>& on_step = nullptr);
  // Writes a checkpoint now and returns its directory ("" when checkpoint_dir is empty).
  absl::StatusOr<std::string> Checkpoint();

  Trainer& trainer() { return *trainer_; }
  const PromptCursor& cursor() const { return cursor_; }

 private:
  InProcessLoop(const InProcessLoopOptions& options, std::unique_ptr<Trainer> trainer,
                TransformerLM reference, RewardFn reward,
                std::vector<std::vector<int32_t>> prompts,
                std::vector<std::vector<int32_t>> pretrain);
  std::vector<int64_t> Permutation(int64_t epoch) const;
  std::vector<std::vector<int32_t>> NextPrompts();
  std::vector<std::vector<int32_t>> NextPretrain();

  InProcessLoopOptions options_;
  std::unique_ptr<Trainer> trainer_;
  TransformerLM reference_;
  RewardFn reward_;
  std::vector<std::vector<int32_t>> prompts_;
  std::vector<std::vector<int32_t>> pretrain_;
  PromptCursor cursor_;
  std::vector<int64_t> order_;  // permutation of cursor_.epoch
  std::unique_ptr<LearnerCheckpointer> checkpointer_;
};

}  // namespace rlhf
