// rlhf_bench_generation: the actor's generation workload, static vs continuous batching,
// on mixed response lengths, as ratios measured in the same run (runs interleaved).
//
//   static      the actor's way: prompts in chunks of --batch through Generate; rows that
//               finish drop out and the chunk runs until its longest response ends.
//   continuous  GenerateContinuous with max_batch = --batch: a finished row is refilled
//               with the next prompt, so the batch stays full until the prompts run out.
//
// Mixed lengths: --stop_tokens random token ids end a response (a random-weight model
// samples nearly uniformly, so lengths are roughly geometric with mean
// vocab / stop_tokens, capped at --max_new_tokens). Busy fraction = sampled tokens /
// (batch x sampling rounds): how full the batch was kept.
//
//   rlhf_bench_generation [--models=tiny,small] [--prompts=96] [--batch=16]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "core/model/generation.h"
#include "core/model/model.h"
#include "core/model/threads.h"

ABSL_FLAG(int, threads, 2, "intra-op threads");
ABSL_FLAG(std::string, models, "tiny,small", "comma-separated model presets");
ABSL_FLAG(int, prompts, 96, "prompts per run");
ABSL_FLAG(int, batch, 16, "batch rows (static chunk size / continuous max_batch)");
ABSL_FLAG(int, max_new_tokens, 64, "response cap");
ABSL_FLAG(int, stop_tokens, 12, "how many token ids end a response");
ABSL_FLAG(int, reps, 3, "interleaved runs per mode; the best counts");

namespace rlhf {
namespace {

using Clock = std::chrono::steady_clock;

struct Run {
  double seconds = 1e30;
  int64_t tokens = 0;
  int64_t rounds = 0;  // sampling rounds (batched forward calls that sample)
};

int Main() {
  ConfigureComputeThreads(absl::GetFlag(FLAGS_threads));
  std::printf("rlhf_bench_generation: %s\n", ComputeThreadsSummary().c_str());
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    char buf[128] = {0};
    if (std::fgets(buf, sizeof(buf), f) != nullptr) std::printf("load average: %s", buf);
    std::fclose(f);
  }
  const int B = absl::GetFlag(FLAGS_batch);
  std::printf("%d prompts, batch %d, max_new_tokens %d, %d stop tokens\n\n",
              absl::GetFlag(FLAGS_prompts), B, absl::GetFlag(FLAGS_max_new_tokens),
              absl::GetFlag(FLAGS_stop_tokens));
  std::printf("%-8s %-11s %8s %8s %9s %6s %8s\n", "model", "mode", "tokens", "rounds", "tok/s",
              "busy", "speedup");
  for (absl::string_view preset : absl::StrSplit(absl::GetFlag(FLAGS_models), ',', absl::SkipEmpty())) {
    auto config = ModelConfigPreset(std::string(preset));
    if (!config.ok()) {
      std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
      return 1;
    }
    torch::manual_seed(0);
    TransformerLM model(*config);
    model->eval();
    const int64_t V = config->vocab_size;
    std::vector<std::vector<int32_t>> prompts;
    std::vector<uint64_t> seeds;
    for (int i = 0; i < absl::GetFlag(FLAGS_prompts); ++i) {
      std::vector<int32_t> p(8 + (i * 7) % 25);
      for (size_t t = 0; t < p.size(); ++t) p[t] = static_cast<int32_t>((i * 131 + t * 17) % V);
      prompts.push_back(p);
      seeds.push_back(1000 + i);
    }
    SamplingOptions o;
    o.temperature = 1.0;
    o.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
    for (int s = 0; s < absl::GetFlag(FLAGS_stop_tokens); ++s) {
      o.stop_tokens.push_back(static_cast<int32_t>((s * 97 + 13) % V));
    }
    Run stat, cont;
    for (int rep = 0; rep < absl::GetFlag(FLAGS_reps); ++rep) {
      {
        Run r;
        const auto t0 = Clock::now();
        for (size_t i = 0; i < prompts.size(); i += B) {
          const size_t end = std::min(prompts.size(), i + B);
          std::vector<std::vector<int32_t>> chunk(prompts.begin() + i, prompts.begin() + end);
          std::vector<uint64_t> chunk_seeds(seeds.begin() + i, seeds.begin() + end);
          auto g = Generate(model, chunk, chunk_seeds, o);
          if (!g.ok()) {
            std::fprintf(stderr, "%s\n", g.status().ToString().c_str());
            return 1;
          }
          for (const auto& resp : g->responses) r.tokens += static_cast<int64_t>(resp.size());
          r.rounds += g->decode_steps + 1;
        }
        r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
        if (r.seconds < stat.seconds) stat = r;
      }
      {
        Run r;
        ContinuousBatchingStats st;
        const auto t0 = Clock::now();
        auto g = GenerateContinuous(model, prompts, seeds, o, B, &st);
        r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
        if (!g.ok()) {
          std::fprintf(stderr, "%s\n", g.status().ToString().c_str());
          return 1;
        }
        for (const auto& resp : g->responses) r.tokens += static_cast<int64_t>(resp.size());
        r.rounds = st.decode_steps;
        if (r.seconds < cont.seconds) cont = r;
      }
    }
    for (const auto* r : {&stat, &cont}) {
      std::printf("%-8s %-11s %8lld %8lld %9.0f %5.0f%% %8s\n", std::string(preset).c_str(),
                  r == &stat ? "static" : "continuous", static_cast<long long>(r->tokens),
                  static_cast<long long>(r->rounds), r->tokens / r->seconds,
                  100.0 * r->tokens / (static_cast<double>(B) * r->rounds),
                  r == &stat ? "1.00" : std::to_string(stat.seconds / cont.seconds).substr(0, 4).c_str());
      std::fflush(stdout);
    }
  }
  std::printf("\nbusy = tokens / (batch x rounds); speedup = static seconds / continuous seconds "
              "(same prompts, seeds and tokens)\n");
  return 0;
}

}  // namespace
}  // namespace rlhf

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return rlhf::Main();
}
