// End to end on the built-in task at the quickstart's model size: train the SFT policy,
// rank its own samples with the gold labeler, train the reward model on those and the
// synthetic rankings (core/train), then RL (RLOO) from the SFT checkpoint against the
// LEARNED reward model through the in-process loop, and judge the result with the
// hidden gold labeler on held-out prompts:
//   - the gold score rises by a clear margin (95% interval, paired by prompt, above 0),
//   - the mean KL to SFT ends near the adaptive controller's target,
//   - with β = 0 the policy drifts much further from SFT and ends higher on the learned
//     reward but lower on gold: over-optimisation of a proxy.
// Labels "slow" and "quality": 1,136 s (18:56) measured on an idle 2-core VM with one
// compute thread (ctest sets OMP_NUM_THREADS=1), 2026-12-07, main at f8b631c:
// gold 0.764 -> 0.803, gain +0.038 [+0.016, +0.061], KL 0.356; with beta = 0 KL 2.05 and
// gold 0.741. TIMEOUT 2400 is twice that. It is longer than CI's whole test budget, so
// scripts/test.sh runs it only with RLHF_TEST_QUALITY=1. (Fewer steps would cut into the
// asserted margins: the gain's interval starts at +0.016.)
// The margins hold for this numeric path, not for every one: with OMP_NUM_THREADS=2
// (other float summation orders, so other samples from step one) the same run took 9.4
// min and gave gain +0.018 [-0.001, +0.038], KL 0.417, and failed both gain checks. The
// test is one draw of the recipe; a robust claim needs more held-out prompts or several
// seeds (docs/benchmarks.md "RL on the built-in task").
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "core/rl_training/rl_experiment.h"
#include "tools/launcher/paired_gain.h"

namespace rlhf {
namespace {

namespace fs = std::filesystem;

constexpr double kKlTarget = 0.5;

RlExperimentOptions Experiment(const std::string& workdir) {
  RlExperimentOptions o;
  o.workdir = workdir;
  o.model = *ModelConfigPreset("tiny");  // the quickstart's model
  o.model.max_seq_len = 128;
  o.sft.steps = 1000;
  o.sft.eval_every = 0;
  o.sft.checkpoint_every = 0;
  o.sft.log_every = 50;
  o.task.num_rank = 4800;  // the quickstart's recipe: one pass of fresh rankings, lr 3e-4
  o.rm.steps = 600;
  o.rm.lr = 3e-4;
  o.rm.eval_every = 0;
  o.rm.checkpoint_every = 0;
  o.rm.log_every = 50;
  // The RM also learns from rankings of the SFT policy's own samples (InstructGPT's
  // comparison data): without them RL finds the RM's blind spots and the gold score falls.
  o.label_prompts = 1000;
  o.label.samples_per_prompt = 8;
  o.label.max_new_tokens = 44;
  o.eval_prompts = 128;
  o.eval.max_new_tokens = 44;
  o.eval.samples_per_prompt = 8;
  o.eval.seed = 777;
  return o;
}

TrainerOptions Rloo(double beta, bool adaptive) {
  TrainerOptions t;
  t.algorithm = RlAlgorithm::kRloo;
  t.lr = 1e-4;
  t.minibatch_size = 64;
  t.kl.initial_beta = beta;
  t.kl.adaptive = adaptive;
  t.kl.target = kKlTarget;
  t.kl.horizon = 2000;
  return t;
}

InProcessLoopOptions Loop() {
  InProcessLoopOptions l;
  l.steps = 80;
  l.prompts_per_step = 16;
  l.samples_per_prompt = 4;
  l.sampling.max_new_tokens = 44;
  l.sampling.stop_tokens = {257};
  l.log_every = 5;
  return l;
}

// Same options, same models, whatever the process did before: the SFT initialisation
// is seeded explicitly (it once took the global generator's state, which a timed loop
// had advanced by a varying amount, and every later stage differed run to run).
TEST(RlBuiltinTaskTest, PreparedModelsAreReproducible) {
  auto prepare = [](const std::string& name) {
    const std::string workdir = (fs::temp_directory_path() /
                                 (name + std::to_string(::getpid()))).string();
    fs::remove_all(workdir);
    RlExperimentOptions o = Experiment(workdir);
    o.sft.steps = 6;
    o.rm.steps = 3;
    o.label_prompts = 8;
    o.quiet = true;
    absl::StatusOr<PreparedModels> models = PrepareModels(o);
    fs::remove_all(workdir);
    return models;
  };
  absl::StatusOr<PreparedModels> a = prepare("rlhf_repro_a_");
  ASSERT_TRUE(a.ok()) << a.status();
  (void)torch::rand({1 + std::rand() % 1000});  // advance the global generator
  absl::StatusOr<PreparedModels> b = prepare("rlhf_repro_b_");
  ASSERT_TRUE(b.ok()) << b.status();
  for (auto [x, y] : {std::make_pair(&a->sft, &b->sft), std::make_pair(&a->rm, &b->rm)}) {
    const NamedTensors tx = ModelTensors(x->model), ty = ModelTensors(y->model);
    ASSERT_EQ(tx.size(), ty.size());
    for (size_t i = 0; i < tx.size(); ++i) {
      EXPECT_TRUE(torch::equal(tx[i].second, ty[i].second)) << tx[i].first;
    }
  }
}

TEST(RlBuiltinTaskTest, RlRaisesGoldScoreAndKlIsControlled) {
  const std::string workdir =
      (fs::temp_directory_path() / ("rlhf_rl_builtin_" + std::to_string(::getpid()))).string();
  fs::remove_all(workdir);
  const RlExperimentOptions options = Experiment(workdir);
  absl::StatusOr<PreparedModels> models = PrepareModels(options);
  ASSERT_TRUE(models.ok()) << models.status();

  absl::StatusOr<RlRunResult> controlled = RunRl(*models, options, Rloo(0.2, true), Loop());
  ASSERT_TRUE(controlled.ok()) << controlled.status();
  const PolicyEvalReport& before = controlled->before;
  const PolicyEvalReport& after = controlled->after;
  fprintf(stderr, "beta>0: gold %.3f±%.3f -> %.3f±%.3f, rm %.3f -> %.3f, KL(SFT) %.3f\n",
          before.gold.mean, before.gold.half_width, after.gold.mean, after.gold.half_width,
          before.rm.mean, after.rm.mean, after.kl.mean);

  absl::StatusOr<RlRunResult> free_run =
      RunRl(*models, options, Rloo(0.0, false), Loop(), /*evaluate_before=*/false);
  ASSERT_TRUE(free_run.ok()) << free_run.status();
  fprintf(stderr, "beta=0: gold %.3f, rm %.3f, KL(SFT) %.3f\n", free_run->after.gold.mean,
          free_run->after.rm.mean, free_run->after.kl.mean);

  // The learned reward went up (what RL optimises; z-scored by the RM's reference set) ...
  EXPECT_GT(after.rm.mean, before.rm.mean + 0.1);
  // ... and so did the hidden gold score, by a clear margin: the 95% interval of the
  // gain, paired by prompt, lies above zero. Measured (deterministic since the SFT
  // initialisation is seeded): RM pair accuracy 0.933 (synthetic rankings of comparable
  // responses only), gold 0.753 -> 0.796, gain +0.044 [+0.021, +0.066], KL 0.36 (target
  // 0.5). With synthetic rankings that also traded one defect for another (RM 0.792):
  // +0.066 at KL 0.48; with the labelled rankings also cut to comparable pairs: +0.035;
  // with the old RM recipe (400 steps at lr 1e-3 on 600 rankings, accuracy ~0.75) +0.02
  // to +0.05 depending on the draw.
  std::vector<std::pair<std::string, double>> gold_before, gold_after;
  for (const PolicyEvalSample& s : before.samples) gold_before.emplace_back(s.prompt, s.gold);
  for (const PolicyEvalSample& s : after.samples) gold_after.emplace_back(s.prompt, s.gold);
  auto gain = launcher::PairedPromptGain(gold_before, gold_after);
  ASSERT_TRUE(gain.ok()) << gain.status();
  fprintf(stderr, "gold gain %+.4f, 95%% interval paired by prompt [%+.4f, %+.4f] (%d prompts)\n",
          gain->mean, gain->mean - gain->half_width, gain->mean + gain->half_width,
          gain->prompts);
  EXPECT_GT(gain->mean - gain->half_width, 0.0);
  EXPECT_GT(gain->mean, 0.03);
  // The adaptive controller keeps the KL to SFT near its target (nats per sequence).
  EXPECT_GT(after.kl.mean, 0.5 * kKlTarget);
  EXPECT_LT(after.kl.mean, 1.5 * kKlTarget);
  // Without the penalty the policy drifts further and the proxy is over-optimised: the
  // learned reward rises (to 1.064, above the β > 0 run's 1.038) while the gold score
  // falls, below even SFT's (measured: KL 1.71 vs 0.36, gold 0.712 vs 0.796 and SFT's
  // 0.753; with the old, weaker RM the gold score collapsed to 0.52-0.74).
  EXPECT_GT(free_run->after.kl.mean, 2 * after.kl.mean);
  EXPECT_GT(free_run->after.rm.mean, before.rm.mean + 0.1);
  EXPECT_LT(free_run->after.gold.mean, after.gold.mean);
  fs::remove_all(workdir);
}

}  // namespace
}  // namespace rlhf
