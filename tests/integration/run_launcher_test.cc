// `rlhf run` as a user runs it (the real binary, a real job directory), over stand-in
// children: launcher_fake_child symlinked as rlhf-reward-server, rlhf-reference-server,
// rlhf-learner and rlhf-actor (real gRPC health, real port files, a learner that writes
// metrics.jsonl and exits 0 after FAKE_STEPS steps).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/config/config.h"
#include "tools/launcher/http.h"
#include "tools/launcher/process.h"

namespace rlhf {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using launcher::Process;
using launcher::ProcessSpec;

std::string BinDir() {
  const char* b = std::getenv("RLHF_BIN_DIR");
  return b != nullptr ? b : "bin";
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Pids of live (non-zombie) processes whose command line mentions `needle`.
std::vector<pid_t> ProcessesMentioning(const std::string& needle) {
  std::vector<pid_t> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.empty() || !isdigit(name[0])) continue;
    const pid_t pid = std::stoi(name);
    if (pid == ::getpid()) continue;
    std::string cmdline = ReadAll(e.path().string() + "/cmdline");
    for (char& c : cmdline) c = c == '\0' ? ' ' : c;
    if (cmdline.find(needle) == std::string::npos) continue;
    const std::string stat = ReadAll(e.path().string() + "/stat");
    const size_t close = stat.rfind(')');
    if (close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 'Z') continue;
    out.push_back(pid);
  }
  return out;
}

class RunLauncherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(absl::StrCat(::testing::TempDir(), "/run_launcher_", ::getpid(), "_",
                                 ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .lexically_normal()
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_ + "/bin");
    const std::string fake = fs::canonical(BinDir() + "/../tests/launcher_fake_child").string();
    for (const char* b : {"rlhf-reward-server", "rlhf-reference-server", "rlhf-learner",
                          "rlhf-actor"}) {
      fs::create_symlink(fake, dir_ + "/bin/" + b);
    }
    fs::create_symlink(fs::canonical(BinDir() + "/rlhf"), dir_ + "/bin/rlhf");
    run_dir_ = dir_ + "/run";
  }
  void TearDown() override {
    for (pid_t p : ProcessesMentioning(dir_)) ::kill(p, SIGKILL);
    fs::remove_all(dir_);
  }

  void WriteConfig(const std::string& extra = "") {
    std::ofstream(dir_ + "/job.yaml")
        << "name: fake\nrun_dir: " << run_dir_ << "\n"
        << "rl:\n  steps: 10\n"
        << "actors:\n  count: 2\n  max_restarts: 2\n  restart_backoff_ms: 100\n"
        << "reward_server:\n  scorers:\n    - type: gold\n"
        << "launcher:\n  train_missing: false\n  eval: false\n  status_interval_ms: 100\n"
        << "  grace_period_ms: 3000\n  health_timeout_s: 30\n"
        << extra;
  }

  std::unique_ptr<Process> StartRun(std::vector<std::string> env,
                                    std::vector<std::string> extra_args = {}) {
    ProcessSpec spec;
    spec.name = "rlhf-run";
    spec.argv = {dir_ + "/bin/rlhf", "run", "--config=" + dir_ + "/job.yaml",
                 "--bin_dir=" + dir_ + "/bin"};
    for (auto& a : extra_args) spec.argv.push_back(a);
    spec.log_path = dir_ + "/run.log";
    spec.env = std::move(env);
    auto p = Process::Spawn(spec);
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? std::move(*p) : nullptr;
  }

  // processes.json as the launcher last wrote it.
  nlohmann::json Processes() {
    auto j = nlohmann::json::parse(ReadAll(run_dir_ + "/processes.json"), nullptr, false);
    return j.is_discarded() ? nlohmann::json::array() : j;
  }

  // Waits (deadline 60 s) until `pred(processes.json)` holds or `run` exits.
  bool WaitForProcesses(Process& run, const std::function<bool(const nlohmann::json&)>& pred) {
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (absl::Now() < deadline && run.Poll()) {
      if (pred(Processes())) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  static bool ActorsUp(const nlohmann::json& procs, int n) {
    int up = 0;
    for (const auto& p : procs) up += p["component"] == "actor" && p["up"].get<bool>();
    return up >= n;
  }

  // The fake learner holds before its last step until ReleaseHold(): a test that acts on a
  // running job passes HoldEnv() so the job cannot end before the test is done with it.
  std::string HoldEnv() const { return "FAKE_HOLD_FILE=" + dir_ + "/release"; }
  void ReleaseHold() const { std::ofstream(dir_ + "/release") << "go\n"; }

  std::string dir_, run_dir_;
};

TEST_F(RunLauncherTest, CompletesAndFillsTheRunDirectory) {
  // A server without an exporter (-1) is started without waiting for a /metrics port.
  WriteConfig("reference_server:\n  endpoint:\n    metrics_port: -1\n");
  auto run = StartRun({"FAKE_STEPS=10", "FAKE_STEP_MS=300"});
  ASSERT_NE(run, nullptr);
  ASSERT_TRUE(run->WaitExit(absl::Now() + absl::Seconds(90)));
  const std::string log = ReadAll(dir_ + "/run.log");
  ASSERT_EQ(run->exit_code(), 0) << log;
  EXPECT_THAT(log, HasSubstr("learner finished"));
  EXPECT_THAT(log, HasSubstr("| actors 2/2 |"));
  EXPECT_THAT(log, HasSubstr("step 10/10"));
  auto summary = nlohmann::json::parse(ReadAll(run_dir_ + "/summary.json"));
  EXPECT_EQ(summary["state"], "completed");
  EXPECT_EQ(summary["rl"]["last_step"]["step"], 10);
  EXPECT_GT(summary["wall_seconds"]["rl"].get<double>(), 0.0);
  // metrics.jsonl: a line per learner step the launcher saw on the learner's /metrics,
  // steps increasing, ending at the last step; a log per process; the resolved config.
  std::ifstream jsonl(run_dir_ + "/metrics.jsonl");
  std::vector<int64_t> steps;
  for (std::string l; std::getline(jsonl, l);) {
    auto j = nlohmann::json::parse(l);
    steps.push_back(j["step"].get<int64_t>());
    EXPECT_DOUBLE_EQ(j["reward_mean"].get<double>(), 0.1 * steps.back());
    EXPECT_EQ(j["policy_version"], steps.back());
  }
  ASSERT_GE(steps.size(), 2u);
  EXPECT_TRUE(std::is_sorted(steps.begin(), steps.end()));
  EXPECT_EQ(std::adjacent_find(steps.begin(), steps.end()), steps.end());
  EXPECT_EQ(steps.back(), 10);
  for (const char* f : {"logs/learner.log", "logs/actor-0.log", "logs/actor-1.log",
                        "logs/reward_server.log", "logs/reference_server.log"}) {
    EXPECT_TRUE(fs::exists(run_dir_ + "/" + f)) << f;
  }
  config::LoadOptions lo;
  lo.check_files = false;
  auto resolved = config::LoadJobConfig(run_dir_ + "/config.yaml", lo);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(resolved->rl().steps(), 10);
  EXPECT_EQ(resolved->run_dir(), run_dir_);
  // Each process wrote the /metrics port it bound; the one without an exporter none.
  for (const char* p : {"learner", "reward_server", "actor-0", "actor-1"}) {
    EXPECT_TRUE(launcher::ReadPortFile(run_dir_ + "/ports/" + p + ".metrics.port").has_value())
        << p;
  }
  EXPECT_FALSE(fs::exists(run_dir_ + "/ports/reference_server.metrics.port"));
  EXPECT_THAT(log, HasSubstr("reference_server serving at"));
  EXPECT_THAT(ProcessesMentioning(dir_), ::testing::IsEmpty());
}

TEST_F(RunLauncherTest, SigtermStopsEverythingAndLeavesNoProcess) {
  WriteConfig();
  auto run = StartRun({"FAKE_STEPS=1000000", "FAKE_STEP_MS=100"});
  ASSERT_NE(run, nullptr);
  // Waits until the launcher's children are running: both servers, the learner and both
  // actors. A condition reached before a deadline, not one count: a single count taken
  // when processes.json first showed both actors up once saw 4 of the 5 (CI at 06f3638).
  size_t children = 0;
  auto all_running = [&](const nlohmann::json& processes) {
    children = ProcessesMentioning(dir_ + "/bin/rlhf-").size();
    return ActorsUp(processes, 2) && children == 5;
  };
  ASSERT_TRUE(WaitForProcesses(*run, all_running))
      << children << " children of the launcher running; processes.json: " << Processes().dump()
      << "\n"
      << ReadAll(dir_ + "/run.log");
  ASSERT_EQ(::kill(run->pid(), SIGTERM), 0);
  ASSERT_TRUE(run->WaitExit(absl::Now() + absl::Seconds(60)));
  const std::string log = ReadAll(dir_ + "/run.log");
  EXPECT_EQ(run->exit_code(), 130) << log;
  EXPECT_THAT(log, HasSubstr("stopping (signal)"));
  EXPECT_THAT(ProcessesMentioning(dir_), ::testing::IsEmpty());
  auto summary = nlohmann::json::parse(ReadAll(run_dir_ + "/summary.json"));
  EXPECT_EQ(summary["state"], "interrupted");
  for (const auto& p : Processes()) EXPECT_FALSE(p["up"].get<bool>()) << p.dump();
}

TEST_F(RunLauncherTest, KilledActorIsRestartedAndTheJobCompletes) {
  WriteConfig();
  auto run = StartRun({"FAKE_STEPS=40", "FAKE_STEP_MS=150", HoldEnv()});
  ASSERT_NE(run, nullptr);
  pid_t actor0 = 0;
  ASSERT_TRUE(WaitForProcesses(*run, [&](const nlohmann::json& procs) {
    for (const auto& p : procs) {
      if (p["name"] == "actor-0" && p["up"].get<bool>()) actor0 = p["pid"].get<pid_t>();
    }
    return actor0 > 0 && ActorsUp(procs, 2);
  })) << ReadAll(dir_ + "/run.log");
  ASSERT_EQ(::kill(actor0, SIGKILL), 0);
  ASSERT_TRUE(WaitForProcesses(*run, [&](const nlohmann::json& procs) {
    for (const auto& p : procs) {
      if (p["name"] == "actor-0" && p["up"].get<bool>() && p["pid"].get<pid_t>() != actor0) {
        return true;
      }
    }
    return false;
  })) << ReadAll(dir_ + "/run.log");
  // The new actor-0 writes the /metrics port it bound (the old one's is removed before
  // the restart), and its /metrics answers there: the launcher scrapes the live process.
  std::optional<int> port;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline && !port.has_value()) {
    port = launcher::ReadPortFile(run_dir_ + "/ports/actor-0.metrics.port");
    if (!port.has_value()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(port.has_value()) << ReadAll(dir_ + "/run.log");
  EXPECT_TRUE(launcher::HttpGet("127.0.0.1", *port, "/metrics", absl::Seconds(5)).ok());
  ReleaseHold();
  ASSERT_TRUE(run->WaitExit(absl::Now() + absl::Seconds(90)));
  const std::string log = ReadAll(dir_ + "/run.log");
  ASSERT_EQ(run->exit_code(), 0) << log;
  EXPECT_THAT(log, HasSubstr("actor-0 killed by signal 9 (SIGKILL); restarting"));
  EXPECT_THAT(log, HasSubstr("restarted actor-0"));
  auto summary = nlohmann::json::parse(ReadAll(run_dir_ + "/summary.json"));
  EXPECT_EQ(summary["state"], "completed");
  EXPECT_EQ(summary["rl"]["actor_restarts"], 1);
  EXPECT_THAT(ProcessesMentioning(dir_), ::testing::IsEmpty());
}

TEST_F(RunLauncherTest, CrashedLearnerFailsTheJobWithItsLog) {
  WriteConfig();
  auto run = StartRun({"FAKE_STEPS=1000", "FAKE_STEP_MS=100", "FAKE_LEARNER_CRASH_MS=1500"});
  ASSERT_NE(run, nullptr);
  ASSERT_TRUE(run->WaitExit(absl::Now() + absl::Seconds(90)));
  const std::string log = ReadAll(dir_ + "/run.log");
  EXPECT_EQ(run->exit_code(), 1) << log;
  // Restarted (it resumes from its checkpoint dir) until its restarts are used up.
  EXPECT_THAT(log, HasSubstr("restarted learner"));
  EXPECT_THAT(log, HasSubstr("job failed: learner killed by signal 6 (SIGABRT) after 3 restarts; "
                             "last lines of"));
  EXPECT_THAT(log, HasSubstr("fake child rlhf-learner about to crash"));
  auto summary = nlohmann::json::parse(ReadAll(run_dir_ + "/summary.json"));
  EXPECT_EQ(summary["state"], "failed");
  EXPECT_THAT(summary["message"].get<std::string>(), HasSubstr("learner killed by signal 6"));
  EXPECT_THAT(ProcessesMentioning(dir_), ::testing::IsEmpty());
}

// Issue 23 item 6: kill -9 of the stateless servers restarts them; the job completes.
TEST_F(RunLauncherTest, KilledScoringServersAreRestartedAndTheJobCompletes) {
  WriteConfig();
  auto run = StartRun({"FAKE_STEPS=40", "FAKE_STEP_MS=150", HoldEnv()});
  ASSERT_NE(run, nullptr);
  for (const char* server : {"reward_server", "reference_server"}) {
    pid_t pid = 0;
    ASSERT_TRUE(WaitForProcesses(*run, [&](const nlohmann::json& procs) {
      for (const auto& p : procs) {
        if (p["name"] == server && p["up"].get<bool>()) pid = p["pid"].get<pid_t>();
      }
      return pid > 0;
    })) << ReadAll(dir_ + "/run.log");
    const std::string metrics_port_file =
        absl::StrCat(run_dir_, "/ports/", server, ".metrics.port");
    const std::optional<int> metrics_port = launcher::ReadPortFile(metrics_port_file);
    ASSERT_TRUE(metrics_port.has_value()) << server;
    ASSERT_EQ(::kill(pid, SIGKILL), 0) << server;
    ASSERT_TRUE(WaitForProcesses(*run, [&](const nlohmann::json& procs) {
      for (const auto& p : procs) {
        if (p["name"] == server && p["up"].get<bool>() && p["pid"].get<pid_t>() != pid) return true;
      }
      return false;
    })) << server << "\n" << ReadAll(dir_ + "/run.log");
    // Back on the /metrics port it first bound, so Prometheus's target stays right.
    EXPECT_EQ(launcher::ReadPortFile(metrics_port_file), metrics_port) << server;
    EXPECT_TRUE(launcher::HttpGet("127.0.0.1", *metrics_port, "/metrics", absl::Seconds(5)).ok())
        << server;
  }
  ReleaseHold();
  ASSERT_TRUE(run->WaitExit(absl::Now() + absl::Seconds(90)));
  const std::string log = ReadAll(dir_ + "/run.log");
  ASSERT_EQ(run->exit_code(), 0) << log;
  EXPECT_THAT(log, HasSubstr("reward_server killed by signal 9 (SIGKILL); restarting"));
  EXPECT_THAT(log, HasSubstr("restarted reference_server"));
  EXPECT_THAT(ProcessesMentioning(dir_), ::testing::IsEmpty());
}

// Issue 23 item 5: a resumed run (same run_dir) does not write the steps its learner
// trains again into metrics.jsonl a second time.
TEST_F(RunLauncherTest, AResumedRunDoesNotRepeatStepsInMetricsJsonl) {
  WriteConfig();
  for (int run_index = 0; run_index < 2; ++run_index) {
    auto run = StartRun({"FAKE_STEPS=6", "FAKE_STEP_MS=200"});
    ASSERT_NE(run, nullptr);
    ASSERT_TRUE(run->WaitExit(absl::Now() + absl::Seconds(90)));
    ASSERT_EQ(run->exit_code(), 0) << ReadAll(dir_ + "/run.log");
  }
  std::ifstream jsonl(run_dir_ + "/metrics.jsonl");
  std::vector<int64_t> steps;
  for (std::string l; std::getline(jsonl, l);) {
    steps.push_back(nlohmann::json::parse(l)["step"].get<int64_t>());
  }
  ASSERT_FALSE(steps.empty());
  EXPECT_TRUE(std::is_sorted(steps.begin(), steps.end()));
  EXPECT_EQ(std::adjacent_find(steps.begin(), steps.end()), steps.end())
      << "a step was written twice";
}

// Issue 18: security.auto_tls makes a per-job CA; every server (the stand-ins honour the
// real flags) runs mutual TLS + token, the launcher's probes present the job's client
// certificate, and the job becomes ready and completes.
TEST_F(RunLauncherTest, AutoTlsJobBecomesReadyAndCompletes) {
  WriteConfig("security:\n  auto_tls: true\n");
  auto run = StartRun({"FAKE_STEPS=6", "FAKE_STEP_MS=200"});
  ASSERT_NE(run, nullptr);
  ASSERT_TRUE(run->WaitExit(absl::Now() + absl::Seconds(90)));
  const std::string log = ReadAll(dir_ + "/run.log");
  ASSERT_EQ(run->exit_code(), 0) << log;
  EXPECT_THAT(log, HasSubstr("security.auto_tls: mutual TLS + token"));
  for (const char* f :
       {"ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key", "token"}) {
    EXPECT_TRUE(fs::exists(run_dir_ + "/tls/" + f)) << f;
  }
  for (const char* server : {"reward_server", "reference_server", "learner"}) {
    EXPECT_THAT(ReadAll(run_dir_ + "/logs/" + server + ".log"),
                HasSubstr("tls on, client cert required, token on"))
        << server;
  }
  // The resolved config names the files (the real learner reads them from it).
  config::LoadOptions lo;
  lo.check_files = false;
  auto resolved = config::LoadJobConfig(run_dir_ + "/config.yaml", lo);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(resolved->security().tls_cert(), run_dir_ + "/tls/server.pem");
  EXPECT_EQ(resolved->security().client_cert(), run_dir_ + "/tls/client.pem");
  EXPECT_EQ(resolved->security().token_file(), run_dir_ + "/tls/token");
  EXPECT_TRUE(resolved->security().require_client_cert());
  // Actors were handed the CA, a certificate and the token (the stand-in actor serves
  // with them; what it was given is stage_argv_test's).
  EXPECT_THAT(ReadAll(run_dir_ + "/logs/actor-0.log"),
              HasSubstr("fake child actor-0: tls on, client cert not required, token on"));
  EXPECT_THAT(ProcessesMentioning(dir_), ::testing::IsEmpty());

  // A resumed run reuses the CA (the same bytes) and completes again.
  const std::string ca = ReadAll(run_dir_ + "/tls/ca.pem");
  auto again = StartRun({"FAKE_STEPS=3", "FAKE_STEP_MS=200"});
  ASSERT_NE(again, nullptr);
  ASSERT_TRUE(again->WaitExit(absl::Now() + absl::Seconds(90)));
  ASSERT_EQ(again->exit_code(), 0) << ReadAll(dir_ + "/run.log");
  EXPECT_EQ(ReadAll(run_dir_ + "/tls/ca.pem"), ca);
}

TEST_F(RunLauncherTest, ConfigErrorsNameTheYamlPath) {
  struct Case {
    std::string yaml, want;
  };
  const Case cases[] = {
      {"rl:\n  klx: 1\n", "job.yaml:2: rl.klx: unknown field (did you mean 'kl'?)"},
      {"rl:\n  kl:\n    beta: abc\n", "job.yaml:3: rl.kl.beta: expected a number, got 'abc'"},
      {"model:\n  sft_checkpoint: /nonexistent/sft\n",
       "model.sft_checkpoint: SFT checkpoint '/nonexistent/sft' does not exist"},
      {"actors:\n  count: 0\n", "actors.count: must be >= 1, got 0"},
  };
  for (const Case& c : cases) {
    std::ofstream(dir_ + "/job.yaml") << c.yaml << "run_dir: " << run_dir_ << "\n";
    auto run = StartRun({});
    ASSERT_NE(run, nullptr);
    ASSERT_TRUE(run->WaitExit(absl::Now() + absl::Seconds(30)));
    const std::string log = ReadAll(dir_ + "/run.log");
    EXPECT_EQ(run->exit_code(), 1) << log;
    EXPECT_THAT(log, HasSubstr(c.want)) << log;
    EXPECT_FALSE(fs::exists(run_dir_)) << "a bad config must not create the run directory";
    fs::remove(dir_ + "/run.log");
  }
}

}  // namespace
}  // namespace rlhf
