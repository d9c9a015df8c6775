// kl.estimator exact on the RL path (issue 22), two measurements in one run:
//
// 1. The top-k bound against the full-row KL. The policy samples responses to held-out
//    prompts of the built-in task; at every response step the seed's KL
//    Σ_v π(v) log(π(v)/π_ref(v)) is computed from the full rows of both models, and the
//    top-k + tail form the actor sends (k = --ks) from the same rows. Reported per token:
//    full KL, each bound, bound / full, and the policy mass outside the top-k.
// 2. The actor's extra cost: Generate with and without returning distributions (the
//    same seeds, so the same tokens) plus packing them into the reference request
//    (actor/step_distributions.h) and serialising it; seconds and wire bytes per
//    response token, as ratios to the plain actor in the same run.
//
//   build/bin/rlhf_bench_exact_kl --policy=runs/x/policy --reference=runs/x/sft
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "actor/step_distributions.h"
#include "core/data/builtin_task.h"
#include "core/model/checkpoint.h"
#include "core/model/generation.h"
#include "core/model/logprobs.h"
#include "core/tokenizer/tokenizer.h"
#include "core/rl/kl.h"
#include "core/train/training_common.h"
#include "rlhf/v1/reference.pb.h"

ABSL_FLAG(std::string, policy, "", "policy checkpoint directory (e.g. the RL learner's)");
ABSL_FLAG(std::string, reference, "", "reference (SFT) checkpoint directory");
ABSL_FLAG(std::string, ks, "8,32,128", "top-k sizes");
ABSL_FLAG(int, prompts, 64, "held-out prompts of the built-in task");
ABSL_FLAG(int, max_new_tokens, 48, "sampling budget");
ABSL_FLAG(double, temperature, 1.0, "sampling temperature");
ABSL_FLAG(int, repeats, 3, "timed repetitions of each actor variant (best is kept)");
ABSL_FLAG(int, threads, 1, "intra-op threads (the actor's default)");

namespace rlhf {
namespace {

double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int Run() {
  at::set_num_threads(absl::GetFlag(FLAGS_threads));
  if (absl::GetFlag(FLAGS_policy).empty() || absl::GetFlag(FLAGS_reference).empty()) {
    std::fprintf(stderr, "--policy and --reference are required\n");
    return 2;
  }
  auto policy = LoadCheckpoint(absl::GetFlag(FLAGS_policy));
  auto reference = LoadCheckpoint(absl::GetFlag(FLAGS_reference));
  if (!policy.ok() || !reference.ok()) {
    std::fprintf(stderr, "load: %s / %s\n", policy.status().ToString().c_str(),
                 reference.status().ToString().c_str());
    return 1;
  }
  policy->model->eval();
  reference->model->eval();
  std::vector<int64_t> ks;
  for (absl::string_view s : absl::StrSplit(absl::GetFlag(FLAGS_ks), ',')) {
    int64_t k = 0;
    if (!absl::SimpleAtoi(s, &k) || k < 1) {
      std::fprintf(stderr, "--ks: bad entry '%s'\n", std::string(s).c_str());
      return 2;
    }
    ks.push_back(k);
  }
  BuiltinTaskOptions task_options;
  auto task = GenerateBuiltinTask(task_options);
  if (!task.ok()) return 1;
  const ByteTokenizer tokenizer;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<uint64_t> seeds;
  for (int i = 0; i < absl::GetFlag(FLAGS_prompts) && i < static_cast<int>(task->rl_heldout.size()); ++i) {
    prompts.push_back(EncodePrompt(tokenizer, task->rl_heldout[i].prompt));
    seeds.push_back(1000 + i);
  }
  const int64_t V = policy->config.vocab_size;
  SamplingOptions base;
  base.temperature = absl::GetFlag(FLAGS_temperature);
  base.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  base.stop_tokens = {ByteTokenizer::kEos};

  // ---- 1. top-k bound vs full KL ----
  SamplingOptions full_rows = base;
  full_rows.return_top_k_distributions = V;
  auto gen = Generate(policy->model, prompts, seeds, full_rows);
  if (!gen.ok()) {
    std::fprintf(stderr, "generate: %s\n", gen.status().ToString().c_str());
    return 1;
  }
  SequenceBatchOptions sbo;
  sbo.pad_id = ByteTokenizer::kPad;
  auto packed = MakeSequenceBatch(prompts, gen->responses, sbo);
  if (!packed.ok()) return 1;
  torch::NoGradGuard no_grad;
  const torch::Tensor ref_rows = ResponseLogProbRows(
      reference->model->forward(packed->ids, packed->attention_mask, packed->position_ids).logits,
      *packed, 1.0);  // [N, V], the reference server's temperature-1 rows
  const int64_t N = ref_rows.size(0);
  torch::Tensor pol_rows = torch::full({N, V}, -std::numeric_limits<float>::infinity());
  {
    int64_t n = 0;
    for (const auto& seq : gen->top_k) {
      for (const TopKDistribution& d : seq) {
        float* row = pol_rows[n++].data_ptr<float>();
        for (size_t i = 0; i < d.ids.size(); ++i) row[d.ids[i]] = d.logprobs[i];
      }
    }
  }
  const torch::Tensor full = ExactKlFull(pol_rows, ref_rows);
  const double full_mean = full.mean().item<double>();
  std::printf("exact KL on %lld response tokens of %zu held-out prompts (vocab %lld)\n",
              static_cast<long long>(N), prompts.size(), static_cast<long long>(V));
  std::printf("  full row           KL/token %.5f\n", full_mean);
  for (int64_t k : ks) {
    const int64_t kk = std::min(k, V);
    auto top = pol_rows.topk(kk, -1);
    const torch::Tensor top_lp = std::get<0>(top).contiguous();
    torch::Tensor tail = torch::empty({N});
    for (int64_t n = 0; n < N; ++n) {
      const float* p = top_lp[n].data_ptr<float>();
      tail[n] = TopKTailLogProb(std::vector<float>(p, p + kk));
    }
    const torch::Tensor bound = ExactKlTopK(top_lp, std::get<1>(top), tail, ref_rows);
    const double b = bound.mean().item<double>();
    const double tail_mass = tail.exp().mean().item<double>();
    const double worst = (full - bound).max().item<double>();
    std::printf("  top-%-4lld + tail   KL/token %.5f  = %.4f of full  (policy tail mass %.4f, "
                "largest per-token gap %.4f, bound > full: %lld tokens)\n",
                static_cast<long long>(k), b, full_mean > 0 ? b / full_mean : 1.0, tail_mass,
                worst, static_cast<long long>((bound > full + 1e-5).sum().item<int64_t>()));
  }

  // ---- 2. the actor's extra time and bytes per token ----
  std::printf("actor cost per response token (%d threads; best of %d)\n",
              absl::GetFlag(FLAGS_threads), absl::GetFlag(FLAGS_repeats));
  std::vector<int64_t> variants = {0};
  for (int64_t k : ks) variants.push_back(std::min(k, V));
  if (std::find(variants.begin(), variants.end(), V) == variants.end()) variants.push_back(V);
  double base_seconds = 0, base_bytes = 0;
  for (int64_t k : variants) {
    double best = 1e30, bytes = 0;
    int64_t tokens = 0;
    for (int rep = 0; rep < absl::GetFlag(FLAGS_repeats); ++rep) {
      SamplingOptions o = base;
      o.return_top_k_distributions = k;
      const auto t0 = std::chrono::steady_clock::now();
      auto g = Generate(policy->model, prompts, seeds, o);
      if (!g.ok()) return 1;
      rlhf::v1::ReferenceScoreRequest request;
      tokens = 0;
      for (size_t b = 0; b < prompts.size(); ++b) {
        auto* q = request.add_sequences();
        q->mutable_tokens()->mutable_prompt()->Add(prompts[b].begin(), prompts[b].end());
        q->mutable_tokens()->mutable_response()->Add(g->responses[b].begin(), g->responses[b].end());
        q->mutable_policy_logprobs()->Add(g->logprobs[b].begin(), g->logprobs[b].end());
        if (k > 0) actor::AppendStepDistributions(g->top_k[b], V, q);
        tokens += static_cast<int64_t>(g->responses[b].size());
      }
      const std::string wire = request.SerializeAsString();
      best = std::min(best, Seconds(t0));
      bytes = static_cast<double>(wire.size());
    }
    const double per_token_s = best / std::max<int64_t>(1, tokens);
    const double per_token_b = bytes / std::max<int64_t>(1, tokens);
    if (k == 0) {
      base_seconds = per_token_s;
      base_bytes = per_token_b;
    }
    std::printf("  %-22s %8.1f us/token (x%.3f)  %8.1f request bytes/token (x%.1f)\n",
                k == 0 ? "no distributions" : (k == V ? "full row" : ("top-" + std::to_string(k) + " + tail").c_str()),
                per_token_s * 1e6, per_token_s / base_seconds, per_token_b, per_token_b / base_bytes);
  }
  return 0;
}

}  // namespace
}  // namespace rlhf

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return rlhf::Run();
}
