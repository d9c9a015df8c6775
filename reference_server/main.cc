// rlhf-reference-server: serves ReferenceService.Score (frozen SFT model) over gRPC.
//
//   rlhf-reference-server --checkpoint=/ckpt/sft --port=50052
//   rlhf-reference-server --preset=tiny --port=0 --port_file=/tmp/ref.port   (tests)
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
#include "core/model/checkpoint.h"
#include "core/model/compute_dtype.h"
#include "core/model/device.h"
#include "core/model/threads.h"
#include "core/tokenizer/model_dir.h"
#include "core/tokenizer/tokenizer.h"
#include "reference_server/reference_server.h"
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
ABSL_FLAG(std::string, checkpoint, "", "SFT checkpoint dir (the frozen reference)");
ABSL_FLAG(std::string, preset, "", "serve a freshly initialised model of this preset");
ABSL_FLAG(int, seed, 0, "seed for --preset initialisation");
ABSL_FLAG(std::string, tokenizer, "",
          "tokenizer whose PAD id pads batches: empty = the --checkpoint's own (the byte "
          "tokenizer for --preset); \"byte\" or a model/checkpoint directory");
ABSL_FLAG(int64_t, max_seq_len, 0, "prompt+response limit; 0 = the model's");
ABSL_FLAG(std::string, compute_dtype, rlhf::kDefaultComputeDtype,
          "dtype the model runs in: fp32 or bf16 (fp16 has no CPU kernels in LibTorch 1.13)");
ABSL_FLAG(std::string, device, rlhf::kDefaultDevice,
          "where the model runs: cpu, cuda or cuda:N (needs a CUDA build of LibTorch)");
ABSL_FLAG(int, max_sequences_per_request, rlhf::services::kDefaultMaxSequencesPerRequest,
          "sequences per request limit");
ABSL_FLAG(int64_t, max_batch_tokens, rlhf::services::kDefaultMaxBatchTokens,
          "padded tokens per batched forward");
ABSL_FLAG(int64_t, max_logits_mb, rlhf::services::kDefaultMaxLogitsMb,
          "MiB of float32 logits per batched forward; lowers max_batch_tokens to fit");
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

absl::Status Run() {
  rlhf::ConfigureComputeThreads(absl::GetFlag(FLAGS_threads));
  LOG(INFO) << "compute: " << rlhf::ComputeThreadsSummary();

  rlhf::reference::ReferenceServerDeps deps;
  const bool from_checkpoint = !absl::GetFlag(FLAGS_checkpoint).empty();
  if (from_checkpoint == !absl::GetFlag(FLAGS_preset).empty()) {
    return absl::InvalidArgumentError("pass exactly one of --checkpoint and --preset");
  }
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
  if (from_checkpoint) {
    auto loaded = rlhf::LoadModel(absl::GetFlag(FLAGS_checkpoint), load);
    if (!loaded.ok()) return loaded.status();
    deps.model = loaded->model;
  } else {
    auto config = rlhf::ModelConfigPreset(absl::GetFlag(FLAGS_preset));
    if (!config.ok()) return config.status();
    torch::manual_seed(absl::GetFlag(FLAGS_seed));
    deps.model = rlhf::TransformerLM(*config);
    if (auto st = rlhf::MoveModelToDevice(deps.model, load.device); !st.ok()) return st;
    if (auto st = rlhf::CastToComputeDtype(deps.model, load.compute_dtype); !st.ok()) return st;
  }
  // The model's own tokenizer unless told otherwise (presets are byte-vocabulary models).
  std::string tokenizer_name = absl::GetFlag(FLAGS_tokenizer);
  if (tokenizer_name.empty()) tokenizer_name = from_checkpoint ? absl::GetFlag(FLAGS_checkpoint) : "byte";
  auto tokenizer = tokenizer_name == "byte"
                       ? rlhf::MakeTokenizerByName("byte")
                       : rlhf::LoadTokenizerForModel(tokenizer_name, deps.model->config().vocab_size);
  if (!tokenizer.ok()) return tokenizer.status();

  rlhf::reference::ReferenceServerOptions options;
  options.grpc.name = "reference-server";
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
  options.handler.pad_id = (*tokenizer)->pad_id();
  options.handler.max_seq_len = absl::GetFlag(FLAGS_max_seq_len);
  options.handler.max_sequences_per_request = absl::GetFlag(FLAGS_max_sequences_per_request);
  options.handler.batcher.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  options.handler.max_logits_mb = absl::GetFlag(FLAGS_max_logits_mb);
  options.handler.batcher.max_batch_sequences = absl::GetFlag(FLAGS_max_batch_sequences);
  options.handler.batcher.max_wait = absl::Microseconds(absl::GetFlag(FLAGS_max_wait_ms) * 1000);
  options.handler.batcher.max_queue_sequences = absl::GetFlag(FLAGS_max_queue_sequences);

  auto registry = std::make_shared<prometheus::Registry>();
  deps.registry = registry;
  auto server = rlhf::reference::ReferenceServer::Create(options, std::move(deps));
  if (!server.ok()) return server.status();
  auto exposer = rlhf::services::StartMetricsExposer(
      absl::GetFlag(FLAGS_metrics_host).empty() ? options.grpc.host
                                                : absl::GetFlag(FLAGS_metrics_host),
      absl::GetFlag(FLAGS_metrics_port), registry, absl::GetFlag(FLAGS_metrics_port_file));
  if (!exposer.ok()) return exposer.status();
  return rlhf::services::ServeUntilSignal(
      **server, {"reference-server", absl::GetFlag(FLAGS_port_file),
                 absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_s))});
}

}  // namespace

int main(int argc, char** argv) {
  rlhf::services::BlockShutdownSignals();
  rlhf::services::ParseServerFlags(
      argc, argv,
      "rlhf-reference-server: serves ReferenceService.Score (frozen SFT model).\n"
      "  rlhf-reference-server --checkpoint=/ckpt/sft --port=50052");
  absl::Status status = Run();
  if (!status.ok()) {
    std::fprintf(stderr, "rlhf-reference-server: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
