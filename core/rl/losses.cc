#include "core/rl/losses.h"

#include <ATen/ATen.h>

#include "core/rl/kl.h"

namespace rlhf {
namespace {

torch::Tensor FloatMask(const torch::Tensor& mask) { return mask.to(torch::kFloat32); }

// where(mask, x, 0): multiplying by the mask would turn a NaN/inf in padding into NaN.
torch::Tensor ZeroPadding(const torch::Tensor& x, const torch::Tensor& m) {
  return at::where(m > 0, x, at::zeros_like(x));
}

// Per-sequence advantages [B] broadcast over tokens; [B, T] passes through. Detached,
// 0 at padding.
torch::Tensor PerToken(const torch::Tensor& advantages, const torch::Tensor& m) {
  torch::Tensor a = advantages.detach().to(torch::kFloat32);
  if (a.dim() == 1) a = a.unsqueeze(1).expand_as(m);
  return ZeroPadding(a, m);
}

}  // namespace

torch::Tensor AggregateLoss(const torch::Tensor& per_token, const torch::Tensor& mask,
                            LossAggregation aggregation) {
  const torch::Tensor m = FloatMask(mask);
  const torch::Tensor x = ZeroPadding(per_token, m);
  if (aggregation == LossAggregation::kTokenMean) {
    return x.sum() / at::clamp_min(m.sum(), 1.0);
  }
  const torch::Tensor sequences = (m.sum(1) > 0).to(torch::kFloat32).sum();
  return x.sum() / at::clamp_min(sequences, 1.0);
}

torch::Tensor MaskedMean(const torch::Tensor& x, const torch::Tensor& mask) {
  return AggregateLoss(x, mask, LossAggregation::kTokenMean);
}

torch::Tensor TokenLogProbs(const torch::Tensor& logits, const torch::Tensor& targets) {
  return at::log_softmax(logits.to(torch::kFloat32), -1)
      .gather(-1, targets.to(torch::kLong).unsqueeze(-1))
      .squeeze(-1);
}

torch::Tensor TruncatedImportanceWeights(const torch::Tensor& logp, const torch::Tensor& blogp,
                                         const torch::Tensor& mask, double c) {
  const torch::Tensor m = FloatMask(mask);
  torch::Tensor ratio = ZeroPadding(logp.detach() - blogp.detach(), m).exp();
  if (c > 0) ratio = at::clamp_max(ratio, c);
  return ratio * m;
}

PolicyLossOutput TruncatedIsPolicyLoss(const torch::Tensor& logp, const torch::Tensor& blogp,
                                       const torch::Tensor& advantages, const torch::Tensor& mask,
                                       double truncation, LossAggregation aggregation) {
  const torch::Tensor m = FloatMask(mask);
  const torch::Tensor w = TruncatedImportanceWeights(logp, blogp, mask, truncation);
  const torch::Tensor a = PerToken(advantages, m);
  PolicyLossOutput out;
  out.loss = AggregateLoss(-(w * a) * ZeroPadding(logp, m), m, aggregation);
  const torch::Tensor log_ratio = ZeroPadding(logp.detach() - blogp.detach(), m);
  const torch::Tensor truncated =
      truncation > 0 ? (log_ratio.exp() > truncation).to(torch::kFloat32) : at::zeros_like(m);
  out.clip_fraction = MaskedMean(truncated, m);
  out.approx_kl = MaskedMean(PerTokenKl(-log_ratio, at::zeros_like(log_ratio), KlEstimator::kK3), m);
  return out;
}

PolicyLossOutput PpoClipLoss(const torch::Tensor& logp, const torch::Tensor& blogp,
                             const torch::Tensor& advantages, const torch::Tensor& mask,
                             double clip_eps, LossAggregation aggregation) {
  const torch::Tensor m = FloatMask(mask);
  const torch::Tensor log_ratio = ZeroPadding(logp - blogp.detach(), m);
  const torch::Tensor ratio = log_ratio.exp();
  const torch::Tensor a = PerToken(advantages, m);
  const torch::Tensor unclipped = -ratio * a;
  const torch::Tensor clipped = -at::clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * a;
  PolicyLossOutput out;
  out.loss = AggregateLoss(at::maximum(unclipped, clipped), m, aggregation);
  const torch::Tensor lr = log_ratio.detach();
  out.clip_fraction = MaskedMean(((lr.exp() - 1.0).abs() > clip_eps).to(torch::kFloat32), m);
  out.approx_kl = MaskedMean(PerTokenKl(-lr, at::zeros_like(lr), KlEstimator::kK3), m);
  return out;
}

ValueLossOutput ClippedValueLoss(const torch::Tensor& values, const torch::Tensor& old_values,
                                 const torch::Tensor& returns, const torch::Tensor& mask,
                                 double clip_eps, LossAggregation aggregation) {
  const torch::Tensor m = FloatMask(mask);
  const torch::Tensor v = ZeroPadding(values, m);
  const torch::Tensor v_old = ZeroPadding(old_values.detach(), m);
  const torch::Tensor r = ZeroPadding(returns.detach(), m);
  const torch::Tensor unclipped = (v - r).pow(2);
  ValueLossOutput out;
  if (clip_eps <= 0) {
    out.loss = 0.5 * AggregateLoss(unclipped, m, aggregation);
    out.clip_fraction = torch::zeros({}, m.options());
    return out;
  }
  const torch::Tensor v_clipped = v_old + at::clamp(v - v_old, -clip_eps, clip_eps);
  const torch::Tensor clipped = (v_clipped - r).pow(2);
  out.loss = 0.5 * AggregateLoss(at::maximum(unclipped, clipped), m, aggregation);
  out.clip_fraction = MaskedMean((clipped.detach() > unclipped.detach()).to(torch::kFloat32), m);
  return out;
}

torch::Tensor KlPenaltyLoss(const torch::Tensor& logp, const torch::Tensor& rlogp,
                            const torch::Tensor& mask, LossAggregation aggregation) {
  const torch::Tensor m = FloatMask(mask);
  const torch::Tensor k3 =
      PerTokenKl(ZeroPadding(logp, m), ZeroPadding(rlogp.detach(), m), KlEstimator::kK3);
  return AggregateLoss(k3, m, aggregation);
}

torch::Tensor EntropyFromLogits(const torch::Tensor& logits) {
  const torch::Tensor logp = at::log_softmax(logits.to(torch::kFloat32), -1);
  return -(logp.exp() * logp).sum(-1);
}

torch::Tensor PtxLoss(const torch::Tensor& token_logp, const torch::Tensor& mask, double gamma) {
  return -gamma * MaskedMean(token_logp, mask);
}

double ExplainedVariance(const torch::Tensor& predictions, const torch::Tensor& targets,
                         const torch::Tensor& mask) {
  const torch::Tensor m = FloatMask(mask);
  const torch::Tensor n = at::clamp_min(m.sum(), 1.0);
  auto masked_var = [&](const torch::Tensor& x) {
    const torch::Tensor mean = (ZeroPadding(x, m)).sum() / n;
    return (ZeroPadding((x - mean).pow(2), m)).sum() / n;
  };
  const double var_y = masked_var(targets.detach().to(torch::kFloat32)).item<double>();
  if (var_y <= 0) return 0.0;
  const double var_res =
      masked_var((targets - predictions).detach().to(torch::kFloat32)).item<double>();
  return 1.0 - var_res / var_y;
}

}  // namespace rlhf
