// The whole InstructGPT pipeline on the built-in task in one process, for the RL tests,
// the benchmark (bench/rl_bench.cc) and debugging: generate the task, train (or reuse
// from `workdir`) the SFT policy and the reward model with core/train, then run the
// in-process RL loop from the SFT checkpoint and evaluate before/after on held-out
// prompts (gold score, RM score, exact KL to the SFT policy; core/train/policy_eval.h).
//
// Conventions (core/train/training_common.h): policy prompt = [BOS] + bytes; sampled
// responses end with EOS; the RM scores prompt + response at its last token, normalised
// with the reward_mean / reward_std stored in the RM checkpoint. PPO's value model is
// initialised from the reward model (InstructGPT).
//
// Thread-compatible: free functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/data/builtin_task.h"
#include "core/model/checkpoint.h"
#include "core/train/policy_eval.h"
#include "core/train/policy_labeling.h"
#include "core/train/reward_trainer.h"
#include "core/train/sft_trainer.h"
#include "core/rl_training/inprocess_loop.h"
#include "core/rl_training/trainer.h"

namespace rlhf {

struct RlExperimentOptions {
  std::string workdir;              // sft/ and rm/ are cached here (reused when present)
  BuiltinTaskOptions task;
  ModelConfig model;                // policy architecture (vocab 259, byte tokenizer)
  SftOptions sft;                   // out_dir is set to <workdir>/sft
  RewardOptions rm;                 // out_dir is set to <workdir>/rm
  // The RM also trains on rankings of the SFT policy's own samples for the first
  // `label_prompts` prompts of task.rank (core/train/policy_labeling.h); 0 = off.
  int64_t label_prompts = 0;
  PolicyLabelOptions label;
  int64_t eval_prompts = 64;        // held-out prompts evaluated before/after
  PolicyEvalOptions eval;           // sampling of the evaluation (max_new_tokens, seed)
  bool quiet = false;               // no progress lines from the SFT/RM trainers
};

struct PreparedModels {
  LoadedCheckpoint sft;
  LoadedCheckpoint rm;
  double rm_mean = 0, rm_std = 1;   // normalisation stored with the RM
  BuiltinTask task;
  std::vector<std::vector<int32_t>> rl_prompts;        // encoded rl_train prompts
  std::vector<std::vector<int32_t>> pretrain;          // [BOS] text [EOS]
  std::vector<std::string> heldout_prompts;            // rl_heldout texts
};

// Generates the task and trains SFT, labels SFT samples (label_prompts > 0), then
// trains the RM into <workdir>/{sft,rm}, or loads them when both checkpoints exist.
absl::StatusOr<PreparedModels> PrepareModels(const RlExperimentOptions& options);

struct RlRunResult {
  PolicyEvalReport before, after;   // held-out evaluation of the SFT and final policies
  std::vector<LoopStepStats> steps;
  double seconds = 0;               // wall time of the RL loop
  int64_t learner_tokens = 0;       // Σ TrainStats::tokens_processed
  double learner_seconds = 0;       // Σ Trainer::Step time
  double learner_flops = 0;         // ≈ 6 · params · tokens (forward + backward)
};

// Runs RL from the SFT checkpoint with `trainer_options` and `loop_options` (no
// checkpoints unless loop_options.checkpoint_dir is set) and evaluates before/after.
// `evaluate_before` = false skips the (identical for every run) SFT evaluation.
absl::StatusOr<RlRunResult> RunRl(const PreparedModels& models,
                                  const RlExperimentOptions& options,
                                  const TrainerOptions& trainer_options,
                                  const InProcessLoopOptions& loop_options,
                                  bool evaluate_before = true);

}  // namespace rlhf
