// Batched autoregressive sampling with a KV cache.
//
// Prompts of different lengths are left-padded into one batch; position ids come from
// the attention mask, so padding never shifts positions and a row's tokens do not depend
// on its batch companions. Rows that emit a stop token are removed from the batch
// (KVCache::SelectRows), so they stop costing compute. Runs under c10::InferenceMode.
//
// LOG-PROB CONVENTION: the log-prob reported for each sampled token is taken under the
// distribution it was actually drawn from: log_softmax(logits / temperature) restricted
// to the tokens top-k / top-p keep and RENORMALISED over them (-inf for removed tokens).
// Without truncation (top_k = 0, top_p = 1) that is the temperature-scaled full
// distribution, which the learner recomputes with ResponseLogProbs (logprobs.h). With
// truncation it is the behaviour distribution μ of importance sampling: the learner's
// ratio ρ = π_θ(a|s) / μ(a|s) divides the current policy's FULL temperature-scaled
// probability by it, so ρ is the exact importance weight from the sampler to the policy
// being trained (on-policy it equals the kept mass Z <= 1, not 1). The same
// distribution is what return_top_k_distributions returns (so exact KL is the KL of
// the sampling distribution). With temperature == 0 (greedy) the reported log-probs are
// under the unscaled (temperature 1) full distribution. LogProbTemperature() returns the
// temperature to pass to ResponseLogProbs for a given SamplingOptions.
//
// RANDOMNESS: each sequence draws its uniforms from a counter-based generator keyed by
// (its seed, step index). The same (seed, prompt, options, weights) gives the same tokens
// regardless of batch size, order or companions (up to floating-point ties between
// batched and unbatched matmuls, which would need a uniform within ~1e-6 of a CDF boundary).
//
// Thread-safety: Generate() does not mutate the model; concurrent calls on one model
// are safe (each call owns its KVCache).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/model/model.h"

namespace rlhf {

struct SamplingOptions {
  double temperature = 1.0;     // 0 = greedy (argmax); must be >= 0 and finite
  int64_t top_k = 0;            // 0 = off; else sample among the k most likely tokens
  double top_p = 1.0;           // 1 = off; else nucleus sampling, in (0, 1]
  int64_t max_new_tokens = 64;  // >= 1; prompt length + max_new_tokens <= max_seq_len
  std::vector<int32_t> stop_tokens;  // a sampled stop token ends its row (and is kept
                                     // as the last response token, with its log-prob)
  // > 0: also return, for every sampled position, the top-K tokens of the reported
  // distribution (the sampling one, see above) with their log-probs, for exact KL.
  // K >= vocab size returns every token (most likely first).
  int64_t return_top_k_distributions = 0;
};

// One step's top-K of the reported distribution, most likely first.
struct TopKDistribution {
  std::vector<int32_t> ids;
  std::vector<float> logprobs;
};

struct GenerationResult {
  std::vector<std::vector<int32_t>> responses;  // [B][len_b], len_b <= max_new_tokens
  std::vector<std::vector<float>> logprobs;     // [B][len_b], see the convention above
  std::vector<bool> finished;                   // [B] true = ended with a stop token
  std::vector<std::vector<TopKDistribution>> top_k;  // [B][len_b] when requested, else empty
  int64_t decode_steps = 0;                     // forward calls after the prompt pass
};

// Checks ranges; the message names the field ("top_p must be in (0, 1], got 0").
absl::Status ValidateSamplingOptions(const SamplingOptions& options);

// temperature > 0 ? temperature : 1.0 (the temperature of the reported log-probs).
double LogProbTemperature(const SamplingOptions& options);

// Samples up to options.max_new_tokens tokens after each prompt. seeds has one entry per
// prompt. Errors (InvalidArgument, nothing generated): empty prompts list, "prompts[i] is
// empty", "prompts[i][j] = id outside [0, vocab)", "prompts[i]: length + max_new_tokens >
// max_seq_len", "seeds has n entries but prompts has m", invalid options, model without
// an lm_head. The model is used in its current dtype/device (CPU here).
absl::StatusOr<GenerationResult> Generate(TransformerLM& model,
                                          const std::vector<std::vector<int32_t>>& prompts,
                                          const std::vector<uint64_t>& seeds,
                                          const SamplingOptions& options);

// Continuous batching (what an actor with more prompts than batch rows wants): up to
// `max_batch` sequences decode together; when one ends (stop token or max_new_tokens)
// its row is refilled with the next waiting prompt in the same step, so the batch stays
// full until the prompts run out (static batching, Generate on chunks of max_batch,
// lets rows drop out and the batch empty). A refilled row's prompt, all but its last
// token, is prefilled on its own and its keys/values copied into the row; the last
// prompt token then joins the batched decode step. All rows share one time axis in a
// preallocated cache (2 x the longest prompt + max_new_tokens, at most max_seq_len),
// compacted when full.
//
// Results are per prompt, in input order, and follow Generate's conventions: the same
// (seed, prompt, options, weights) gives the same tokens and log-probs as Generate on
// that prompt alone, up to floating-point differences between batched and unbatched
// matmuls (each row's uniforms are keyed by its seed and its own step). decode_steps
// counts the batched forward calls.
struct ContinuousBatchingStats {
  int64_t decode_steps = 0;    // batched forward calls (one token per row)
  int64_t row_steps = 0;       // Σ over decode steps of the rows in the batch
  int64_t prefill_calls = 0;   // forward calls prefilling refilled rows
  int64_t compactions = 0;     // times the shared time axis was compacted
  // row_steps / (decode_steps * max_batch): how full the batch was kept.
  double busy_fraction() const {
    return decode_steps > 0 ? static_cast<double>(row_steps) / (decode_steps * max_batch) : 0;
  }
  int64_t max_batch = 0;
};

// Same errors as Generate, plus "max_batch must be >= 1".
absl::StatusOr<GenerationResult> GenerateContinuous(
    TransformerLM& model, const std::vector<std::vector<int32_t>>& prompts,
    const std::vector<uint64_t>& seeds, const SamplingOptions& options, int64_t max_batch,
    ContinuousBatchingStats* stats = nullptr);

}  // namespace rlhf
