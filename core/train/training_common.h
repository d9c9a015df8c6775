// Pieces shared by the SFT and reward-model trainers: the token format of a
// prompt/response pair, the learning-rate schedule, AdamW state as named tensors (so
// training resumes exactly), and the progress line.
//
// TOKEN FORMAT (the one convention of the whole pipeline; byte tokenizer ids shown):
//   policy prompt   = [BOS] + Encode(prompt)                   what actors generate from
//   response        = Encode(response) + [EOS]                 training targets; a
//                     generated response carries EOS iff it finished
//   reward-model in = policy prompt + response, scored at the last real token
// Over-length policy (max_len = the model's max_seq_len): prompt tokens are dropped from
// the LEFT (BOS is kept, then the most recent prompt bytes), then response tokens from
// the RIGHT (the EOS goes first, so a truncated demonstration teaches no false ending).
// A record that would keep no response token is dropped and counted by the trainers.
//
// Thread-compatible: free functions and plain structs.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <torch/optim/adamw.h>
#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/model/checkpoint.h"
#include "core/model/logprobs.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"

namespace rlhf {

std::vector<int32_t> EncodePrompt(const Tokenizer& tokenizer, absl::string_view prompt);
std::vector<int32_t> EncodeResponse(const Tokenizer& tokenizer, absl::string_view response);
// A pretraining text for the ptx term: [BOS] text [EOS]. Texts longer than max_len
// tokens (> 0) are dropped, not cut (a cut sentence would teach a wrong ending).
std::vector<std::vector<int32_t>> EncodePretrainTexts(const Tokenizer& tokenizer,
                                                      const std::vector<std::string>& texts,
                                                      int64_t max_len);

// Applies the over-length policy above in place. Returns false when nothing of the
// response would remain (the caller drops the record).
bool TruncateToFit(int64_t max_len, std::vector<int32_t>* prompt, std::vector<int32_t>* response);

// The SFT and reward-model trainers' batches are the one batch type (core/model/logprobs.h).
using PackedBatch = SequenceBatch;
// MakeSequenceBatch without a length limit: rows are prompt[b] + response[b]. Targets
// (target_mask) are the response tokens, or every token after the first when
// include_prompt. Precondition (the trainers' rows meet it): prompts.size() ==
// responses.size() >= 1 and every prompt non-empty; a violation throws c10::Error.
PackedBatch PackBatch(const std::vector<std::vector<int32_t>>& prompts,
                      const std::vector<std::vector<int32_t>>& responses, int32_t pad_id,
                      bool include_prompt);

// Linear warmup from 0 over warmup_steps, then cosine decay to min_lr_ratio * peak at
// total_steps. step is 0-based (the step about to be taken).
double LearningRate(int64_t step, int64_t total_steps, int64_t warmup_steps, double peak_lr,
                    double min_lr_ratio);
void SetLearningRate(torch::optim::Optimizer& optimizer, double lr);

// Total L2 norm of the gradients before clipping; clips in place when max_norm > 0.
double ClipGradNorm(const std::vector<torch::Tensor>& params, double max_norm);

// AdamW moments as named tensors "adamw.exp_avg.<param>", "adamw.exp_avg_sq.<param>",
// "adamw.step.<param>" (int64 scalar), keyed by the model's parameter names.
NamedTensors AdamWStateTensors(torch::optim::AdamW& optimizer, const TransformerLM& model);
// Restores them; every model parameter must be present with the right shape, else
// InvalidArgument and the optimizer is unchanged.
absl::Status LoadAdamWState(torch::optim::AdamW& optimizer, const TransformerLM& model,
                            const NamedTensors& tensors);

// The trainer state next to a checkpoint: dir/trainer_state.safetensors holding the
// AdamW state plus metadata {"step": "<n>", "stage": "sft"|"rm"}.
absl::Status SaveTrainerState(const std::string& dir, torch::optim::AdamW& optimizer,
                              const TransformerLM& model, int64_t step, const std::string& stage);
// Returns the step to continue from.
absl::StatusOr<int64_t> LoadTrainerState(const std::string& dir, torch::optim::AdamW& optimizer,
                                         const TransformerLM& model, const std::string& stage);

struct TrainProgress {
  std::string stage;        // "sft" | "rm"
  int64_t step = 0;         // steps completed
  int64_t total_steps = 0;
  double loss = 0;          // mean over the last logging window
  double lr = 0;
  double tokens_per_sec = 0;
  double elapsed_sec = 0;
  double eta_sec = 0;
  double extra = -1;        // stage-specific: rm = train pairwise accuracy (window), -1 = none
  double heldout = -1;      // set on evaluation steps: sft = held-out loss, rm = held-out
                            // pairwise accuracy; -1 = not evaluated this step
};
// "sft step 100/600 loss 1.2345 lr 9.51e-04 tok/s 12345 [heldout 1.3] elapsed 20s eta 1m40s"
std::string FormatProgress(const TrainProgress& progress);
using ProgressFn = std::function<void(const TrainProgress&)>;

// Deterministic data order: an endless stream of shuffled passes over n examples,
// seeded; Batch(step) gives the same indices for the same (seed, n, size, step), so a
// resumed run sees exactly the data the uninterrupted one would have.
class BatchSampler {
 public:
  BatchSampler(int64_t n, int64_t batch_size, uint64_t seed);
  std::vector<int64_t> Batch(int64_t step);

 private:
  const std::vector<int64_t>& Pass(int64_t pass);
  int64_t n_, batch_size_;
  uint64_t seed_;
  int64_t cached_pass_ = -1;
  std::vector<int64_t> order_;
};

}  // namespace rlhf
