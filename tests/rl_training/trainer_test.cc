// The Trainer: validation, learning direction for every algorithm, exact gradient
// accumulation, KL placement, ptx, statistics.
#include "core/rl_training/trainer.h"

#include <cmath>

#include <gtest/gtest.h>

#include "tests/rl_training/trainer_test_util.h"

namespace rlhf {
namespace {

using testing::LogProbs;
using testing::MaxAbsDiff;
using testing::TinyModel;

// One prompt, a good response (reward 1) and a bad one (reward 0), twice each.
std::vector<Trajectory> HandBatch(TransformerLM& policy, TransformerLM& ref) {
  const std::vector<int32_t> prompt = {1, 2, 3};
  const std::vector<std::vector<int32_t>> responses = {{97, 97, 97}, {98, 98}, {97, 97, 97}, {98, 98}};
  std::vector<std::vector<int32_t>> prompts(responses.size(), prompt);
  auto blogp = LogProbs(policy, prompts, responses);
  auto rlogp = LogProbs(ref, prompts, responses);
  std::vector<Trajectory> batch;
  for (size_t i = 0; i < responses.size(); ++i) {
    Trajectory t;
    t.prompt = prompt;
    t.response = responses[i];
    t.behaviour_logprobs = blogp[i];
    t.reference_logprobs = rlogp[i];
    t.reward = responses[i][0] == 97 ? 1.f : 0.f;
    t.group_id = 7;
    batch.push_back(t);
  }
  return batch;
}

double SeqLogProb(TransformerLM& m, const std::vector<int32_t>& response) {
  auto lp = LogProbs(m, {{1, 2, 3}}, {response});
  double s = 0;
  for (float v : lp[0]) s += v;
  return s;
}

TrainerOptions BaseOptions(RlAlgorithm algorithm) {
  TrainerOptions o;
  o.algorithm = algorithm;
  o.lr = 3e-3;
  o.minibatch_size = 4;
  o.kl.initial_beta = 0.01;
  o.kl.adaptive = false;
  return o;
}

class AlgorithmTest : public ::testing::TestWithParam<RlAlgorithm> {};

TEST_P(AlgorithmTest, RewardedResponseGainsProbability) {
  TransformerLM policy = TinyModel(1);
  TransformerLM ref = TinyModel(1);
  TransformerLM value = GetParam() == RlAlgorithm::kPpo ? TinyModel(2, true) : nullptr;
  TrainerOptions o = BaseOptions(GetParam());
  o.epochs = GetParam() == RlAlgorithm::kPpo ? 2 : 1;
  auto trainer = *Trainer::Create(o, policy, value);
  const double good0 = SeqLogProb(policy, {97, 97, 97});
  const double bad0 = SeqLogProb(policy, {98, 98});
  for (int step = 0; step < 5; ++step) {
    absl::StatusOr<TrainStats> stats = trainer->Step(HandBatch(policy, ref));
    ASSERT_TRUE(stats.ok()) << stats.status();
    EXPECT_EQ(stats->policy_version, step + 1);
    EXPECT_EQ(stats->num_sequences, 4);
    EXPECT_EQ(stats->response_tokens, 10);
    EXPECT_TRUE(std::isfinite(stats->policy_loss));
    EXPECT_GT(stats->grad_norm, 0);
    EXPECT_NEAR(stats->reward_mean, 0.5, 1e-6);
    EXPECT_GE(stats->clip_fraction, 0);
    EXPECT_LE(stats->clip_fraction, 1);
  }
  EXPECT_GT(SeqLogProb(policy, {97, 97, 97}), good0 + 0.5);
  EXPECT_LT(SeqLogProb(policy, {98, 98}), bad0);
  EXPECT_EQ(trainer->step(), 5);
}

INSTANTIATE_TEST_SUITE_P(All, AlgorithmTest,
                         ::testing::Values(RlAlgorithm::kReinforce, RlAlgorithm::kRloo,
                                           RlAlgorithm::kGrpo, RlAlgorithm::kPpo),
                         [](const auto& info) { return std::string(RlAlgorithmName(info.param)); });

TEST(TrainerTest, BadBatchIsRejectedAndChangesNothing) {
  TransformerLM policy = TinyModel(1);
  TransformerLM ref = TinyModel(1);
  TransformerLM before = TinyModel(1);
  auto trainer = *Trainer::Create(BaseOptions(RlAlgorithm::kGrpo), policy);
  std::vector<Trajectory> batch = HandBatch(policy, ref);

  auto expect_error = [&](std::vector<Trajectory> b, const std::string& needle) {
    absl::StatusOr<TrainStats> s = trainer->Step(b);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find(needle), std::string::npos) << s.status();
  };
  auto b1 = batch;
  b1[2].response[1] = 300;
  expect_error(b1, "trajectories[2].response[1]");
  auto b2 = batch;
  b2[1].behaviour_logprobs.pop_back();
  expect_error(b2, "trajectories[1].behaviour_logprobs");
  auto b3 = batch;
  b3[0].reward = std::nanf("");
  expect_error(b3, "trajectories[0].reward");
  auto b4 = batch;
  b4[3].group_id = 99;  // a group of one
  expect_error(b4, "group_id 99");
  auto b5 = batch;
  b5[0].policy_version = 4;  // from the future
  expect_error(b5, "trajectories[0].policy_version");
  expect_error({}, "batch is empty");
  EXPECT_EQ(trainer->step(), 0);
  EXPECT_EQ(trainer->policy_version(), 0);
  EXPECT_EQ(MaxAbsDiff(policy, before), 0.0);

  TrainerOptions bad = BaseOptions(RlAlgorithm::kPpo);
  EXPECT_FALSE(Trainer::Create(bad, TinyModel(1)).ok());  // PPO without value model
  bad.algorithm = RlAlgorithm::kReinforce;
  bad.minibatch_size = 0;
  absl::StatusOr<std::unique_ptr<Trainer>> t = Trainer::Create(bad, TinyModel(1));
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("minibatch_size"), std::string::npos);
}

// Splitting a minibatch into micro-batches is memory, not maths: same weights.
TEST(TrainerTest, GradientAccumulationMatchesFullMinibatch) {
  for (LossAggregation agg : {LossAggregation::kTokenMean, LossAggregation::kSequenceMean}) {
    TransformerLM ref = TinyModel(1);
    TransformerLM a = TinyModel(1), b = TinyModel(1);
    TrainerOptions o = BaseOptions(RlAlgorithm::kRloo);
    o.aggregation = agg;
    o.entropy_coef = 0.01;
    o.kl_placement = KlPlacementMode::kInLoss;
    o.kl.initial_beta = 0.1;
    auto ta = *Trainer::Create(o, a);
    o.grad_accum = 3;
    auto tb = *Trainer::Create(o, b);
    const std::vector<Trajectory> batch = HandBatch(a, ref);
    const TrainStats sa = *ta->Step(batch);
    const TrainStats sb = *tb->Step(batch);
    // The pre-clip gradient norm sees scale and direction (Adam's update would hide a
    // wrong overall scale); weights agree to float rounding amplified by Adam's g/|g|
    // on near-zero gradients (a tiny fraction of lr = 3e-3).
    EXPECT_NEAR(sa.grad_norm, sb.grad_norm, 1e-5 * sa.grad_norm);
    EXPECT_NEAR(sa.policy_loss, sb.policy_loss, 1e-6);
    EXPECT_LT(MaxAbsDiff(a, b), 3e-5);
    EXPECT_GT(MaxAbsDiff(a, ref), 1e-4);  // and the step did move the weights
  }
}

// KL in the reward: with a huge β the shaped return is dominated by -β·KL, so a
// response the policy already prefers over the reference is pushed back.
TEST(TrainerTest, KlInRewardShapesReturns) {
  TransformerLM policy = TinyModel(1);
  TransformerLM ref = TinyModel(5);  // a different reference: nonzero KL
  TrainerOptions o = BaseOptions(RlAlgorithm::kReinforce);
  o.kl.initial_beta = 0.5;
  o.kl_estimator = KlEstimator::kK1;
  auto trainer = *Trainer::Create(o, policy);
  std::vector<Trajectory> batch = HandBatch(policy, ref);
  TrainStats s = *trainer->Step(batch);
  double kl_sum = 0, kl_max = -1e9;
  for (const Trajectory& t : batch) {
    double k = 0;
    for (size_t i = 0; i < t.response.size(); ++i) {
      k += t.behaviour_logprobs[i] - t.reference_logprobs[i];
    }
    kl_sum += k;
    kl_max = std::max(kl_max, k);
  }
  EXPECT_NEAR(s.kl_mean, kl_sum / 4, 1e-4);
  EXPECT_NEAR(s.kl_max, kl_max, 1e-4);
  EXPECT_NEAR(s.return_mean, 0.5 - 0.5 * kl_sum / 4, 1e-4);
  EXPECT_EQ(s.beta, 0.5);
}

// The adaptive controller runs once per step with the batch's mean KL and size.
TEST(TrainerTest, AdaptiveBetaFollowsController) {
  TransformerLM policy = TinyModel(1);
  TransformerLM ref = TinyModel(5);
  TrainerOptions o = BaseOptions(RlAlgorithm::kGrpo);
  o.kl = {0.2, true, 1e-3, 40};
  auto trainer = *Trainer::Create(o, policy);
  TrainStats s = *trainer->Step(HandBatch(policy, ref));
  KlController expected(o.kl);
  expected.Update(s.kl_mean, 4);
  EXPECT_DOUBLE_EQ(s.next_beta, expected.beta());
  EXPECT_DOUBLE_EQ(trainer->beta(), expected.beta());
  EXPECT_NE(trainer->beta(), 0.2);
}

// PPO-ptx: a trainer whose only signal is the pretraining term raises the text's
// likelihood; without it (ptx_coef = 0) zero advantages leave the text's likelihood alone.
TEST(TrainerTest, PtxRaisesPretrainLikelihood) {
  const std::vector<std::vector<int32_t>> text = {{10, 11, 12, 13, 14, 15}, {20, 21, 22}};
  auto text_logp = [&](TransformerLM& m) {
    auto lp = LogProbs(m, {{10}, {20}}, {{11, 12, 13, 14, 15}, {21, 22}});
    double s = 0;
    for (auto& v : lp) for (float x : v) s += x;
    return s;
  };
  for (double coef : {0.0, 1.0}) {
    TransformerLM policy = TinyModel(1);
    TransformerLM ref = TinyModel(1);
    TrainerOptions o = BaseOptions(RlAlgorithm::kGrpo);
    o.ptx_coef = coef;
    o.kl.initial_beta = 0;
    o.minibatch_size = 1000;  // one optimizer step per Step: ptx_loss is read before it
    auto trainer = *Trainer::Create(o, policy);
    std::vector<Trajectory> batch = HandBatch(policy, ref);
    for (auto& t : batch) t.reward = 0;  // no policy-gradient signal
    const double before = text_logp(policy);
    TrainStats s = *trainer->Step(batch, text);
    ASSERT_EQ(s.optimizer_steps, 1);
    // The term is the texts' mean next-token loss: 7 predicted tokens (all but each
    // text's first), scored by LogProbs (whole logits) before the update.
    if (coef > 0) EXPECT_NEAR(s.ptx_loss, -before / 7, 1e-4);
    for (int i = 0; i < 2; ++i) s = *trainer->Step(batch, text);
    if (coef > 0) {
      EXPECT_GT(text_logp(policy), before + 1.0);
      EXPECT_GT(s.ptx_loss, 0);
    } else {
      EXPECT_NEAR(text_logp(policy), before, 1e-3);
    }
  }
}

// On-policy the ratio is 1: no clipping, approx KL 0, explained variance reported.
TEST(TrainerTest, PpoStatsOnPolicy) {
  TransformerLM policy = TinyModel(1);
  TransformerLM ref = TinyModel(1);
  TrainerOptions o = BaseOptions(RlAlgorithm::kPpo);
  o.minibatch_size = 4;
  auto trainer = *Trainer::Create(o, policy, TinyModel(3, true));
  TrainStats s = *trainer->Step(HandBatch(policy, ref));
  EXPECT_EQ(s.clip_fraction, 0);
  EXPECT_NEAR(s.approx_kl, 0, 1e-6);
  EXPECT_GT(s.value_loss, 0);
  EXPECT_TRUE(std::isfinite(s.explained_variance));
  EXPECT_GT(s.tokens_processed, 0);
  EXPECT_GT(s.entropy, 0);
  EXPECT_LE(s.entropy, std::log(259.0) + 1e-4);
}

}  // namespace
}  // namespace rlhf
