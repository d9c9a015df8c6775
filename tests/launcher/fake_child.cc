// A stand-in for the real servers in the launcher tests: a real gRPC server with
// health checking and a real /metrics exposer, port files like the real binaries, and
// knobs to crash, finish, ignore SIGTERM or leave a grandchild behind.
//
// Invoked as rlhf-learner (a symlink), it also plays a learner: a "step" every
// FAKE_STEP_MS ms published on /metrics like the real one (rlhf_learner_steps_total,
// rlhf_learner_policy_version, rlhf_learner_train_stat{name}) and answered by
// LearnerService.GetStats (step, policy_version = step, done at the last step, and a
// recent_steps record of each step after steps_after: reward_mean = 0.1 * step, kl_mean
// 0.5, beta 0.05, trajectories_trained = 32 * step), exit 0 after FAKE_STEPS steps (after lingering
// 1 s, as the real learner waits for its actors and its GetStats poller). Flags are --key=value;
// unknown flags are ignored (the launcher passes the real binaries' flags). FAKE_LEARNER_CRASH_MS
// makes the learner abort() after that long. FAKE_HOLD_FILE (a path) holds the learner before its
// last step until that file exists, so a test can finish what it does to a running job before the
// job may end. The real binaries' --host, --tls_cert/--tls_key/--tls_ca/--require_client_cert,
// --token_file and --allow_insecure are honoured, so that the launcher's probes meet the
// security a real server would have.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "rlhf/v1/learner.grpc.pb.h"
#include "rlhf/v1/reward.grpc.pb.h"
#include "services/metrics.h"
#include "services/server.h"

namespace {

// GetStats of the fake learner, from the step counter of the main loop.
class FakeLearnerService final : public rlhf::v1::LearnerService::CallbackService {
 public:
  FakeLearnerService(const std::atomic<int>* step, int total_steps)
      : step_(step), total_steps_(total_steps) {}
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* ctx,
                                     const rlhf::v1::GetStatsRequest* req,
                                     rlhf::v1::LearnerStats* resp) override {
    const int step = step_->load();
    resp->set_step(step);
    resp->set_policy_version(step);
    resp->set_trajectories_trained(32 * step);
    resp->set_done(step >= total_steps_);
    for (int64_t s = std::max<int64_t>(req->steps_after(), 0) + 1; s <= step; ++s) {
      rlhf::v1::StepRecord& record = *resp->add_recent_steps();
      record.set_step(s);
      record.set_policy_version(s);
      record.set_trajectories_trained(32 * s);
      record.set_time_unix_s(absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()));
      auto& stats = *record.mutable_stats();
      stats["reward_mean"] = 0.1 * static_cast<double>(s);
      stats["kl_mean"] = 0.5;
      stats["beta"] = 0.05;
    }
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  const std::atomic<int>* const step_;
  const int total_steps_;
};

void WriteFile(const std::string& path, const std::string& text) {
  if (path.empty()) return;
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << text << "\n";
  }
  std::rename(tmp.c_str(), path.c_str());
}

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  int out;
  return v != nullptr && absl::SimpleAtoi(v, &out) ? out : fallback;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> flags;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0) continue;
    const size_t eq = a.find('=');
    flags[a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2)] =
        eq == std::string::npos ? "true" : a.substr(eq + 1);
  }
  auto flag = [&](const std::string& k, const std::string& d = "") {
    auto it = flags.find(k);
    return it == flags.end() ? d : it->second;
  };
  auto int_flag = [&](const std::string& k, int d) {
    int v;
    return absl::SimpleAtoi(flag(k), &v) ? v : d;
  };
  std::string self = argv[0];
  self = self.substr(self.rfind('/') + 1);
  const bool learner = self == "rlhf-learner";
  const std::string name = flag("name", flag("actor_name", self));

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  if (flag("ignore_sigterm") == "true") {
    signal(SIGTERM, SIG_IGN);
    sigdelset(&set, SIGTERM);
  }
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  if (!flag("grandchild_pid_file").empty()) {
    pid_t g = fork();
    if (g == 0) {
      execl("/bin/sleep", "sleep", "1000", static_cast<char*>(nullptr));
      _exit(127);
    }
    WriteFile(flag("grandchild_pid_file"), std::to_string(g));
  }
  absl::SleepFor(absl::Milliseconds(int_flag("startup_delay_ms", 0)));

  const int total_steps = EnvInt("FAKE_STEPS", 5);
  std::atomic<int> step{0};
  FakeLearnerService learner_service(&step, total_steps);
  std::vector<grpc::Service*> services;
  if (learner) services.push_back(&learner_service);
  rlhf::services::GrpcServerOptions options;
  options.name = name;
  options.host = flag("host", options.host);
  options.tls.cert_file = flag("tls_cert");
  options.tls.key_file = flag("tls_key");
  options.tls.ca_file = flag("tls_ca");
  options.tls.require_client_cert = flag("require_client_cert") == "true";
  options.allow_insecure = flag("allow_insecure") == "true";
  if (!flag("token_file").empty()) {
    auto token = rlhf::services::ReadTokenFile(flag("token_file"));
    if (!token.ok()) {
      std::fprintf(stderr, "fake child: %s\n", token.status().ToString().c_str());
      return 2;
    }
    options.auth_token = *token;
  }
  // A sync service (every method UNIMPLEMENTED): with a token there is no reflection
  // service, and gRPC needs one sync service to serve health.
  rlhf::v1::RewardService::Service unimplemented;
  if (!learner) services.push_back(&unimplemented);
  auto server = rlhf::services::GrpcServer::Create(options, services);
  absl::Status started = server.ok() ? (*server)->Start() : server.status();
  if (!started.ok()) {
    std::fprintf(stderr, "fake child: cannot start server: %s\n", started.ToString().c_str());
    return 2;
  }
  std::printf("fake child %s: tls %s, client cert %s, token %s\n", name.c_str(),
              options.tls.enabled() ? "on" : "off",
              options.tls.require_client_cert ? "required" : "not required",
              options.auth_token.empty() ? "off" : "on");
  auto registry = std::make_shared<prometheus::Registry>();
  auto& ticks = prometheus::BuildCounter()
                    .Name("rlhf_fake_ticks_total")
                    .Help("Fake child ticks")
                    .Register(*registry)
                    .Add({});
  auto& steps = prometheus::BuildCounter()
                    .Name("rlhf_learner_steps_total")
                    .Help("Fake learner steps")
                    .Register(*registry)
                    .Add({});
  auto& version = prometheus::BuildGauge()
                      .Name("rlhf_learner_policy_version")
                      .Help("Fake learner policy version")
                      .Register(*registry)
                      .Add({});
  auto& stat = prometheus::BuildGauge()
                   .Name("rlhf_learner_train_stat")
                   .Help("Fake learner step statistics")
                   .Register(*registry);
  std::unique_ptr<rlhf::services::MetricsExposer> exposer;
  const int metrics_port = int_flag("metrics_port", -1);
  if (metrics_port >= 0) {
    auto e = rlhf::services::MetricsExposer::Create("127.0.0.1", metrics_port, registry);
    if (!e.ok()) {
      std::fprintf(stderr, "fake child: %s\n", e.status().ToString().c_str());
      return 3;
    }
    exposer = std::move(*e);
    WriteFile(flag("metrics_port_file"), std::to_string(exposer->port()));
  }
  WriteFile(flag("port_file"), std::to_string((*server)->port()));
  std::printf("fake child %s serving on %d\n", name.c_str(), (*server)->port());
  std::fflush(stdout);

  const absl::Time start = absl::Now();
  const int crash_ms = learner ? EnvInt("FAKE_LEARNER_CRASH_MS", int_flag("crash_after_ms", -1))
                               : int_flag("crash_after_ms", -1);
  const int exit_ms = int_flag("exit_after_ms", -1);
  const int step_ms = EnvInt("FAKE_STEP_MS", 200);
  const char* hold_env = std::getenv("FAKE_HOLD_FILE");
  const std::string hold_file = hold_env != nullptr ? hold_env : "";
  absl::Time next_step = start + absl::Milliseconds(step_ms);
  while (true) {
    timespec ts{0, 20 * 1000 * 1000};
    int sig = sigtimedwait(&set, nullptr, &ts);
    ticks.Increment();
    if (sig == SIGTERM || sig == SIGINT) {
      if (!flag("events_file").empty()) {
        std::ofstream(flag("events_file"), std::ios::app) << name << " sigterm\n";
      }
      (*server)->Shutdown(absl::Now() + absl::Seconds(1));
      return 0;
    }
    const double elapsed_ms = absl::ToDoubleMilliseconds(absl::Now() - start);
    if (crash_ms >= 0 && elapsed_ms >= crash_ms) {
      std::fprintf(stderr, "fake child %s about to crash\n", name.c_str());
      std::fflush(stderr);
      abort();
    }
    if (exit_ms >= 0 && elapsed_ms >= exit_ms) {
      std::printf("fake child %s done\n", name.c_str());
      return int_flag("exit_code", 0);
    }
    if (learner && absl::Now() >= next_step) {
      next_step += absl::Milliseconds(step_ms);
      if (step.load() + 1 >= total_steps && !hold_file.empty() &&
          !std::ifstream(hold_file).good()) {
        continue;
      }
      const int current = ++step;  // GetStats answers from here on with this step's stats
      steps.Increment();
      version.Set(current);
      stat.Add({{"name", "reward_mean"}}).Set(0.1 * current);
      stat.Add({{"name", "kl_mean"}}).Set(0.5);
      stat.Add({{"name", "beta"}}).Set(0.05);
      if (!flag("metrics_jsonl").empty()) {
        std::ofstream(flag("metrics_jsonl"), std::ios::app)
            << absl::StrCat("{\"step\": ", current, ", \"policy_version\": ", current,
                            ", \"reward_mean\": ", 0.1 * current, ", \"kl\": 0.5, \"beta\": 0.05, ",
                            "\"trajectories_total\": ", 32 * current, "}\n");
      }
      if (current >= total_steps) {
        // Like the real learner, linger a moment (it waits for actors to leave).
        std::printf("fake learner: %d steps done\n", current);
        std::fflush(stdout);
        absl::SleepFor(absl::Seconds(1));
        return 0;
      }
    }
  }
}
