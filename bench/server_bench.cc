// Reward / reference server throughput: dynamic batching vs one sequence per forward,
// at 1, 8 and 64 concurrent clients, over real gRPC on loopback, in one run.
//
//   build/bin/rlhf_bench_server [--preset=tiny] [--seconds=3] [--prompt_len=16]
//                               [--response_len=32] [--clients=1,8,64]
//
// Each client sends requests of one (prompt, response) sequence back to back for
// --seconds. Reported per configuration: sequences/s, mean request latency, model forward
// time per sequence (fwd_ms/seq: amortised over the batch), and two shares of time in
// the model forward: busy = Σ forward time / wall time (the batch worker's time in the
// model; the rest of the process's work — RPC, (de)serialisation, validation, batching —
// runs on gRPC threads around it), fwd/lat = forward time per request / mean request
// latency (at 1 client: the model's share of a request's server+client time; at more
// clients the remainder is mostly queueing).
#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <prometheus/registry.h>
#include <torch/utils.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "core/model/threads.h"
#include "core/tokenizer/tokenizer.h"
#include "reference_server/reference_client.h"
#include "reference_server/reference_server.h"
#include "reward_server/reward_client.h"
#include "reward_server/reward_server.h"

ABSL_FLAG(std::string, preset, "tiny", "model preset served by both servers");
ABSL_FLAG(double, seconds, 3.0, "measurement time per configuration");
ABSL_FLAG(int, prompt_len, 16, "prompt tokens per sequence");
ABSL_FLAG(int, response_len, 32, "response tokens per sequence");
ABSL_FLAG(std::string, clients, "1,8,64", "concurrent client counts");
ABSL_FLAG(int, threads, 0, "LibTorch intra-op threads (0 = default)");
ABSL_FLAG(bool, retain_freed_memory, true,
          "keep freed memory in the process as every rlhf binary does "
          "(core/model/threads.h); false = glibc's defaults, for a before/after");

namespace {

using rlhf::services::BatcherOptions;

double ForwardSeconds(prometheus::Registry& registry, const std::string& name) {
  for (const auto& family : registry.Collect()) {
    if (family.name == name && !family.metric.empty()) return family.metric[0].histogram.sample_sum;
  }
  return 0;
}

// "off": one sequence per forward; "greedy": whatever queued while the model was busy
// (max_wait 0); "dynamic": additionally wait up to 2 ms for company (the default).
BatcherOptions Batching(const std::string& mode) {
  BatcherOptions b;
  b.max_batch_sequences = mode == "off" ? 1 : 64;
  b.max_wait = mode == "dynamic" ? absl::Milliseconds(2) : absl::ZeroDuration();
  return b;
}

struct Result {
  double seq_per_s, mean_latency_ms, fwd_ms_per_seq, busy, fwd_share;
};

// Runs `clients` threads calling `call` for the configured time.
template <typename Call>
Result Drive(int clients, Call call, prometheus::Registry& registry, const std::string& metric) {
  const double fwd0 = ForwardSeconds(registry, metric);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> done{0}, failed{0};
  std::atomic<int64_t> latency_us{0};
  const absl::Time start = absl::Now();
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&] {
      while (!stop.load()) {
        const absl::Time t0 = absl::Now();
        if (call()) {
          ++done;
          latency_us += absl::ToInt64Microseconds(absl::Now() - t0);
        } else {
          ++failed;
        }
      }
    });
  }
  absl::SleepFor(absl::Seconds(absl::GetFlag(FLAGS_seconds)));
  stop = true;
  for (auto& t : threads) t.join();
  const double wall = absl::ToDoubleSeconds(absl::Now() - start);
  const double fwd = ForwardSeconds(registry, metric) - fwd0;
  if (failed > 0) std::fprintf(stderr, "  %lld failed calls\n", static_cast<long long>(failed.load()));
  Result r;
  r.seq_per_s = done / wall;
  r.mean_latency_ms = done > 0 ? latency_us / 1000.0 / done : 0;
  r.busy = fwd / wall;
  r.fwd_ms_per_seq = done > 0 ? 1000.0 * fwd / done : 0;
  r.fwd_share = done > 0 ? (fwd / done) / (r.mean_latency_ms / 1000.0) : 0;
  return r;
}

rlhf::v1::TokenSequence Sequence(int salt) {
  rlhf::v1::TokenSequence s;
  for (int i = 0; i < absl::GetFlag(FLAGS_prompt_len); ++i) s.add_prompt((i * 7 + salt) % 256);
  for (int i = 0; i < absl::GetFlag(FLAGS_response_len); ++i) s.add_response((i * 13 + salt) % 256);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_retain_freed_memory)) {
    rlhf::ConfigureComputeThreads(absl::GetFlag(FLAGS_threads));
  } else if (absl::GetFlag(FLAGS_threads) > 0) {
    at::set_num_threads(absl::GetFlag(FLAGS_threads));
  }
  std::vector<int> client_counts;
  for (absl::string_view s : absl::StrSplit(absl::GetFlag(FLAGS_clients), ',')) {
    int n = 0;
    if (absl::SimpleAtoi(s, &n) && n > 0) client_counts.push_back(n);
  }
  auto config = rlhf::ModelConfigPreset(absl::GetFlag(FLAGS_preset));
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", config.status().ToString().c_str());
    return 1;
  }
  std::printf("server bench: preset=%s (%lld params), prompt=%d response=%d tokens, %g s per "
              "point, %s\n",
              absl::GetFlag(FLAGS_preset).c_str(),
              static_cast<long long>(rlhf::CountParameters(*config)),
              absl::GetFlag(FLAGS_prompt_len), absl::GetFlag(FLAGS_response_len),
              absl::GetFlag(FLAGS_seconds), rlhf::ComputeThreadsSummary().c_str());
  {
    // The model alone: per-sequence forward time at batch 1 vs 64 (no gRPC, no batcher).
    torch::manual_seed(0);
    rlhf::TransformerLM model(*config);
    model->eval();
    const int64_t T = absl::GetFlag(FLAGS_prompt_len) + absl::GetFlag(FLAGS_response_len);
    double batch1_ms = 0;
    for (int64_t B : {1, 8, 64}) {
      c10::InferenceMode guard;
      auto ids = torch::randint(0, 256, {B, T}, torch::kLong);
      auto mask = torch::ones({B, T}, torch::kLong);
      model->forward(ids, mask);  // warm-up
      int iters = 0;
      const absl::Time t0 = absl::Now();
      while (absl::Now() - t0 < absl::Seconds(1) || iters < 3) {
        model->forward(ids, mask);
        ++iters;
      }
      const double ms = absl::ToDoubleMilliseconds(absl::Now() - t0) / iters / B;
      if (B == 1) batch1_ms = ms;
      std::printf("model alone (lm head): batch %3lld x %lld tokens: %.3f ms/seq = %.2fx batch 1\n",
                  static_cast<long long>(B), static_cast<long long>(T), ms, ms / batch1_ms);
    }
  }
  std::printf("%-10s %-9s %7s %10s %12s %12s %8s %8s\n", "server", "batching", "clients",
              "seq/s", "latency_ms", "fwd_ms/seq", "busy", "fwd/lat");

  for (const char* which : {"reward", "reference"}) {
    for (const std::string batching : {"off", "greedy", "dynamic"}) {
      auto registry = std::make_shared<prometheus::Registry>();
      torch::manual_seed(0);
      std::unique_ptr<rlhf::reward::RewardServer> reward;
      std::unique_ptr<rlhf::reference::ReferenceServer> reference;
      int port = 0;
      std::string metric;
      if (std::string(which) == "reward") {
        rlhf::ModelConfig c = *config;
        c.lm_head = false;
        c.scalar_head = true;
        rlhf::reward::RewardServerOptions options;
        options.handler.vocab_size = c.vocab_size;
        options.handler.max_seq_len = c.max_seq_len;
        options.handler.batcher = Batching(batching);
        rlhf::reward::RewardServerDeps deps;
        deps.registry = registry;
        deps.scorers.push_back(
            {*rlhf::reward::ModelRewardScorer::Create("rm", rlhf::TransformerLM(c),
                                                       rlhf::ByteTokenizer::kPad, {}), 1.0});
        reward = *rlhf::reward::RewardServer::Create(options, std::move(deps));
        if (!reward->Start().ok()) return 1;
        port = reward->port();
        metric = "rlhf_reward_server_forward_duration_seconds";
      } else {
        rlhf::reference::ReferenceServerOptions options;
        options.handler.batcher = Batching(batching);
        rlhf::reference::ReferenceServerDeps deps;
        deps.registry = registry;
        deps.model = rlhf::TransformerLM(*config);
        reference = *rlhf::reference::ReferenceServer::Create(options, std::move(deps));
        if (!reference->Start().ok()) return 1;
        port = reference->port();
        metric = "rlhf_reference_server_forward_duration_seconds";
      }
      rlhf::services::ChannelOptions channel;
      channel.target = "127.0.0.1:" + std::to_string(port);
      for (int clients : client_counts) {
        Result r;
        if (reward) {
          auto client = *rlhf::reward::GrpcRewardClient::Create(channel);
          rlhf::v1::RewardScoreRequest request;
          *request.add_sequences() = Sequence(1);
          r = Drive(
              clients,
              [&] { return client->Score(request, absl::Now() + absl::Seconds(60)).ok(); },
              *registry, metric);
        } else {
          auto client = *rlhf::reference::GrpcReferenceClient::Create(channel);
          rlhf::v1::ReferenceScoreRequest request;
          auto* s = request.add_sequences();
          *s->mutable_tokens() = Sequence(1);
          for (int i = 0; i < absl::GetFlag(FLAGS_response_len); ++i) s->add_policy_logprobs(-5.0f);
          r = Drive(
              clients,
              [&] { return client->Score(request, absl::Now() + absl::Seconds(60)).ok(); },
              *registry, metric);
        }
        std::printf("%-10s %-9s %7d %10.1f %12.2f %12.3f %7.0f%% %7.0f%%\n", which,
                    batching.c_str(), clients, r.seq_per_s, r.mean_latency_ms,
                    r.fwd_ms_per_seq, 100 * r.busy, 100 * r.fwd_share);
        std::fflush(stdout);
      }
      if (reward) reward->Shutdown(absl::Now() + absl::Seconds(5));
      if (reference) reference->Shutdown(absl::Now() + absl::Seconds(5));
    }
  }
  return 0;
}
