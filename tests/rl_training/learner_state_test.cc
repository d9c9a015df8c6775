// Checkpoint/resume of the complete learner state, atomic writes and keep-last-N.
#include "core/rl_training/learner_state.h"

#include <filesystem>
#include <fstream>

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "tests/rl_training/trainer_test_util.h"

namespace rlhf {
namespace {

namespace fs = std::filesystem;
using testing::MaxAbsDiff;
using testing::SampleBatch;
using testing::TinyModel;

std::string FreshDir(const std::string& name) {
  const std::string dir =
      (fs::temp_directory_path() / ("rlhf_learner_state_" + name + "_" + std::to_string(::getpid())))
          .string();
  fs::remove_all(dir);
  return dir;
}

const std::vector<std::vector<int32_t>> kPrompts = {{97, 98}, {99, 100, 101}, {65}};

TrainerOptions ResumeOptions(RlAlgorithm algorithm) {
  TrainerOptions o;
  o.algorithm = algorithm;
  o.lr = 1e-3;
  o.warmup_steps = 3;        // the LR schedule position must be restored
  o.decay_steps = 10;
  o.minibatch_size = 4;      // several shuffled minibatches per step
  o.epochs = 2;
  o.kl = {0.1, /*adaptive=*/true, /*target=*/0.5, /*horizon=*/20};  // β moves every step
  o.seed = 42;
  return o;
}

// One synchronous (on-policy) RL step: sample with the current policy, update.
void RunStep(Trainer& trainer, TransformerLM& ref) {
  std::vector<Trajectory> batch = SampleBatch(trainer.policy(), ref, kPrompts, /*samples=*/3,
                                              trainer.step(), trainer.policy_version());
  absl::StatusOr<TrainStats> s = trainer.Step(batch);
  ASSERT_TRUE(s.ok()) << s.status();
}

class ResumeTest : public ::testing::TestWithParam<RlAlgorithm> {};

// N steps straight == N/2 steps, checkpoint, fresh objects from the checkpoint, N/2 steps.
TEST_P(ResumeTest, ResumedRunMatchesStraightRun) {
  const RlAlgorithm algorithm = GetParam();
  const bool ppo = algorithm == RlAlgorithm::kPpo;
  const int n = 6;
  TransformerLM ref = TinyModel(1);

  TransformerLM straight_policy = TinyModel(1);
  auto straight = *Trainer::Create(ResumeOptions(algorithm), straight_policy,
                                   ppo ? TinyModel(2, true) : nullptr);
  for (int i = 0; i < n; ++i) RunStep(*straight, ref);

  const std::string root = FreshDir(std::string(RlAlgorithmName(algorithm)));
  std::string saved;
  double beta_at_save = 0;
  {
    auto first = *Trainer::Create(ResumeOptions(algorithm), TinyModel(1),
                                  ppo ? TinyModel(2, true) : nullptr);
    for (int i = 0; i < n / 2; ++i) RunStep(*first, ref);
    auto ckpt = *LearnerCheckpointer::Create({root, 2});
    absl::StatusOr<std::string> dir = ckpt->Save(*first, {{"prompt_cursor", 17}});
    ASSERT_TRUE(dir.ok()) << dir.status();
    saved = *dir;
    beta_at_save = first->beta();
    // The first trainer is dropped here: nothing survives but the files.
  }
  absl::StatusOr<RestoredLearner> restored = RestoreLearner(saved, ResumeOptions(algorithm));
  ASSERT_TRUE(restored.ok()) << restored.status();
  Trainer& resumed = *restored->trainer;
  EXPECT_EQ(restored->cursor["prompt_cursor"], 17);
  EXPECT_EQ(resumed.step(), n / 2);
  EXPECT_EQ(resumed.policy_version(), n / 2);
  EXPECT_DOUBLE_EQ(resumed.beta(), beta_at_save);
  for (int i = 0; i < n / 2; ++i) RunStep(resumed, ref);

  EXPECT_LE(MaxAbsDiff(straight_policy, resumed.policy()), 1e-6);
  if (ppo) {
    EXPECT_LE(MaxAbsDiff(straight->value_model(), resumed.value_model()), 1e-6);
  }
  EXPECT_DOUBLE_EQ(straight->beta(), resumed.beta());
  EXPECT_EQ(straight->policy_version(), resumed.policy_version());
  fs::remove_all(root);
}

INSTANTIATE_TEST_SUITE_P(All, ResumeTest,
                         ::testing::Values(RlAlgorithm::kReinforce, RlAlgorithm::kPpo),
                         [](const auto& info) { return std::string(RlAlgorithmName(info.param)); });

// Without the optimizer moments the resumed run diverges: the test above has power.
TEST(ResumeTest, DroppingOptimizerStateIsDetected) {
  TransformerLM ref = TinyModel(1);
  const TrainerOptions o = ResumeOptions(RlAlgorithm::kReinforce);
  TransformerLM straight_policy = TinyModel(1);
  auto straight = *Trainer::Create(o, straight_policy);
  for (int i = 0; i < 4; ++i) RunStep(*straight, ref);
  auto first = *Trainer::Create(o, TinyModel(1));
  for (int i = 0; i < 2; ++i) RunStep(*first, ref);
  TrainerState state = first->ExportState();
  state.optimizer_tensors.clear();
  state.optimizer_steps_by_param.clear();
  TransformerLM copy = TinyModel(7);
  {
    torch::NoGradGuard g;
    auto src = first->policy()->named_parameters();
    for (auto& p : copy->named_parameters()) p.value().copy_(src[p.key()]);
  }
  auto second = *Trainer::Create(o, copy);
  ASSERT_TRUE(second->RestoreState(state).ok());
  for (int i = 0; i < 2; ++i) RunStep(*second, ref);
  EXPECT_GT(MaxAbsDiff(straight_policy, second->policy()), 1e-5);
}

TEST(LearnerCheckpointerTest, KeepsLastNAndSurvivesCrashMidWrite) {
  const std::string root = FreshDir("atomic");
  TransformerLM ref = TinyModel(1);
  const TrainerOptions o = ResumeOptions(RlAlgorithm::kGrpo);
  auto trainer = *Trainer::Create(o, TinyModel(1));
  auto ckpt = *LearnerCheckpointer::Create({root, 2});
  EXPECT_EQ(ckpt->Latest().status().code(), absl::StatusCode::kNotFound);
  for (int i = 0; i < 4; ++i) {
    RunStep(*trainer, ref);
    ASSERT_TRUE(ckpt->Save(*trainer, {{"i", i}}).ok());
  }
  std::vector<std::string> kept = ckpt->List();
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_EQ(fs::path(kept[0]).filename(), "step-00000003");
  EXPECT_EQ(fs::path(kept[1]).filename(), "step-00000004");
  EXPECT_FALSE(fs::exists(root + "/step-00000001"));

  // A crash mid-write: a tmp dir with a partial copy (weights but no state file), and a
  // torn step dir whose learner_state.json is truncated. Neither is ever chosen.
  const std::string tmp = root + "/tmp-step-00000005-deadbeef";
  fs::create_directories(tmp + "/policy");
  fs::copy(kept[1] + "/policy/model.safetensors", tmp + "/policy/model.safetensors");
  fs::create_directories(root + "/step-00000006");
  {
    std::ofstream(root + "/step-00000006/learner_state.json") << "{\"format\": \"rlhf-lea";
  }
  absl::StatusOr<std::string> latest = ckpt->Latest();
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(*latest, kept[1]);
  absl::StatusOr<RestoredLearner> r = RestoreLearner(*latest, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->trainer->step(), 4);
  EXPECT_EQ(r->cursor["i"], 3);
  EXPECT_LE(MaxAbsDiff(trainer->policy(), r->trainer->policy()), 0.0);

  // A restarted learner clears interrupted saves.
  auto again = *LearnerCheckpointer::Create({root, 2});
  EXPECT_FALSE(fs::exists(tmp));
  EXPECT_EQ(*again->Latest(), kept[1]);

  // Corrupt optimizer file: a clear error, not a crash.
  {
    std::ofstream(kept[0] + "/optimizer.safetensors") << "garbage";
  }
  absl::StatusOr<RestoredLearner> bad = RestoreLearner(kept[0], o);
  EXPECT_FALSE(bad.ok());
  // Wrong algorithm for the checkpoint: named in the error.
  absl::StatusOr<RestoredLearner> wrong = RestoreLearner(kept[1], ResumeOptions(RlAlgorithm::kPpo));
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("ppo"), std::string::npos);
  EXPECT_FALSE(LearnerCheckpointer::Create({root, 0}).ok());
  fs::remove_all(root);
}

}  // namespace
}  // namespace rlhf
