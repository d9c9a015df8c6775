// Stage 1 of the seed: supervised fine-tuning on prompt+response demonstrations.
//
// Each record becomes [BOS] prompt response [EOS] (training_common.h has the format and
// the truncation policy); the loss is the mean next-token negative log-likelihood over
// the response tokens (and the EOS), or over every token after BOS with
// train_on_prompt. AdamW, linear warmup then cosine decay, global gradient-norm
// clipping, periodic held-out loss, checkpoints in the model format (checkpoint.h) plus
// trainer_state.safetensors (AdamW moments, step) so `resume` continues exactly: the
// data order is a function of (seed, step), so a resumed run sees the same batches.
//
// Thread-compatible: one Train() at a time; the trainer owns a reference to the model.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/optim/adamw.h>
#include <torch/types.h>

#include "absl/status/statusor.h"
#include "core/data/records.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "core/train/training_common.h"

namespace rlhf {

struct SftOptions {
  // Defaults: the quickstart size for the "tiny" preset on the built-in task
  // (~2-3 min on 2 cores).
  int64_t steps = 300;            // optimizer steps
  int64_t batch_size = 32;        // sequences per step
  double lr = 3e-3;               // peak learning rate (3e-3 beat 1e-3 at 300 steps)
  int64_t warmup_steps = 30;
  double min_lr_ratio = 0.1;      // cosine floor, as a fraction of lr
  double weight_decay = 0.01;
  double grad_clip = 1.0;         // global L2 norm; 0 = off
  bool train_on_prompt = false;   // false: prompt tokens are masked out of the loss
  int64_t eval_every = 100;       // steps between held-out evaluations; 0 = only at the end
  int64_t checkpoint_every = 200; // steps between checkpoints; 0 = only at the end
  int64_t log_every = 10;         // steps between progress callbacks
  uint64_t seed = 1;              // data order
  std::string out_dir;            // checkpoint directory; "" = do not save
  bool resume = false;            // continue from out_dir if it holds a checkpoint
  int64_t stop_at_step = -1;      // >= 0: stop (and checkpoint) after this step even if
                                  // steps is larger; the schedule still spans `steps`
                                  // (time-sliced training; tests of resume)
  int64_t max_heldout = 1024;     // held-out records evaluated (first N)
};

struct SftResult {
  int64_t steps = 0;
  double final_train_loss = 0;   // mean over the last logging window
  double heldout_loss = 0;       // per target token, nats (NaN without held-out data)
  double tokens_per_sec = 0;     // real (non-pad) tokens through forward+backward
  double seconds = 0;
  int64_t dropped_records = 0;   // over-length records with nothing left of the response
};

// Mean NLL of the targets of `batch` under logits = hidden · unembeddingᵀ, where hidden
// [B, T, d] are the model's final hidden states (forward_hidden) and unembedding its
// [V, d] output matrix (unembedding()): target t is predicted by position t-1. The
// logits are made a block of target rows at a time, never whole (chunked_unembedding.h).
// Differentiable with respect to both.
torch::Tensor SftLoss(const torch::Tensor& hidden, const torch::Tensor& unembedding,
                      const PackedBatch& batch);

class SftTrainer {
 public:
  // `model` must have an LM head; it is trained in place. Records are tokenized here
  // (InvalidArgument if no training record survives truncation or options are invalid).
  static absl::StatusOr<std::unique_ptr<SftTrainer>> Create(
      TransformerLM model, const Tokenizer& tokenizer, const SftOptions& options,
      const std::vector<SftRecord>& train, const std::vector<SftRecord>& heldout);

  // Runs to options.steps (from the resumed step when resuming) and saves the final
  // checkpoint (metadata: stage, step, heldout_loss, tokenizer).
  absl::StatusOr<SftResult> Train(const ProgressFn& progress = nullptr);

  // Mean per-token held-out loss of the current model.
  double HeldoutLoss();

  const TransformerLM& model() const { return model_; }

 private:
  struct Example {
    std::vector<int32_t> prompt, response;
  };
  SftTrainer(TransformerLM model, const Tokenizer& tokenizer, const SftOptions& options);
  PackedBatch Pack(const std::vector<const Example*>& rows) const;
  absl::Status Save(int64_t step, double heldout_loss);

  TransformerLM model_;
  const Tokenizer& tokenizer_;
  SftOptions options_;
  std::vector<Example> train_, heldout_;
  int64_t dropped_ = 0;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
};

}  // namespace rlhf
