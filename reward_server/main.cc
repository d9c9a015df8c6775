// rlhf-reward-server: serves RewardService.Score over gRPC.
//
//   rlhf-reward-server --scorers=rm:/ckpt/rm:1.0,gold:0.5 --normalize --port=50051
//   rlhf-reward-server --preset=tiny --port=0 --port_file=/tmp/rm.port   (tests)
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>

#include <ATen/Parallel.h>
#include <c10/util/Logging.h>
#include <torch/utils.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "core/model/device.h"
#include "core/model/threads.h"
#include "core/tokenizer/model_dir.h"
#include "core/tokenizer/tokenizer.h"
#include "reward_server/reward_server.h"
#include "services/batching_defaults.h"
#include "services/flags.h"
#include "services/metrics.h"
#include "services/serve.h"
#include "services/server.h"
#include "services/shutdown.h"

ABSL_FLAG(std::string, host, "127.0.0.1", "listen address (non-loopback needs TLS or a token)");
ABSL_FLAG(int, port, 0, "gRPC port; 0 = any free port");
ABSL_FLAG(std::string, port_file, "", "write the bound gRPC port here once serving");
ABSL_FLAG(int, metrics_port, -1, "Prometheus /metrics port; 0 = any free, -1 = off");
ABSL_FLAG(std::string, metrics_port_file, "", "write the bound /metrics port here");
ABSL_FLAG(std::string, metrics_host, "",
          "address /metrics listens on; empty = --host (it has no TLS or token: keep it "
          "on a private address when gRPC is exposed)");
ABSL_FLAG(std::string, checkpoint, "", "reward-model checkpoint dir (= --scorers=rm:DIR)");
ABSL_FLAG(std::string, preset, "", "serve a freshly initialised reward model of this preset");
ABSL_FLAG(int, seed, 0, "seed for --preset initialisation");
ABSL_FLAG(std::string, scorers, "", "comma list of rm:DIR[:weight] and gold[:weight]");
ABSL_FLAG(std::string, scorers_json, "",
          "JSON array of rlhf.v1.ScorerConfig objects (proto field names): rm, gold, length, "
          "regex, exact_match, remote; used instead of --scorers (rlhf run passes this)");
ABSL_FLAG(bool, normalize, false, "normalise rm scores with the checkpoint's reward_mean/std");
ABSL_FLAG(std::string, tokenizer, "",
          "tokenizer that turns the scored ids into text for the rule scorers (gold, regex, "
          "...): empty = the first reward model's own (the byte tokenizer without one); "
          "\"byte\" or a model/checkpoint directory");
ABSL_FLAG(int64_t, max_seq_len, 0, "prompt+response limit; 0 = the model's (256 without one)");
ABSL_FLAG(std::string, compute_dtype, rlhf::kDefaultComputeDtype,
          "dtype the reward models run in: fp32 or bf16 (fp16 has no CPU kernels in LibTorch 1.13)");
ABSL_FLAG(std::string, device, rlhf::kDefaultDevice,
          "where the model runs: cpu, cuda or cuda:N (needs a CUDA build of LibTorch)");
ABSL_FLAG(int, max_sequences_per_request, rlhf::services::kDefaultMaxSequencesPerRequest,
          "sequences per request limit");
ABSL_FLAG(int64_t, max_batch_tokens, rlhf::services::kDefaultMaxBatchTokens,
          "padded tokens per batched forward");
ABSL_FLAG(int, max_batch_sequences, rlhf::services::kDefaultMaxBatchSequences,
          "sequences per batched forward (1 = no batching)");
ABSL_FLAG(double, max_wait_ms, rlhf::services::kDefaultMaxWaitMs,
          "how long a request waits for company, ms");
ABSL_FLAG(int64_t, max_queue_sequences, rlhf::services::kDefaultMaxQueueSequences,
          "queued sequences before RESOURCE_EXHAUSTED");
ABSL_FLAG(std::string, token_file, "", "file holding the shared bearer token");
ABSL_FLAG(std::string, tls_cert, "", "PEM server certificate (enables TLS)");
ABSL_FLAG(std::string, tls_key, "", "PEM server key");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA for client certificates");
ABSL_FLAG(bool, require_client_cert, false, "mutual TLS");
ABSL_FLAG(bool, allow_insecure, false, "allow plaintext, tokenless non-loopback listening");
ABSL_FLAG(int, threads, 0, "LibTorch intra-op threads; 0 = LibTorch default");
ABSL_FLAG(int, max_message_mb, 64, "max gRPC message size, MiB");
ABSL_FLAG(int, max_connection_age_s, rlhf::services::kDefaultScorerMaxConnectionAgeS,
          "close each client connection after this many seconds (clients reconnect and "
          "re-resolve, so replicas added behind a DNS name get traffic); 0 = never");
ABSL_FLAG(double, shutdown_grace_s, 10.0, "how long in-flight calls may finish on shutdown");

namespace {

using rlhf::reward::ModelRewardScorer;
using rlhf::reward::WeightedScorer;

absl::Status Run() {
  rlhf::ConfigureComputeThreads(absl::GetFlag(FLAGS_threads));
  LOG(INFO) << "compute: " << rlhf::ComputeThreadsSummary();
  std::string specs_text = absl::GetFlag(FLAGS_scorers);
  if (!absl::GetFlag(FLAGS_checkpoint).empty()) {
    specs_text = absl::StrCat("rm:", absl::GetFlag(FLAGS_checkpoint),
                              specs_text.empty() ? "" : ",", specs_text);
  }
  std::vector<rlhf::reward::ScorerSpec> specs;
  if (!specs_text.empty() || !absl::GetFlag(FLAGS_scorers_json).empty()) {
    auto parsed = absl::GetFlag(FLAGS_scorers_json).empty()
                      ? rlhf::reward::ParseScorerSpecs(specs_text)
                      : rlhf::reward::ParseScorerSpecsJson(absl::GetFlag(FLAGS_scorers_json));
    if (!parsed.ok()) return parsed.status();
    specs = *std::move(parsed);
  }
  // The ids scored are the policy's, and the reward models share its tokenizer (they
  // start from its SFT checkpoint): by default the first reward model's own tokenizer.
  std::string tokenizer_name = absl::GetFlag(FLAGS_tokenizer);
  if (tokenizer_name.empty()) {
    tokenizer_name = "byte";  // --preset and rule scorers alone: the byte-vocabulary models
    for (const auto& spec : specs) {
      if (spec.kind == rlhf::reward::ScorerSpec::Kind::kModel) {
        tokenizer_name = spec.checkpoint;
        break;
      }
    }
  }
  auto tokenizer_or = tokenizer_name == "byte" ? rlhf::MakeTokenizerByName("byte")
                                               : rlhf::LoadTokenizerForModel(tokenizer_name);
  if (!tokenizer_or.ok()) return tokenizer_or.status();
  std::shared_ptr<const rlhf::Tokenizer> tokenizer = *std::move(tokenizer_or);
  LOG(INFO) << "tokenizer: " << tokenizer->name() << " of " << tokenizer_name << " (vocab "
            << tokenizer->vocab_size() << ")";

  rlhf::ModelLoadOptions load;
  {
    auto dtype = rlhf::ParseComputeDtype(absl::GetFlag(FLAGS_compute_dtype));
    if (!dtype.ok()) return absl::InvalidArgumentError(absl::StrCat("--", dtype.status().message()));
    load.compute_dtype = *dtype;
    load.max_seq_len = std::max<int64_t>(0, absl::GetFlag(FLAGS_max_seq_len));
    auto device = rlhf::ParseDevice(absl::GetFlag(FLAGS_device));
    if (!device.ok()) {
      return absl::Status(device.status().code(),
                          absl::StrCat("--device: ", device.status().message()));
    }
    load.device = *device;
  }
  rlhf::reward::RewardServerDeps deps;
  int64_t vocab = tokenizer->vocab_size();
  int64_t max_len = 256;
  bool have_model = false;
  int extra_models = 0;
  auto note_model = [&](const ModelRewardScorer& m) {
    vocab = have_model ? std::min(vocab, m.config().vocab_size) : m.config().vocab_size;
    max_len = have_model ? std::min(max_len, m.config().max_seq_len) : m.config().max_seq_len;
    have_model = true;
  };
  if (!absl::GetFlag(FLAGS_preset).empty()) {
    auto config = rlhf::ModelConfigPreset(absl::GetFlag(FLAGS_preset));
    if (!config.ok()) return config.status();
    config->lm_head = false;
    config->scalar_head = true;
    torch::manual_seed(absl::GetFlag(FLAGS_seed));
    rlhf::TransformerLM model(*config);
    if (auto st = rlhf::MoveModelToDevice(model, load.device); !st.ok()) return st;
    if (auto st = rlhf::CastToComputeDtype(model, load.compute_dtype); !st.ok()) return st;
    auto scorer = ModelRewardScorer::Create("rm", model, tokenizer->pad_id(), {});
    if (!scorer.ok()) return scorer.status();
    note_model(**scorer);
    deps.scorers.push_back({*std::move(scorer), 1.0});
  }
  for (const auto& spec : specs) {
    if (spec.kind != rlhf::reward::ScorerSpec::Kind::kModel) {
      auto scorer = rlhf::reward::MakeRuleScorer(spec, tokenizer);
      if (!scorer.ok()) return scorer.status();
      LOG(INFO) << "scorer '" << (*scorer)->name() << "' weight " << spec.weight;
      deps.scorers.push_back({*std::move(scorer), spec.weight});
      continue;
    }
    // Components are named rm, rm2, rm3, ... in flag order (--preset counts first).
    std::string name = have_model ? absl::StrCat("rm", extra_models + 2) : "rm";
    if (have_model) ++extra_models;
    if (!spec.name.empty()) name = spec.name;
    // Each reward model pads with its own tokenizer's PAD (EOS when it has none).
    auto rm_tokenizer = rlhf::LoadTokenizerForModel(spec.checkpoint);
    if (!rm_tokenizer.ok()) return rm_tokenizer.status();
    auto scorer = ModelRewardScorer::FromCheckpoint(name, spec.checkpoint,
                                                    (*rm_tokenizer)->pad_id(),
                                                    absl::GetFlag(FLAGS_normalize), load);
    if (!scorer.ok()) return scorer.status();
    if ((*rm_tokenizer)->vocab_size() > (*scorer)->config().vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the tokenizer of ", spec.checkpoint, " has ", (*rm_tokenizer)->vocab_size(),
          " ids but the reward model's vocabulary has ", (*scorer)->config().vocab_size));
    }
    note_model(**scorer);
    deps.scorers.push_back({*std::move(scorer), spec.weight});
  }
  if (deps.scorers.empty()) {
    return absl::InvalidArgumentError("no scorer: pass --scorers, --checkpoint or --preset");
  }

  rlhf::reward::RewardServerOptions options;
  options.grpc.name = "reward-server";
  options.grpc.host = absl::GetFlag(FLAGS_host);
  options.grpc.port = absl::GetFlag(FLAGS_port);
  options.grpc.max_connection_age = absl::Seconds(absl::GetFlag(FLAGS_max_connection_age_s));
  auto message_bytes = rlhf::services::MessageBytesFromMiB(absl::GetFlag(FLAGS_max_message_mb));
  if (!message_bytes.ok()) return message_bytes.status();
  options.grpc.max_message_bytes = *message_bytes;
  options.grpc.allow_insecure = absl::GetFlag(FLAGS_allow_insecure);
  options.grpc.tls.cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.grpc.tls.key_file = absl::GetFlag(FLAGS_tls_key);
  options.grpc.tls.ca_file = absl::GetFlag(FLAGS_tls_ca);
  options.grpc.tls.require_client_cert = absl::GetFlag(FLAGS_require_client_cert);
  if (!absl::GetFlag(FLAGS_token_file).empty()) {
    auto token = rlhf::services::ReadTokenFile(absl::GetFlag(FLAGS_token_file));
    if (!token.ok()) return token.status();
    options.grpc.auth_token = *token;
  }
  options.handler.vocab_size = vocab;
  options.handler.max_seq_len =
      absl::GetFlag(FLAGS_max_seq_len) > 0 ? absl::GetFlag(FLAGS_max_seq_len) : max_len;
  options.handler.max_sequences_per_request = absl::GetFlag(FLAGS_max_sequences_per_request);
  options.handler.batcher.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  options.handler.batcher.max_batch_sequences = absl::GetFlag(FLAGS_max_batch_sequences);
  options.handler.batcher.max_wait = absl::Microseconds(absl::GetFlag(FLAGS_max_wait_ms) * 1000);
  options.handler.batcher.max_queue_sequences = absl::GetFlag(FLAGS_max_queue_sequences);

  auto registry = std::make_shared<prometheus::Registry>();
  deps.registry = registry;
  auto server = rlhf::reward::RewardServer::Create(options, std::move(deps));
  if (!server.ok()) return server.status();
  auto exposer = rlhf::services::StartMetricsExposer(
      absl::GetFlag(FLAGS_metrics_host).empty() ? options.grpc.host
                                                : absl::GetFlag(FLAGS_metrics_host),
      absl::GetFlag(FLAGS_metrics_port), registry, absl::GetFlag(FLAGS_metrics_port_file));
  if (!exposer.ok()) return exposer.status();
  return rlhf::services::ServeUntilSignal(
      **server, {"reward-server", absl::GetFlag(FLAGS_port_file),
                 absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_s))});
}

}  // namespace

int main(int argc, char** argv) {
  rlhf::services::BlockShutdownSignals();
  rlhf::services::ParseServerFlags(
      argc, argv,
      "rlhf-reward-server: serves RewardService.Score over gRPC.\n"
      "  rlhf-reward-server --scorers=rm:/ckpt/rm:1.0,gold:0.5 --port=50051");
  absl::Status status = Run();
  if (!status.ok()) {
    std::fprintf(stderr, "rlhf-reward-server: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
