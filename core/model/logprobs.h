// Packing prompt+response sequences into one padded batch, and per-token log-probs of
// the response tokens from a full (non-incremental) forward pass. This is the one
// definition of "the log-prob of a response token" shared by the learner (current and
// reference policy), the reference server and the tests of generation: for response
// token ids[b, t],
//
//   logp[b, t] = log_softmax(logits[b, t-1, :] / temperature)[ids[b, t]]
//
// i.e. the FULL temperature-scaled distribution (no top-k/top-p truncation), exactly what
// Generate() reports for the tokens it samples (see generation.h).
//
// All functions are pure and differentiable through `logits`.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"

namespace rlhf {

// A right-padded batch of prompt+response sequences: the one batch type of every
// trainer and scorer (RL trainer, reference server, SFT and reward-model trainers via
// PackBatch in core/train/training_common.h). Row b holds prompt_lengths[b] prompt
// tokens followed by response_lengths[b] response tokens, then padding up to T = max
// over rows of the total length.
struct SequenceBatch {
  torch::Tensor ids;             // [B, T] int64, right-padded with pad_id
  torch::Tensor attention_mask;  // [B, T] int64, 1 = real token (prompt or response)
  torch::Tensor response_mask;   // [B, T] float32, 1 at positions holding response tokens
  torch::Tensor position_ids;    // [B, T] int64, 0..len-1 then 0 on padding
  // [B, T] float32, 1 where ids[b, t] is a next-token loss target (predicted from
  // position t - 1): the response tokens (the same tensor as response_mask; treat both
  // as read-only). PackBatch(include_prompt) also marks the prompt tokens after the
  // first.
  torch::Tensor target_mask;
  torch::Tensor last_index;               // [B] int64, index of each row's last real token
  int64_t real_tokens = 0;                // Σ attention_mask
  std::vector<int64_t> prompt_lengths;    // after truncation
  std::vector<int64_t> response_lengths;  // after truncation
};

// What to do when prompt + response is longer than `max_len`.
enum class TruncationPolicy {
  kError,               // InvalidArgument naming the sequence index (default)
  kTruncateResponse,    // drop response tokens from the end
  kTruncatePromptLeft,  // drop prompt tokens from the start (keeps >= 1 prompt token;
                        // then drops response tokens from the end if still too long)
};

struct SequenceBatchOptions {
  int32_t pad_id = 0;
  int64_t max_len = 0;  // 0 = no limit; else the longest row allowed (model's max_seq_len)
  TruncationPolicy truncation = TruncationPolicy::kError;
  // When > 0, T is padded up to at least this many columns (stable shapes).
  int64_t pad_to = 0;
};

// prompts.size() == responses.size() >= 1; every prompt must be non-empty (the first
// response token is predicted from the last prompt token); responses may be empty.
// Errors: InvalidArgument naming the field and index ("prompts[3] is empty",
// "responses has 2 entries but prompts has 3", "sequence 1: length 300 > max_len 256").
absl::StatusOr<SequenceBatch> MakeSequenceBatch(const std::vector<std::vector<int32_t>>& prompts,
                                                const std::vector<std::vector<int32_t>>& responses,
                                                const SequenceBatchOptions& options);

// logits: [B, T, V] from a full forward over batch.ids (any float dtype; computed in
// float32 or better). Returns [B, T] float32 holding log π(ids[t] | ids[<t]) at response
// positions and 0 elsewhere (float64 when logits are float64, e.g. gradient checks).
// temperature must be > 0 (Generate's greedy mode reports
// temperature-1 log-probs; pass 1.0 then, see LogProbTemperature in generation.h).
torch::Tensor ResponseLogProbs(const torch::Tensor& logits, const SequenceBatch& batch,
                               double temperature = 1.0);

// Full log-prob rows at response positions, for exact KL: [N, V] float32 where N =
// Σ_b response_lengths[b], rows ordered by (b, t) (row-major: all of sequence 0's
// response tokens first). Row n is log_softmax(logits[b, t-1] / temperature).
torch::Tensor ResponseLogProbRows(const torch::Tensor& logits, const SequenceBatch& batch,
                                  double temperature = 1.0);

// A scalar head's output at each row's last real token (right-padded rows): a reward
// model's score of prompt + response. The one place that position is computed (reward
// server scorer, in-process loop, policy eval, RM trainer). scalar: [B, T]
// (ForwardOutput::scalar, any float dtype); attention_mask: [B, T], 1 = real token.
// Returns [B] float32; gradients flow to `scalar`.
torch::Tensor ScoreAtLastToken(const torch::Tensor& scalar, const torch::Tensor& attention_mask);

// [B, T] tensor of per-position values (log-probs, KL, values) -> one vector per
// sequence with its response positions only (length response_lengths[b]).
std::vector<std::vector<float>> PerSequenceResponseValues(const torch::Tensor& values,
                                                          const SequenceBatch& batch);

// The inverse: per-sequence response values -> [B, T] float32 placed at the response
// positions of `batch` (0 elsewhere). Sizes must match response_lengths (InvalidArgument).
absl::StatusOr<torch::Tensor> ScatterResponseValues(const std::vector<std::vector<float>>& values,
                                                    const SequenceBatch& batch);

}  // namespace rlhf
