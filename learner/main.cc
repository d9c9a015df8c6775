// rlhf-learner: the LearnerService (leases, trajectories, training, weights).
//
//   rlhf-learner --config=job.yaml --checkpoint_dir=runs/x/learner --port=0
//       --port_file=runs/x/learner.port --metrics_port=0 [--set=rl.steps=10 ...]  (one line)
//
// Prints "listening on HOST:PORT" once serving (and writes --port_file). Exits 0 after
// rl.steps updates once the actors have drained and an active GetStats poller has seen
// the final stats (LearnerServer::FinalStatsPending), or --drain_grace_s passed; or on
// SIGTERM/SIGINT after a graceful shutdown. Restarted with the same --checkpoint_dir it
// resumes from the newest checkpoint with its leases and acknowledged trajectories.
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <c10/util/Logging.h>
#include <torch/utils.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/data/builtin_task.h"
#include "core/data/jsonl.h"
#include "core/model/checkpoint.h"
#include "core/model/device.h"
#include "core/model/threads.h"
#include "core/tokenizer/model_dir.h"
#include "core/tokenizer/tokenizer.h"
#include "core/train/training_common.h"
#include "learner/learner_server.h"
#include "services/config/config.h"
#include "services/config/sampling_config.h"
#include "services/config/trainer_config.h"
#include "services/flags.h"
#include "services/metrics.h"
#include "services/serve.h"
#include "services/server.h"
#include "services/shutdown.h"

ABSL_FLAG(std::string, config, "", "job config YAML (rlhf.v1.JobConfig); empty = defaults");
ABSL_FLAG(std::vector<std::string>, set, {},
          "config overrides, comma-separated dotted.path=value (e.g. rl.steps=10)");
ABSL_FLAG(std::string, host, "", "listen address; empty = learner.endpoint.host");
ABSL_FLAG(int, port, -1, "gRPC port; 0 = any free; -1 = learner.endpoint.port");
ABSL_FLAG(std::string, port_file, "", "write the bound gRPC port here once serving");
ABSL_FLAG(int, metrics_port, -2, "Prometheus port; 0 = any free, -1 = off, "
          "-2 = learner.endpoint.metrics_port");
ABSL_FLAG(std::string, metrics_port_file, "", "write the bound /metrics port here");
ABSL_FLAG(std::string, checkpoint_dir, "", "learner checkpoints + state; empty = <run_dir>/learner");
ABSL_FLAG(std::string, policy_checkpoint, "",
          "initial policy (model checkpoint dir); empty = model.sft_checkpoint if it exists, "
          "else a fresh model.preset");
ABSL_FLAG(std::string, prompts_jsonl, "",
          "RL prompts ({\"prompt\": ...} per line); empty = <data.dir>/rl_train.jsonl if it "
          "exists, else the generated built-in task");
ABSL_FLAG(int, checkpoint_every, 0, "steps between checkpoints; 0 = rl.checkpoint_every");
ABSL_FLAG(std::string, token_file, "", "bearer token file; empty = security.token_file");
ABSL_FLAG(std::string, tls_cert, "", "PEM server certificate; empty = security.tls_cert");
ABSL_FLAG(std::string, tls_key, "", "PEM server key; empty = security.tls_key");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA for client certificates; empty = security.tls_ca");
ABSL_FLAG(bool, require_client_cert, false, "mutual TLS (or security.require_client_cert)");
ABSL_FLAG(bool, allow_insecure, false,
          "allow plaintext non-loopback listening (or security.allow_insecure)");
ABSL_FLAG(std::string, gloo_interface, "",
          "collective weights: network interface Gloo binds; empty = weights.gloo_interface");
ABSL_FLAG(double, drain_grace_s, 10.0, "after the last step, wait this long for actors to leave");
ABSL_FLAG(bool, exit_when_done, true, "exit once rl.steps are trained");
ABSL_FLAG(std::string, metrics_host, "",
          "address /metrics listens on; empty = the gRPC listen address");
ABSL_FLAG(double, max_abs_reward, 1e6, "submissions with |reward| above this are refused");
ABSL_FLAG(double, max_abs_kl, 1e6, "submissions with a per-token |kl| above this are refused");
ABSL_FLAG(std::string, device, "",
          "where the learner trains: cpu, cuda or cuda:N; empty = model.device of the config");
ABSL_FLAG(bool, allow_state_reset, false,
          "restore even when the learner state file is missing or empty next to a trained "
          "checkpoint (the accounting starts over; otherwise the learner refuses to start)");

namespace {

struct Policy {
  rlhf::TransformerLM model{nullptr};
  // The policy's own tokenizer (the checkpoint's recorded one or its files; the byte
  // tokenizer for a fresh preset): its ids encode the prompts, pad batches and end
  // responses (EOS), so every process agrees with the model.
  std::shared_ptr<const rlhf::Tokenizer> tokenizer;
};

absl::StatusOr<Policy> LoadPolicy(const rlhf::v1::JobConfig& job) {
  std::string dir = absl::GetFlag(FLAGS_policy_checkpoint);
  if (dir.empty() && !job.model().sft_checkpoint().empty()) {
    std::string candidate = job.model().sft_checkpoint() + "/config.json";
    if (FILE* f = std::fopen(candidate.c_str(), "r")) {
      std::fclose(f);
      dir = job.model().sft_checkpoint();
    }
  }
  Policy policy;
  if (!dir.empty()) {
    auto loaded = rlhf::LoadCheckpoint(dir);
    if (!loaded.ok()) return loaded.status();
    auto tokenizer = rlhf::LoadTokenizerForModel(dir, loaded->model->config().vocab_size);
    if (!tokenizer.ok()) return tokenizer.status();
    LOG(INFO) << "learner: initial policy from " << dir << ", " << (*tokenizer)->name()
              << " tokenizer (vocab " << (*tokenizer)->vocab_size() << ", bos "
              << (*tokenizer)->bos_id() << ", eos " << (*tokenizer)->eos_id() << ", pad "
              << (*tokenizer)->pad_id() << ")";
    policy.model = loaded->model;
    policy.tokenizer = *std::move(tokenizer);
    return policy;
  }
  auto config = rlhf::ModelConfigPreset(job.model().preset().empty() ? "tiny" : job.model().preset());
  if (!config.ok()) return config.status();
  if (job.model().max_seq_len() > 0) config->max_seq_len = job.model().max_seq_len();
  torch::manual_seed(job.seed());
  LOG(INFO) << "learner: fresh " << job.model().preset() << " policy (no SFT checkpoint)";
  policy.model = rlhf::TransformerLM(*config);
  // The presets are the byte-vocabulary models.
  auto tokenizer = rlhf::MakeTokenizerByName("byte");
  if (!tokenizer.ok()) return tokenizer.status();
  policy.tokenizer = *std::move(tokenizer);
  return policy;
}

absl::Status Run() {
  rlhf::config::LoadOptions load;
  load.check_files = false;
  load.overrides = absl::GetFlag(FLAGS_set);
  auto job_or = rlhf::config::LoadJobConfig(absl::GetFlag(FLAGS_config), load);
  if (!job_or.ok()) return job_or.status();
  const rlhf::v1::JobConfig job = *std::move(job_or);
  rlhf::ConfigureComputeThreads(job.learner().threads());
  LOG(INFO) << "compute: " << rlhf::ComputeThreadsSummary();

  auto policy = LoadPolicy(job);
  if (!policy.ok()) return policy.status();
  const rlhf::Tokenizer& tokenizer = *policy->tokenizer;
  auto prompts = rlhf::RlPromptsFromConfig(job, tokenizer, absl::GetFlag(FLAGS_prompts_jsonl));
  if (!prompts.ok()) return prompts.status();
  const rlhf::ModelConfig& mc = policy->model->config();

  rlhf::learner::LearnerServerOptions o;
  o.grpc.name = "learner";
  o.grpc.host = absl::GetFlag(FLAGS_host).empty() ? job.learner().endpoint().host()
                                                  : absl::GetFlag(FLAGS_host);
  if (o.grpc.host.empty()) o.grpc.host = "127.0.0.1";
  o.grpc.port = absl::GetFlag(FLAGS_port) >= 0 ? absl::GetFlag(FLAGS_port)
                                               : job.learner().endpoint().port();
  // Each flag, when given, overrides its security.* field (rlhf run passes both).
  auto flag_or = [](const std::string& flag, const std::string& field) {
    return flag.empty() ? field : flag;
  };
  o.grpc.allow_insecure = absl::GetFlag(FLAGS_allow_insecure) || job.security().allow_insecure();
  o.grpc.tls.cert_file = flag_or(absl::GetFlag(FLAGS_tls_cert), job.security().tls_cert());
  o.grpc.tls.key_file = flag_or(absl::GetFlag(FLAGS_tls_key), job.security().tls_key());
  o.grpc.tls.ca_file = flag_or(absl::GetFlag(FLAGS_tls_ca), job.security().tls_ca());
  o.grpc.tls.require_client_cert =
      absl::GetFlag(FLAGS_require_client_cert) || job.security().require_client_cert();
  std::string token_file = absl::GetFlag(FLAGS_token_file).empty() ? job.security().token_file()
                                                                   : absl::GetFlag(FLAGS_token_file);
  if (!token_file.empty()) {
    auto token = rlhf::services::ReadTokenFile(token_file);
    if (!token.ok()) return token.status();
    o.grpc.auth_token = *token;
  }
  const auto& rl = job.rl();
  o.handler.prompts_per_step = rl.prompts_per_step();
  o.handler.samples_per_prompt = rl.samples_per_prompt();
  o.handler.prompts_per_lease = job.actors().prompts_per_lease();
  o.handler.max_staleness = rl.max_staleness();
  o.handler.total_steps = rl.steps();
  o.handler.lease_timeout = absl::Milliseconds(job.learner().lease_timeout_ms());
  o.handler.vocab_size = static_cast<int32_t>(mc.vocab_size);
  o.handler.max_seq_len = mc.max_seq_len;
  o.handler.max_abs_reward = absl::GetFlag(FLAGS_max_abs_reward);
  o.handler.max_abs_kl = absl::GetFlag(FLAGS_max_abs_kl);
  o.handler.allow_state_reset = absl::GetFlag(FLAGS_allow_state_reset);
  o.weights = rlhf::weights::OptionsFromConfig(job.weights());
  if (!absl::GetFlag(FLAGS_gloo_interface).empty()) {
    o.weights.gloo_interface = absl::GetFlag(FLAGS_gloo_interface);
  }
  auto trainer = rlhf::TrainerOptionsFromConfig(rl, job.sampling(), job.seed());
  if (!trainer.ok()) return trainer.status();
  o.trainer = *trainer;
  o.trainer.pad_id = tokenizer.pad_id();
  {
    std::string name =
        absl::GetFlag(FLAGS_device).empty() ? job.model().device() : absl::GetFlag(FLAGS_device);
    if (name.empty()) name = rlhf::kDefaultDevice;
    auto device = rlhf::ParseDevice(name);
    if (!device.ok()) return device.status();
    // The trainer moves the policy (and PPO's value model) there; weights published to
    // actors still leave through a host snapshot (grpc) or NCCL (collective on CUDA).
    o.trainer.device = *device;
    o.weights.use_cuda = device->is_cuda();
    LOG(INFO) << "learner: device " << device->str() << ", train dtype "
              << (o.trainer.train_dtype == torch::kBFloat16 ? "bf16 (autocast)" : "fp32");
  }
  if (o.trainer.ptx_coef > 0) {
    auto pretrain = rlhf::PretrainFromConfig(job, tokenizer, mc.max_seq_len);
    if (!pretrain.ok()) return pretrain.status();
    o.pretrain = *std::move(pretrain);
    o.ptx_batch_size = rl.ptx_batch_size();
    LOG(INFO) << "learner: ptx term on, " << o.pretrain.size() << " pretraining texts, "
              << o.ptx_batch_size << " per step, coef " << o.trainer.ptx_coef;
  }
  // The actors sample with this config (Register): they stop at the policy's EOS.
  o.sampling = rlhf::WithModelEos(job.sampling(), tokenizer.eos_id());
  switch (rl.kl().estimator()) {
    case rlhf::v1::KL_ESTIMATOR_CHOICE_K2: o.kl_estimator = rlhf::v1::KL_ESTIMATOR_K2; break;
    case rlhf::v1::KL_ESTIMATOR_CHOICE_K3: o.kl_estimator = rlhf::v1::KL_ESTIMATOR_K3; break;
    case rlhf::v1::KL_ESTIMATOR_CHOICE_EXACT: o.kl_estimator = rlhf::v1::KL_ESTIMATOR_EXACT; break;
    default: o.kl_estimator = rlhf::v1::KL_ESTIMATOR_K1;
  }
  o.kl_top_k = rl.kl().top_k();
  o.handler.require_exact_kl = o.kl_estimator == rlhf::v1::KL_ESTIMATOR_EXACT;
  o.heartbeat_interval = absl::Milliseconds(job.learner().heartbeat_interval_ms());
  o.checkpoint_dir = absl::GetFlag(FLAGS_checkpoint_dir).empty()
                         ? job.run_dir() + "/learner"
                         : absl::GetFlag(FLAGS_checkpoint_dir);
  o.checkpoint_every = absl::GetFlag(FLAGS_checkpoint_every) > 0 ? absl::GetFlag(FLAGS_checkpoint_every)
                                                                 : std::max(1, rl.checkpoint_every());
  o.keep_checkpoints = std::max(1, rl.keep_checkpoints());
  o.tokenizer = policy->tokenizer;  // each step checkpoint carries it

  auto registry = std::make_shared<prometheus::Registry>();
  int metrics_port = absl::GetFlag(FLAGS_metrics_port);
  if (metrics_port == -2) metrics_port = job.learner().endpoint().metrics_port();
  auto exposer = rlhf::services::StartMetricsExposer(
      absl::GetFlag(FLAGS_metrics_host).empty() ? o.grpc.host : absl::GetFlag(FLAGS_metrics_host),
      metrics_port, registry, absl::GetFlag(FLAGS_metrics_port_file));
  if (!exposer.ok()) return exposer.status();
  rlhf::TransformerLM value{nullptr};
  if (o.trainer.algorithm == rlhf::RlAlgorithm::kPpo) {
    // InstructGPT initialises PPO's value function from the reward model.
    auto rm = rlhf::LoadCheckpoint(job.model().rm_checkpoint());
    if (!rm.ok()) {
      return absl::Status(rm.status().code(),
                          absl::StrCat("rl.algorithm ppo: value model from model.rm_checkpoint: ",
                                       rm.status().message()));
    }
    value = rm->model;
    LOG(INFO) << "learner: PPO value model from " << job.model().rm_checkpoint();
  }
  auto server =
      rlhf::learner::LearnerServer::Create(o, policy->model, *std::move(prompts), registry, value);
  if (!server.ok()) return server.status();
  if (absl::Status s = (*server)->Start(); !s.ok()) return s;
  std::printf("listening on %s:%d\n", o.grpc.host.c_str(), (*server)->port());
  if (!(*server)->rendezvous_address().empty()) {
    std::printf("weights rendezvous on %s\n", (*server)->rendezvous_address().c_str());
  }
  std::fflush(stdout);
  if (!absl::GetFlag(FLAGS_port_file).empty()) {
    if (absl::Status s = rlhf::services::WritePortFile(absl::GetFlag(FLAGS_port_file),
                                                       (*server)->port());
        !s.ok()) {
      return s;
    }
  }
  // This (main) thread takes the shutdown signals (blocked in main), polling for "done".
  const absl::Duration tick = absl::Milliseconds(200);
  for (;;) {
    int sig = rlhf::services::PollShutdownSignal(tick);
    if (sig > 0) {
      LOG(INFO) << "learner: signal " << sig << ", shutting down";
      break;
    }
    if (absl::GetFlag(FLAGS_exit_when_done) && (*server)->WaitDone(absl::ZeroDuration())) {
      // Actors leave once they see "done"; a GetStats poller (`rlhf run` records every
      // step from it) gets to see the last step before we go.
      auto someone_waits = [&] {
        return (*server)->handler().Stats().actors_connected() > 0 ||
               (*server)->FinalStatsPending();
      };
      const absl::Time until = absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_drain_grace_s));
      while (absl::Now() < until && someone_waits() &&
             rlhf::services::PollShutdownSignal(tick) == 0) {
      }
      auto stats = (*server)->handler().Stats();
      std::printf("done: %lld steps, version %lld, %lld trajectories trained\n",
                  static_cast<long long>(stats.step()),
                  static_cast<long long>(stats.policy_version()),
                  static_cast<long long>(stats.trajectories_trained()));
      std::fflush(stdout);
      break;
    }
  }
  (*server)->Shutdown(absl::Now() + absl::Seconds(5));
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  rlhf::services::BlockShutdownSignals();
  rlhf::services::ParseServerFlags(
      argc, argv,
      "rlhf-learner: the LearnerService (leases, trajectories, training, weights).\n"
      "  rlhf-learner --config=job.yaml --checkpoint_dir=runs/x/learner --port=0 --metrics_port=0");
  absl::Status status = Run();
  if (!status.ok()) {
    std::fprintf(stderr, "rlhf-learner: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
