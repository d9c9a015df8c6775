// rlhf_bench_model: forward and generation throughput of the transformer, as ratios
// measured in the same run (design.md §7):
//   - achieved GFLOP/s vs the machine's sgemm rate (a large torch::mm timed here);
//   - tokens/s vs the same model and loop in PyTorch-Python (bench/model_baseline.py,
//     run by /usr/bin/python3 on the same LibTorch kernels and thread count).
//
// FLOPs: 2 x (matmul parameters: every Linear + the unembedding) per processed token,
// plus attention 4 x d_model x (keys attended) per token per layer, counting only the
// causally visible keys. Generation counts the prompt pass (last-position logits only)
// and every decode step. Embedding lookups, norms and softmax are not counted.
//
//   rlhf_bench_model --threads=2 [--models=tiny,gpt2-small] [--python=/usr/bin/python3]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/model/generation.h"
#include "core/model/model.h"

ABSL_FLAG(int, threads, 2, "intra-op threads for LibTorch (C++ and Python alike)");
ABSL_FLAG(std::string, models, "tiny,gpt2-small", "comma-separated model presets");
ABSL_FLAG(std::string, python, "/usr/bin/python3", "Python with torch; empty = skip baseline");
ABSL_FLAG(std::string, baseline_script, RLHF_BENCH_BASELINE_PY, "path of model_baseline.py");
ABSL_FLAG(double, min_seconds, 1.0, "repeat each case until this much time (max 5 runs); best run counts");
ABSL_FLAG(std::string, json_out, "", "also write the results as JSON to this file");

namespace rlhf {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

struct Case {
  std::string kind;  // "forward" | "generate"
  int64_t batch;
  int64_t len;       // forward: sequence length; generate: prompt length
  int64_t new_tokens = 0;
  std::string Spec() const {
    return kind == "forward" ? absl::StrCat(kind, ":", batch, ":", len)
                             : absl::StrCat(kind, ":", batch, ":", len, ":", new_tokens);
  }
};

std::vector<Case> CasesFor(const std::string& preset) {
  if (preset == "gpt2-small") {
    return {{"forward", 1, 128}, {"forward", 32, 32}, {"generate", 1, 32, 32}, {"generate", 32, 32, 64}};
  }
  return {{"forward", 1, 128}, {"forward", 32, 128}, {"generate", 1, 32, 64}, {"generate", 32, 32, 64}};
}

// Matmul parameters touched per token (Linear weights + unembedding).
double MatmulParams(const ModelConfig& c) {
  const double d = c.d_model, D = c.head_dim();
  const double attn = d * (c.n_heads + 2.0 * c.n_kv_heads) * D + c.n_heads * D * d;
  const double mlp = c.arch == Architecture::kLlama ? 3.0 * d * c.d_ff : 2.0 * d * c.d_ff;
  return c.n_layers * (attn + mlp);
}

// FLOPs of processing `tokens` new positions after `past` cached ones, for one row, with
// logits at `logit_positions` of them.
double Flops(const ModelConfig& c, int64_t past, int64_t tokens, int64_t logit_positions) {
  double keys = 0;  // Σ over new positions of visible keys
  for (int64_t t = 0; t < tokens; ++t) keys += past + t + 1;
  return 2.0 * MatmulParams(c) * tokens + 2.0 * c.vocab_size * c.d_model * logit_positions +
         4.0 * c.d_model * keys * c.n_layers;
}

double CaseFlops(const ModelConfig& c, const Case& k) {
  if (k.kind == "forward") return k.batch * Flops(c, 0, k.len, k.len);
  double f = Flops(c, 0, k.len, 1);
  for (int64_t s = 1; s < k.new_tokens; ++s) f += Flops(c, k.len + s - 1, 1, 1);
  return k.batch * f;
}

double SgemmGflops() {
  const int64_t n = 2048;
  auto a = torch::randn({n, n});
  auto b = torch::randn({n, n});
  auto out = torch::empty({n, n});
  double best = 1e9;
  for (int i = 0; i < 4; ++i) {
    const auto t0 = Clock::now();
    at::mm_out(out, a, b);
    best = std::min(best, Seconds(t0, Clock::now()));
  }
  return 2.0 * n * n * n / best / 1e9;
}

// Best-of timing of one case in C++.
double TimeCase(TransformerLM& model, const Case& k, double min_seconds) {
  const int64_t V = model->config().vocab_size;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  double best = 1e30, total = 0;
  for (int reps = 0; reps < 1 || (total < min_seconds && reps < 5); ++reps) {
    double dt = 0;
    if (k.kind == "forward") {
      c10::InferenceMode guard;
      auto ids = at::randint(V, {k.batch, k.len}, gen, torch::kLong);
      const auto t0 = Clock::now();
      auto out = model->forward(ids);
      dt = Seconds(t0, Clock::now());
    } else {
      auto ids = at::randint(V, {k.batch, k.len}, gen, torch::kLong);
      std::vector<std::vector<int32_t>> prompts(k.batch);
      std::vector<uint64_t> seeds(k.batch);
      for (int64_t b = 0; b < k.batch; ++b) {
        seeds[b] = 7 + b;
        for (int64_t t = 0; t < k.len; ++t) prompts[b].push_back(static_cast<int32_t>(ids[b][t].item<int64_t>()));
      }
      SamplingOptions o;
      o.temperature = 1.0;
      o.max_new_tokens = k.new_tokens;
      const auto t0 = Clock::now();
      auto r = Generate(model, prompts, seeds, o);
      dt = Seconds(t0, Clock::now());
      if (!r.ok()) {
        std::fprintf(stderr, "generate failed: %s\n", std::string(r.status().message()).c_str());
        std::exit(1);
      }
    }
    best = std::min(best, dt);
    total += dt;
  }
  return best;
}

// Runs the Python baseline for all cases of one model; returns seconds per case (or -1).
std::vector<double> RunPython(const ModelConfig& c, const std::vector<Case>& cases) {
  std::vector<double> out(cases.size(), -1);
  const std::string python = absl::GetFlag(FLAGS_python);
  if (python.empty()) return out;
  std::vector<std::string> specs;
  for (const auto& k : cases) specs.push_back(k.Spec());
  const std::string config = nlohmann::json::parse(ModelConfigToJson(c)).dump();
  const std::string cmd = absl::StrCat(python, " ", absl::GetFlag(FLAGS_baseline_script),
                                       " --threads ", absl::GetFlag(FLAGS_threads),
                                       " --min_seconds ", absl::GetFlag(FLAGS_min_seconds),
                                       " --cases ", absl::StrJoin(specs, ","), " --config '",
                                       config, "'");
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr) return out;
  char line[4096];
  while (std::fgets(line, sizeof(line), pipe) != nullptr) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("case")) continue;
    for (size_t i = 0; i < cases.size(); ++i) {
      if (j["case"] == specs[i]) out[i] = j["seconds"].get<double>();
    }
  }
  const int rc = ::pclose(pipe);
  if (rc != 0) std::fprintf(stderr, "python baseline exited with status %d\n", rc);
  return out;
}

int Main() {
  const int threads = absl::GetFlag(FLAGS_threads);
  torch::set_num_threads(threads);
  std::printf("rlhf_bench_model: threads=%d\n", threads);
  const double sgemm = SgemmGflops();
  std::printf("sgemm 2048x2048x2048: %.1f GFLOP/s\n\n", sgemm);
  nlohmann::json results = {{"threads", threads}, {"sgemm_gflops", sgemm}, {"cases", nlohmann::json::array()}};

  std::printf("%-11s %-20s %10s %10s %8s %7s %10s %8s\n", "model", "case(b:len[:new])", "tokens",
              "C++ tok/s", "GFLOP/s", "%sgemm", "Py tok/s", "C++/Py");
  for (const auto& preset : absl::StrSplit(absl::GetFlag(FLAGS_models), ',', absl::SkipEmpty())) {
    auto config = ModelConfigPreset(std::string(preset));
    if (!config.ok()) {
      std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
      return 1;
    }
    torch::manual_seed(0);
    TransformerLM model(*config);
    model->eval();
    const auto cases = CasesFor(std::string(preset));
    {  // warm up allocator, kernels and thread pool
      c10::InferenceMode guard;
      model->forward(torch::zeros({1, 8}, torch::kLong));
    }
    std::vector<double> cpp;
    for (const auto& k : cases) cpp.push_back(TimeCase(model, k, absl::GetFlag(FLAGS_min_seconds)));
    const auto py = RunPython(*config, cases);
    for (size_t i = 0; i < cases.size(); ++i) {
      const auto& k = cases[i];
      const double tokens = k.kind == "forward" ? k.batch * k.len : k.batch * k.new_tokens;
      const double gflops = CaseFlops(*config, k) / cpp[i] / 1e9;
      const std::string case_name = k.Spec().substr(k.kind == "forward" ? 0 : 0);
      std::printf("%-11s %-20s %10.0f %10.0f %8.1f %6.1f%% %10s %8s\n", std::string(preset).c_str(),
                  case_name.c_str(), tokens, tokens / cpp[i], gflops, 100.0 * gflops / sgemm,
                  py[i] > 0 ? absl::StrFormat("%.0f", tokens / py[i]).c_str() : "n/a",
                  py[i] > 0 ? absl::StrFormat("%.2f", py[i] / cpp[i]).c_str() : "n/a");
      std::fflush(stdout);
      results["cases"].push_back({{"model", std::string(preset)},
                                  {"case", k.Spec()},
                                  {"tokens", tokens},
                                  {"cpp_seconds", cpp[i]},
                                  {"cpp_tokens_per_s", tokens / cpp[i]},
                                  {"gflops", gflops},
                                  {"fraction_of_sgemm", gflops / sgemm},
                                  {"python_seconds", py[i]},
                                  {"speedup_vs_python", py[i] > 0 ? py[i] / cpp[i] : 0.0}});
    }
  }
  std::printf("\ntokens: forward = batch x len processed; generate = batch x new tokens sampled "
              "(prompt pass included in the time)\n");
  if (const std::string path = absl::GetFlag(FLAGS_json_out); !path.empty()) {
    FILE* f = std::fopen(path.c_str(), "w");
    if (f != nullptr) {
      std::fputs(results.dump(2).c_str(), f);
      std::fclose(f);
    }
  }
  return 0;
}

}  // namespace
}  // namespace rlhf

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return rlhf::Main();
}
