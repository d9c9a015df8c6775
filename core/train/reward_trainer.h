// Stage 2 of the seed: the reward model. The SFT trunk with the unembedding removed and
// a freshly initialised scalar head (ModelConfig lm_head = false, scalar_head = true);
// the reward of prompt+response is the scalar head's output at the LAST REAL token of
// [BOS] prompt response (training_common.h: the response carries EOS when finished).
//
// Training: each step takes `prompts_per_batch` ranked records, encodes all K responses
// of each in ONE forward pass (each response once), and forms all C(K,2) pairs of each
// record from those scores (ExpandPairs: identical responses form no pair);
//   loss = -mean over pairs log σ(r_winner - r_loser).
// {"prompt","chosen","rejected"} records are K = 2 records. Reports held-out pairwise
// accuracy (ties count 1/2). At the end the reward mean/std over a reference set (the
// distinct held-out responses, else the training ones; at most max_reference) is
// stored in the checkpoint's config.json metadata as "reward_mean" / "reward_std", for
// servers that normalise (r - mean) / std.
//
// Thread-compatible: one Train() at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/optim/adamw.h>
#include <torch/types.h>

#include "absl/status/statusor.h"
#include "core/data/records.h"
#include "core/model/checkpoint.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "core/train/training_common.h"

namespace rlhf {

struct RewardOptions {
  // Defaults: the quickstart size for the "tiny" preset on the built-in task.
  int64_t steps = 150;
  int64_t prompts_per_batch = 8;  // ranked records per step (all their pairs)
  double lr = 3e-4;  // fastest of 1e-4 / 3e-4 / 1e-3 / 3e-3 (docs/benchmarks.md)
  int64_t warmup_steps = 20;
  double min_lr_ratio = 0.1;
  double weight_decay = 0.01;
  double grad_clip = 1.0;
  int64_t eval_every = 50;        // 0 = only at the end
  int64_t checkpoint_every = 50;  // 0 = only at the end
  int64_t log_every = 10;
  uint64_t seed = 1;
  std::string out_dir;            // "" = do not save
  bool resume = false;
  int64_t stop_at_step = -1;      // >= 0: stop (and checkpoint) after this step even if
                                  // steps is larger; the schedule still spans `steps`
                                  // (time-sliced training; tests of resume)
  int64_t max_heldout = 512;      // held-out records evaluated
  int64_t max_reference = 1024;   // responses in the mean/std reference set
};

struct RewardResult {
  int64_t steps = 0;
  double final_train_loss = 0;     // last logging window
  double heldout_accuracy = 0;     // pairwise, ties 1/2 (NaN without held-out data)
  double heldout_loss = 0;         // mean -log σ over held-out pairs
  int64_t heldout_pairs = 0;
  double reward_mean = 0, reward_std = 1;
  double tokens_per_sec = 0;
  double seconds = 0;
  int64_t dropped_records = 0;
};

// -mean_p log σ(scores[winner_p] - scores[loser_p]); scores [N], differentiable.
torch::Tensor RewardPairLoss(const torch::Tensor& scores, const std::vector<IndexPair>& pairs);

// Scalar-head output at each row's last real token: [B].
torch::Tensor LastTokenScores(TransformerLM& model, const PackedBatch& batch);

// The reward model of the seed from an SFT checkpoint: same trunk config with
// lm_head = false and scalar_head = true, trunk weights copied, scalar head fresh
// (seeded by `seed`).
absl::StatusOr<TransformerLM> RewardModelFromSft(const LoadedCheckpoint& sft, uint64_t seed);

// Scores prompt/response texts with a reward model (no normalisation), in chunks.
std::vector<double> ScoreTexts(TransformerLM& model, const Tokenizer& tokenizer,
                               const std::vector<std::string>& prompts,
                               const std::vector<std::string>& responses);

class RewardTrainer {
 public:
  static absl::StatusOr<std::unique_ptr<RewardTrainer>> Create(
      TransformerLM model, const Tokenizer& tokenizer, const RewardOptions& options,
      const std::vector<RankedRecord>& train, const std::vector<RankedRecord>& heldout);

  absl::StatusOr<RewardResult> Train(const ProgressFn& progress = nullptr);

  // Pairwise accuracy / loss / pair count on the held-out records.
  struct Eval {
    double accuracy = 0, loss = 0;
    int64_t pairs = 0;
  };
  Eval Evaluate();

  const TransformerLM& model() const { return model_; }

 private:
  struct Example {
    std::vector<std::vector<int32_t>> prompts;    // one per response (truncation may differ)
    std::vector<std::vector<int32_t>> responses;
    std::vector<IndexPair> pairs;                 // local indices
  };
  RewardTrainer(TransformerLM model, const Tokenizer& tokenizer, const RewardOptions& options);
  // Packs records and returns the pairs with batch-global indices.
  PackedBatch Pack(const std::vector<const Example*>& rows, std::vector<IndexPair>* pairs) const;
  absl::Status Save(int64_t step, const Eval& eval, double mean, double std);

  TransformerLM model_;
  const Tokenizer& tokenizer_;
  RewardOptions options_;
  std::vector<Example> train_, heldout_;
  std::vector<std::string> reference_prompts_, reference_responses_;
  int64_t dropped_ = 0;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
};

}  // namespace rlhf
