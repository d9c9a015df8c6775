// Issue 23 proof: a randomized stream of hostile but well-formed submissions against a
// real LearnerServer (tiny real model, real Trainer): huge finite rewards and KL,
// positive and extreme log-probs, versions from the future and the past, foreign and
// never-registered actors, mixed with honest ones. The weights never become
// non-finite, the learner never stalls (it reaches total_steps) and the accounting
// holds. Run twice: with the door's default bounds, and with the bounds opened up to
// float max so that the trainer's own defence (refuse / skip non-finite) is what holds.
#include <cmath>
#include <algorithm>
#include <random>

#include <gtest/gtest.h>
#include <torch/types.h>

#include <unistd.h>

#include "core/model/checkpoint.h"
#include "core/rl_training/learner_state.h"
#include "learner/learner_server.h"
#include "services/channel.h"
#include "services/health.h"
#include "tests/rl_training/trainer_test_util.h"

namespace rlhf::learner {
namespace {

bool WeightsFinite(LearnerServer& server, TransformerLM& policy) {
  (void)server;
  for (const auto& [name, t] : ModelTensors(policy)) {
    if (!torch::isfinite(t).all().item<bool>()) return false;
  }
  return true;
}

class HostileSubmitTest : public ::testing::TestWithParam<bool> {};

TEST_P(HostileSubmitTest, NeverNonFiniteNeverStalled) {
  const bool open_bounds = GetParam();
  LearnerServerOptions o;
  o.handler.prompts_per_step = 2;
  o.handler.samples_per_prompt = 2;
  o.handler.prompts_per_lease = 1;
  o.handler.max_staleness = 1;
  o.handler.total_steps = 6;
  o.handler.vocab_size = 259;
  o.handler.max_seq_len = 32;
  if (open_bounds) {
    o.handler.max_abs_reward = 3.4e38;
    o.handler.max_abs_kl = 3.4e38;
    o.handler.min_logprob = -3.4e38;
  }
  o.trainer.algorithm = RlAlgorithm::kReinforce;
  o.trainer.minibatch_size = 2;  // two optimizer steps per batch
  o.trainer.lr = 1e-3;
  o.poll_interval = absl::Milliseconds(10);
  TransformerLM policy = testing::TinyModel(7);
  auto server = LearnerServer::Create(o, policy, {{1, 2, 3}, {4, 5}, {6}, {7, 8}}, nullptr);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE((*server)->Start().ok());
  LearnerHandler& h = (*server)->handler();

  // The learner's gRPC health names its service (issue 23 item 9).
  services::ChannelOptions co;
  co.target = "127.0.0.1:" + std::to_string((*server)->port());
  auto channel = services::MakeChannel(co);
  ASSERT_TRUE(channel.ok());
  auto health = services::CheckHealth(*channel, "rlhf.v1.LearnerService",
                                      absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, services::HealthStatus::kServing);

  std::mt19937 rng(GetParam() ? 23 : 32);
  auto uniform = [&](double a, double b) { return std::uniform_real_distribution<double>(a, b)(rng); };
  std::vector<std::string> actors;
  for (const char* n : {"a", "b", "c"}) {
    rlhf::v1::RegisterRequest r;
    r.set_actor_name(n);
    actors.push_back(h.Register(r)->actor_id());
  }
  int hostile = 0, accepted_hostile = 0;
  const absl::Time deadline = absl::Now() + absl::Seconds(240);
  while (!h.done() && absl::Now() < deadline) {
    const std::string& actor = actors[rng() % actors.size()];
    rlhf::v1::LeasePromptsRequest lr;
    lr.set_actor_id(actor);
    lr.mutable_held_version()->set_version(h.version());
    auto lease = h.LeasePrompts(lr);
    ASSERT_TRUE(lease.ok()) << lease.status();
    if (lease->lease_id().empty()) {
      (*server)->WaitDone(absl::Milliseconds(5));
      continue;
    }
    const int64_t version = lease->latest_version().version();
    rlhf::v1::SubmitTrajectoriesRequest sub;
    sub.set_actor_id(actor);
    sub.set_lease_id(lease->lease_id());
    for (const auto& p : lease->prompts()) {
      for (int s = 0; s < 2; ++s) {
        auto* t = sub.add_trajectories();
        t->set_prompt_id(p.prompt_id());
        *t->mutable_tokens()->mutable_prompt() = p.tokens();
        const int n = 1 + static_cast<int>(rng() % 6);
        for (int j = 0; j < n; ++j) {
          t->mutable_tokens()->add_response(static_cast<int32_t>(rng() % 256));
          const float b = static_cast<float>(uniform(-8, -0.01));
          const float r = static_cast<float>(uniform(-8, -0.01));
          t->add_behaviour_logprobs(b);
          t->add_ref_logprobs(r);
          t->add_kl(b - r);
        }
        t->set_reward(static_cast<float>(uniform(-1, 1)));
        t->mutable_version()->set_version(version);
      }
    }
    const int kind = static_cast<int>(rng() % 10);
    auto& t0 = *sub.mutable_trajectories(static_cast<int>(rng() % sub.trajectories_size()));
    switch (kind) {
      case 0: t0.set_reward(rng() % 2 ? 3e38f : -3e38f); break;
      case 1: t0.set_behaviour_logprobs(0, 1e30f); break;
      case 2: t0.set_ref_logprobs(0, -3e38f); break;
      case 3: t0.set_kl(0, 3e38f); break;
      case 4: t0.mutable_version()->set_version(version + 1 + rng() % 5); break;
      case 5: sub.set_actor_id(actors[(std::find(actors.begin(), actors.end(), actor) -
                                       actors.begin() + 1) % actors.size()]); break;
      case 6: sub.set_actor_id("never-registered"); break;
      case 7: t0.set_behaviour_logprobs(0, -3e38f); break;
      default: break;  // honest
    }
    const bool is_hostile = kind <= 7;
    hostile += is_hostile;
    auto resp = h.Submit(sub);
    if (is_hostile && resp.ok()) ++accepted_hostile;
    if (!resp.ok()) {
      EXPECT_TRUE(resp.status().code() == absl::StatusCode::kInvalidArgument ||
                  resp.status().code() == absl::StatusCode::kPermissionDenied)
          << resp.status();
      // The honest actor still holds its lease: it submits it honestly.
      if (kind == 5 || kind == 6) sub.set_actor_id(actor);
      if (kind != 5 && kind != 6) {
        rlhf::v1::SubmitTrajectoriesRequest release;
        release.set_actor_id(actor);
        release.set_lease_id(sub.lease_id());
        ASSERT_TRUE(h.Submit(release).ok());
      } else {
        ASSERT_TRUE(h.Submit(sub).ok());
      }
    }
    ASSERT_TRUE(WeightsFinite(**server, policy)) << "after " << hostile << " hostile submissions";
  }
  EXPECT_TRUE((*server)->WaitDone(absl::Seconds(60))) << "learner stalled: " << h.Stats().DebugString();
  EXPECT_TRUE(WeightsFinite(**server, policy));
  EXPECT_GT(hostile, 0);
  auto s = h.Stats();
  EXPECT_EQ(s.step(), 6);
  EXPECT_EQ(s.prompts_leased(), s.prompts_trained() + s.prompts_reissued() +
                                    s.prompts_outstanding() + s.prompts_buffered())
      << s.DebugString();
  if (open_bounds) {
    // Huge finite values got through the (opened) door and were handled by the trainer.
    EXPECT_GT(accepted_hostile, 0);
    EXPECT_GT(s.batches_dropped() + s.nonfinite_updates_skipped(), 0) << s.DebugString();
  } else {
    EXPECT_EQ(s.batches_dropped(), 0) << (*server)->last_error();
  }
  (*server)->Shutdown(absl::Now() + absl::Seconds(2));
}

// Submits an honest lease of `actor` (2 samples per prompt). False when nothing was leased.
bool SubmitHonest(LearnerHandler& h, const std::string& actor) {
  rlhf::v1::LeasePromptsRequest lr;
  lr.set_actor_id(actor);
  lr.mutable_held_version()->set_version(h.version());
  auto lease = h.LeasePrompts(lr);
  if (!lease.ok() || lease->lease_id().empty()) return false;
  rlhf::v1::SubmitTrajectoriesRequest sub;
  sub.set_actor_id(actor);
  sub.set_lease_id(lease->lease_id());
  for (const auto& p : lease->prompts()) {
    for (int s = 0; s < 2; ++s) {
      auto* t = sub.add_trajectories();
      t->set_prompt_id(p.prompt_id());
      *t->mutable_tokens()->mutable_prompt() = p.tokens();
      t->mutable_tokens()->add_response(97 + s);
      t->add_behaviour_logprobs(-1.0f);
      t->add_ref_logprobs(-1.2f);
      t->add_kl(0.2f);
      t->set_reward(s == 0 ? 1.0f : 0.0f);
      t->mutable_version()->set_version(lease->latest_version().version());
    }
  }
  return h.Submit(sub).ok();
}

// Issue 23 item 6: a graceful stop writes a final checkpoint of the last trained step.
TEST(LearnerServerTest, GracefulShutdownCheckpointsTheLastTrainedStep) {
  const std::string dir = ::testing::TempDir() + "/graceful_" + std::to_string(::getpid());
  LearnerServerOptions o;
  o.handler.prompts_per_step = 2;
  o.handler.samples_per_prompt = 2;
  o.handler.prompts_per_lease = 1;
  o.handler.total_steps = 100;
  o.trainer.minibatch_size = 4;
  o.checkpoint_dir = dir;
  o.checkpoint_every = 50;
  o.poll_interval = absl::Milliseconds(10);
  auto server = LearnerServer::Create(o, testing::TinyModel(3), {{1, 2}, {3, 4}}, nullptr);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE((*server)->Start().ok());
  LearnerHandler& h = (*server)->handler();
  rlhf::v1::RegisterRequest r;
  r.set_actor_name("a");
  const std::string actor = h.Register(r)->actor_id();
  ASSERT_TRUE(SubmitHonest(h, actor));
  ASSERT_TRUE(SubmitHonest(h, actor));
  // Wait (with a deadline) for step 1 to be trained.
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (h.Stats().step() < 1 && absl::Now() < deadline) (*server)->WaitDone(absl::Milliseconds(10));
  ASSERT_EQ(h.Stats().step(), 1);
  (*server)->Shutdown(absl::Now() + absl::Seconds(2));
  auto ckpt = LearnerCheckpointer::Create({dir, 3});
  ASSERT_TRUE(ckpt.ok());
  auto latest = (*ckpt)->Latest();
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_NE(latest->find("step-00000001"), std::string::npos) << *latest;
}

INSTANTIATE_TEST_SUITE_P(Bounds, HostileSubmitTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Opened" : "Default"; });

}  // namespace
}  // namespace rlhf::learner
