// rlhf.v1.RlConfig -> TrainerOptions / loop options.
#include "services/config/trainer_config.h"

#include <gtest/gtest.h>

namespace rlhf {
namespace {

rlhf::v1::JobConfig Job() {
  rlhf::v1::JobConfig job;
  job.set_seed(9);
  job.set_run_dir("/tmp/run");
  auto* rl = job.mutable_rl();
  rl->set_algorithm(rlhf::v1::ALGORITHM_PPO);
  rl->set_steps(12);
  rl->set_prompts_per_step(8);
  rl->set_samples_per_prompt(2);
  rl->set_epochs(2);
  rl->set_minibatch_size(4);
  rl->set_grad_accum(2);
  rl->set_lr(1e-4f);
  rl->set_grad_clip(0.5f);
  rl->mutable_kl()->set_placement(rlhf::v1::KL_PLACEMENT_IN_LOSS);
  rl->mutable_kl()->set_estimator(rlhf::v1::KL_ESTIMATOR_CHOICE_K3);
  rl->mutable_kl()->set_beta(0.1f);
  rl->mutable_kl()->set_adaptive(true);
  rl->mutable_kl()->set_target(2.0f);
  rl->mutable_kl()->set_horizon(500);
  rl->set_clip_eps(0.1f);
  rl->set_value_coef(0.5f);
  rl->set_gamma(1.0f);
  rl->set_lam(0.9f);
  rl->set_baseline_decay(0.8f);
  rl->set_loss_aggregation(rlhf::v1::LOSS_AGGREGATION_SEQUENCE_MEAN);
  rl->set_grpo_eps(1e-4f);
  rl->set_keep_checkpoints(2);
  rl->set_checkpoint_every(5);
  auto* s = job.mutable_sampling();
  s->set_temperature(0.7f);
  s->set_top_p(1.0f);
  s->set_max_new_tokens(16);
  s->add_stop_tokens(257);
  return job;
}

TEST(TrainerConfigTest, MapsEveryField) {
  const rlhf::v1::JobConfig job = Job();
  absl::StatusOr<TrainerOptions> o = TrainerOptionsFromConfig(job.rl(), job.sampling(), job.seed());
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->algorithm, RlAlgorithm::kPpo);
  EXPECT_EQ(o->epochs, 2);
  EXPECT_EQ(o->minibatch_size, 4);
  EXPECT_EQ(o->grad_accum, 2);
  EXPECT_FLOAT_EQ(o->lr, 1e-4f);
  EXPECT_FLOAT_EQ(o->grad_clip, 0.5f);
  EXPECT_EQ(o->kl_placement, KlPlacementMode::kInLoss);
  EXPECT_EQ(o->kl_estimator, KlEstimator::kK3);
  EXPECT_FLOAT_EQ(o->kl.initial_beta, 0.1f);
  EXPECT_TRUE(o->kl.adaptive);
  EXPECT_FLOAT_EQ(o->kl.target, 2.0f);
  EXPECT_EQ(o->kl.horizon, 500);
  EXPECT_FLOAT_EQ(o->clip_eps, 0.1f);
  EXPECT_FLOAT_EQ(o->lam, 0.9f);
  EXPECT_FLOAT_EQ(o->baseline_decay, 0.8f);
  EXPECT_EQ(o->aggregation, LossAggregation::kSequenceMean);
  EXPECT_FLOAT_EQ(o->temperature, 0.7f);
  EXPECT_EQ(o->seed, 9u);

  absl::StatusOr<InProcessLoopOptions> loop = LoopOptionsFromConfig(job);
  ASSERT_TRUE(loop.ok()) << loop.status();
  EXPECT_EQ(loop->steps, 12);
  EXPECT_EQ(loop->prompts_per_step, 8);
  EXPECT_EQ(loop->samples_per_prompt, 2);
  EXPECT_EQ(loop->checkpoint_dir, "/tmp/run/learner");
  EXPECT_EQ(loop->keep_checkpoints, 2);
  EXPECT_EQ(loop->sampling.max_new_tokens, 16);
  EXPECT_EQ(loop->sampling.stop_tokens, std::vector<int32_t>{257});
}

TEST(TrainerConfigTest, BadValuesNameTheField) {
  rlhf::v1::JobConfig job = Job();
  job.mutable_rl()->set_minibatch_size(0);
  absl::StatusOr<TrainerOptions> o = TrainerOptionsFromConfig(job.rl(), job.sampling(), 1);
  ASSERT_FALSE(o.ok());
  EXPECT_NE(o.status().message().find("rl.minibatch_size"), std::string::npos) << o.status();
  job = Job();
  job.mutable_rl()->mutable_kl()->set_target(0);
  o = TrainerOptionsFromConfig(job.rl(), job.sampling(), 1);
  ASSERT_FALSE(o.ok());
  EXPECT_NE(o.status().message().find("kl.target"), std::string::npos) << o.status();
  job = Job();
  job.mutable_sampling()->set_max_new_tokens(0);
  absl::StatusOr<InProcessLoopOptions> loop = LoopOptionsFromConfig(job);
  ASSERT_FALSE(loop.ok());
  EXPECT_NE(loop.status().message().find("sampling."), std::string::npos) << loop.status();
}

}  // namespace
}  // namespace rlhf
