#include "core/rl/advantages.h"

#include <vector>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace rlhf {
namespace {

torch::Tensor FloatMask(const torch::Tensor& mask) { return mask.to(torch::kFloat32); }

// where(mask, x, 0) as float32, detached: multiplying by the mask would turn a NaN/inf
// in padding into NaN.
torch::Tensor Real(const torch::Tensor& x, const torch::Tensor& m) {
  const torch::Tensor xf = x.detach().to(torch::kFloat32);
  return at::where(m > 0, xf, at::zeros_like(xf));
}

absl::Status CheckGroups(const torch::Tensor& rewards, const char* what) {
  if (rewards.dim() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": rewards must be [prompts, samples], got ", rewards.dim(), " dims"));
  }
  if (rewards.size(1) < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": needs at least 2 samples per prompt, got ", rewards.size(1)));
  }
  return absl::OkStatus();
}

}  // namespace

torch::Tensor KlPenalizedTokenRewards(const torch::Tensor& score, const torch::Tensor& kl,
                                      const torch::Tensor& mask, double beta) {
  const torch::Tensor m = FloatMask(mask);
  torch::Tensor rewards = -beta * Real(kl, m);
  // Index of the last real token (the real tokens may start anywhere in the row);
  // rows without tokens get no score.
  const torch::Tensor positions =
      torch::arange(m.size(1), torch::TensorOptions().dtype(torch::kLong)).unsqueeze(0);
  const torch::Tensor has_tokens = m.sum(1) > 0;
  const torch::Tensor last = (positions * (m > 0).to(torch::kLong)).amax(1).unsqueeze(1);
  const torch::Tensor add =
      (score.detach().to(torch::kFloat32) * has_tokens.to(torch::kFloat32)).unsqueeze(1);
  return rewards.scatter_add(1, last, add);
}

torch::Tensor SequenceReturns(const torch::Tensor& token_rewards, const torch::Tensor& mask,
                              double gamma) {
  const torch::Tensor m = FloatMask(mask);
  // Exponent = index among the row's real tokens (they may start after a prompt).
  const torch::Tensor index = at::clamp_min(m.cumsum(1) - 1.0, 0.0).to(torch::kFloat64);
  const torch::Tensor discounts = at::pow(gamma, index).to(torch::kFloat32);
  return (Real(token_rewards, m) * discounts).sum(1);
}

torch::Tensor RewardToGo(const torch::Tensor& token_rewards, const torch::Tensor& mask,
                         double gamma) {
  const torch::Tensor m = FloatMask(mask);
  const torch::Tensor r = Real(token_rewards, m);
  const int64_t t = r.size(1);
  std::vector<torch::Tensor> out(t);
  torch::Tensor running = torch::zeros({r.size(0)}, r.options());
  for (int64_t i = t - 1; i >= 0; --i) {
    running = (r.select(1, i) + gamma * running) * m.select(1, i);
    out[i] = running;
  }
  if (t == 0) return torch::zeros_like(r);
  return torch::stack(out, 1);
}

void MovingMeanBaseline::Update(const torch::Tensor& returns) {
  const double mean = returns.detach().to(torch::kFloat64).mean().item<double>();
  if (!initialized_) {
    value_ = mean;
    initialized_ = true;
  } else {
    value_ = decay_ * value_ + (1.0 - decay_) * mean;
  }
}

torch::Tensor ReinforceAdvantages(const torch::Tensor& returns, double baseline) {
  return returns.detach().to(torch::kFloat32) - baseline;
}

absl::StatusOr<torch::Tensor> RlooAdvantages(const torch::Tensor& rewards) {
  if (absl::Status s = CheckGroups(rewards, "RLOO"); !s.ok()) return s;
  const torch::Tensor r = rewards.detach().to(torch::kFloat32);
  const double g = static_cast<double>(r.size(1));
  const torch::Tensor others_mean = (r.sum(1, /*keepdim=*/true) - r) / (g - 1.0);
  return r - others_mean;
}

absl::StatusOr<torch::Tensor> GrpoAdvantages(const torch::Tensor& rewards, double eps) {
  if (absl::Status s = CheckGroups(rewards, "GRPO"); !s.ok()) return s;
  const torch::Tensor r = rewards.detach().to(torch::kFloat32);
  const torch::Tensor mean = r.mean(1, /*keepdim=*/true);
  const torch::Tensor std = r.std(1, /*unbiased=*/true, /*keepdim=*/true);
  return (r - mean) / (std + eps);
}

GaeResult Gae(const torch::Tensor& token_rewards, const torch::Tensor& values,
              const torch::Tensor& mask, double gamma, double lambda) {
  const torch::Tensor m = FloatMask(mask);
  const torch::Tensor r = Real(token_rewards, m);
  const torch::Tensor v = Real(values, m);
  const int64_t b = r.size(0);
  const int64_t t = r.size(1);
  std::vector<torch::Tensor> adv(t);
  torch::Tensor next_adv = torch::zeros({b}, r.options());
  torch::Tensor next_value = torch::zeros({b}, r.options());  // V after the end = 0
  for (int64_t i = t - 1; i >= 0; --i) {
    const torch::Tensor mi = m.select(1, i);
    const torch::Tensor delta = r.select(1, i) + gamma * next_value - v.select(1, i);
    const torch::Tensor a = (delta + gamma * lambda * next_adv) * mi;
    adv[i] = a;
    // A padded position passes zeros back, so the last real token sees V_{T} = 0.
    next_adv = a;
    next_value = v.select(1, i);
  }
  GaeResult result;
  result.advantages = t == 0 ? torch::zeros_like(r) : torch::stack(adv, 1);
  result.returns = (result.advantages + v) * m;
  return result;
}

torch::Tensor MaskedWhiten(const torch::Tensor& x, const torch::Tensor& mask) {
  const torch::Tensor m = FloatMask(mask);
  const torch::Tensor n = at::clamp_min(m.sum(), 1.0);
  const torch::Tensor xm = Real(x, m);
  const torch::Tensor mean = xm.sum() / n;
  // Unbiased (n - 1), as TRL's masked_var(unbiased=True); with one real position the
  // numerator is 0, so clamping the divisor gives zeros instead of 0/0.
  const torch::Tensor var = Real((xm - mean).pow(2), m).sum() / at::clamp_min(n - 1.0, 1.0);
  return Real((xm - mean) * at::rsqrt(var + 1e-8), m);
}

}  // namespace rlhf
