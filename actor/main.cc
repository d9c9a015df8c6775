// rlhf-actor: leases prompts from the learner, samples with the policy version it
// holds, scores with the reward and reference servers, submits trajectories.
//
//   rlhf-actor --learner_address=127.0.0.1:50051 --reward_address=127.0.0.1:50052
//       --reference_address=127.0.0.1:50053 --actor_name=actor-0 --metrics_port=0
//
// Stateless: the model architecture, sampling settings and weights come from the
// learner. Exits 0 when the learner reports the run done, or after draining on
// SIGTERM/SIGINT (the batch in hand is submitted, then it deregisters).
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include <ATen/Parallel.h>
#include <c10/util/Logging.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "actor/actor.h"
#include "core/model/device.h"
#include "core/model/threads.h"
#include "services/channel.h"
#include "services/flags.h"
#include "services/metrics.h"
#include "services/serve.h"
#include "services/server.h"
#include "services/shutdown.h"

ABSL_FLAG(std::string, learner_address, "127.0.0.1:50051", "learner host:port");
ABSL_FLAG(std::string, reward_address, "",
          "reward server host:port, or replicas as host:port,host:port (round robin; a "
          "failed call is retried on another), or dns:///name:port for a name with many "
          "addresses");
ABSL_FLAG(std::string, reference_address, "",
          "reference server host:port, or replicas as host:port,host:port, or "
          "dns:///name:port");
ABSL_FLAG(std::string, actor_name, "actor", "name reported to the learner (logs, metrics)");
ABSL_FLAG(uint64_t, seed, 1, "sampling seed (mixed with prompt ids)");
ABSL_FLAG(int, max_prompts, 0, "prompts per lease; 0 = the learner's actors.prompts_per_lease");
ABSL_FLAG(std::string, metrics_host, "127.0.0.1", "Prometheus exporter address");
ABSL_FLAG(int, metrics_port, -1, "Prometheus /metrics port; 0 = any free, -1 = off");
ABSL_FLAG(std::string, metrics_port_file, "", "write the bound /metrics port here");
ABSL_FLAG(std::string, metrics_file, "",
          "on exit, write the final /metrics text here (an actor that finishes between two "
          "scrapes still leaves its numbers)");
ABSL_FLAG(int, threads, 1, "LibTorch intra-op threads for generation");
ABSL_FLAG(std::string, device, rlhf::kDefaultDevice,
          "where the policy generates: cpu, cuda or cuda:N (needs a CUDA build of LibTorch)");
ABSL_FLAG(double, call_timeout_s, 30, "deadline of each learner call (retries included)");
ABSL_FLAG(double, score_timeout_s, 120, "deadline of each reward/reference call");
ABSL_FLAG(int, generation_batch, rlhf::actor::ActorOptions{}.generation_batch,
          "rows decoded together; 0 = a lease's rows at once, N = continuous batching "
          "with N rows");
ABSL_FLAG(double, drain_timeout_s,
          absl::ToDoubleSeconds(rlhf::actor::ActorOptions{}.drain_timeout),
          "after SIGTERM: how long the batch in hand may still be scored before its lease "
          "is released");
ABSL_FLAG(std::string, token_file, "", "bearer token file for all three servers");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA of the servers (enables TLS)");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate (mutual TLS)");
ABSL_FLAG(std::string, tls_key, "", "PEM client key");
ABSL_FLAG(std::string, gloo_interface, "",
          "collective weights: network interface Gloo binds (e.g. eth1); empty = the "
          "local address of the route to the learner's rendezvous store");
ABSL_FLAG(int, max_message_mb, 256, "max gRPC message (must fit one weight bucket), MiB");
ABSL_FLAG(bool, log_weight_hashes, false,
          "print 'weights: actor=N version=V hash=H' of the applied parameters");

namespace {

absl::Status Run() {
  rlhf::ConfigureComputeThreads(std::max(1, absl::GetFlag(FLAGS_threads)));
  LOG(INFO) << "compute: " << rlhf::ComputeThreadsSummary();
  if (absl::GetFlag(FLAGS_reward_address).empty() || absl::GetFlag(FLAGS_reference_address).empty()) {
    return absl::InvalidArgumentError("--reward_address and --reference_address are required");
  }
  std::string token;
  if (!absl::GetFlag(FLAGS_token_file).empty()) {
    auto t = rlhf::services::ReadTokenFile(absl::GetFlag(FLAGS_token_file));
    if (!t.ok()) return t.status();
    token = *t;
  }
  auto message_bytes = rlhf::services::MessageBytesFromMiB(absl::GetFlag(FLAGS_max_message_mb));
  if (!message_bytes.ok()) return message_bytes.status();
  auto channel = [&](const std::string& target) {
    rlhf::services::ChannelOptions c;
    c.target = target;
    c.auth_token = token;
    c.max_message_bytes = *message_bytes;
    c.tls.enabled = !absl::GetFlag(FLAGS_tls_ca).empty();
    c.tls.ca_file = absl::GetFlag(FLAGS_tls_ca);
    c.tls.cert_file = absl::GetFlag(FLAGS_tls_cert);
    c.tls.key_file = absl::GetFlag(FLAGS_tls_key);
    return c;
  };
  auto learner = rlhf::learner::GrpcLearnerClient::Create(channel(absl::GetFlag(FLAGS_learner_address)));
  if (!learner.ok()) return learner.status();
  auto reward = rlhf::reward::GrpcRewardClient::Create(channel(absl::GetFlag(FLAGS_reward_address)));
  if (!reward.ok()) return reward.status();
  auto reference =
      rlhf::reference::GrpcReferenceClient::Create(channel(absl::GetFlag(FLAGS_reference_address)));
  if (!reference.ok()) return reference.status();

  auto registry = std::make_shared<prometheus::Registry>();
  auto exposer = rlhf::services::StartMetricsExposer(absl::GetFlag(FLAGS_metrics_host),
                                                     absl::GetFlag(FLAGS_metrics_port), registry,
                                                     absl::GetFlag(FLAGS_metrics_port_file));
  if (!exposer.ok()) return exposer.status();
  rlhf::actor::ActorOptions options;
  options.name = absl::GetFlag(FLAGS_actor_name);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.max_prompts = absl::GetFlag(FLAGS_max_prompts);
  options.call_timeout = absl::Seconds(absl::GetFlag(FLAGS_call_timeout_s));
  options.score_timeout = absl::Seconds(absl::GetFlag(FLAGS_score_timeout_s));
  options.drain_timeout = absl::Seconds(absl::GetFlag(FLAGS_drain_timeout_s));
  options.generation_batch = absl::GetFlag(FLAGS_generation_batch);
  if (options.generation_batch < 0) {
    return absl::InvalidArgumentError("--generation_batch: must be >= 0");
  }
  options.log_weight_hashes = absl::GetFlag(FLAGS_log_weight_hashes);
  options.weights.gloo_interface = absl::GetFlag(FLAGS_gloo_interface);
  auto device = rlhf::ParseDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) {
    return absl::Status(device.status().code(),
                        absl::StrCat("--device: ", device.status().message()));
  }
  options.device = *device;
  // The collective transport broadcasts over NCCL between CUDA processes (compiled in
  // with RLHF_WITH_CUDA; the learner makes the same choice from the same device option).
  options.weights.use_cuda = device->is_cuda();
  rlhf::actor::Actor actor(options, learner->get(), reward->get(), reference->get(), registry);
  // The loop runs on a helper thread; this (main) thread takes the shutdown signals
  // with sigtimedwait so that they are never delivered to a thread that has them
  // unblocked (LibTorch and gRPC start threads of their own).
  absl::Status s;
  std::atomic<bool> finished{false};
  std::thread runner([&] {
    s = actor.Run();
    finished.store(true);
  });
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  const timespec tick{0, 200 * 1000 * 1000};
  while (!finished.load()) {
    int sig = sigtimedwait(&set, nullptr, &tick);
    if (sig > 0) {
      std::fprintf(stderr, "actor %s: signal %d, draining\n", options.name.c_str(), sig);
      actor.Stop();
    }
  }
  runner.join();
  if (const std::string path = absl::GetFlag(FLAGS_metrics_file); !path.empty()) {
    if (absl::Status w = rlhf::services::WriteMetricsFile(*registry, path); !w.ok()) {
      std::fprintf(stderr, "actor %s: --metrics_file: %s\n", options.name.c_str(),
                   w.ToString().c_str());
    }
  }
  auto st = actor.stats();
  std::printf("actor %s: %lld batches, %lld trajectories, version %lld, busy %.2f\n",
              options.name.c_str(), static_cast<long long>(st.batches),
              static_cast<long long>(st.trajectories_submitted),
              static_cast<long long>(st.held_version),
              st.generate_seconds / std::max(1e-9, st.generate_seconds + st.wait_seconds));
  std::fflush(stdout);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  rlhf::services::BlockShutdownSignals();
  rlhf::services::ParseServerFlags(
      argc, argv,
      "rlhf-actor: leases prompts, samples, scores, submits trajectories.\n"
      "  rlhf-actor --learner_address=H:P --reward_address=H:P --reference_address=H:P");
  absl::Status status = Run();
  if (!status.ok()) {
    std::fprintf(stderr, "rlhf-actor: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
