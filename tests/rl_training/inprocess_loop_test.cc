// The in-process loop's mechanics: prompt cursor, checkpoints through the loop and
// resume (a resumed loop continues exactly where the straight run would be).
#include "core/rl_training/inprocess_loop.h"

#include <filesystem>

#include <gtest/gtest.h>

#include "tests/rl_training/trainer_test_util.h"

namespace rlhf {
namespace {

namespace fs = std::filesystem;
using testing::MaxAbsDiff;
using testing::TinyModel;

// Reward: fraction of 'a' in the response.
absl::StatusOr<std::vector<float>> CountA(const std::vector<std::vector<int32_t>>& prompts,
                                          const std::vector<std::vector<int32_t>>& responses) {
  std::vector<float> out;
  for (const auto& r : responses) {
    int hits = 0;
    for (int32_t id : r) hits += id == 'a';
    out.push_back(r.empty() ? 0.f : static_cast<float>(hits) / r.size());
  }
  return out;
}

const std::vector<std::vector<int32_t>> kPrompts = {{256, 97}, {256, 98, 99}, {256, 65},
                                                     {256, 66, 67, 68}, {256, 100}};

InProcessLoopOptions LoopOptions(const std::string& dir, int64_t steps) {
  InProcessLoopOptions o;
  o.steps = steps;
  o.prompts_per_step = 3;  // 5 prompts: epochs wrap mid-step
  o.samples_per_prompt = 2;
  o.sampling.max_new_tokens = 5;
  o.sampling.stop_tokens = {257};
  o.ptx_batch_size = 2;
  o.seed = 5;
  o.checkpoint_dir = dir;
  o.checkpoint_every = 2;
  o.keep_checkpoints = 2;
  o.log_every = 1;
  return o;
}

TrainerOptions Options() {
  TrainerOptions t;
  t.algorithm = RlAlgorithm::kRloo;
  t.lr = 1e-3;
  t.minibatch_size = 4;
  t.ptx_coef = 0.1;
  t.kl = {0.05, true, 1.0, 50};
  return t;
}

std::unique_ptr<InProcessLoop> MakeLoop(const InProcessLoopOptions& o) {
  auto trainer = *Trainer::Create(Options(), TinyModel(1));
  absl::StatusOr<std::unique_ptr<InProcessLoop>> loop = InProcessLoop::Create(
      o, std::move(trainer), TinyModel(1), CountA, kPrompts, {{256, 70, 71, 72}, {256, 73, 74}});
  EXPECT_TRUE(loop.ok()) << loop.status();
  return *std::move(loop);
}

TEST(InProcessLoopTest, CursorWalksSeededEpochs) {
  auto loop = MakeLoop(LoopOptions("", 4));
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(loop->RunStep().ok());
  // 4 steps x 3 prompts = 12 = two full epochs of 5 + 2.
  EXPECT_EQ(loop->cursor().epoch, 2);
  EXPECT_EQ(loop->cursor().position, 2);
  EXPECT_EQ(loop->cursor().ptx_position, 8);
  EXPECT_EQ(loop->trainer().step(), 4);
  EXPECT_EQ(loop->trainer().policy_version(), 4);
}

TEST(InProcessLoopTest, ResumeContinuesExactly) {
  const std::string base = (fs::temp_directory_path() / ("rlhf_loop_" + std::to_string(::getpid()))).string();
  fs::remove_all(base);
  auto straight = MakeLoop(LoopOptions(base + "/straight", 6));
  ASSERT_TRUE(straight->Run().ok());

  // Interrupted after 3 steps (last checkpoint at step 2 + the final one at 3) ...
  {
    auto first = MakeLoop(LoopOptions(base + "/resumed", 3));
    ASSERT_TRUE(first->Run().ok());
  }
  // ... and a new process resumes to 6.
  InProcessLoopOptions o = LoopOptions(base + "/resumed", 6);
  o.resume = true;
  auto resumed = MakeLoop(o);
  EXPECT_EQ(resumed->trainer().step(), 3);
  ASSERT_TRUE(resumed->Run().ok());
  EXPECT_EQ(resumed->trainer().step(), 6);
  EXPECT_EQ(resumed->cursor().epoch, straight->cursor().epoch);
  EXPECT_EQ(resumed->cursor().position, straight->cursor().position);
  EXPECT_LE(MaxAbsDiff(straight->trainer().policy(), resumed->trainer().policy()), 1e-6);
  EXPECT_DOUBLE_EQ(straight->trainer().beta(), resumed->trainer().beta());
  fs::remove_all(base);
}

TEST(InProcessLoopTest, BadInputsAreRejected) {
  auto make = [](std::vector<std::vector<int32_t>> prompts, InProcessLoopOptions o,
                 RewardFn reward) {
    return InProcessLoop::Create(o, *Trainer::Create(Options(), TinyModel(1)), TinyModel(1),
                                 reward, std::move(prompts), {{256, 70}});
  };
  EXPECT_FALSE(make({}, LoopOptions("", 1), CountA).ok());
  EXPECT_FALSE(make({{256}, {}}, LoopOptions("", 1), CountA).ok());
  EXPECT_FALSE(make(kPrompts, LoopOptions("", 1), nullptr).ok());
  InProcessLoopOptions o = LoopOptions("", 1);
  o.sampling.max_new_tokens = 0;
  EXPECT_FALSE(make(kPrompts, o, CountA).ok());
  // A reward function that fails leaves the cursor where it was.
  auto loop = *make(kPrompts, LoopOptions("", 1),
                    [](const auto&, const auto&) -> absl::StatusOr<std::vector<float>> {
                      return absl::UnavailableError("reward model down");
                    });
  EXPECT_EQ(loop->RunStep().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(loop->cursor().position, 0);
  EXPECT_EQ(loop->trainer().step(), 0);
}

}  // namespace
}  // namespace rlhf
