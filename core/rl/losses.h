// Policy-gradient, value, KL, entropy and pretraining losses (design.md §2). Pure
// functions: differentiable in the *current* log-probs / values / logits, everything
// else (behaviour and reference log-probs, advantages, returns) is detached inside.
// Shapes follow core/rl/advantages.h: per-token [B, T], mask [B, T] (1 = real token).
// Every loss is a scalar to *minimise*; padded positions contribute nothing (neither
// value nor gradient), whatever numbers they hold.
#pragma once

#include <torch/types.h>

namespace rlhf {

enum class LossAggregation {
  kTokenMean,     // Σ_{b,t} x·m / Σ_{b,t} m  (each token weighs the same)
  kSequenceMean,  // (1/B') Σ_b Σ_t x·m over the B' sequences with >= 1 token (the seed's
                  // "return x Σ_t ∇log π", averaged over trajectories)
};

// Aggregates per-token values [B, T] to a scalar. An all-padding batch gives 0.
torch::Tensor AggregateLoss(const torch::Tensor& per_token, const torch::Tensor& mask,
                            LossAggregation aggregation);

// Masked mean over real tokens (diagnostics); 0 when there are none.
torch::Tensor MaskedMean(const torch::Tensor& x, const torch::Tensor& mask);

// Log-prob of `targets` under `logits`: logits [B, T, V], targets [B, T] int64 -> [B, T].
torch::Tensor TokenLogProbs(const torch::Tensor& logits, const torch::Tensor& targets);

// Truncated importance weights min(exp(logp - blogp), c), detached. [B, T] -> [B, T];
// 0 at padding. c <= 0 disables truncation (plain ratio).
torch::Tensor TruncatedImportanceWeights(const torch::Tensor& logp, const torch::Tensor& blogp,
                                         const torch::Tensor& mask, double c);

struct PolicyLossOutput {
  torch::Tensor loss;           // scalar, differentiable in logp
  torch::Tensor clip_fraction;  // scalar: fraction of real tokens where clipping/truncation bit
  torch::Tensor approx_kl;      // scalar: masked mean of k3 for KL(behaviour || current)
};

// REINFORCE-family loss with truncated importance weights:
//   loss = -agg( w_t · A_t · logp_t ),   w_t = min(ρ_t, c) (detached), ρ_t = exp(logp_t - blogp_t)
// so that ∇loss = -agg(w_t A_t ∇log π). On-policy (logp == blogp) w = 1 and this is the
// seed's estimator. advantages: [B, T] or per-sequence [B] (broadcast over tokens).
PolicyLossOutput TruncatedIsPolicyLoss(const torch::Tensor& logp, const torch::Tensor& blogp,
                                       const torch::Tensor& advantages, const torch::Tensor& mask,
                                       double truncation, LossAggregation aggregation);

// PPO-clip: loss = agg( max(-ρ_t A_t, -clip(ρ_t, 1-ε, 1+ε) A_t) ). advantages [B, T] or [B].
// clip_fraction counts tokens where |ρ - 1| > ε.
PolicyLossOutput PpoClipLoss(const torch::Tensor& logp, const torch::Tensor& blogp,
                             const torch::Tensor& advantages, const torch::Tensor& mask,
                             double clip_eps, LossAggregation aggregation);

struct ValueLossOutput {
  torch::Tensor loss;           // scalar, differentiable in values
  torch::Tensor clip_fraction;  // fraction of tokens where the clipped term was larger
};

// Clipped value loss (PPO): ½ agg( max((V - R)², (V_old + clip(V - V_old, ±ε) - R)²) ).
// values (current, differentiable), old_values, returns: [B, T]. clip_eps <= 0: unclipped.
ValueLossOutput ClippedValueLoss(const torch::Tensor& values, const torch::Tensor& old_values,
                                 const torch::Tensor& returns, const torch::Tensor& mask,
                                 double clip_eps, LossAggregation aggregation);

// KL in the loss (GRPO style): agg(k3(logp - rlogp)) with current log-probs, unscaled
// (the caller multiplies by β). Differentiable in logp.
torch::Tensor KlPenaltyLoss(const torch::Tensor& logp, const torch::Tensor& rlogp,
                            const torch::Tensor& mask, LossAggregation aggregation);

// Exact per-position entropy of the categorical given by logits [B, T, V] -> [B, T].
torch::Tensor EntropyFromLogits(const torch::Tensor& logits);

// PPO-ptx term: -γ · mean log π_w(x) over the real tokens of a batch of pretraining text.
// token_logp [N, L] = log-probs of each next token, mask [N, L]; returns -gamma * mean.
torch::Tensor PtxLoss(const torch::Tensor& token_logp, const torch::Tensor& mask, double gamma);

// Fraction of variance of `targets` explained by `predictions` over real tokens:
// 1 - Var(targets - predictions) / Var(targets); NaN-free (0 when Var(targets) = 0).
double ExplainedVariance(const torch::Tensor& predictions, const torch::Tensor& targets,
                         const torch::Tensor& mask);

}  // namespace rlhf
