// RL benchmark on the built-in task: one SFT policy and one reward model (trained once,
// cached in --workdir), then each algorithm (REINFORCE+baseline, RLOO, GRPO, PPO) from
// that same SFT checkpoint through the in-process loop. Reports per algorithm: held-out
// gold score and RM score before/after, exact KL to SFT, steps, wall time, learner
// tokens/s (forward+backward through Trainer::Step) and its FLOP rate as a fraction of
// the machine's sgemm rate measured in the same run.
//
//   build/bin/rlhf_bench_rl --workdir=/tmp/rlhf_rl_bench --algorithms=reinforce,rloo,grpo,ppo
#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "bench/machine_limits.h"
#include "core/rl_training/rl_experiment.h"

ABSL_FLAG(std::string, workdir, "/tmp/rlhf_rl_bench", "SFT/RM cache directory");
ABSL_FLAG(std::string, algorithms, "reinforce,rloo,grpo,ppo", "comma-separated");
ABSL_FLAG(int, threads, 2, "intra-op threads");
ABSL_FLAG(std::string, preset, "tiny", "model preset");
ABSL_FLAG(int, d_model, 0, "override the preset's d_model (0 = keep)");
ABSL_FLAG(int, n_layers, 0, "override the preset's n_layers (0 = keep)");
ABSL_FLAG(int, sft_batch, 32, "SFT batch size");
ABSL_FLAG(int, sft_steps, 1000, "SFT optimizer steps");
ABSL_FLAG(int, rm_steps, 600, "RM optimizer steps");
ABSL_FLAG(int, num_rank, 4800, "synthetic ranked prompts for the RM (one pass at 600 x 8)");
ABSL_FLAG(int, label_prompts, 1000, "prompts whose SFT samples are ranked for the RM (0 = off)");
ABSL_FLAG(int, rl_steps, 80, "RL steps per algorithm");
ABSL_FLAG(int, prompts_per_step, 16, "prompts per RL step");
ABSL_FLAG(int, samples_per_prompt, 4, "samples per prompt (G)");
ABSL_FLAG(int, max_new_tokens, 44, "sampling budget");
ABSL_FLAG(int, eval_prompts, 128, "held-out prompts evaluated");
ABSL_FLAG(int, eval_samples, 4, "responses sampled per held-out prompt");
ABSL_FLAG(double, lr, 1e-4, "RL learning rate");
ABSL_FLAG(double, beta, 0.2, "initial KL coefficient");
ABSL_FLAG(bool, adaptive, true, "adaptive KL controller");
ABSL_FLAG(double, kl_target, 0.75, "KL target, nats per sequence");
ABSL_FLAG(int, show_samples, 0, "print this many held-out samples before/after");
ABSL_FLAG(bool, learner_only, false,
          "only time Trainer::Step on synthetic batches of the preset (no SFT/RM/RL run)");
ABSL_FLAG(int, learner_steps, 5, "timed Trainer::Step calls in --learner_only mode");
ABSL_FLAG(std::string, json_out, "", "write results as JSON here");

namespace rlhf {
namespace {

absl::StatusOr<RlAlgorithm> ParseAlgorithm(const std::string& name) {
  for (RlAlgorithm a : {RlAlgorithm::kReinforce, RlAlgorithm::kRloo, RlAlgorithm::kGrpo,
                        RlAlgorithm::kPpo}) {
    if (RlAlgorithmName(a) == name) return a;
  }
  return absl::InvalidArgumentError("unknown algorithm " + name);
}

// Trainer::Step alone on synthetic on-policy-shaped batches (prompts_per_step x
// samples_per_prompt sequences of 16 prompt + max_new_tokens response tokens): learner
// tokens/s (forward+backward) and FLOP rate (6 x params x tokens) vs sgemm.
int LearnerOnly(double sgemm) {
  ModelConfig config = *ModelConfigPreset(absl::GetFlag(FLAGS_preset));
  const int64_t n = absl::GetFlag(FLAGS_prompts_per_step) * absl::GetFlag(FLAGS_samples_per_prompt);
  const int64_t resp = absl::GetFlag(FLAGS_max_new_tokens);
  std::printf("preset %s: %.2fM parameters, %lld sequences of 16 + %lld tokens per step\n",
              absl::GetFlag(FLAGS_preset).c_str(), CountParameters(config) / 1e6,
              static_cast<long long>(n), static_cast<long long>(resp));
  for (RlAlgorithm algorithm : {RlAlgorithm::kReinforce, RlAlgorithm::kPpo}) {
    torch::manual_seed(1);
    TransformerLM policy(config);
    TransformerLM value{nullptr};
    if (algorithm == RlAlgorithm::kPpo) {
      ModelConfig vc = config;
      vc.lm_head = false;
      vc.scalar_head = true;
      value = TransformerLM(vc);
    }
    TrainerOptions t;
    t.algorithm = algorithm;
    t.lr = 1e-5;
    t.minibatch_size = static_cast<int>(n);
    auto trainer = *Trainer::Create(t, policy, value);
    at::Generator gen = at::detail::createCPUGenerator(3);
    std::vector<Trajectory> batch(n);
    for (auto& tr : batch) {
      const torch::Tensor ids = at::randint(0, 256, {16 + resp}, gen, torch::kLong);
      for (int64_t i = 0; i < 16 + resp; ++i) {
        (i < 16 ? tr.prompt : tr.response).push_back(static_cast<int32_t>(ids[i].item<int64_t>()));
      }
      tr.behaviour_logprobs.assign(resp, -5.5f);
      tr.reference_logprobs.assign(resp, -5.5f);
      tr.reward = static_cast<float>(tr.response[0] % 7) / 7.f;
    }
    (void)trainer->Step(batch);  // warm-up
    int64_t tokens = 0;
    double seconds = 0;
    // Process CPU time too: on a shared machine wall time includes waiting for a core;
    // tokens / (CPU seconds / threads) is what the step costs when it has the cores.
    const std::clock_t cpu0 = std::clock();
    for (int i = 0; i < absl::GetFlag(FLAGS_learner_steps); ++i) {
      absl::StatusOr<TrainStats> s = trainer->Step(batch);
      if (!s.ok()) {
        std::fprintf(stderr, "%s\n", s.status().ToString().c_str());
        return 1;
      }
      tokens += s->tokens_processed;
      seconds += s->seconds;
    }
    const double cpu_seconds = static_cast<double>(std::clock() - cpu0) / CLOCKS_PER_SEC;
    const double busy_seconds = cpu_seconds / absl::GetFlag(FLAGS_threads);
    const double gflops = 6.0 * CountParameters(config) * tokens / seconds / 1e9;
    const double busy_gflops = 6.0 * CountParameters(config) * tokens / busy_seconds / 1e9;
    std::printf("learner %-9s wall: %.0f tok/s (forward+backward) %.2f GFLOP/s = %.1f%% of sgemm;"
                "  per busy core-time: %.0f tok/s %.2f GFLOP/s = %.1f%%\n",
                std::string(RlAlgorithmName(algorithm)).c_str(), tokens / seconds, gflops,
                100.0 * gflops / sgemm, tokens / busy_seconds, busy_gflops,
                100.0 * busy_gflops / sgemm);
  }
  return 0;
}

int Main() {
  const int threads = absl::GetFlag(FLAGS_threads);
  at::set_num_threads(threads);
  const double sgemm = bench::SgemmGflops();
  std::printf("threads %d, sgemm 1024^3: %.1f GFLOP/s\n", threads, sgemm);
  std::fflush(stdout);
  if (absl::GetFlag(FLAGS_learner_only)) return LearnerOnly(sgemm);

  RlExperimentOptions options;
  options.workdir = absl::GetFlag(FLAGS_workdir);
  options.model = *ModelConfigPreset(absl::GetFlag(FLAGS_preset));
  options.model.max_seq_len = 128;
  if (absl::GetFlag(FLAGS_d_model) > 0) {
    options.model.d_model = absl::GetFlag(FLAGS_d_model);
    options.model.d_ff = 4 * options.model.d_model;
  }
  if (absl::GetFlag(FLAGS_n_layers) > 0) options.model.n_layers = absl::GetFlag(FLAGS_n_layers);
  options.sft.batch_size = absl::GetFlag(FLAGS_sft_batch);
  options.sft.steps = absl::GetFlag(FLAGS_sft_steps);
  options.sft.eval_every = 0;
  options.sft.checkpoint_every = 0;
  options.sft.log_every = 50;
  options.task.num_rank = absl::GetFlag(FLAGS_num_rank);
  options.rm.steps = absl::GetFlag(FLAGS_rm_steps);
  options.rm.eval_every = 0;
  options.rm.checkpoint_every = 0;
  options.rm.log_every = 50;
  options.label_prompts = absl::GetFlag(FLAGS_label_prompts);
  options.label.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  options.eval_prompts = absl::GetFlag(FLAGS_eval_prompts);
  options.eval.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  options.eval.seed = 12345;
  options.eval.samples_per_prompt = absl::GetFlag(FLAGS_eval_samples);
  absl::StatusOr<PreparedModels> models = PrepareModels(options);
  if (!models.ok()) {
    std::fprintf(stderr, "prepare: %s\n", models.status().ToString().c_str());
    return 1;
  }
  const double params = static_cast<double>(CountParameters(models->sft.config));
  std::printf("policy %.2fM parameters; %zu RL prompts, %zu held-out prompts\n", params / 1e6,
              models->rl_prompts.size(), models->heldout_prompts.size());

  nlohmann::json results = {{"threads", threads}, {"sgemm_gflops", sgemm}, {"runs", nlohmann::json::array()}};
  bool first = true;
  PolicyEvalReport before;
  std::vector<std::string> lines;
  for (const std::string& name :
       std::vector<std::string>(absl::StrSplit(absl::GetFlag(FLAGS_algorithms), ','))) {
    absl::StatusOr<RlAlgorithm> algorithm = ParseAlgorithm(name);
    if (!algorithm.ok()) {
      std::fprintf(stderr, "%s\n", algorithm.status().ToString().c_str());
      return 1;
    }
    TrainerOptions t;
    t.algorithm = *algorithm;
    t.lr = absl::GetFlag(FLAGS_lr);
    t.minibatch_size = absl::GetFlag(FLAGS_prompts_per_step) * absl::GetFlag(FLAGS_samples_per_prompt);
    t.kl.initial_beta = absl::GetFlag(FLAGS_beta);
    t.kl.adaptive = absl::GetFlag(FLAGS_adaptive);
    t.kl.target = absl::GetFlag(FLAGS_kl_target);
    t.kl.horizon = 10000;
    if (*algorithm == RlAlgorithm::kPpo) {
      t.epochs = 2;
      t.minibatch_size /= 2;
      t.whiten_advantages = true;
    }
    if (*algorithm == RlAlgorithm::kGrpo) {
      t.kl_placement = KlPlacementMode::kInLoss;
      t.kl_estimator = KlEstimator::kK3;
    }
    InProcessLoopOptions loop;
    loop.steps = absl::GetFlag(FLAGS_rl_steps);
    loop.prompts_per_step = absl::GetFlag(FLAGS_prompts_per_step);
    loop.samples_per_prompt = absl::GetFlag(FLAGS_samples_per_prompt);
    loop.sampling.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
    // RunRl adds the SFT checkpoint's EOS (its tokenizer's) to the stop tokens.
    loop.log_every = 5;
    absl::StatusOr<RlRunResult> run = RunRl(*models, options, t, loop, /*evaluate_before=*/first);
    if (!run.ok()) {
      std::fprintf(stderr, "%s: %s\n", name.c_str(), run.status().ToString().c_str());
      return 1;
    }
    if (first) before = run->before;
    for (int i = 0; i < absl::GetFlag(FLAGS_show_samples); ++i) {
      if (first && i < static_cast<int>(before.samples.size())) {
        std::printf("  sft  [%.2f] %s -> %s\n", before.samples[i].gold,
                    before.samples[i].prompt.c_str(), before.samples[i].response.c_str());
      }
      if (i < static_cast<int>(run->after.samples.size())) {
        std::printf("  %-4s [%.2f] %s -> %s\n", name.c_str(), run->after.samples[i].gold,
                    run->after.samples[i].prompt.c_str(), run->after.samples[i].response.c_str());
      }
    }
    first = false;
    const double tok_s = run->learner_tokens / std::max(1e-9, run->learner_seconds);
    const double gflops = run->learner_flops / std::max(1e-9, run->learner_seconds) / 1e9;
    char line[512];
    std::snprintf(line, sizeof(line),
                  "%-10s gold %.3f -> %.3f   rm %+.3f -> %+.3f   KL(SFT) %.3f   steps %d  "
                  "wall %.1fs   learner %.0f tok/s  %.2f GFLOP/s = %.1f%% sgemm",
                  name.c_str(), before.gold.mean, run->after.gold.mean, before.rm.mean,
                  run->after.rm.mean, run->after.kl.mean, static_cast<int>(run->steps.size()),
                  run->seconds, tok_s, gflops, 100.0 * gflops / sgemm);
    std::printf("%s\n", line);
    std::fflush(stdout);
    lines.push_back(line);
    results["runs"].push_back({{"algorithm", name},
                               {"gold_before", before.gold.mean},
                               {"gold_before_ci95", before.gold.half_width},
                               {"gold_after", run->after.gold.mean},
                               {"gold_after_ci95", run->after.gold.half_width},
                               {"rm_before", before.rm.mean},
                               {"rm_after", run->after.rm.mean},
                               {"kl_to_sft_after", run->after.kl.mean},
                               {"steps", run->steps.size()},
                               {"wall_seconds", run->seconds},
                               {"learner_tokens", run->learner_tokens},
                               {"learner_seconds", run->learner_seconds},
                               {"learner_tokens_per_second", tok_s},
                               {"learner_gflops", gflops},
                               {"fraction_of_sgemm", gflops / sgemm}});
  }
  std::printf("\nsummary (held-out %zu prompts, SFT+RM shared):\n", models->heldout_prompts.size());
  for (const auto& l : lines) std::printf("%s\n", l.c_str());
  if (!absl::GetFlag(FLAGS_json_out).empty()) {
    std::ofstream(absl::GetFlag(FLAGS_json_out)) << results.dump(2) << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace rlhf

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return rlhf::Main();
}
