// Per-token KL estimators (design.md §2), the one implementation shared by the
// reference server and the learner. All functions are pure, elementwise over tensors
// of any shape, and differentiable.
//
//   d_t = logp_policy_t - logp_ref_t
//   k1 = d            k2 = d^2 / 2            k3 = exp(-d) - 1 + d
//
// Exact KL over the vocabulary, Σ_v p(v) (log p(v) - log q(v)), is computed from full
// log-prob rows or from the policy's top-k plus one tail bucket (the reference mass of
// the tail is 1 - Σ_{top-k} q).
//
// kExact names the last one as an estimator choice: it needs the policy's per-step
// distribution (the actor sends it, the reference server computes it), so PerTokenKl,
// which sees only the sampled token's log-probs, returns k1 for it (the single-sample
// unbiased estimate of the same quantity).
#pragma once

#include <vector>

#include "absl/strings/string_view.h"

#include <torch/types.h>

#include "absl/status/statusor.h"

namespace rlhf {

enum class KlEstimator { kK1 = 1, kK2 = 2, kK3 = 3, kExact = 4 };

// "k1" | "k2" | "k3" | "exact" (case-insensitive) -> estimator; anything else is InvalidArgument.
absl::StatusOr<KlEstimator> ParseKlEstimator(absl::string_view name);
absl::string_view KlEstimatorName(KlEstimator estimator);

// Elementwise estimator of KL(policy || ref) from per-token log-probs.
torch::Tensor PerTokenKl(const torch::Tensor& policy_logprobs, const torch::Tensor& ref_logprobs,
                         KlEstimator estimator);

// Exact per-step KL from full distributions: log-prob rows [..., V] -> [...].
torch::Tensor ExactKlFull(const torch::Tensor& policy_logprobs_full,
                          const torch::Tensor& ref_logprobs_full);

// Exact per-step KL when the policy distribution is known only on its top-k tokens plus
// a tail bucket: policy_topk_logprobs [..., K], their ids [..., K] (int64),
// policy_tail_logprob [...] = log(1 - Σ p_topk); ref_logprobs_full [..., V].
// The tail is treated as one outcome on both sides: the KL of the coarsened
// distributions, a LOWER bound on the true KL by the data-processing inequality (merging
// outcomes never increases a divergence); equal to it when the policy's support fits in
// the top-k (tail mass 0, e.g. top-k/top-p sampling with k >= the kept set). Entries with
// log-prob -inf contribute 0.
torch::Tensor ExactKlTopK(const torch::Tensor& policy_topk_logprobs,
                          const torch::Tensor& topk_ids,
                          const torch::Tensor& policy_tail_logprob,
                          const torch::Tensor& ref_logprobs_full);

// log(1 - Σ exp(topk_logprobs)): the tail bucket's log-prob; -inf when the top-k hold
// all the mass up to 1e-6 (the rounding of float32 log-probs, not a tail).
float TopKTailLogProb(const std::vector<float>& topk_logprobs);

}  // namespace rlhf
