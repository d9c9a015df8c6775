// RLOO and GRPO through the distributed learner: the handler accepts only whole groups
// (exactly G samples of each leased prompt in one submission), a partial group of an
// actor that then dies is never trained (its prompts are re-issued and completed by
// another actor), and the step's trajectories are grouped by prompt
// (TrajectoriesForStep): training on them moves the weights exactly as training on the
// same trajectories grouped by hand does, and differently from a wrong grouping.
#include <map>
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "learner/learner_handler.h"
#include "learner/learner_server.h"
#include "tests/rl_training/trainer_test_util.h"

namespace rlhf::learner {
namespace {

using ::testing::HasSubstr;
using rlhf::v1::LeasePromptsResponse;

constexpr int kG = 3;

class GroupingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.prompts_per_step = 2;
    options_.samples_per_prompt = kG;
    options_.prompts_per_lease = 2;
    options_.max_staleness = 0;
    options_.lease_timeout = absl::Seconds(10);
    options_.vocab_size = 259;
    options_.max_seq_len = 32;
    auto h = LearnerHandler::Create(options_, {{1, 2}, {3, 4, 5}, {6}}, nullptr,
                                    [this] { return now_; });
    ASSERT_TRUE(h.ok()) << h.status();
    handler_ = std::move(*h);
    ASSERT_TRUE(handler_->Restore(0, 0).ok());
  }
  std::string Register(const std::string& name) {
    rlhf::v1::RegisterRequest r;
    r.set_actor_name(name);
    return handler_->Register(r)->actor_id();
  }
  LeasePromptsResponse Lease(const std::string& actor) {
    rlhf::v1::LeasePromptsRequest r;
    r.set_actor_id(actor);
    r.mutable_held_version()->set_version(handler_->version());
    return *handler_->LeasePrompts(r);
  }
  // samples[i] trajectories for the i-th leased prompt; sample s of prompt i has
  // response {97 + s, 100 + i} and reward s + 2i (distinct within and across groups).
  rlhf::v1::SubmitTrajectoriesRequest Submission(const std::string& actor,
                                                 const LeasePromptsResponse& lease,
                                                 const std::vector<int>& samples) {
    rlhf::v1::SubmitTrajectoriesRequest r;
    r.set_actor_id(actor);
    r.set_lease_id(lease.lease_id());
    for (int i = 0; i < lease.prompts_size(); ++i) {
      const auto& p = lease.prompts(i);
      for (int s = 0; s < samples[i]; ++s) {
        auto* t = r.add_trajectories();
        t->set_prompt_id(p.prompt_id());
        *t->mutable_tokens()->mutable_prompt() = p.tokens();
        t->mutable_tokens()->add_response(97 + s);
        t->mutable_tokens()->add_response(100 + i);
        for (float lp : {-5.5f, -5.6f}) t->add_behaviour_logprobs(lp);
        for (float lp : {-5.4f, -5.7f}) t->add_ref_logprobs(lp);
        for (float k : {-0.1f, 0.1f}) t->add_kl(k);
        t->set_reward(static_cast<float>(s + 2 * i));
        t->mutable_version()->set_version(0);
      }
    }
    return r;
  }

  LearnerHandlerOptions options_;
  absl::Time now_ = absl::FromUnixSeconds(1000);
  std::unique_ptr<LearnerHandler> handler_;
};

std::vector<torch::Tensor> TrainOnce(RlAlgorithm algorithm, const std::vector<Trajectory>& batch) {
  TrainerOptions o;
  o.algorithm = algorithm;
  o.lr = 1e-2;
  o.minibatch_size = 64;
  o.kl.initial_beta = 0;
  o.kl.adaptive = false;
  TransformerLM policy = rlhf::testing::TinyModel(1);
  auto trainer = Trainer::Create(o, policy);
  EXPECT_TRUE(trainer.ok()) << trainer.status();
  auto stats = (*trainer)->Step(batch);
  EXPECT_TRUE(stats.ok()) << stats.status();
  std::vector<torch::Tensor> out;
  for (const auto& p : policy->parameters()) out.push_back(p.detach().clone());
  return out;
}

double MaxDiff(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, (a[i] - b[i]).abs().max().item<double>());
  return worst;
}

TEST_F(GroupingTest, PartialGroupOfADeadActorIsNeverTrainedAndStepsGroupByPrompt) {
  const std::string a = Register("a");
  const std::string b = Register("b");
  const LeasePromptsResponse la = Lease(a);
  ASSERT_EQ(la.prompts_size(), 2);
  // Actor a got only 2 of the 3 samples of its second prompt before it died: the
  // partial submission is refused whole (nothing buffered) ...
  auto partial = handler_->Submit(Submission(a, la, {kG, kG - 1}));
  ASSERT_FALSE(partial.ok());
  EXPECT_EQ(partial.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(partial.status().message(), HasSubstr("has 2 trajectories, expected 3"));
  EXPECT_EQ(handler_->Stats().prompts_buffered(), 0);
  EXPECT_FALSE(handler_->WaitForBatch(absl::ZeroDuration()).has_value());
  // ... and when it goes silent its lease expires and both prompts are re-issued.
  now_ += absl::Seconds(6);
  rlhf::v1::HeartbeatRequest hb;
  hb.set_actor_id(b);
  ASSERT_TRUE(handler_->Heartbeat(hb).ok());
  now_ += absl::Seconds(6);
  ASSERT_TRUE(handler_->Heartbeat(hb).ok());
  EXPECT_EQ(handler_->ExpireSilentActors(), 1);
  const LeasePromptsResponse lb = Lease(b);
  ASSERT_EQ(lb.prompts_size(), 2);
  std::set<int64_t> sources_a, sources_b;
  for (const auto& p : la.prompts()) sources_a.insert(p.source_index());
  for (const auto& p : lb.prompts()) sources_b.insert(p.source_index());
  EXPECT_EQ(sources_a, sources_b);
  ASSERT_TRUE(handler_->Submit(Submission(b, lb, {kG, kG})).ok());

  auto batch = handler_->WaitForBatch(absl::ZeroDuration());
  ASSERT_TRUE(batch.has_value());
  ASSERT_EQ(batch->groups.size(), 2u);
  for (const auto& g : batch->groups) {
    EXPECT_EQ(g.actor_id(), b);
    ASSERT_EQ(g.trajectories_size(), kG);
    for (const auto& t : g.trajectories()) EXPECT_EQ(t.prompt_id(), g.prompt().prompt_id());
  }
  const std::vector<Trajectory> step = TrajectoriesForStep(*batch, 0);
  ASSERT_EQ(step.size(), 2u * kG);
  std::map<int64_t, int> per_group;
  std::map<int64_t, std::vector<int32_t>> prompt_of_group;
  for (const Trajectory& t : step) {
    ++per_group[t.group_id];
    auto [it, inserted] = prompt_of_group.emplace(t.group_id, t.prompt);
    if (!inserted) {
      EXPECT_EQ(it->second, t.prompt) << "one group, one prompt";
    }
  }
  ASSERT_EQ(per_group.size(), 2u);
  for (const auto& [id, n] : per_group) EXPECT_EQ(n, kG) << "group " << id;
  EXPECT_EQ(per_group.count(lb.prompts(0).prompt_id()), 1u);
  EXPECT_EQ(per_group.count(lb.prompts(1).prompt_id()), 1u);

  // Hand grouping (by prompt, ids 10 / 20) vs a wrong one (by sample index).
  std::vector<Trajectory> by_hand = step, wrong = step;
  for (size_t i = 0; i < step.size(); ++i) {
    by_hand[i].group_id = step[i].group_id == lb.prompts(0).prompt_id() ? 10 : 20;
    wrong[i].group_id = static_cast<int64_t>(i % kG);
  }
  for (RlAlgorithm algorithm : {RlAlgorithm::kRloo, RlAlgorithm::kGrpo}) {
    const auto got = TrainOnce(algorithm, step);
    EXPECT_LT(MaxDiff(got, TrainOnce(algorithm, by_hand)), 1e-9) << RlAlgorithmName(algorithm);
    EXPECT_GT(MaxDiff(got, TrainOnce(algorithm, wrong)), 1e-6) << RlAlgorithmName(algorithm);
  }
}

}  // namespace
}  // namespace rlhf::learner
