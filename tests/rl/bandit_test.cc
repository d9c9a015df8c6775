// One-step softmax bandit: π = softmax(θ) over K arms with fixed rewards r.
// J(θ) = Σ_a π_a r_a and ∇_θ J = π ⊙ (r − J). The REINFORCE loss of core/rl, averaged
// over N sampled arms, must reproduce that gradient: each coordinate of the estimate is
// a mean of N i.i.d. terms, so it lies within 5 standard errors (σ_k/√N, σ_k measured
// from the same samples) of the truth except with probability < 1e-6 per coordinate.
#include <cmath>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/types.h>

#include "core/rl/advantages.h"
#include "core/rl/losses.h"

namespace rlhf {
namespace {

constexpr int64_t kArms = 4;
constexpr int64_t kSamples = 20000;

struct Bandit {
  torch::Tensor theta = torch::tensor({0.5f, -0.2f, 0.1f, 0.0f});
  torch::Tensor rewards = torch::tensor({1.0f, 0.0f, 0.5f, -1.0f});
  torch::Tensor AnalyticGradient() const {
    const torch::Tensor pi = at::softmax(theta, 0);
    const torch::Tensor j = (pi * rewards).sum();
    return pi * (rewards - j);
  }
};

struct Estimate {
  torch::Tensor gradient;        // -∇ loss, [K]
  torch::Tensor standard_error;  // per coordinate, [K]
};

// Samples N arms from `behaviour` probabilities, builds the REINFORCE-family loss with
// per-sequence advantages and returns -∇θ loss with its per-coordinate standard error.
Estimate EstimateGradient(const Bandit& bandit, const torch::Tensor& behaviour_probs,
                          double baseline, double truncation, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const torch::Tensor arms = at::multinomial(behaviour_probs, kSamples, /*replacement=*/true, gen);
  torch::Tensor theta = bandit.theta.clone().set_requires_grad(true);
  const torch::Tensor logp = at::log_softmax(theta, 0).index_select(0, arms).view({kSamples, 1});
  const torch::Tensor blogp = behaviour_probs.log().index_select(0, arms).view({kSamples, 1});
  const torch::Tensor adv = ReinforceAdvantages(bandit.rewards.index_select(0, arms), baseline);
  const torch::Tensor mask = torch::ones({kSamples, 1});
  PolicyLossOutput out = TruncatedIsPolicyLoss(logp, blogp, adv, mask, truncation,
                                               LossAggregation::kSequenceMean);
  out.loss.backward();
  // Per-sample terms w·A·(e_a − π) for the standard error.
  const torch::Tensor pi = at::softmax(bandit.theta, 0);
  const torch::Tensor w =
      TruncatedImportanceWeights(logp.detach(), blogp, mask, truncation).view({kSamples, 1});
  const torch::Tensor terms =
      w * adv.view({kSamples, 1}) * (at::one_hot(arms, kArms).to(torch::kFloat32) - pi);
  return {-theta.grad(), terms.std(0) / std::sqrt(static_cast<double>(kSamples))};
}

void ExpectWithinFiveSe(const Estimate& e, const torch::Tensor& truth) {
  for (int64_t k = 0; k < kArms; ++k) {
    const double se = e.standard_error[k].item<double>();
    EXPECT_GT(se, 0);
    EXPECT_NEAR(e.gradient[k].item<double>(), truth[k].item<double>(), 5 * se) << "arm " << k;
  }
}

TEST(BanditTest, ReinforceMatchesAnalyticGradient) {
  Bandit bandit;
  const torch::Tensor truth = bandit.AnalyticGradient();
  const torch::Tensor pi = at::softmax(bandit.theta, 0);
  const Estimate plain = EstimateGradient(bandit, pi, /*baseline=*/0.0, 2.0, 11);
  ExpectWithinFiveSe(plain, truth);
  // The check has power: a sign error (gradient descent on J) would be far outside.
  EXPECT_GT((plain.gradient + truth).abs().max().item<double>(),
            10 * plain.standard_error.max().item<double>());
  // A constant baseline keeps the estimate unbiased and (near J) reduces its variance.
  const double j = (pi * bandit.rewards).sum().item<double>();
  const Estimate with_baseline = EstimateGradient(bandit, pi, j, 2.0, 12);
  ExpectWithinFiveSe(with_baseline, truth);
  EXPECT_LT(with_baseline.standard_error.sum().item<double>(),
            plain.standard_error.sum().item<double>());
}

// Off-policy samples from a behaviour μ ≠ π: with importance weights π/μ (no truncation
// needed: max ratio < c) the estimate is unbiased for ∇J under π; without them (c tiny,
// weights all truncated to a constant) it is the gradient for the wrong distribution.
TEST(BanditTest, ImportanceWeightsCorrectOffPolicySamples) {
  Bandit bandit;
  const torch::Tensor truth = bandit.AnalyticGradient();
  const torch::Tensor mu = torch::tensor({0.1f, 0.4f, 0.2f, 0.3f});
  const Estimate weighted = EstimateGradient(bandit, mu, 0.0, /*truncation=*/10.0, 21);
  ExpectWithinFiveSe(weighted, truth);
  // Truncating every weight to 0.05 (all ratios exceed it) is 0.05 · unweighted:
  // a biased direction, far outside the error bars after rescaling.
  const Estimate truncated = EstimateGradient(bandit, mu, 0.0, /*truncation=*/0.05, 21);
  const torch::Tensor rescaled = truncated.gradient / 0.05;
  EXPECT_GT((rescaled - truth).abs().max().item<double>(),
            10 * weighted.standard_error.max().item<double>());
}

// RLOO and GRPO advantages over groups of samples of one "prompt" also give ascent
// directions: the RLOO estimate is unbiased (leave-one-out baseline is independent of
// the sample it is applied to).
TEST(BanditTest, RlooIsUnbiased) {
  Bandit bandit;
  const torch::Tensor truth = bandit.AnalyticGradient();
  const torch::Tensor pi = at::softmax(bandit.theta, 0);
  const int64_t groups = kSamples / 4;
  at::Generator gen = at::detail::createCPUGenerator(31);
  const torch::Tensor arms = at::multinomial(pi, kSamples, true, gen);
  torch::Tensor theta = bandit.theta.clone().set_requires_grad(true);
  const torch::Tensor logp = at::log_softmax(theta, 0).index_select(0, arms).view({groups, 4});
  const torch::Tensor adv = *RlooAdvantages(bandit.rewards.index_select(0, arms).view({groups, 4}));
  PolicyLossOutput out = TruncatedIsPolicyLoss(logp.view({-1, 1}), logp.detach().view({-1, 1}),
                                               adv.view({-1}), torch::ones({kSamples, 1}), 2.0,
                                               LossAggregation::kSequenceMean);
  out.loss.backward();
  const torch::Tensor terms = adv.view({-1, 1}) *
                              (at::one_hot(arms, kArms).to(torch::kFloat32) - pi);
  // Terms within a group are correlated: the standard error uses group sums.
  const torch::Tensor group_terms = terms.view({groups, 4, kArms}).sum(1) / 4;
  ExpectWithinFiveSe({-theta.grad(), group_terms.std(0) / std::sqrt(double(groups))}, truth);
}

}  // namespace
}  // namespace rlhf
