// The RL job on a real one-node Slurm cluster (tests/deploy/slurm_cluster.sh: munged,
// slurmctld, slurmd as root, everything under the test's temp dir):
//
//   `rlhf run --launcher slurm --wait` writes job.sbatch + actors.sbatch and submits the
//   test-sized job (data -> sft -> reward server, reference server, learner, one actor as
//   srun steps -> eval). While it trains, `sbatch -n 1 actors.sbatch` adds an actor that
//   joins through <run_dir>/slurm/addresses.env, submits trajectories, and is cancelled
//   with scancel: it drains and deregisters while the job goes on. The job completes;
//   the summary shows a trained policy; the learner's accounting holds.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "learner/learner_client.h"
#include "services/replica_target.h"
#include "tests/integration/monitoring_util.h"
#include "tools/launcher/http.h"
#include "tools/launcher/process.h"

namespace rlhf::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr int kSteps = 200;  // long enough that the extra actor joins mid-run
constexpr int kPromptsPerStep = 4;
constexpr int kSamplesPerPrompt = 2;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// KEY=VALUE lines.
std::map<std::string, std::string> ReadEnvFile(const std::string& path) {
  std::map<std::string, std::string> out;
  for (absl::string_view line : absl::StrSplit(ReadAll(path), '\n')) {
    const size_t eq = line.find('=');
    if (eq != absl::string_view::npos) {
      out[std::string(line.substr(0, eq))] = std::string(line.substr(eq + 1));
    }
  }
  return out;
}

class SlurmE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0u) << "the Slurm test starts slurmctld/slurmd as root";
    dir_ = fs::path(absl::StrCat(::testing::TempDir(), "/slurm_e2e_", ::getpid()))
               .lexically_normal()
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    auto r = RunShell(absl::StrCat(SourceDir(), "/tests/deploy/slurm_cluster.sh start ", dir_,
                                   "/cluster 2>&1"));
    ASSERT_EQ(r.exit_code, 0) << r.output << "\n(scripts/deps.sh installs slurmctld, slurmd, "
                                             "slurm-client and munge)";
    started_ = true;
    // Every Slurm client below (sbatch, squeue, scancel, and the ones inside the job,
    // which inherit the submitter's environment) reads this cluster's config.
    ::setenv("SLURM_CONF", (dir_ + "/cluster/slurm.conf").c_str(), 1);
  }
  void TearDown() override {
    if (!started_) return;
    RunShell("scancel --user=root 2>/dev/null");
    RunShell(absl::StrCat(SourceDir(), "/tests/deploy/slurm_cluster.sh stop ", dir_, "/cluster"));
  }

  // Job ids in the queue (pending or running).
  std::vector<std::string> Queue() {
    auto r = RunShell("squeue -h -o %i");
    std::vector<std::string> ids;
    for (absl::string_view l : absl::StrSplit(r.output, '\n', absl::SkipWhitespace())) {
      ids.emplace_back(absl::StripAsciiWhitespace(l));
    }
    return ids;
  }

  std::string dir_;
  bool started_ = false;
};

TEST_F(SlurmE2eTest, JobCompletesAndExtraActorsJoinAndLeave) {
  const std::string run_dir = dir_ + "/run";
  std::ofstream(dir_ + "/token") << "slurm-test-token\n";
  std::ofstream(dir_ + "/job.yaml")
      << "name: slurm-e2e\nrun_dir: " << run_dir << "\nseed: 5\n"
      << "data:\n  num_sft: 300\n  num_rank: 20\n  num_rl_train: 64\n  num_rl_heldout: 16\n"
      << "  num_pretrain: 20\n"
      << "sft:\n  steps: 30\n  batch_size: 16\n  eval_every: 30\n  checkpoint_every: 30\n"
      << "sampling:\n  max_new_tokens: 32\n"
      << "rl:\n  steps: " << kSteps << "\n  prompts_per_step: " << kPromptsPerStep
      << "\n  samples_per_prompt: " << kSamplesPerPrompt << "\n"
      << "  minibatch_size: 8\n  checkpoint_every: 20\n"
      << "actors:\n  count: 1\n  prompts_per_lease: 2\n"
      // The gold rule scorer: no reward model to train at test size.
      << "reward_server:\n  scorers:\n    - type: gold\n"
      << "learner:\n  threads: 1\n"
      // One node: the servers' all-interfaces plaintext is opted into (a token alone is
      // refused off loopback).
      << "security:\n  token_file: " << dir_ << "/token\n  allow_insecure: true\n"
      << "slurm:\n  overcommit: true\n  advertise_host: 127.0.0.1\n  stop_grace_s: 20\n"
      << "eval:\n  num_prompts: 16\n  num_examples: 1\n";

  launcher::ProcessSpec spec;
  spec.name = "rlhf-run-slurm";
  spec.argv = {BinDir() + "/rlhf", "run", "--launcher=slurm", "--wait",
               "--config=" + dir_ + "/job.yaml"};
  spec.log_path = dir_ + "/run.log";
  auto run = launcher::Process::Spawn(spec);
  ASSERT_TRUE(run.ok()) << run.status();

  // The servers are up once the job has written the addresses (after data and SFT).
  const std::string addresses = run_dir + "/slurm/addresses.env";
  const absl::Time up_by = absl::Now() + absl::Seconds(300);
  while (!fs::exists(addresses) && (*run)->Poll() && absl::Now() < up_by) {
    absl::SleepFor(absl::Milliseconds(200));
  }
  ASSERT_TRUE(fs::exists(addresses)) << ReadAll(spec.log_path);
  auto env = ReadEnvFile(addresses);
  ASSERT_TRUE(absl::StartsWith(env["RLHF_LEARNER_ADDRESS"], "127.0.0.1:")) << ReadAll(addresses);
  EXPECT_TRUE(env.count("RLHF_REWARD_ADDRESS") && env.count("RLHF_REFERENCE_ADDRESS"));
  // The servers' /metrics addresses, from the ports they wrote (--metrics_port_file):
  // each answers.
  for (const char* key :
       {"RLHF_LEARNER_METRICS", "RLHF_REWARD_SERVER_METRICS", "RLHF_REFERENCE_SERVER_METRICS"}) {
    ASSERT_TRUE(env.count(key)) << key << "\n" << ReadAll(addresses);
    std::string host;
    int port = 0;
    const absl::Status split = services::SplitHostPort(env[key], &host, &port);
    ASSERT_TRUE(split.ok()) << key << " " << env[key] << ": " << split;
    EXPECT_TRUE(launcher::HttpGet(host, port, "/metrics", absl::Seconds(5)).ok())
        << key << " " << env[key];
  }

  services::ChannelOptions channel;
  channel.target = env["RLHF_LEARNER_ADDRESS"];
  channel.auth_token = "slurm-test-token";
  auto client = learner::GrpcLearnerClient::Create(channel);
  ASSERT_TRUE(client.ok()) << client.status();
  rlhf::v1::LearnerStats last;
  auto wait_stats = [&](const std::function<bool(const rlhf::v1::LearnerStats&)>& pred,
                        absl::Duration timeout) {
    const absl::Time until = absl::Now() + timeout;
    while (absl::Now() < until && (*run)->Poll()) {
      auto s = (*client)->GetStats({}, absl::Now() + absl::Seconds(2));
      if (s.ok()) {
        last = *s;
        if (pred(last)) return true;
      }
      absl::SleepFor(absl::Milliseconds(200));
    }
    return false;
  };
  // A separate job of one more actor joins the running job (submitted as soon as the
  // addresses exist: a test-sized RL job is over in a minute)...
  auto sub = RunShell(absl::StrCat("sbatch --parsable -n 1 ", run_dir, "/slurm/actors.sbatch"));
  ASSERT_EQ(sub.exit_code, 0) << sub.output;
  const std::string join_id(absl::StripAsciiWhitespace(sub.output));
  ASSERT_TRUE(wait_stats([](const auto& s) { return s.step() >= 1; }, absl::Seconds(120)))
      << last.ShortDebugString() << "\n" << ReadAll(spec.log_path);
  ASSERT_TRUE(wait_stats([](const auto& s) { return s.actors_connected() >= 2; },
                         absl::Seconds(120)))
      << last.ShortDebugString() << "\n" << ReadAll(run_dir + "/logs/slurm-actors-" + join_id + ".out");
  const int64_t step_at_join = last.step();
  // ...and submits trajectories: its own /metrics (port in its log) counts them.
  const std::string join_log = absl::StrCat(run_dir, "/logs/actor-j", join_id, "-0.log");
  double join_submitted = 0;
  const absl::Time work_by = absl::Now() + absl::Seconds(120);
  while (join_submitted <= 0 && absl::Now() < work_by && (*run)->Poll()) {
    std::smatch m;
    const std::string log = ReadAll(join_log);
    if (std::regex_search(log, m, std::regex("metrics on http://[^:]+:(\\d+)"))) {
      auto body = launcher::HttpGet("127.0.0.1", std::stoi(m[1]), "/metrics", absl::Seconds(2));
      if (body.ok()) {
        for (const auto& sample : launcher::ParseMetrics(*body)) {
          if (sample.name == "rlhf_actor_trajectories_submitted_total") join_submitted = sample.value;
        }
      }
    }
    absl::SleepFor(absl::Milliseconds(300));
  }
  ASSERT_GT(join_submitted, 0) << ReadAll(join_log);

  // Cancelling it drains its actor (it deregisters) and leaves the main job running.
  auto cancel = RunShell("scancel " + join_id);
  ASSERT_EQ(cancel.exit_code, 0) << cancel.output;
  ASSERT_TRUE(wait_stats([](const auto& s) { return s.actors_connected() == 1; },
                         absl::Seconds(60)))
      << last.ShortDebugString() << "\n" << ReadAll(join_log);
  const absl::Time gone_by = absl::Now() + absl::Seconds(60);
  while (absl::Now() < gone_by) {
    auto q = Queue();
    if (std::find(q.begin(), q.end(), join_id) == q.end()) break;
    absl::SleepFor(absl::Milliseconds(200));
  }
  auto q = Queue();
  EXPECT_EQ(std::find(q.begin(), q.end(), join_id), q.end()) << "actor job still queued";
  const std::string join_text = ReadAll(join_log);
  EXPECT_THAT(join_text, HasSubstr("draining"));
  EXPECT_THAT(join_text, HasSubstr("stopped ("));  // the actor's own orderly exit
  EXPECT_TRUE((*run)->Poll()) << "main job ended with the actor job:\n" << ReadAll(spec.log_path);
  EXPECT_LT(last.step(), kSteps) << "the join came too late to show the job going on";
  EXPECT_GE(last.step(), step_at_join);

  // The job completes by itself: learner done, servers stopped, eval written.
  ASSERT_TRUE((*run)->WaitExit(absl::Now() + absl::Seconds(400))) << ReadAll(spec.log_path);
  const std::string log = ReadAll(spec.log_path);
  ASSERT_EQ((*run)->exit_code(), 0) << log;
  EXPECT_THAT(log, HasSubstr("completed; summary:"));
  EXPECT_TRUE(Queue().empty()) << "jobs left in the queue";

  // Accounting: every leased prompt is trained, re-issued, outstanding or buffered (last
  // stats seen while running), and the learner trained exactly steps x P x G.
  EXPECT_EQ(last.prompts_leased(), last.prompts_trained() + last.prompts_reissued() +
                                       last.prompts_outstanding() + last.prompts_buffered())
      << last.ShortDebugString();
  EXPECT_EQ(last.trajectories_trained(), kSamplesPerPrompt * last.prompts_trained())
      << last.ShortDebugString();
  EXPECT_GE(last.actors_registered_total(), 2) << last.ShortDebugString();
  std::smatch done;
  const std::string learner_log = ReadAll(run_dir + "/logs/learner.log");
  ASSERT_TRUE(std::regex_search(learner_log, done,
                                std::regex("done: (\\d+) steps, version (\\d+), (\\d+) trajectories")))
      << learner_log;
  EXPECT_EQ(std::stoi(done[1]), kSteps);
  EXPECT_EQ(std::stoi(done[2]), kSteps);
  EXPECT_EQ(std::stoi(done[3]), kSteps * kPromptsPerStep * kSamplesPerPrompt);

  // The summary: both policies evaluated on the held-out prompts; RL moved the policy.
  auto summary = nlohmann::json::parse(ReadAll(run_dir + "/summary.json"));
  EXPECT_EQ(summary["state"], "completed") << summary.dump(1);
  for (const char* who : {"sft", "rl"}) {
    ASSERT_TRUE(summary.contains(who) && summary[who].contains("gold_score")) << summary.dump(1);
    EXPECT_EQ(summary[who]["eval_samples"].get<double>(), 16.0) << who;
  }
  EXPECT_NEAR(summary["sft"]["kl_to_sft"].get<double>(), 0.0, 1e-4);
  EXPECT_GT(summary["rl"]["kl_to_sft"].get<double>(), 0.0);
  EXPECT_TRUE(fs::exists(absl::StrFormat("%s/learner/step-%08d/policy/config.json", run_dir,
                                         kSteps)));
}

}  // namespace
}  // namespace rlhf::testing
