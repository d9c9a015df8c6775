// The trainer's KL paths and importance weights against hand-built batches:
// kl.estimator exact in the reward, kl.placement in_loss as a gradient check against the
// formula written out here, and the truncated IS weights of a stale batch.
#include <cmath>
#include <vector>

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/optim/adamw.h>

#include "core/model/logprobs.h"
#include "core/rl_training/trainer.h"
#include "tests/rl_training/trainer_test_util.h"

namespace rlhf {
namespace {

using ::testing::HasSubstr;
using testing::LogProbs;
using testing::TinyModel;

const std::vector<int32_t> kPrompt = {1, 2, 3};
const std::vector<std::vector<int32_t>> kResponses = {{97, 97, 97}, {98, 98}, {97, 99, 97}, {98, 100}};

std::vector<Trajectory> Batch(TransformerLM& policy, TransformerLM& ref,
                              const std::vector<float>& rewards) {
  std::vector<std::vector<int32_t>> prompts(kResponses.size(), kPrompt);
  auto blogp = LogProbs(policy, prompts, kResponses);
  auto rlogp = LogProbs(ref, prompts, kResponses);
  std::vector<Trajectory> batch;
  for (size_t i = 0; i < kResponses.size(); ++i) {
    Trajectory t;
    t.prompt = kPrompt;
    t.response = kResponses[i];
    t.behaviour_logprobs = blogp[i];
    t.reference_logprobs = rlogp[i];
    t.reward = rewards[i];
    t.group_id = static_cast<int64_t>(i / 2);
    batch.push_back(t);
  }
  return batch;
}

TrainerOptions Options(RlAlgorithm algorithm, double beta) {
  TrainerOptions o;
  o.algorithm = algorithm;
  o.lr = 1e-3;
  o.minibatch_size = 4;
  o.grad_clip = 0;  // the checks below replay the update without clipping
  o.kl.initial_beta = beta;
  o.kl.adaptive = false;
  return o;
}

// kl.estimator exact: kl_t is the trajectory's exact_kl (not a function of the
// log-probs), so the per-sequence KL and the shaped return follow the numbers sent.
TEST(TrainerKlTest, ExactKlInTheRewardUsesTheSentValues) {
  TransformerLM policy = TinyModel(1);
  TransformerLM ref = TinyModel(5);
  TrainerOptions o = Options(RlAlgorithm::kReinforce, 0.5);
  o.kl_estimator = KlEstimator::kExact;
  auto trainer = *Trainer::Create(o, policy);
  std::vector<Trajectory> batch = Batch(policy, ref, {1, 0, 1, 0});
  const std::vector<std::vector<float>> exact = {{0.1f, 0.2f, 0.3f}, {0.05f, 0.0f},
                                                 {0.4f, 0.0f, 0.1f}, {1.0f, 0.25f}};
  for (size_t i = 0; i < batch.size(); ++i) batch[i].exact_kl = exact[i];
  // Sequence sums 0.6, 0.05, 0.5, 1.25: mean 0.6, max 1.25.
  absl::StatusOr<TrainStats> s = trainer->Step(batch);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_NEAR(s->kl_mean, 0.6, 1e-6);
  EXPECT_NEAR(s->kl_max, 1.25, 1e-6);
  EXPECT_NEAR(s->return_mean, 0.5 - 0.5 * 0.6, 1e-6);
}

TEST(TrainerKlTest, ExactKlIsRequiredAndChecked) {
  TransformerLM policy = TinyModel(1);
  TransformerLM ref = TinyModel(5);
  TrainerOptions o = Options(RlAlgorithm::kReinforce, 0.5);
  o.kl_estimator = KlEstimator::kExact;
  auto trainer = *Trainer::Create(o, policy);
  std::vector<Trajectory> batch = Batch(policy, ref, {1, 0, 1, 0});
  absl::StatusOr<TrainStats> s = trainer->Step(batch);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("trajectories[0].exact_kl has 0 entries"));
  for (auto& t : batch) t.exact_kl.assign(t.response.size(), 0.1f);
  batch[2].exact_kl[1] = -0.5f;
  s = trainer->Step(batch);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("trajectories[2].exact_kl[1]"));
  EXPECT_EQ(trainer->step(), 0);
  // In the loss the KL must be differentiable in the current policy: exact is refused.
  o.kl_placement = KlPlacementMode::kInLoss;
  auto bad = Trainer::Create(o, TinyModel(1));
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("kl.estimator"));
}

// The update AdamW makes from β · token-mean k3(logp - rlogp), written out here from
// design.md §2 (k3 = exp(-d) - 1 + d), on a fresh copy of the model.
std::vector<torch::Tensor> ExpectedInLossUpdate(double beta, double lr,
                                                const std::vector<Trajectory>& batch) {
  TransformerLM model = TinyModel(1);
  model->train();
  torch::optim::AdamWOptions ao(lr);
  ao.weight_decay(0.0);
  torch::optim::AdamW opt(model->parameters(), ao);
  std::vector<std::vector<int32_t>> prompts, responses;
  std::vector<std::vector<float>> rlogp_v;
  for (const Trajectory& t : batch) {
    prompts.push_back(t.prompt);
    responses.push_back(t.response);
    rlogp_v.push_back(t.reference_logprobs);
  }
  SequenceBatchOptions sbo;
  sbo.pad_id = 258;
  const SequenceBatch sb = *MakeSequenceBatch(prompts, responses, sbo);
  const torch::Tensor rlogp = *ScatterResponseValues(rlogp_v, sb);
  const torch::Tensor logits = model->forward(sb.ids, sb.attention_mask, sb.position_ids).logits;
  // log π(token t | prefix) by hand: row t-1's log-softmax at token t.
  const torch::Tensor rows = at::log_softmax(logits.to(torch::kFloat32), -1);
  const torch::Tensor next = sb.ids.slice(1, 1).unsqueeze(-1);
  const torch::Tensor lp = rows.slice(1, 0, rows.size(1) - 1).gather(-1, next).squeeze(-1);
  const torch::Tensor m = sb.response_mask.slice(1, 1).to(torch::kFloat32);
  const torch::Tensor r = rlogp.slice(1, 1);
  const torch::Tensor d = lp - r;
  const torch::Tensor k3 = (at::exp(-d) - 1 + d) * m;
  const torch::Tensor loss = beta * k3.sum() / m.sum();
  opt.zero_grad();
  loss.backward();
  opt.step();
  std::vector<torch::Tensor> out;
  for (const auto& p : model->parameters()) out.push_back(p.detach().clone());
  return out;
}

// kl.placement in_loss: with zero advantages (equal rewards, REINFORCE) the only
// gradient is β ∇ mean k3, so the trainer's first AdamW update must equal the one
// replayed from the formula. β is small enough that the gradients sit near AdamW's ε
// (1e-8), where the update depends on their magnitude and not only on their sign: the
// same replay with 2β must NOT match (the check can tell a wrong β or a wrong formula).
TEST(TrainerKlTest, KlInTheLossIsTheGradientOfBetaTimesMeanK3) {
  const double beta = 1e-7, lr = 1e-3;
  TransformerLM policy = TinyModel(1);
  TransformerLM ref = TinyModel(5);
  TrainerOptions o = Options(RlAlgorithm::kReinforce, beta);
  o.kl_placement = KlPlacementMode::kInLoss;
  o.kl_estimator = KlEstimator::kK3;
  auto trainer = *Trainer::Create(o, policy);
  const std::vector<Trajectory> batch = Batch(policy, ref, {1, 1, 1, 1});
  std::vector<torch::Tensor> before;
  for (const auto& p : policy->parameters()) before.push_back(p.detach().clone());
  absl::StatusOr<TrainStats> s = trainer->Step(batch);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->advantage_mean, 0.0);
  const std::vector<torch::Tensor> want = ExpectedInLossUpdate(beta, lr, batch);
  const std::vector<torch::Tensor> wrong = ExpectedInLossUpdate(2 * beta, lr, batch);
  const auto params = policy->parameters();
  ASSERT_EQ(params.size(), want.size());
  double worst = 0, worst_wrong = 0, moved = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    const torch::Tensor delta = params[i].detach() - before[i];
    worst = std::max(worst, (delta - (want[i] - before[i])).abs().max().item<double>());
    worst_wrong = std::max(worst_wrong, (delta - (wrong[i] - before[i])).abs().max().item<double>());
    moved = std::max(moved, delta.abs().max().item<double>());
  }
  EXPECT_GT(moved, 0.1 * lr) << "the KL term must move the weights";
  EXPECT_LT(worst, 1e-3 * lr);
  EXPECT_GT(worst_wrong, 0.05 * lr) << "the check cannot tell beta from 2*beta";
}

// A batch sampled one version ago (staleness 1) whose behaviour log-probs are set so
// that the per-token ratios ρ = π_now / μ are the hand-chosen values below. With RLOO
// (A = +1 / -1 for the rewarded / unrewarded sample of a pair) and truncation c = 2:
//   loss = -(1/N) Σ min(ρ_t, c) A logp_t,   clip_fraction = #(ρ > c) / N,
//   approx_kl = mean(ρ - 1 - ln ρ).
TEST(TrainerKlTest, StaleBatchTrainsWithTheTruncatedWeightsItPredicts) {
  TransformerLM policy = TinyModel(1);
  TransformerLM ref = TinyModel(5);
  TrainerOptions o = Options(RlAlgorithm::kRloo, 0.0);
  o.is_truncation = 2.0;
  auto trainer = *Trainer::Create(o, policy);
  ASSERT_TRUE(trainer->Step(Batch(policy, ref, {1, 0, 1, 0})).ok());  // now at version 1
  std::vector<Trajectory> stale = Batch(policy, ref, {1, 0, 0, 1});
  for (auto& t : stale) t.policy_version = 0;
  const std::vector<std::vector<double>> rho = {{3.0, 0.5, 1.5}, {2.5, 0.8}, {1.0, 4.0, 0.25}, {1.2, 2.0}};
  const std::vector<double> advantage = {1, -1, -1, 1};
  const auto now = *trainer->ResponseLogProbsOf(stale);
  double sum = 0, n = 0, truncated = 0, approx_kl = 0;
  for (size_t i = 0; i < stale.size(); ++i) {
    for (size_t t = 0; t < stale[i].response.size(); ++t) {
      const double r = rho[i][t];
      stale[i].behaviour_logprobs[t] = static_cast<float>(now[i][t] - std::log(r));
      ASSERT_LT(stale[i].behaviour_logprobs[t], 0);
      sum += std::min(r, 2.0) * advantage[i] * now[i][t];
      truncated += r > 2.0;
      approx_kl += r - 1 - std::log(r);
      n += 1;
    }
  }
  absl::StatusOr<TrainStats> s = trainer->Step(stale);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_NEAR(s->mean_staleness, 1.0, 1e-12);
  EXPECT_NEAR(s->clip_fraction, truncated / n, 1e-6);  // 3 of 10 tokens: 3.0, 2.5, 4.0
  EXPECT_NEAR(truncated, 3.0, 0);
  EXPECT_NEAR(s->approx_kl, approx_kl / n, 1e-4);
  EXPECT_NEAR(s->policy_loss, -sum / n, 1e-4 * std::abs(sum / n) + 1e-5);
}

}  // namespace
}  // namespace rlhf
