// rlhf.v1.RlConfig -> TrainerOptions / loop options.
#include "services/config/trainer_config.h"

#include <functional>
#include <set>
#include <string>
#include <vector>

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

// Every field of RlConfig and KlConfig reaches the option struct it configures: each
// entry sets one field to a value Job() does not have and checks the converted options
// (and that the check fails on Job() itself, so it really detects the field). A field
// added to config.proto without an entry here fails the coverage check below.
struct FieldCase {
  std::string path;  // "decay_steps", "kl.top_k"
  std::function<void(rlhf::v1::RlConfig*)> set;
  std::function<bool(const TrainerOptions&, const InProcessLoopOptions&)> check;
};

std::vector<FieldCase> FieldCases() {
  using O = TrainerOptions;
  using L = InProcessLoopOptions;
  using R = rlhf::v1::RlConfig;
  return {
      {"algorithm", [](R* r) { r->set_algorithm(rlhf::v1::ALGORITHM_GRPO); },
       [](const O& o, const L&) { return o.algorithm == RlAlgorithm::kGrpo; }},
      {"steps", [](R* r) { r->set_steps(7); }, [](const O&, const L& l) { return l.steps == 7; }},
      {"prompts_per_step", [](R* r) { r->set_prompts_per_step(7); },
       [](const O&, const L& l) { return l.prompts_per_step == 7; }},
      {"samples_per_prompt", [](R* r) { r->set_samples_per_prompt(7); },
       [](const O&, const L& l) { return l.samples_per_prompt == 7; }},
      {"epochs", [](R* r) { r->set_epochs(7); },
       [](const O& o, const L&) { return o.epochs == 7; }},
      {"minibatch_size", [](R* r) { r->set_minibatch_size(7); },
       [](const O& o, const L&) { return o.minibatch_size == 7; }},
      {"grad_accum", [](R* r) { r->set_grad_accum(7); },
       [](const O& o, const L&) { return o.grad_accum == 7; }},
      {"lr", [](R* r) { r->set_lr(0.375f); }, [](const O& o, const L&) { return o.lr == 0.375; }},
      {"weight_decay", [](R* r) { r->set_weight_decay(0.375f); },
       [](const O& o, const L&) { return o.weight_decay == 0.375; }},
      {"grad_clip", [](R* r) { r->set_grad_clip(0.375f); },
       [](const O& o, const L&) { return o.grad_clip == 0.375; }},
      {"warmup_steps", [](R* r) { r->set_warmup_steps(7); },
       [](const O& o, const L&) { return o.warmup_steps == 7; }},
      {"decay_steps", [](R* r) { r->set_decay_steps(7); },
       [](const O& o, const L&) { return o.decay_steps == 7; }},
      {"kl.placement",
       [](R* r) { r->mutable_kl()->set_placement(rlhf::v1::KL_PLACEMENT_IN_REWARD); },
       [](const O& o, const L&) { return o.kl_placement == KlPlacementMode::kInReward; }},
      {"kl.estimator",
       [](R* r) { r->mutable_kl()->set_estimator(rlhf::v1::KL_ESTIMATOR_CHOICE_K2); },
       [](const O& o, const L&) { return o.kl_estimator == KlEstimator::kK2; }},
      {"kl.beta", [](R* r) { r->mutable_kl()->set_beta(0.375f); },
       [](const O& o, const L&) { return o.kl.initial_beta == 0.375; }},
      {"kl.adaptive", [](R* r) { r->mutable_kl()->set_adaptive(false); },
       [](const O& o, const L&) { return !o.kl.adaptive; }},
      {"kl.target", [](R* r) { r->mutable_kl()->set_target(0.375f); },
       [](const O& o, const L&) { return o.kl.target == 0.375; }},
      {"kl.horizon", [](R* r) { r->mutable_kl()->set_horizon(7); },
       [](const O& o, const L&) { return o.kl.horizon == 7; }},
      {"ptx_coef", [](R* r) { r->set_ptx_coef(0.375f); },
       [](const O& o, const L&) { return o.ptx_coef == 0.375; }},
      {"ptx_batch_size", [](R* r) { r->set_ptx_batch_size(7); },
       [](const O&, const L& l) { return l.ptx_batch_size == 7; }},
      {"entropy_coef", [](R* r) { r->set_entropy_coef(0.375f); },
       [](const O& o, const L&) { return o.entropy_coef == 0.375; }},
      {"clip_eps", [](R* r) { r->set_clip_eps(0.375f); },
       [](const O& o, const L&) { return o.clip_eps == 0.375; }},
      {"value_clip_eps", [](R* r) { r->set_value_clip_eps(0.375f); },
       [](const O& o, const L&) { return o.value_clip_eps == 0.375; }},
      {"value_coef", [](R* r) { r->set_value_coef(0.375f); },
       [](const O& o, const L&) { return o.value_coef == 0.375; }},
      {"gamma", [](R* r) { r->set_gamma(0.375f); },
       [](const O& o, const L&) { return o.gamma == 0.375; }},
      {"lam", [](R* r) { r->set_lam(0.375f); },
       [](const O& o, const L&) { return o.lam == 0.375; }},
      {"is_truncation", [](R* r) { r->set_is_truncation(0.375f); },
       [](const O& o, const L&) { return o.is_truncation == 0.375; }},
      {"baseline_decay", [](R* r) { r->set_baseline_decay(0.375f); },
       [](const O& o, const L&) { return o.baseline_decay == 0.375; }},
      {"loss_aggregation",
       [](R* r) { r->set_loss_aggregation(rlhf::v1::LOSS_AGGREGATION_TOKEN_MEAN); },
       [](const O& o, const L&) { return o.aggregation == LossAggregation::kTokenMean; }},
      {"checkpoint_every", [](R* r) { r->set_checkpoint_every(7); },
       [](const O&, const L& l) { return l.checkpoint_every == 7; }},
      {"keep_checkpoints", [](R* r) { r->set_keep_checkpoints(7); },
       [](const O&, const L& l) { return l.keep_checkpoints == 7; }},
      {"grpo_eps", [](R* r) { r->set_grpo_eps(0.375f); },
       [](const O& o, const L&) { return o.grpo_eps == 0.375; }},
      {"whiten_advantages", [](R* r) { r->set_whiten_advantages(true); },
       [](const O& o, const L&) { return o.whiten_advantages; }},
      {"train_dtype", [](R* r) { r->set_train_dtype("bf16"); },
       [](const O& o, const L&) { return o.train_dtype == torch::kBFloat16; }},
  };
}

// Read by the learner binary, not by these structs (learner/main.cc:
// LearnerHandlerOptions.max_staleness, LearnerServerOptions.kl_top_k).
const std::set<std::string> kLearnerOnly = {"max_staleness", "kl.top_k"};

TEST(TrainerConfigTest, EveryRlFieldReachesItsOption) {
  std::set<std::string> covered;
  for (const FieldCase& c : FieldCases()) {
    covered.insert(c.path);
    rlhf::v1::JobConfig job = Job();
    const auto base = TrainerOptionsFromConfig(job.rl(), job.sampling(), job.seed());
    const auto base_loop = LoopOptionsFromConfig(job);
    ASSERT_TRUE(base.ok() && base_loop.ok());
    EXPECT_FALSE(c.check(*base, *base_loop)) << c.path << ": Job() already has the test value";
    c.set(job.mutable_rl());
    const auto o = TrainerOptionsFromConfig(job.rl(), job.sampling(), job.seed());
    const auto loop = LoopOptionsFromConfig(job);
    ASSERT_TRUE(o.ok()) << c.path << ": " << o.status();
    ASSERT_TRUE(loop.ok()) << c.path << ": " << loop.status();
    EXPECT_TRUE(c.check(*o, *loop)) << c.path << " does not reach the options";
  }
  std::vector<std::string> fields;
  for (int i = 0; i < rlhf::v1::RlConfig::descriptor()->field_count(); ++i) {
    const auto* f = rlhf::v1::RlConfig::descriptor()->field(i);
    if (f->name() != "kl") fields.push_back(f->name());
  }
  for (int i = 0; i < rlhf::v1::KlConfig::descriptor()->field_count(); ++i) {
    fields.push_back("kl." + rlhf::v1::KlConfig::descriptor()->field(i)->name());
  }
  for (const std::string& f : fields) {
    EXPECT_TRUE(covered.count(f) + kLearnerOnly.count(f) == 1) << "rl." << f << " is not mapped";
  }
}

TEST(TrainerConfigTest, ExactKlMapsAndNeedsKlInTheReward) {
  rlhf::v1::JobConfig job = Job();
  job.mutable_rl()->mutable_kl()->set_estimator(rlhf::v1::KL_ESTIMATOR_CHOICE_EXACT);
  auto o = TrainerOptionsFromConfig(job.rl(), job.sampling(), 1);  // Job() is in_loss
  ASSERT_FALSE(o.ok());
  EXPECT_NE(o.status().message().find("rl.kl.estimator"), std::string::npos) << o.status();
  job.mutable_rl()->mutable_kl()->set_placement(rlhf::v1::KL_PLACEMENT_IN_REWARD);
  o = TrainerOptionsFromConfig(job.rl(), job.sampling(), 1);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->kl_estimator, KlEstimator::kExact);
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

// A made-up vocabulary (not the byte tokenizer's): byte b -> id 1000 + b, BOS 5, EOS 6,
// PAD 7. The job's prompts and pretraining texts must come out in it.
class ShiftedTokenizer final : public Tokenizer {
 public:
  std::vector<int32_t> Encode(absl::string_view text) const override {
    std::vector<int32_t> ids;
    for (unsigned char c : text) ids.push_back(1000 + c);
    return ids;
  }
  std::string Decode(const std::vector<int32_t>& ids) const override {
    std::string s;
    for (int32_t id : ids)
      if (id >= 1000) s.push_back(static_cast<char>(id - 1000));
    return s;
  }
  int64_t vocab_size() const override { return 1256; }
  int32_t bos_id() const override { return 5; }
  int32_t eos_id() const override { return 6; }
  int32_t pad_id() const override { return 7; }
  std::string name() const override { return "shifted"; }
  nlohmann::json Spec() const override { return {{"type", "shifted"}}; }
};

TEST(TrainerConfigTest, PromptsAndPretrainUseTheModelsTokenizer) {
  rlhf::v1::JobConfig job = Job();
  job.mutable_data()->set_task("builtin");
  job.mutable_data()->set_num_rl_train(4);
  job.mutable_data()->set_num_pretrain(3);
  const ShiftedTokenizer tok;
  auto prompts = RlPromptsFromConfig(job, tok);
  ASSERT_TRUE(prompts.ok()) << prompts.status();
  ASSERT_FALSE(prompts->empty());
  for (const auto& p : *prompts) {
    ASSERT_GE(p.size(), 2u);
    EXPECT_EQ(p[0], 5);  // the tokenizer's BOS
    for (size_t i = 1; i < p.size(); ++i) EXPECT_GE(p[i], 1000) << "not the tokenizer's id";
  }
  auto pretrain = PretrainFromConfig(job, tok, 4096);
  ASSERT_TRUE(pretrain.ok()) << pretrain.status();
  ASSERT_FALSE(pretrain->empty());
  for (const auto& t : *pretrain) {
    EXPECT_EQ(t.front(), 5);
    EXPECT_EQ(t.back(), 6);  // the tokenizer's EOS
  }
}

TEST(TrainerConfigTest, WithModelEosAddsTheEosOnce) {
  rlhf::v1::SamplingConfig s;
  s.add_stop_tokens(11);
  rlhf::v1::SamplingConfig with = WithModelEos(s, 50256);
  ASSERT_EQ(with.stop_tokens_size(), 2);
  EXPECT_EQ(with.stop_tokens(0), 11);
  EXPECT_EQ(with.stop_tokens(1), 50256);
  EXPECT_EQ(WithModelEos(with, 50256).stop_tokens_size(), 2);  // already there
  EXPECT_EQ(WithModelEos(s, -1).stop_tokens_size(), 1);        // no EOS: nothing added
  EXPECT_EQ(WithModelEos(rlhf::v1::SamplingConfig(), 2).stop_tokens_size(), 1);
}

}  // namespace
}  // namespace rlhf
