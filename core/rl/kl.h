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
#pragma once

#include "absl/strings/string_view.h"

#include <torch/types.h>

#include "absl/status/statusor.h"

namespace rlhf {

enum class KlEstimator { kK1 = 1, kK2 = 2, kK3 = 3 };

// "k1" | "k2" | "k3" (case-insensitive) -> estimator; anything else is InvalidArgument.
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
// The tail is treated as one outcome on both sides (a lower bound on the true KL by
// the data-processing inequality).
torch::Tensor ExactKlTopK(const torch::Tensor& policy_topk_logprobs,
                          const torch::Tensor& topk_ids,
                          const torch::Tensor& policy_tail_logprob,
                          const torch::Tensor& ref_logprobs_full);

}  // namespace rlhf
