#include "core/rl/kl.h"

#include <cmath>
#include <limits>
#include <string>

#include <ATen/ATen.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace rlhf {

absl::StatusOr<KlEstimator> ParseKlEstimator(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "k1") return KlEstimator::kK1;
  if (lower == "k2") return KlEstimator::kK2;
  if (lower == "k3") return KlEstimator::kK3;
  if (lower == "exact") return KlEstimator::kExact;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown KL estimator '", name, "' (expected k1, k2, k3 or exact)"));
}

absl::string_view KlEstimatorName(KlEstimator estimator) {
  switch (estimator) {
    case KlEstimator::kK1: return "k1";
    case KlEstimator::kK2: return "k2";
    case KlEstimator::kK3: return "k3";
    case KlEstimator::kExact: return "exact";
  }
  return "k1";
}

torch::Tensor PerTokenKl(const torch::Tensor& policy_logprobs, const torch::Tensor& ref_logprobs,
                         KlEstimator estimator) {
  const torch::Tensor d = policy_logprobs - ref_logprobs;
  switch (estimator) {
    case KlEstimator::kK1:
    case KlEstimator::kExact: return d;  // see kl.h: k1 estimates the exact KL
    case KlEstimator::kK2: return 0.5 * d * d;
    case KlEstimator::kK3: return at::expm1(-d) + d;  // exp(-d) - 1 + d, accurate near 0
  }
  return d;
}

torch::Tensor ExactKlFull(const torch::Tensor& policy_logprobs_full,
                          const torch::Tensor& ref_logprobs_full) {
  // p = 0 entries contribute 0 even where log q = -inf (0 * finite difference).
  const torch::Tensor p = policy_logprobs_full.exp();
  const torch::Tensor diff = policy_logprobs_full - ref_logprobs_full;
  return at::where(p > 0, p * diff, at::zeros_like(diff)).sum(-1);
}

torch::Tensor ExactKlTopK(const torch::Tensor& policy_topk_logprobs,
                          const torch::Tensor& topk_ids,
                          const torch::Tensor& policy_tail_logprob,
                          const torch::Tensor& ref_logprobs_full) {
  const torch::Tensor ref_topk = ref_logprobs_full.gather(-1, topk_ids);
  const torch::Tensor p_topk = policy_topk_logprobs.exp();
  const torch::Tensor diff = policy_topk_logprobs - ref_topk;
  // -inf entries (tokens a truncated sampler can never draw) contribute 0, not NaN.
  const torch::Tensor head = at::where(p_topk > 0, p_topk * diff, at::zeros_like(diff)).sum(-1);
  // Reference tail mass 1 - Σ q_topk, clamped away from 0 for a finite log.
  const torch::Tensor ref_tail =
      at::log(at::clamp_min(1.0 - ref_topk.exp().sum(-1), 1e-12));
  const torch::Tensor p_tail = policy_tail_logprob.exp();
  const torch::Tensor tail =
      at::where(p_tail > 0, p_tail * (policy_tail_logprob - ref_tail), at::zeros_like(p_tail));
  return head + tail;
}

float TopKTailLogProb(const std::vector<float>& topk_logprobs) {
  double mass = 0;
  for (float lp : topk_logprobs) mass += std::exp(static_cast<double>(lp));
  // float32 log-probs of a distribution whose top-k hold everything sum to 1 only up to
  // ~1e-7 per entry; a remainder below 1e-6 is rounding, not a tail (dropping a real
  // tail that small moves the KL by < 1e-6 * log(1e6) ~ 1.4e-5 nats).
  if (mass >= 1.0 - 1e-6) return -std::numeric_limits<float>::infinity();
  return static_cast<float>(std::log1p(-mass));
}

}  // namespace rlhf
