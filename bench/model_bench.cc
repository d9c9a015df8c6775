// rlhf_bench_model: forward, generation and training-step throughput of the transformer,
// as ratios measured in the same run (design.md §7):
//   - the machine's limits, measured here: sgemm rate (a large torch::mm) and read
//     bandwidth (a sum over a buffer far larger than the caches);
//   - our tokens/s and GFLOP/s, as a fraction of sgemm and of the roofline
//     max(FLOPs / sgemm, weight bytes read / bandwidth) (what B = 1 decoding is bound by);
//   - the same model and loop in plain PyTorch-Python (bench/model_baseline.py, by
//     /usr/bin/python3), one child per --python_threads entry, runs interleaved with ours
//     so both see the same machine load; the fastest child is the baseline.
// Both sides' thread counts and BLAS libraries are printed: ours load OpenBLAS's OpenMP
// build (one pool, core/model/threads.h); Python loads the machine's libblas.so.3.
//
// FLOPs: 2 x (matmul parameters: every Linear + the unembedding) per processed token,
// plus attention 4 x d_model x (keys attended) per token per layer, counting only the
// causally visible keys. Generation counts the prompt pass (last-position logits only)
// and every decode step. Embedding lookups, norms and softmax are not counted. Training
// steps (3x the forward FLOPs; no optimizer step, on both sides): "train" is forward +
// next-token cross-entropy + backward (the SFT step); "rm" the reward trainer's step
// (the trunk with a scalar head, no unembedding; score at the last token; pairwise
// -log sigmoid over rows 2i > 2i+1; our RewardPairLoss and ScoreAtLastToken); "ppo" the
// learner's policy step (token log-probs, PPO-clip against fixed behaviour log-probs and
// per-sequence advantages on the response half; our TokenLogProbs and PpoClipLoss).
//
//   rlhf_bench_model --threads=2 [--models=tiny,gpt2-small] [--python_threads=1,2]
//       [--device=cuda] [--train_dtype=bf16]
//
// --device runs both sides on that device (C++: core/model/device.h; Python: the same
// string to torch), timing after a device synchronize. --train_dtype=bf16 runs the train
// case under autocast on both sides (core/model/torch_compat.h, torch.autocast).
//
// --check_kv_parity (issue 20's GPU check (1)): no timing; on --device, for each model
// in --models, decodes greedily with a KV cache (prompt pass + one token per step,
// left-padded batch) and compares every step's logits with a full forward over the
// whole sequence, and Generate()'s reported log-probs with ResponseLogProbs of a full
// forward. Prints the largest differences; exits 1 when one exceeds --parity_tolerance.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/profiler_legacy.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/machine_limits.h"
#include "core/model/chunked_unembedding.h"
#include "core/model/device.h"
#include "core/model/generation.h"
#include "core/model/logprobs.h"
#include "core/model/model.h"
#include "core/model/threads.h"
#include "core/model/torch_compat.h"
#include "core/rl/losses.h"
#include "core/status_macros.h"
#include "core/train/reward_trainer.h"

ABSL_FLAG(int, threads, 2, "intra-op threads for LibTorch (C++ and Python alike)");
ABSL_FLAG(std::string, models, "tiny,gpt2-small", "comma-separated model presets");
ABSL_FLAG(std::string, python, "/usr/bin/python3", "Python with torch; empty = skip baseline");
ABSL_FLAG(std::string, python_threads, "1,2",
          "torch.set_num_threads values for the Python baseline, one child each; the fastest "
          "per case is reported");
ABSL_FLAG(std::string, cases, "",
          "override the cases for every model: comma-separated kind:batch:len[:new]");
ABSL_FLAG(std::string, baseline_script, RLHF_BENCH_BASELINE_PY, "path of model_baseline.py");
ABSL_FLAG(double, min_seconds, 1.0,
          "repeat each case (C++ and Python runs interleaved) until each side has run this long, "
          "at least --min_reps and at most 5 times; the best run counts");
ABSL_FLAG(int, min_reps, 2, "minimum runs per case and side");
ABSL_FLAG(double, quiet_ms, 250,
          "idle gap before every timed run, so the other side's idle threads have stopped "
          "spinning (OpenBLAS's pthread workers spin ~0.1 s after each call, libgomp's less); "
          "on 2 cores a spinning neighbour halves a run");
ABSL_FLAG(std::string, json_out, "", "also write the results as JSON to this file");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N (both sides run there)");
ABSL_FLAG(std::string, train_dtype, "fp32", "train case precision: fp32 or bf16 (autocast)");
ABSL_FLAG(
    std::string, loss_path, "chunked",
    "train and ppo cases: chunked (the trainers' way: only target rows unembedded, a "
    "block at a time, core/model/chunked_unembedding.h) or logits (whole [rows, vocab] logits, "
    "then log_softmax, as the Python baseline)");
ABSL_FLAG(bool, profile, false,
          "after timing each case, run its C++ side once more under LibTorch's profiler and "
          "print the ops that took the most self time (where a case's time goes)");
ABSL_FLAG(bool, check_kv_parity, false,
          "instead of timing: KV-cache decoding vs full forward on --device (see above)");
ABSL_FLAG(double, parity_tolerance, 1e-4, "--check_kv_parity: max abs logit / log-prob diff");
ABSL_FLAG(int, parity_steps, 16, "--check_kv_parity: decode steps per model");

namespace rlhf {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

struct Case {
  // "forward" | "generate" | "train" (LM step: next-token cross-entropy, the SFT step)
  // | "rm" (reward-model step) | "ppo" (the learner's policy step); no optimizer step.
  std::string kind;
  int64_t batch;
  int64_t len;       // forward: sequence length; generate: prompt length
  int64_t new_tokens = 0;
  std::string Spec() const {
    return kind != "generate" ? absl::StrCat(kind, ":", batch, ":", len)
                             : absl::StrCat(kind, ":", batch, ":", len, ":", new_tokens);
  }
};

std::vector<Case> CasesFor(const std::string& preset) {
  if (const std::string flag = absl::GetFlag(FLAGS_cases); !flag.empty()) {
    std::vector<Case> cases;
    for (absl::string_view spec : absl::StrSplit(flag, ',', absl::SkipEmpty())) {
      std::vector<std::string> f = absl::StrSplit(spec, ':');
      Case k{f[0], std::stoll(f.at(1)), std::stoll(f.at(2))};
      if (k.kind == "generate") k.new_tokens = std::stoll(f.at(3));
      cases.push_back(k);
    }
    return cases;
  }
  if (preset == "gpt2-small") {
    return {{"forward", 1, 128},
            {"forward", 8, 64},
            {"generate", 1, 32, 16},
            {"generate", 8, 32, 32},
            {"generate", 32, 32, 32},
            {"generate", 64, 32, 32},
            {"train", 4, 64},
            {"rm", 4, 64},
            {"ppo", 4, 64}};
  }
  return {{"forward", 1, 128},     {"forward", 32, 128},     {"generate", 1, 32, 64},
          {"generate", 8, 32, 64}, {"generate", 32, 32, 64}, {"generate", 64, 32, 64},
          {"train", 32, 128},      {"rm", 32, 128},          {"ppo", 32, 128}};
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

// Bytes of weights one forward call reads: every matmul parameter, float32.
double WeightBytes(const ModelConfig& c) {
  return 4.0 * (MatmulParams(c) + static_cast<double>(c.vocab_size) * c.d_model);
}

bool IsTrainingCase(const Case& k) {
  return k.kind == "train" || k.kind == "rm" || k.kind == "ppo";
}

// Forward calls a case makes (generation: the prompt pass + new_tokens - 1 decode steps).
int64_t CaseCalls(const Case& k) { return k.kind == "generate" ? k.new_tokens : 1; }

double CaseFlops(const ModelConfig& c, const Case& k) {
  if (k.kind == "forward") return k.batch * Flops(c, 0, k.len, k.len);
  // Training: backward = 2x forward. The reward model has no unembedding; the policy step
  // needs the log-probs of the response half only (whatever a side computes beyond that,
  // e.g. whole logits, or the chunked path's second unembedding in backward, is not
  // counted: GFLOP/s is the step's necessary work over its time).
  if (k.kind == "train") return 3 * k.batch * Flops(c, 0, k.len, k.len);
  if (k.kind == "ppo") return 3 * k.batch * Flops(c, 0, k.len, k.len - k.len / 2);
  if (k.kind == "rm") return 3 * k.batch * Flops(c, 0, k.len, 0);
  double f = Flops(c, 0, k.len, 1);
  for (int64_t s = 1; s < k.new_tokens; ++s) f += Flops(c, k.len + s - 1, 1, 1);
  return k.batch * f;
}

// The device of this run (--device, parsed once in Main).
torch::Device& BenchDevice() {
  static torch::Device device = torch::kCPU;
  return device;
}

// A model of `config` with the bench's fixed seed, in eval mode, on `device`.
absl::StatusOr<TransformerLM> BuildModel(const ModelConfig& config, torch::Device device) {
  torch::manual_seed(0);
  TransformerLM model(config);
  model->eval();
  RLHF_RETURN_IF_ERROR(MoveModelToDevice(model, device));
  return model;
}

// One timed run of a case in C++. `rm` is the reward model (the same trunk with a
// scalar head and no unembedding) for "rm" cases.
double RunCpp(TransformerLM& model, TransformerLM& rm, const Case& k, at::Generator& gen) {
  const int64_t V = model->config().vocab_size;
  const torch::Device dev = BenchDevice();
  if (k.kind == "rm") {  // the reward trainer's step: rows 2i preferred over 2i+1
    auto ids = at::randint(V, {k.batch, k.len}, gen, torch::kLong).to(dev);
    auto mask = torch::ones({k.batch, k.len}, torch::kLong).to(dev);
    std::vector<IndexPair> pairs;
    for (int i = 0; 2 * i + 1 < k.batch; ++i) pairs.push_back({2 * i, 2 * i + 1});
    compat::Synchronize(dev);
    const auto t0 = Clock::now();
    const auto out = rm->forward(ids, mask);
    RewardPairLoss(ScoreAtLastToken(out.scalar, mask), pairs).backward();
    compat::Synchronize(dev);
    const double dt = Seconds(t0, Clock::now());
    rm->zero_grad(/*set_to_none=*/true);
    return dt;
  }
  if (k.kind == "ppo") {  // the learner's policy step: PPO-clip on the response half
    auto ids = at::randint(V, {k.batch, k.len}, gen, torch::kLong).to(dev);
    auto mask = torch::zeros({k.batch, k.len - 1}, torch::kFloat32).to(dev);
    mask.narrow(1, k.len / 2 - 1, k.len - k.len / 2).fill_(1);
    torch::Tensor blogp;
    {
      torch::NoGradGuard no_grad;
      blogp = TokenLogProbs(model->forward(ids).logits.narrow(1, 0, k.len - 1),
                            ids.narrow(1, 1, k.len - 1)) +
              0.05 * at::randn({k.batch, k.len - 1}, gen).to(dev);
    }
    const auto advantages = at::randn({k.batch}, gen).to(dev);
    compat::Synchronize(dev);
    const auto t0 = Clock::now();
    torch::Tensor logp;  // [B, T - 1]: logp[:, t - 1] is token t's
    if (absl::GetFlag(FLAGS_loss_path) == "logits") {
      const auto logits = model->forward(ids).logits;
      logp = TokenLogProbs(logits.narrow(1, 0, k.len - 1), ids.narrow(1, 1, k.len - 1));
    } else {  // the learner's: only the response rows are unembedded, a block at a time
      SequenceBatch batch;
      batch.ids = ids;
      batch.response_mask = torch::zeros({k.batch, k.len}, torch::kFloat32).to(dev);
      batch.response_mask.narrow(1, k.len / 2, k.len - k.len / 2).fill_(1);
      logp = ResponseLogProbsFromHidden(model->forward_hidden(ids).hidden, model->unembedding(),
                                        batch, 1.0, /*with_entropy=*/false)
                 .logp.narrow(1, 1, k.len - 1);
    }
    PpoClipLoss(logp, blogp, advantages, mask, 0.2, LossAggregation::kTokenMean).loss.backward();
    compat::Synchronize(dev);
    const double dt = Seconds(t0, Clock::now());
    model->zero_grad(/*set_to_none=*/true);
    return dt;
  }
  if (k.kind == "train") {
    auto ids = at::randint(V, {k.batch, k.len}, gen, torch::kLong).to(dev);
    const bool bf16 = absl::GetFlag(FLAGS_train_dtype) == "bf16";
    compat::Synchronize(dev);
    const auto t0 = Clock::now();
    torch::Tensor loss;
    if (absl::GetFlag(FLAGS_loss_path) == "logits") {
      torch::Tensor logits;
      {
        compat::AutocastGuard autocast(dev, at::kBFloat16, bf16);
        logits = model->forward(ids).logits;
      }
      loss = at::nll_loss(at::log_softmax(logits.narrow(1, 0, k.len - 1).reshape({-1, V}), -1),
                          ids.narrow(1, 1, k.len - 1).reshape({-1}));
    } else {  // the SFT trainer's step
      torch::Tensor hidden;
      {
        compat::AutocastGuard autocast(dev, at::kBFloat16, bf16);
        hidden = model->forward_hidden(ids).hidden;
      }
      loss = MaskedNextTokenNll(hidden, model->unembedding(), ids,
                                torch::ones({k.batch, k.len}, torch::kFloat32).to(dev));
    }
    loss.backward();
    compat::Synchronize(dev);
    const double dt = Seconds(t0, Clock::now());
    model->zero_grad(/*set_to_none=*/true);
    return dt;
  }
  if (k.kind == "forward") {
    c10::InferenceMode guard;
    auto ids = at::randint(V, {k.batch, k.len}, gen, torch::kLong).to(dev);
    compat::Synchronize(dev);
    const auto t0 = Clock::now();
    auto out = model->forward(ids);
    compat::Synchronize(dev);
    return Seconds(t0, Clock::now());
  }
  auto ids = at::randint(V, {k.batch, k.len}, gen, torch::kLong);
  std::vector<std::vector<int32_t>> prompts(k.batch);
  std::vector<uint64_t> seeds(k.batch);
  for (int64_t b = 0; b < k.batch; ++b) {
    seeds[b] = 7 + b;
    for (int64_t t = 0; t < k.len; ++t) {
      prompts[b].push_back(static_cast<int32_t>(ids[b][t].item<int64_t>()));
    }
  }
  SamplingOptions o;
  o.temperature = 1.0;
  o.max_new_tokens = k.new_tokens;
  const auto t0 = Clock::now();
  auto r = Generate(model, prompts, seeds, o);
  const double dt = Seconds(t0, Clock::now());
  if (!r.ok()) {
    std::fprintf(stderr, "generate failed: %s\n", std::string(r.status().message()).c_str());
    std::exit(1);
  }
  return dt;
}

// The Python baseline as a child process in --serve mode: one case per line in, one
// JSON line out, so its runs interleave with the C++ runs under the same machine load.
class PythonBaseline {
 public:
  static std::unique_ptr<PythonBaseline> Start(const ModelConfig& c, int num_threads) {
    const std::string python = absl::GetFlag(FLAGS_python);
    if (python.empty()) return nullptr;
    const std::string script = absl::GetFlag(FLAGS_baseline_script);
    const std::string threads = std::to_string(num_threads);
    const std::string config = nlohmann::json::parse(ModelConfigToJson(c)).dump();
    // Close-on-exec: a second baseline child must not inherit this child's pipe ends, or
    // closing our end of its stdin would never reach it (EOF) and the destructor's
    // waitpid would wait forever. dup2 clears the flag on the child's own 0 and 1.
    int to_child[2], from_child[2];
    if (::pipe2(to_child, O_CLOEXEC) != 0 || ::pipe2(from_child, O_CLOEXEC) != 0) return nullptr;
    const pid_t pid = ::fork();
    if (pid < 0) return nullptr;
    if (pid == 0) {
      ::dup2(to_child[0], 0);
      ::dup2(from_child[1], 1);
      ::close(to_child[1]);
      ::close(from_child[0]);
      const std::string device = absl::GetFlag(FLAGS_device);
      const std::string train_dtype = absl::GetFlag(FLAGS_train_dtype);
      ::execl(python.c_str(), python.c_str(), script.c_str(), "--serve", "--threads",
              threads.c_str(), "--config", config.c_str(), "--device", device.c_str(),
              "--train_dtype", train_dtype.c_str(), static_cast<char*>(nullptr));
      std::perror("exec python baseline");
      ::_exit(127);
    }
    ::close(to_child[0]);
    ::close(from_child[1]);
    auto p = std::unique_ptr<PythonBaseline>(new PythonBaseline());
    p->pid_ = pid;
    p->in_ = ::fdopen(to_child[1], "w");
    p->out_ = ::fdopen(from_child[0], "r");
    const auto ready = p->ReadLine();
    if (!ready.contains("ready")) {
      std::fprintf(stderr, "python baseline did not start; continuing without it\n");
      return nullptr;
    }
    p->threads_ = ready.value("threads", num_threads);
    p->blas_ = ready.value("blas", std::string("unknown"));
    return p;
  }
  int threads() const { return threads_; }
  const std::string& blas() const { return blas_; }
  ~PythonBaseline() {
    if (in_ != nullptr) std::fclose(in_);
    if (out_ != nullptr) std::fclose(out_);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  // Seconds of one run of `spec`, or -1 on failure.
  double Run(const std::string& spec) {
    std::fprintf(in_, "%s\n", spec.c_str());
    std::fflush(in_);
    const auto j = ReadLine();
    return j.contains("seconds") ? j["seconds"].get<double>() : -1;
  }

 private:
  nlohmann::json ReadLine() {
    std::string line;
    char buf[4096];
    while (std::fgets(buf, sizeof(buf), out_) != nullptr) {
      line += buf;
      if (!line.empty() && line.back() == '\n') break;
    }
    auto j = nlohmann::json::parse(line, nullptr, false);
    return j.is_discarded() ? nlohmann::json::object() : j;
  }
  pid_t pid_ = -1;
  int threads_ = 0;
  std::string blas_;
  FILE* in_ = nullptr;
  FILE* out_ = nullptr;
};

int CheckKvParity();

// One C++ run of `k` under LibTorch's (legacy, CPU) profiler; prints the `top` ops by
// self time (an op's time minus the ops it called) with their share of the run.
void ProfileCase(TransformerLM& model, TransformerLM& rm, const Case& k, at::Generator& gen,
                 int top) {
  namespace prof = torch::autograd::profiler;
  struct Total {
    double self_us = 0;
    int64_t calls = 0;
  };
  std::map<std::string, Total> totals;
  double run_us = 0;
  {
    prof::TLSLegacyProfilerGuard guard(
        torch::profiler::impl::ProfilerConfig(torch::profiler::impl::ProfilerState::CPU),
        [&](const prof::thread_event_lists& lists) {
          for (const auto& events : lists) {
            struct Open {
              const prof::LegacyEvent* push;
              double child_us;
            };
            std::vector<Open> stack;
            for (const auto& e : events) {
              if (e.kind() == prof::EventKind::PushRange) {
                stack.push_back({&e, 0});
              } else if (e.kind() == prof::EventKind::PopRange && !stack.empty()) {
                const Open open = stack.back();
                stack.pop_back();
                const double us = open.push->cpuElapsedUs(e);
                Total& t = totals[open.push->name()];
                t.self_us += us - open.child_us;
                ++t.calls;
                if (!stack.empty()) stack.back().child_us += us;
              }
            }
          }
        });
    run_us = RunCpp(model, rm, k, gen) * 1e6;
  }
  std::vector<std::pair<std::string, Total>> sorted(totals.begin(), totals.end());
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.second.self_us > b.second.self_us; });
  std::printf("  profile of %s (%.1f ms under the profiler; self time per op):\n", k.Spec().c_str(),
              run_us / 1e3);
  for (size_t i = 0; i < sorted.size() && i < static_cast<size_t>(top); ++i) {
    const auto& [name, t] = sorted[i];
    std::printf("    %-36s %9.2f ms %5.1f%% %8lld calls\n", name.c_str(), t.self_us / 1e3,
                100.0 * t.self_us / run_us, static_cast<long long>(t.calls));
  }
}

int Main() {
  {
    auto device = ParseDevice(absl::GetFlag(FLAGS_device));
    if (!device.ok()) {
      std::fprintf(stderr, "--device: %s\n", std::string(device.status().message()).c_str());
      return 2;
    }
    BenchDevice() = *device;
    const std::string dtype = absl::GetFlag(FLAGS_train_dtype);
    if (dtype != "fp32" && dtype != "bf16") {
      std::fprintf(stderr, "--train_dtype must be fp32 or bf16, got %s\n", dtype.c_str());
      return 2;
    }
  }
  if (absl::GetFlag(FLAGS_check_kv_parity)) return CheckKvParity();
  const int threads = ConfigureComputeThreads(absl::GetFlag(FLAGS_threads));
  std::vector<int> py_threads;
  for (absl::string_view t : absl::StrSplit(absl::GetFlag(FLAGS_python_threads), ',',
                                            absl::SkipEmpty())) {
    py_threads.push_back(std::stoi(std::string(t)));
  }
  std::printf("rlhf_bench_model: C++ %s; device %s; LibTorch %s; train %s\n",
              ComputeThreadsSummary().c_str(), BenchDevice().str().c_str(),
              compat::TorchVersion().c_str(), absl::GetFlag(FLAGS_train_dtype).c_str());
  // The best sgemm rate seen so far (re-measured before each model): a rate measured
  // while something else ran would flatter every fraction below.
  double sgemm = bench::SgemmGflops(BenchDevice());
  const double bandwidth = bench::ReadBandwidthBytesPerSecond(BenchDevice());
  std::printf("sgemm 2048x2048x2048: %.1f GFLOP/s; read bandwidth %.1f GB/s\n", sgemm,
              bandwidth / 1e9);
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {  // other work on the machine
    char buf[128] = {0};
    if (std::fgets(buf, sizeof(buf), f) != nullptr) std::printf("load average: %s", buf);
    std::fclose(f);
  }
  nlohmann::json results = {{"threads", threads},
                            {"device", BenchDevice().str()},
                            {"torch_version", compat::TorchVersion()},
                            {"train_dtype", absl::GetFlag(FLAGS_train_dtype)},
                            {"compute", ComputeThreadsSummary()},
                            {"sgemm_gflops", sgemm},
                            {"read_bandwidth_gbs", bandwidth / 1e9},
                            {"cases", nlohmann::json::array()}};

  for (const auto& preset : absl::StrSplit(absl::GetFlag(FLAGS_models), ',', absl::SkipEmpty())) {
    auto config = ModelConfigPreset(std::string(preset));
    if (!config.ok()) {
      std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
      return 1;
    }
    ModelConfig rm_config = *config;  // as RewardModelFromSft builds it
    rm_config.lm_head = false;
    rm_config.scalar_head = true;
    auto built = BuildModel(*config, BenchDevice());
    auto built_rm = BuildModel(rm_config, BenchDevice());
    for (const absl::Status& s : {built.status(), built_rm.status()}) {
      if (!s.ok()) {
        std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
        return 1;
      }
    }
    TransformerLM model = *built, rm = *built_rm;
    const auto cases = CasesFor(std::string(preset));
    sgemm = std::max(sgemm, bench::SgemmGflops(BenchDevice()));
    std::printf("%s: fractions of sgemm use %.1f GFLOP/s (the best measured so far)\n",
                std::string(preset).c_str(), sgemm);
    {  // warm up allocator, kernels and thread pool
      c10::InferenceMode guard;
      model->forward(torch::zeros({1, 8}, torch::kLong).to(BenchDevice()));
    }
    std::vector<std::unique_ptr<PythonBaseline>> pythons;
    for (int t : py_threads) {
      if (auto p = PythonBaseline::Start(*config, t)) {
        std::printf("%s: Python baseline child threads=%d blas=%s\n", std::string(preset).c_str(),
                    p->threads(), p->blas().c_str());
        pythons.push_back(std::move(p));
      }
    }
    std::printf("\n%-11s %-18s %7s %9s %8s %7s %7s %9s %8s %7s\n", "model", "case(b:len[:new])",
                "tokens", "C++ tok/s", "GFLOP/s", "%sgemm", "%roof", "Py tok/s", "Py thr",
                "C++/Py");
    std::vector<double> cpp(cases.size(), 1e30);
    std::vector<std::vector<double>> py(cases.size(), std::vector<double>(pythons.size(), 1e30));
    auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
    for (size_t i = 0; i < cases.size(); ++i) {
      double cpp_total = 0;
      std::vector<double> py_total(pythons.size(), 0);
      for (int rep = 0; rep < 5; ++rep) {
        bool enough = rep >= absl::GetFlag(FLAGS_min_reps) &&
                      cpp_total >= absl::GetFlag(FLAGS_min_seconds);
        for (size_t p = 0; p < pythons.size(); ++p) {
          enough = enough && (pythons[p] == nullptr || py_total[p] >= absl::GetFlag(FLAGS_min_seconds));
        }
        if (enough) break;
        const auto quiet = absl::Milliseconds(absl::GetFlag(FLAGS_quiet_ms));
        absl::SleepFor(quiet);
        const double c = RunCpp(model, rm, cases[i], gen);
        cpp[i] = std::min(cpp[i], c);
        cpp_total += c;
        for (size_t p = 0; p < pythons.size(); ++p) {
          if (pythons[p] == nullptr) continue;
          absl::SleepFor(quiet);
          const double t = pythons[p]->Run(cases[i].Spec());
          if (t < 0) {
            pythons[p].reset();
            py[i][p] = 1e30;
            continue;
          }
          py[i][p] = std::min(py[i][p], t);
          py_total[p] += t;
        }
      }
      size_t best_py = 0;
      for (size_t p = 0; p < py[i].size(); ++p) {
        if (py[i][p] < py[i][best_py]) best_py = p;
      }
      const double py_s = py[i].empty() || py[i][best_py] >= 1e29 ? -1.0 : py[i][best_py];
      const int py_thr = py_s > 0 ? py_threads[best_py] : 0;
      const auto& k = cases[i];
      const double tokens = k.kind != "generate" ? k.batch * k.len : k.batch * k.new_tokens;
      const double flops = CaseFlops(*config, k);
      const double gflops = flops / cpp[i] / 1e9;
      const double roof_s =
          std::max(flops / (sgemm * 1e9),
                   (IsTrainingCase(k) ? 3 : 1) * CaseCalls(k) * WeightBytes(*config) / bandwidth);
      const std::string case_name = k.Spec();
      std::printf("%-11s %-18s %7.0f %9.0f %8.1f %6.1f%% %6.1f%% %9s %8s %7s\n",
                  std::string(preset).c_str(), case_name.c_str(), tokens, tokens / cpp[i], gflops,
                  100.0 * gflops / sgemm, 100.0 * roof_s / cpp[i],
                  py_s > 0 ? absl::StrFormat("%.0f", tokens / py_s).c_str() : "n/a",
                  py_s > 0 ? absl::StrCat(py_thr).c_str() : "-",
                  py_s > 0 ? absl::StrFormat("%.2f", py_s / cpp[i]).c_str() : "n/a");
      std::fflush(stdout);
      if (absl::GetFlag(FLAGS_profile)) ProfileCase(model, rm, k, gen, /*top=*/12);
      nlohmann::json py_all = nlohmann::json::object();
      for (size_t p = 0; p < py[i].size(); ++p) {
        if (py[i][p] < 1e29) py_all[absl::StrCat("threads_", py_threads[p])] = py[i][p];
      }
      results["cases"].push_back({{"model", std::string(preset)},
                                  {"case", k.Spec()},
                                  {"tokens", tokens},
                                  {"cpp_seconds", cpp[i]},
                                  {"cpp_tokens_per_s", tokens / cpp[i]},
                                  {"gflops", gflops},
                                  {"fraction_of_sgemm", gflops / sgemm},
                                  {"sgemm_gflops_used", sgemm},
                                  {"fraction_of_roofline", roof_s / cpp[i]},
                                  {"python_seconds", py_s},
                                  {"python_threads", py_thr},
                                  {"python_seconds_by_threads", py_all},
                                  {"speedup_vs_python", py_s > 0 ? py_s / cpp[i] : 0.0}});
    }
    pythons.clear();
    std::printf("\n");
  }
  const double sgemm_end = bench::SgemmGflops(BenchDevice());
  std::printf(
      "sgemm at the end: %.1f GFLOP/s (fractions above use the best before each model, "
      "last %.1f)\n",
      sgemm_end, sgemm);
  results["sgemm_gflops_end"] = sgemm_end;
  std::printf(
      "tokens: forward/train/rm/ppo = batch x len processed; generate = batch x new tokens "
      "sampled (prompt pass included in the time)\n"
      "%%roof: roofline time max(FLOPs / sgemm, weight bytes read / bandwidth) over "
      "the measured time\n");
  if (const std::string path = absl::GetFlag(FLAGS_json_out); !path.empty()) {
    FILE* f = std::fopen(path.c_str(), "w");
    if (f != nullptr) {
      std::fputs(results.dump(2).c_str(), f);
      std::fclose(f);
    }
  }
  return 0;
}

// --check_kv_parity: KV-cache decoding vs a full forward, on --device, fp32.
int CheckKvParity() {
  const torch::Device dev = BenchDevice();
  const double tol = absl::GetFlag(FLAGS_parity_tolerance);
  const int steps = std::max(1, absl::GetFlag(FLAGS_parity_steps));
  bool ok = true;
  nlohmann::json results = {{"device", dev.str()},
                            {"torch_version", compat::TorchVersion()},
                            {"tolerance", tol},
                            {"models", nlohmann::json::array()}};
  std::printf("kv parity on %s (LibTorch %s), fp32, tolerance %.1e\n", dev.str().c_str(),
              compat::TorchVersion().c_str(), tol);
  std::printf("%-12s %6s %6s %14s %14s %s\n", "model", "batch", "steps", "max|dlogit|",
              "max|dlogprob|", "result");
  for (const auto& preset : absl::StrSplit(absl::GetFlag(FLAGS_models), ',', absl::SkipEmpty())) {
    auto config = ModelConfigPreset(std::string(preset));
    if (!config.ok()) {
      std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
      return 1;
    }
    auto built = BuildModel(*config, dev);
    if (!built.ok()) {
      std::fprintf(stderr, "%s\n", std::string(built.status().message()).c_str());
      return 1;
    }
    TransformerLM model = *built;
    c10::InferenceMode guard;
    const int64_t V = config->vocab_size, B = 4;
    // Left-padded prompts of lengths 12, 9, 5, 12 (padding must not change a row).
    const std::vector<int64_t> lengths = {12, 9, 5, 12};
    const int64_t P = 12;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
    torch::Tensor ids = at::randint(V, {B, P}, gen, torch::kLong);
    torch::Tensor mask = torch::ones({B, P}, torch::kLong);
    std::vector<std::vector<int32_t>> prompts(B);
    for (int64_t b = 0; b < B; ++b) {
      mask[b].narrow(0, 0, P - lengths[b]).zero_();
      for (int64_t t = P - lengths[b]; t < P; ++t) {
        prompts[b].push_back(static_cast<int32_t>(ids[b][t].item<int64_t>()));
      }
    }
    // Incremental: prompt pass, then one greedy token per step, through one KVCache.
    KVCache cache;
    torch::Tensor all_ids = ids.to(dev), all_mask = mask.to(dev);
    std::vector<torch::Tensor> step_logits;
    torch::Tensor logits = model->forward_last(all_ids, all_mask, {}, &cache).logits.select(1, 0);
    for (int s = 0; s < steps; ++s) {
      step_logits.push_back(logits);
      const torch::Tensor next = logits.argmax(-1, /*keepdim=*/true);
      all_ids = torch::cat({all_ids, next}, 1);
      all_mask = torch::cat({all_mask, torch::ones({B, 1}, all_mask.options())}, 1);
      const torch::Tensor pos = all_mask.cumsum(1).narrow(1, all_mask.size(1) - 1, 1) - 1;
      logits = model->forward_last(next, all_mask, pos, &cache).logits.select(1, 0);
    }
    // Full forward over everything: the logits that predicted each decoded token.
    const torch::Tensor full = model->forward(all_ids, all_mask).logits;
    double dlogit = 0;
    for (int s = 0; s < steps; ++s) {
      const torch::Tensor row = full.select(1, P - 1 + s);
      dlogit = std::max(dlogit, (row - step_logits[s]).abs().max().item<double>());
    }
    // Generate() on the device (sampling on the device, log-probs copied back) vs
    // ResponseLogProbs of a full forward over prompt + response.
    SamplingOptions so;
    so.temperature = 1.0;
    so.max_new_tokens = steps;
    std::vector<uint64_t> seeds = {11, 12, 13, 14};
    auto result = Generate(model, prompts, seeds, so);
    if (!result.ok()) {
      std::fprintf(stderr, "generate: %s\n", std::string(result.status().message()).c_str());
      return 1;
    }
    SequenceBatchOptions sbo;
    auto packed = MakeSequenceBatch(prompts, result->responses, sbo);
    if (!packed.ok()) return 1;
    const SequenceBatch dbatch = SequenceBatchToDevice(*packed, dev);
    const auto full_lp = PerSequenceResponseValues(
        ResponseLogProbs(
            model->forward(dbatch.ids, dbatch.attention_mask, dbatch.position_ids).logits, dbatch,
            1.0),
        dbatch);
    double dlogp = 0;
    for (int64_t b = 0; b < B; ++b) {
      for (size_t t = 0; t < full_lp[b].size(); ++t) {
        dlogp = std::max(dlogp, std::abs(double(full_lp[b][t]) - result->logprobs[b][t]));
      }
    }
    const bool pass = dlogit <= tol && dlogp <= tol;
    ok = ok && pass;
    std::printf("%-12s %6lld %6d %14.3e %14.3e %s\n", std::string(preset).c_str(),
                static_cast<long long>(B), steps, dlogit, dlogp, pass ? "PASS" : "FAIL");
    results["models"].push_back({{"model", std::string(preset)},
                                 {"batch", B},
                                 {"steps", steps},
                                 {"max_abs_logit_diff", dlogit},
                                 {"max_abs_logprob_diff", dlogp},
                                 {"pass", pass}});
  }
  results["pass"] = ok;
  if (const std::string path = absl::GetFlag(FLAGS_json_out); !path.empty()) {
    if (FILE* f = std::fopen(path.c_str(), "w")) {
      std::fputs(results.dump(2).c_str(), f);
      std::fclose(f);
    }
  }
  return ok ? 0 : 1;
}
}  // namespace
}  // namespace rlhf

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return rlhf::Main();
}
