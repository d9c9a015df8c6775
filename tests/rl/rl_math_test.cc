// Every formula of design.md §2 in core/rl against numbers computed by hand.
#include <cmath>
#include <limits>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/types.h>

#include "core/rl/advantages.h"
#include "core/rl/kl.h"
#include "core/rl/kl_controller.h"
#include "core/rl/losses.h"

namespace rlhf {
namespace {

void ExpectTensorNear(const torch::Tensor& actual, const std::vector<float>& expected,
                      double tol = 1e-5) {
  const torch::Tensor flat = actual.detach().to(torch::kFloat32).contiguous().view(-1);
  ASSERT_EQ(flat.numel(), static_cast<int64_t>(expected.size()));
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_NEAR(flat[i].item<float>(), expected[i], tol) << "element " << i;
  }
}

torch::Tensor T(std::vector<float> v) { return torch::tensor(v, torch::kFloat32); }
torch::Tensor T2(std::vector<float> v, int64_t rows) { return T(std::move(v)).view({rows, -1}); }

TEST(KlEstimatorsTest, MatchHandComputedValues) {
  const torch::Tensor logp = T({-1.0, -2.0});
  const torch::Tensor rlogp = T({-1.5, -1.0});  // d = [0.5, -1]
  ExpectTensorNear(PerTokenKl(logp, rlogp, KlEstimator::kK1), {0.5, -1.0});
  ExpectTensorNear(PerTokenKl(logp, rlogp, KlEstimator::kK2), {0.125, 0.5});
  // k3 = exp(-d) - 1 + d
  ExpectTensorNear(PerTokenKl(logp, rlogp, KlEstimator::kK3), {0.10653066, 0.71828183});
}

TEST(KlEstimatorsTest, ParseNames) {
  EXPECT_EQ(*ParseKlEstimator("K3"), KlEstimator::kK3);
  EXPECT_FALSE(ParseKlEstimator("k4").ok());
}

TEST(KlEstimatorsTest, ExactKlFullAndTopK) {
  // p = [.5 .3 .2], q = [.2 .3 .5]: 0.5 ln 2.5 + 0.2 ln 0.4 = 0.274887.
  const torch::Tensor p = T({0.5, 0.3, 0.2}).log();
  const torch::Tensor q = T({0.2, 0.3, 0.5}).log();
  ExpectTensorNear(ExactKlFull(p, q), {0.274887});
  // Top-1 of p (id 0) + tail 0.5 against q's 0.2 / tail 0.8: 0.5 ln 2.5 + 0.5 ln(0.5/0.8).
  const torch::Tensor topk = T({0.5}).log();
  const torch::Tensor ids = torch::tensor({0}, torch::kLong);
  const torch::Tensor tail = torch::tensor(0.5f).log();
  ExpectTensorNear(ExactKlTopK(topk, ids, tail, q), {0.223144});
  // Zero-probability policy entries contribute nothing even against log q = -inf.
  const torch::Tensor p0 = T({1.0, 0.0}).log();
  const torch::Tensor q0 = T({1.0, 0.0}).log();
  ExpectTensorNear(ExactKlFull(p0, q0), {0.0});
}

TEST(KlEstimatorsTest, ExactIsAChoiceWhoseSampledFormIsK1) {
  EXPECT_EQ(*ParseKlEstimator("exact"), KlEstimator::kExact);
  EXPECT_EQ(KlEstimatorName(KlEstimator::kExact), "exact");
  // From sampled-token log-probs alone only the unbiased single-sample estimate exists.
  ExpectTensorNear(PerTokenKl(T({-1.0}), T({-1.5}), KlEstimator::kExact), {0.5});
}

TEST(KlEstimatorsTest, TopKWithTruncatedEntriesAndTailLogProb) {
  // A top-k/top-p sampler's distribution p = [.5 .5 0] (id 2 removed, log-prob -inf)
  // against q = [.25 .25 .5]: KL = .5 ln 2 + .5 ln 2 = ln 2, whether the removed token
  // is sent (-inf entry) or left out with a tail of mass 0.
  const torch::Tensor q = T({0.25, 0.25, 0.5}).log();
  const float ninf = -std::numeric_limits<float>::infinity();
  const torch::Tensor with_removed = T({std::log(0.5f), std::log(0.5f), ninf});
  const torch::Tensor ids3 = torch::tensor({0, 1, 2}, torch::kLong);
  ExpectTensorNear(ExactKlTopK(with_removed, ids3, torch::tensor(ninf), q), {0.693147});
  const torch::Tensor kept = T({std::log(0.5f), std::log(0.5f)});
  const torch::Tensor ids2 = torch::tensor({0, 1}, torch::kLong);
  ExpectTensorNear(ExactKlTopK(kept, ids2, torch::tensor(ninf), q), {0.693147});
  ExpectTensorNear(ExactKlFull(T({std::log(0.5f), std::log(0.5f), ninf}), q), {0.693147});
  // Tail bucket: log(1 - .5 - .25) = ln .25; all mass in the top-k: -inf.
  EXPECT_NEAR(TopKTailLogProb({std::log(0.5f), std::log(0.25f)}), -1.386294, 1e-5);
  EXPECT_EQ(TopKTailLogProb({std::log(0.5f), std::log(0.5f)}), ninf);
  EXPECT_NEAR(TopKTailLogProb({}), 0.0, 1e-7);
}

// The top-k bound is the KL of the coarsened pair (k outcomes + one tail), so by the
// data-processing inequality it never exceeds the full KL and grows with k to it.
TEST(KlEstimatorsTest, TopKIsALowerBoundThatReachesTheFullKl) {
  torch::manual_seed(3);
  const int64_t V = 50;
  const torch::Tensor p = at::log_softmax(torch::randn({8, V}) * 2.0, -1);
  const torch::Tensor q = at::log_softmax(torch::randn({8, V}) * 2.0, -1);
  const torch::Tensor full = ExactKlFull(p, q);
  torch::Tensor previous = torch::zeros({8});
  for (int64_t k : {1, 2, 5, 10, 25, 49, 50}) {
    auto top = p.topk(k, -1);
    std::vector<torch::Tensor> tails;
    for (int64_t r = 0; r < 8; ++r) {
      const torch::Tensor lp = std::get<0>(top)[r].contiguous();
      tails.push_back(torch::tensor(TopKTailLogProb(
          std::vector<float>(lp.data_ptr<float>(), lp.data_ptr<float>() + k))));
    }
    const torch::Tensor bound = ExactKlTopK(std::get<0>(top), std::get<1>(top),
                                            torch::stack(tails), q);
    // (float32 sums; a tail below 1e-6 counts as rounding, see TopKTailLogProb)
    EXPECT_TRUE((bound <= full + 5e-5).all().item<bool>()) << "k " << k << "\n" << bound - full;
    EXPECT_TRUE((bound >= previous - 5e-5).all().item<bool>()) << "k " << k;  // monotone in k
    previous = bound;
  }
  EXPECT_TRUE(torch::allclose(previous, full, 1e-4, 1e-5));
}

TEST(KlControllerTest, AdaptiveUpdateFollowsZiegler) {
  KlController c({/*initial_beta=*/0.1, /*adaptive=*/true, /*target=*/3.0, /*horizon=*/100});
  // KL 6: e = clip(6/3 - 1) = 0.2; 10 samples: β = 0.1 (1 + 0.2 * 10/100) = 0.102.
  EXPECT_NEAR(c.Update(6.0, 10), 0.102, 1e-12);
  // KL 2.7: e = -0.1; β = 0.102 (1 - 0.1 * 0.1) = 0.10098.
  EXPECT_NEAR(c.Update(2.7, 10), 0.10098, 1e-12);
  // KL 0: e clipped at -0.2; 50 samples: β *= 1 - 0.1.
  EXPECT_NEAR(c.Update(0.0, 50), 0.10098 * 0.9, 1e-12);
  KlController fixed({0.1, /*adaptive=*/false, 3.0, 100});
  EXPECT_EQ(fixed.Update(100.0, 1000), 0.1);
  EXPECT_FALSE(KlController::Validate({0.1, true, 0.0, 100}).ok());
  EXPECT_FALSE(KlController::Validate({-1.0, false, 1.0, 100}).ok());
}

TEST(AdvantagesTest, KlPenalizedTokenRewards) {
  const torch::Tensor score = T({2.0, -1.0});
  const torch::Tensor kl = T2({0.1, 0.2, 0.3, 0.5, 9, 9}, 2);
  const torch::Tensor mask = T2({1, 1, 1, 1, 0, 0}, 2);
  ExpectTensorNear(KlPenalizedTokenRewards(score, kl, mask, 0.5),
                   {-0.05, -0.1, 1.85, -1.25, 0, 0});
  // Reward-to-go and discounted returns of those rewards.
  const torch::Tensor r = KlPenalizedTokenRewards(score, kl, mask, 0.5);
  ExpectTensorNear(SequenceReturns(r, mask), {1.7, -1.25});
  ExpectTensorNear(SequenceReturns(r, mask, 0.5), {-0.05 - 0.05 + 0.25 * 1.85, -1.25});
  ExpectTensorNear(RewardToGo(r, mask), {1.7, 1.75, 1.85, -1.25, 0, 0});
  // Same numbers in the prompt+response frame (responses start after a prompt).
  const torch::Tensor kl2 = T2({7, 0.1, 0.2, 0.3, 7, 7, 0.5, 7}, 2);
  const torch::Tensor mask2 = T2({0, 1, 1, 1, 0, 0, 1, 0}, 2);
  ExpectTensorNear(KlPenalizedTokenRewards(score, kl2, mask2, 0.5),
                   {0, -0.05, -0.1, 1.85, 0, 0, -1.25, 0});
  const torch::Tensor r2 = KlPenalizedTokenRewards(score, kl2, mask2, 0.5);
  ExpectTensorNear(SequenceReturns(r2, mask2, 0.5), {-0.05 - 0.05 + 0.25 * 1.85, -1.25});
  ExpectTensorNear(Gae(r2, torch::zeros({2, 4}), mask2, 1.0, 1.0).advantages,
                   {0, 1.7, 1.75, 1.85, 0, 0, -1.25, 0});
}

TEST(AdvantagesTest, RlooLeavesOneOut) {
  // Group [1 2 3 6]: r_i - mean of the others.
  ExpectTensorNear(*RlooAdvantages(T2({1, 2, 3, 6, 5, 5, 5, 5}, 2)),
                   {1 - 11.0f / 3, 2 - 10.0f / 3, 0, 4, 0, 0, 0, 0});
  EXPECT_FALSE(RlooAdvantages(T2({1, 2}, 2)).ok());  // G = 1
}

TEST(AdvantagesTest, GrpoNormalisesWithinGroups) {
  // mean 3, unbiased std sqrt(14/3) = 2.16025, eps 1e-4.
  ExpectTensorNear(*GrpoAdvantages(T2({1, 2, 3, 6, 5, 5, 5, 5}, 2), 1e-4),
                   {-0.9257773, -0.4628887, 0, 1.3886659, 0, 0, 0, 0});
  EXPECT_FALSE(GrpoAdvantages(T({1, 2}), 1e-4).ok());
}

// Convention (advantages.h): whitening divides by the UNBIASED variance, as TRL/veRL's
// masked_whiten: x = [1 2 3 4] (+ padding): mean 2.5, var = 5/3, std = 1.2909944;
// (x - 2.5) / 1.2909944 = [-1.161895 -0.387298 0.387298 1.161895]. (The population
// variance would give [-1.341641 -0.447214 0.447214 1.341641].)
TEST(AdvantagesTest, MaskedWhitenUsesTheUnbiasedVariance) {
  const torch::Tensor x = T2({1, 2, 99, 3, 4, -7}, 2);
  const torch::Tensor mask = T2({1, 1, 0, 1, 1, 0}, 2);
  ExpectTensorNear(MaskedWhiten(x, mask), {-1.161895, -0.387298, 0, 0.387298, 1.161895, 0});
  // One real position: nothing to whiten (zeros, not NaN).
  ExpectTensorNear(MaskedWhiten(T2({5, 6}, 1), T2({1, 0}, 1)), {0, 0});
}

TEST(AdvantagesTest, MovingMeanBaseline) {
  MovingMeanBaseline b(0.9);
  b.Update(T({1, 3}));  // first: the batch mean
  EXPECT_NEAR(b.value(), 2.0, 1e-12);
  b.Update(T({12}));  // 0.9 * 2 + 0.1 * 12
  EXPECT_NEAR(b.value(), 3.0, 1e-6);
  ExpectTensorNear(ReinforceAdvantages(T({4, 1}), b.value()), {1, -2});
}

TEST(AdvantagesTest, GaeHandExample) {
  // r = [0 0 1 | pad], V = [.5 .6 .7 | pad], γ = .9, λ = .8:
  // δ = [.04 .03 .3], A2 = .3, A1 = .03 + .72·.3 = .246, A0 = .04 + .72·.246 = .21712.
  const torch::Tensor r = T2({0, 0, 1, 9}, 1);
  const torch::Tensor v = T2({0.5, 0.6, 0.7, 5}, 1);
  const torch::Tensor m = T2({1, 1, 1, 0}, 1);
  GaeResult g = Gae(r, v, m, 0.9, 0.8);
  ExpectTensorNear(g.advantages, {0.21712, 0.246, 0.3, 0});
  ExpectTensorNear(g.returns, {0.71712, 0.846, 1.0, 0});
  // γ = λ = 1: A_t = (Σ r) - V_t (Monte Carlo).
  ExpectTensorNear(Gae(r, v, m, 1.0, 1.0).advantages, {0.5, 0.4, 0.3, 0});
  // λ = 0: one-step TD errors.
  ExpectTensorNear(Gae(r, v, m, 0.9, 0.0).advantages, {0.04, 0.03, 0.3, 0});
}

TEST(LossesTest, AggregationModes) {
  const torch::Tensor x = T2({1, 2, 3, 4, 100, 100}, 2);
  const torch::Tensor m = T2({1, 1, 1, 1, 0, 0}, 2);
  EXPECT_NEAR(AggregateLoss(x, m, LossAggregation::kTokenMean).item<float>(), 2.5, 1e-6);
  EXPECT_NEAR(AggregateLoss(x, m, LossAggregation::kSequenceMean).item<float>(), 5.0, 1e-6);
}

TEST(LossesTest, TruncatedImportanceWeights) {
  const torch::Tensor blogp = T({-1, -1, -1, -1});
  const torch::Tensor logp = blogp + T({std::log(3.0f), std::log(0.5f), 0, 7});
  const torch::Tensor m = T({1, 1, 1, 0});
  ExpectTensorNear(TruncatedImportanceWeights(logp, blogp, m, 2.0), {2, 0.5, 1, 0});
  ExpectTensorNear(TruncatedImportanceWeights(logp, blogp, m, 0.0), {3, 0.5, 1, 0});
  // The REINFORCE-family loss uses them: ∇_logp loss = -w A / N_tokens.
  torch::Tensor lp = logp.clone().view({1, 4}).set_requires_grad(true);
  const torch::Tensor adv = T2({1, 2, -1, 5}, 1);
  PolicyLossOutput out = TruncatedIsPolicyLoss(lp, blogp.view({1, 4}), adv, m.view({1, 4}), 2.0,
                                               LossAggregation::kTokenMean);
  out.loss.backward();
  ExpectTensorNear(lp.grad(), {-2.0 / 3, -1.0 / 3, 1.0 / 3, 0});
  EXPECT_NEAR(out.clip_fraction.item<float>(), 1.0 / 3, 1e-6);  // only ρ = 3 truncated
}

TEST(LossesTest, PpoClipHandBatch) {
  // ρ = [1.5 .5 1.1 .7], A = [1 1 -1 -1], ε = .2:
  // per-token max(-ρA, -clip(ρ)A) = [-1.2 -.5 1.1 .8] -> mean .05.
  const torch::Tensor blogp = T2({-1, -2, -0.5, -3}, 1);
  torch::Tensor logp = (blogp + T2({1.5, 0.5, 1.1, 0.7}, 1).log()).set_requires_grad(true);
  logp = logp.detach().set_requires_grad(true);
  const torch::Tensor adv = T2({1, 1, -1, -1}, 1);
  const torch::Tensor m = torch::ones({1, 4});
  PolicyLossOutput out = PpoClipLoss(logp, blogp, adv, m, 0.2, LossAggregation::kTokenMean);
  EXPECT_NEAR(out.loss.item<float>(), 0.05, 1e-6);
  EXPECT_NEAR(out.clip_fraction.item<float>(), 0.75, 1e-6);
  out.loss.backward();
  // Clipped tokens have zero gradient; the others -ρA/4.
  ExpectTensorNear(logp.grad(), {0, -0.125, 0.275, 0});
  // approx KL(behaviour || current) = mean(ρ - 1 - log ρ).
  double expected = 0;
  for (double rho : {1.5, 0.5, 1.1, 0.7}) expected += (rho - 1 - std::log(rho)) / 4;
  EXPECT_NEAR(out.approx_kl.item<float>(), expected, 1e-6);
}

TEST(LossesTest, ClippedValueLossHandBatch) {
  // V = [1 2], V_old = [.5 .5], R = [1.2 0], ε = .2: max terms [.25 4] -> ½·mean = 1.0625.
  torch::Tensor v = T2({1, 2}, 1).set_requires_grad(true);
  const torch::Tensor m = torch::ones({1, 2});
  ValueLossOutput out =
      ClippedValueLoss(v, T2({0.5, 0.5}, 1), T2({1.2, 0}, 1), m, 0.2, LossAggregation::kTokenMean);
  EXPECT_NEAR(out.loss.item<float>(), 1.0625, 1e-6);
  EXPECT_NEAR(out.clip_fraction.item<float>(), 0.5, 1e-6);
  out.loss.backward();
  // Token 0 is clipped (no gradient); token 1: ½·2(V - R)/2 = 1.
  ExpectTensorNear(v.grad(), {0, 1.0});
  ValueLossOutput plain =
      ClippedValueLoss(v, T2({0.5, 0.5}, 1), T2({1.2, 0}, 1), m, 0.0, LossAggregation::kTokenMean);
  EXPECT_NEAR(plain.loss.item<float>(), 0.5 * (0.04 + 4) / 2, 1e-6);
}

TEST(LossesTest, KlPenaltyLossIsMeanK3) {
  torch::Tensor logp = T2({-1.0, -2.0, 5.0}, 1).set_requires_grad(true);
  const torch::Tensor rlogp = T2({-1.5, -1.0, 0.0}, 1);
  const torch::Tensor m = T2({1, 1, 0}, 1);
  torch::Tensor loss = KlPenaltyLoss(logp, rlogp, m, LossAggregation::kTokenMean);
  EXPECT_NEAR(loss.item<float>(), (0.10653066 + 0.71828183) / 2, 1e-6);
  loss.backward();
  // d k3 / d logp = 1 - exp(-d) with d = logp - rlogp.
  ExpectTensorNear(logp.grad(), {(1 - std::exp(-0.5f)) / 2, (1 - std::exp(1.0f)) / 2, 0});
}

TEST(LossesTest, EntropyAndExplainedVariance) {
  ExpectTensorNear(EntropyFromLogits(torch::tensor({{0.0f, 0.0f}, {0.0f, std::log(3.0f)}})),
                   {std::log(2.0f), 0.5623351});
  const torch::Tensor y = T2({1, 2, 3, 4}, 1);
  const torch::Tensor m = torch::ones({1, 4});
  EXPECT_NEAR(ExplainedVariance(y, y, m), 1.0, 1e-6);
  EXPECT_NEAR(ExplainedVariance(torch::full({1, 4}, 2.5), y, m), 0.0, 1e-6);
  // residuals [-1 0 0 1]: Var 0.5 vs Var(y) 1.25.
  EXPECT_NEAR(ExplainedVariance(T2({2, 2, 3, 3}, 1), y, m), 1 - 0.5 / 1.25, 1e-6);
}

// PPO-ptx on a tiny bigram model (logits = W[x_t]): ∇_W[a] of -γ·mean log π(x_{t+1}|x_t)
// is -γ/N Σ_{t: x_t = a} (onehot(x_{t+1}) - softmax(W[a])).
TEST(LossesTest, PtxGradientOnTinyModel) {
  torch::manual_seed(3);
  const int64_t v = 5;
  torch::Tensor w = torch::randn({v, v}).set_requires_grad(true);
  const torch::Tensor text = torch::tensor({{0, 1, 2, 1, 4}, {3, 3, 0, 0, 0}}, torch::kLong);
  const torch::Tensor mask = T2({1, 1, 1, 1, 1, 1, 0, 0}, 2);  // targets' mask [2, 4]
  const torch::Tensor inputs = text.slice(1, 0, 4);
  const torch::Tensor targets = text.slice(1, 1, 5);
  const double gamma = 0.7;
  torch::Tensor loss = PtxLoss(TokenLogProbs(w.index_select(0, inputs.reshape(-1)).view({2, 4, v}),
                                             targets),
                               mask, gamma);
  loss.backward();
  torch::Tensor expected = torch::zeros({v, v});
  const torch::Tensor probs = at::softmax(w.detach(), -1);
  const double n = 6;  // real target tokens
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t t = 0; t < 4; ++t) {
      if (mask[b][t].item<float>() == 0) continue;
      const int64_t a = inputs[b][t].item<int64_t>();
      torch::Tensor onehot = torch::zeros({v});
      onehot[targets[b][t].item<int64_t>()] = 1;
      expected[a] += -gamma / n * (onehot - probs[a]);
    }
  }
  EXPECT_TRUE(torch::allclose(w.grad(), expected, 1e-5, 1e-6)) << w.grad() << expected;
  // Minimising the term raises the likelihood of the text.
  const double before = loss.item<double>();
  torch::Tensor w2 = (w.detach() - 1.0 * w.grad()).set_requires_grad(false);
  const double after = PtxLoss(TokenLogProbs(w2.index_select(0, inputs.reshape(-1)).view({2, 4, v}),
                                             targets),
                               mask, gamma)
                           .item<double>();
  EXPECT_LT(after, before);
}

// Changing anything at padded positions (including NaN/inf) changes no loss and no gradient.
TEST(MaskingTest, PaddingChangesNothing) {
  torch::manual_seed(7);
  const int64_t b = 3, t = 5;
  const torch::Tensor mask = torch::tensor({{1, 1, 1, 1, 1}, {1, 1, 0, 0, 0}, {1, 1, 1, 0, 0}})
                                 .to(torch::kFloat32);
  const torch::Tensor pad = mask == 0;
  auto base = [&](const torch::Tensor& x) { return x.clone(); };
  auto corrupt = [&](const torch::Tensor& x, float value) {
    return at::where(pad, torch::full_like(x, value), x);
  };
  const torch::Tensor logp0 = -torch::rand({b, t}) - 0.1;
  const torch::Tensor blogp0 = logp0 + 0.3 * torch::randn({b, t});
  const torch::Tensor rlogp0 = logp0 + 0.3 * torch::randn({b, t});
  const torch::Tensor adv0 = torch::randn({b, t});
  const torch::Tensor val0 = torch::randn({b, t});

  struct Result {
    std::vector<torch::Tensor> values;
  };
  auto run = [&](bool corrupted, float junk) {
    auto f = [&](const torch::Tensor& x) { return corrupted ? corrupt(x, junk) : base(x); };
    torch::Tensor logp = f(logp0).set_requires_grad(true);
    torch::Tensor values = f(val0).set_requires_grad(true);
    const torch::Tensor blogp = f(blogp0), rlogp = f(rlogp0), adv = f(adv0);
    Result r;
    for (LossAggregation agg : {LossAggregation::kTokenMean, LossAggregation::kSequenceMean}) {
      torch::Tensor total = TruncatedIsPolicyLoss(logp, blogp, adv, mask, 2.0, agg).loss +
                            PpoClipLoss(logp, blogp, adv, mask, 0.2, agg).loss +
                            KlPenaltyLoss(logp, rlogp, mask, agg) +
                            ClippedValueLoss(values, f(val0) * 0.5, adv, mask, 0.2, agg).loss +
                            PtxLoss(logp, mask, 0.3);
      r.values.push_back(total.detach());
    }
    torch::Tensor total = TruncatedIsPolicyLoss(logp, blogp, adv, mask, 2.0,
                                                LossAggregation::kTokenMean).loss +
                          PpoClipLoss(logp, blogp, adv, mask, 0.2, LossAggregation::kTokenMean).loss +
                          KlPenaltyLoss(logp, rlogp, mask, LossAggregation::kTokenMean) +
                          ClippedValueLoss(values, f(val0) * 0.5, adv, mask, 0.2,
                                           LossAggregation::kTokenMean).loss;
    total.backward();
    r.values.push_back(logp.grad());
    r.values.push_back(values.grad());
    const torch::Tensor token_rewards = KlPenalizedTokenRewards(
        torch::tensor({1.f, 2.f, 3.f}), PerTokenKl(blogp, rlogp, KlEstimator::kK1), mask, 0.1);
    r.values.push_back(token_rewards);
    GaeResult g = Gae(token_rewards, f(val0), mask, 0.99, 0.95);
    r.values.push_back(g.advantages);
    r.values.push_back(g.returns);
    r.values.push_back(RewardToGo(token_rewards, mask));
    r.values.push_back(SequenceReturns(token_rewards, mask));
    r.values.push_back(MaskedWhiten(f(adv0), mask));
    r.values.push_back(torch::tensor(ExplainedVariance(f(val0), f(adv0), mask)));
    return r;
  };
  const Result clean = run(false, 0);
  for (float junk : {0.0f, 1e6f, -50.0f, std::numeric_limits<float>::quiet_NaN(),
                     std::numeric_limits<float>::infinity()}) {
    const Result dirty = run(true, junk);
    ASSERT_EQ(clean.values.size(), dirty.values.size());
    for (size_t i = 0; i < clean.values.size(); ++i) {
      EXPECT_TRUE(torch::equal(clean.values[i], dirty.values[i]))
          << "output " << i << " changed with padding = " << junk << "\n"
          << clean.values[i] << "\n" << dirty.values[i];
    }
  }
}

}  // namespace
}  // namespace rlhf
