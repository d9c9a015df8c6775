// Issue 23 proof: kill -9 of each kind of process during a test-sized `rlhf run` with
// the real binaries. The stateless reward and reference servers are restarted on their
// ports, the actor like any crashed actor, the learner resumes from its checkpoint dir;
// the job completes, every step is trained exactly once in the end, and the learner's
// persisted accounting holds: prompts_leased == trained + reissued + outstanding +
// buffered (an acknowledged trajectory that vanished would break it).
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "rlhf/v1/learner.pb.h"
#include "tests/integration/monitoring_util.h"
#include "tools/launcher/process.h"

namespace rlhf::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

nlohmann::json Processes(const std::string& run_dir) {
  auto j = nlohmann::json::parse(ReadAll(run_dir + "/processes.json"), nullptr, false);
  return j.is_discarded() ? nlohmann::json::array() : j;
}

pid_t UpPid(const std::string& run_dir, const std::string& name) {
  for (const auto& p : Processes(run_dir)) {
    if (p["name"] == name && p["up"].get<bool>()) return p["pid"].get<pid_t>();
  }
  return 0;
}

int64_t LastStep(const std::string& run_dir) {
  std::ifstream in(run_dir + "/metrics.jsonl");
  int64_t step = 0;
  for (std::string l; std::getline(in, l);) {
    auto j = nlohmann::json::parse(l, nullptr, false);
    if (!j.is_discarded() && j.contains("step")) step = j["step"].get<int64_t>();
  }
  return step;
}

// Polls `pred` until it holds, the run exits, or 120 s pass.
bool WaitFor(launcher::Process& run, const std::function<bool()>& pred) {
  const absl::Time deadline = absl::Now() + absl::Seconds(120);
  while (absl::Now() < deadline && run.Poll()) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

TEST(FaultE2eTest, KillNineOfEveryKindOfProcessAndTheJobStillFinishes) {
  const std::string dir =
      fs::path(absl::StrCat(::testing::TempDir(), "/fault_e2e_", ::getpid())).lexically_normal();
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string run_dir = dir + "/run";
  constexpr int kSteps = 16;
  std::ofstream(dir + "/job.yaml")
      << "name: fault\nrun_dir: " << run_dir << "\nseed: 5\n"
      << "data:\n  num_sft: 200\n  num_rank: 20\n  num_rl_train: 64\n  num_rl_heldout: 8\n"
      << "  num_pretrain: 20\n"
      << "sft:\n  steps: 10\n  batch_size: 8\n  eval_every: 10\n  checkpoint_every: 10\n"
      << "sampling:\n  max_new_tokens: 16\n"
      << "rl:\n  steps: " << kSteps << "\n  prompts_per_step: 4\n  samples_per_prompt: 2\n"
      << "  minibatch_size: 8\n  checkpoint_every: 3\n"
      << "actors:\n  count: 2\n  prompts_per_lease: 2\n  max_restarts: 3\n"
      << "  restart_backoff_ms: 200\n"
      << "reward_server:\n  scorers:\n    - type: gold\n"
      << "launcher:\n  status_interval_ms: 100\n  eval: false\n  grace_period_ms: 5000\n";
  launcher::ProcessSpec spec;
  spec.name = "rlhf-run";
  spec.argv = {BinDir() + "/rlhf", "run", "--config=" + dir + "/job.yaml",
               "--stages=data,sft,rl"};
  spec.log_path = dir + "/run.log";
  auto run = launcher::Process::Spawn(spec);
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_TRUE(WaitFor(**run, [&] { return LastStep(run_dir) >= 1; })) << ReadAll(spec.log_path);

  for (const char* victim : {"reward_server", "reference_server", "actor-0", "learner"}) {
    SCOPED_TRACE(victim);
    const pid_t pid = UpPid(run_dir, victim);
    ASSERT_GT(pid, 0) << ReadAll(spec.log_path);
    ASSERT_LT(LastStep(run_dir), kSteps) << "the job finished before " << victim << " was killed";
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    ASSERT_TRUE(WaitFor(**run, [&] {
      const pid_t now = UpPid(run_dir, victim);
      return now != 0 && now != pid;
    })) << ReadAll(spec.log_path);
  }
  ASSERT_TRUE((*run)->WaitExit(absl::Now() + absl::Seconds(400))) << ReadAll(spec.log_path);
  const std::string log = ReadAll(spec.log_path);
  ASSERT_EQ((*run)->exit_code(), 0) << log;
  for (const char* victim : {"reward_server", "reference_server", "actor-0", "learner"}) {
    EXPECT_THAT(log, HasSubstr(absl::StrCat(victim, " killed by signal 9 (SIGKILL); restarting")));
  }
  auto summary = nlohmann::json::parse(ReadAll(run_dir + "/summary.json"));
  EXPECT_EQ(summary["state"], "completed");
  EXPECT_THAT(ReadAll(run_dir + "/logs/learner.log"), HasSubstr("learner: restored"));

  // The learner's persisted accounting after the last checkpoint.
  rlhf::v1::LearnerState state;
  ASSERT_TRUE(state.ParseFromString(ReadAll(run_dir + "/learner/learner_service_state.pb")));
  const auto& s = state.stats();
  EXPECT_EQ(s.step(), kSteps);
  int64_t outstanding = 0;
  for (const auto& l : state.outstanding()) outstanding += l.prompts_size();
  EXPECT_EQ(s.prompts_leased(),
            s.prompts_trained() + s.prompts_reissued() + outstanding + state.buffered_size())
      << s.DebugString();
  // Every step trained one full batch, counted once despite the restart.
  EXPECT_EQ(s.prompts_trained(), int64_t{kSteps} * 4) << s.DebugString();
  EXPECT_EQ(s.trajectories_trained(), int64_t{kSteps} * 4 * 2) << s.DebugString();
  EXPECT_EQ(s.batches_dropped(), 0);
  EXPECT_EQ(s.nonfinite_updates_skipped(), 0);
  // metrics.jsonl has every step once, in order, across the learner's kill -9: the step
  // records are kept with its state, and those the restored trainer trains again are
  // not written twice.
  std::ifstream jsonl(run_dir + "/metrics.jsonl");
  int64_t last = 0;
  for (std::string l; std::getline(jsonl, l);) {
    const int64_t step = nlohmann::json::parse(l)["step"].get<int64_t>();
    EXPECT_EQ(step, last + 1) << l;
    last = step;
  }
  EXPECT_EQ(last, kSteps);
}

}  // namespace
}  // namespace rlhf::testing
