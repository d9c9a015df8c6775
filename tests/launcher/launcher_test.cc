// The launcher's process mechanics with a real stand-in child (launcher_fake_child: a
// real gRPC server with health checking and a real /metrics exposer): spawn, port file,
// health wait, crash reports with log tails, restart policy, job completion and
// failure, ordered shutdown with SIGKILL escalation, and no process left behind.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tools/launcher/http.h"
#include "tools/launcher/paired_gain.h"
#include "tools/launcher/process.h"
#include "tools/launcher/ready.h"
#include "tools/launcher/supervisor.h"

namespace rlhf::launcher {
namespace {

using ::testing::HasSubstr;

std::string FakeChild() {
  const char* bin = std::getenv("RLHF_BIN_DIR");
  return std::string(bin != nullptr ? bin : "bin") + "/../tests/launcher_fake_child";
}

class LauncherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    BecomeSubreaper();  // as `rlhf run` does: orphaned grandchildren come back to us
    dir_ = absl::StrCat(::testing::TempDir(), "/launcher_test_", ::getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  ChildSpec Spec(const std::string& name, std::vector<std::string> extra = {}) {
    ChildSpec spec;
    spec.process.name = name;
    spec.process.argv = {FakeChild(), "--name=" + name,
                         "--port_file=" + dir_ + "/" + name + ".port",
                         "--events_file=" + dir_ + "/events"};
    for (auto& e : extra) spec.process.argv.push_back(e);
    spec.process.log_path = dir_ + "/" + name + ".log";
    spec.component = name;
    const std::string port_file = dir_ + "/" + name + ".port";
    spec.ready = [port_file](Process& p) -> absl::Status {
      std::filesystem::remove(port_file);
      auto port = WaitForPortFile(port_file, p, absl::Now() + absl::Seconds(30));
      if (!port.ok()) return port.status();
      return WaitForServing("127.0.0.1", *port, p, absl::Now() + absl::Seconds(30));
    };
    return spec;
  }

  SupervisorOptions Options() {
    SupervisorOptions o;
    o.grace = absl::Seconds(5);
    o.report = [this](const std::string& line) {
      absl::MutexLock lock(&mu_);
      reports_.push_back(line);
    };
    return o;
  }

  std::string Reports() {
    absl::MutexLock lock(&mu_);
    return absl::StrJoin(reports_, "\n");
  }

  // Drives the supervisor until `done` or a generous deadline (a condition wait: the
  // supervisor is polled, the loop ends as soon as the condition holds).
  bool TickUntil(Supervisor& sup, const std::function<bool()>& done) {
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (absl::Now() < deadline) {
      sup.Tick();
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  std::string dir_;
  absl::Mutex mu_;
  std::vector<std::string> reports_;
};

bool PidAlive(pid_t pid) { return ::kill(pid, 0) == 0; }

TEST_F(LauncherTest, SpawnWaitsForPortAndHealthThenStops) {
  Supervisor sup(Options(), nullptr);
  ASSERT_TRUE(sup.Start(Spec("server")).ok()) << Reports();
  const pid_t pid = sup.PidOf("server");
  ASSERT_GT(pid, 0);
  EXPECT_TRUE(PidAlive(pid));
  EXPECT_EQ(sup.Running("server"), 1);
  sup.ShutdownAll();
  EXPECT_EQ(sup.Running("server"), 0);
  EXPECT_FALSE(ProcessGroupAlive(pid));
  std::ifstream events(dir_ + "/events");
  std::string line;
  ASSERT_TRUE(std::getline(events, line));
  EXPECT_EQ(line, "server sigterm");  // a graceful SIGTERM, not a SIGKILL
}

TEST_F(LauncherTest, ChildThatDiesBeforeReadyIsAnErrorWithItsLog) {
  Supervisor sup(Options(), nullptr);
  ChildSpec spec = Spec("bad", {"--crash_after_ms=0", "--startup_delay_ms=0"});
  // Crash before the port file: make the child abort before serving.
  spec.process.argv = {FakeChild(), "--name=bad", "--crash_after_ms=0",
                       "--port_file=" + dir_ + "/never.port"};
  spec.ready = [this](Process& p) -> absl::Status {
    return WaitForPortFile(dir_ + "/other.port", p, absl::Now() + absl::Seconds(30)).status();
  };
  absl::Status st = sup.Start(spec);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("bad killed by signal 6 (SIGABRT)"));
  EXPECT_THAT(st.message(), HasSubstr("fake child bad about to crash"));
}

TEST_F(LauncherTest, MissingExecutableIsNotFound) {
  ProcessSpec spec;
  spec.name = "ghost";
  spec.argv = {dir_ + "/no-such-binary"};
  auto p = Process::Spawn(spec);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(p.status().message(), HasSubstr("no-such-binary"));
}

TEST_F(LauncherTest, CrashedActorIsRestartedWithLogTailThenGivesUp) {
  auto registry = std::make_shared<prometheus::Registry>();
  Supervisor sup(Options(), registry.get());
  ASSERT_TRUE(sup.Start(Spec("learner")).ok());
  ChildSpec actor = Spec("actor-0", {"--crash_after_ms=300"});
  actor.component = "actor";
  actor.instance = "0";
  actor.max_restarts = 2;
  actor.restart_backoff = absl::Milliseconds(50);
  ASSERT_TRUE(sup.Start(actor).ok());
  const pid_t first = sup.PidOf("actor-0");
  ASSERT_TRUE(TickUntil(sup, [&] { return sup.state() != JobState::kRunning; })) << Reports();
  EXPECT_EQ(sup.state(), JobState::kFailed);
  EXPECT_THAT(sup.reason(), HasSubstr("every actor process gave up"));
  const std::string reports = Reports();
  EXPECT_THAT(reports, HasSubstr("actor-0 killed by signal 6 (SIGABRT); restarting in 50ms "
                                 "(restart 1 of 2); last lines of"));
  EXPECT_THAT(reports, HasSubstr("fake child actor-0 about to crash"));
  EXPECT_THAT(reports, HasSubstr("(restart 2 of 2)"));
  EXPECT_THAT(reports, HasSubstr("giving up after 2 restarts"));
  EXPECT_FALSE(PidAlive(first));
  auto snap = sup.Snapshot();
  ASSERT_EQ(snap.size(), 2u);
  EXPECT_EQ(snap[1].restarts, 2);
  EXPECT_TRUE(snap[1].gave_up);
  // The metrics count what happened.
  prometheus::TextSerializer ser;
  const auto samples = ParseMetrics(ser.Serialize(registry->Collect()));
  EXPECT_EQ(SumMetric(samples, "rlhf_launcher_restarts_total", {{"kind", "actor"}}), 2.0);
  EXPECT_EQ(SumMetric(samples, "rlhf_launcher_process_exits_total", {{"kind", "actor"}}),
            3.0);
  EXPECT_EQ(SumMetric(samples, "rlhf_launcher_processes_up", {{"kind", "actor"}}), 0.0);
  EXPECT_EQ(SumMetric(samples, "rlhf_launcher_processes_up", {{"kind", "learner"}}), 1.0);
  EXPECT_EQ(SumMetric(samples, "rlhf_launcher_processes_configured", {{"kind", "actor"}}),
            1.0);
  sup.ShutdownAll();
}

TEST_F(LauncherTest, KilledActorIsRestartedAndJobCompletesWhenLearnerExitsZero) {
  Supervisor sup(Options(), nullptr);
  ChildSpec learner = Spec("learner", {"--exit_after_ms=2500"});
  learner.critical = true;
  learner.completes_job = true;
  ASSERT_TRUE(sup.Start(learner).ok());
  ChildSpec actor = Spec("actor-0");
  actor.component = "actor";
  actor.max_restarts = 1;
  actor.restart_backoff = absl::Milliseconds(10);
  ASSERT_TRUE(sup.Start(actor).ok());
  const pid_t first = sup.PidOf("actor-0");
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  ASSERT_TRUE(TickUntil(sup, [&] {
    pid_t now = sup.PidOf("actor-0");
    return now != 0 && now != first;
  })) << Reports();
  EXPECT_THAT(Reports(), HasSubstr("actor-0 killed by signal 9 (SIGKILL); restarting"));
  EXPECT_THAT(Reports(), HasSubstr("restarted actor-0"));
  ASSERT_TRUE(TickUntil(sup, [&] { return sup.state() != JobState::kRunning; }));
  EXPECT_EQ(sup.state(), JobState::kCompleted);
  EXPECT_EQ(sup.reason(), "learner finished");
  sup.ShutdownAll();
  EXPECT_EQ(sup.Running("actor"), 0);
}

TEST_F(LauncherTest, CriticalCrashFailsTheJobWithItsLog) {
  Supervisor sup(Options(), nullptr);
  ChildSpec server = Spec("reward_server", {"--exit_after_ms=200", "--exit_code=3"});
  server.critical = true;
  ASSERT_TRUE(sup.Start(server).ok());
  ASSERT_TRUE(TickUntil(sup, [&] { return sup.state() != JobState::kRunning; }));
  EXPECT_EQ(sup.state(), JobState::kFailed);
  EXPECT_THAT(sup.reason(), HasSubstr("reward_server exited with code 3; last lines of"));
  EXPECT_THAT(sup.reason(), HasSubstr("fake child reward_server done"));
}

// Issue 23 item 6: kill -9 of a stateless server restarts it (on the port it first
// bound, so clients reconnect) instead of failing the job; only when its restarts are
// used up does the job fail.
TEST_F(LauncherTest, KilledCriticalServerWithRestartsIsRestartedOnItsPort) {
  Supervisor sup(Options(), nullptr);
  ChildSpec server = Spec("reward_server");
  server.critical = true;
  server.max_restarts = 1;
  server.restart_backoff = absl::Milliseconds(10);
  int before_restart_calls = 0;
  server.before_restart = [&](ProcessSpec& p) {
    ++before_restart_calls;
    p.argv.push_back("--restarted=1");
  };
  ASSERT_TRUE(sup.Start(server).ok());
  const pid_t first = sup.PidOf("reward_server");
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  ASSERT_TRUE(TickUntil(sup, [&] {
    pid_t now = sup.PidOf("reward_server");
    return now != 0 && now != first;
  })) << Reports();
  EXPECT_EQ(sup.state(), JobState::kRunning) << sup.reason();
  EXPECT_EQ(before_restart_calls, 1);
  EXPECT_THAT(Reports(), HasSubstr("reward_server killed by signal 9 (SIGKILL); restarting"));
  // Second kill: restarts used up, the job fails naming it.
  ASSERT_EQ(::kill(sup.PidOf("reward_server"), SIGKILL), 0);
  ASSERT_TRUE(TickUntil(sup, [&] { return sup.state() != JobState::kRunning; }));
  EXPECT_EQ(sup.state(), JobState::kFailed);
  EXPECT_THAT(sup.reason(), HasSubstr("reward_server killed by signal 9 (SIGKILL) after 1 restarts"));
  sup.ShutdownAll();
}

TEST_F(LauncherTest, ShutdownIsOrderedEscalatesAndLeavesNothingBehind) {
  SupervisorOptions o = Options();
  o.grace = absl::Milliseconds(500);
  Supervisor sup(o, nullptr);
  ChildSpec server = Spec("server");
  server.stop_order = 2;
  ChildSpec learner = Spec("learner", {"--grandchild_pid_file=" + dir_ + "/grandchild"});
  learner.stop_order = 1;
  ChildSpec actor = Spec("actor-0");
  actor.stop_order = 0;
  ChildSpec stubborn = Spec("actor-1", {"--ignore_sigterm"});
  stubborn.stop_order = 0;
  ASSERT_TRUE(sup.Start(server).ok());
  ASSERT_TRUE(sup.Start(learner).ok());
  ASSERT_TRUE(sup.Start(actor).ok());
  ASSERT_TRUE(sup.Start(stubborn).ok());
  std::vector<pid_t> pids = {sup.PidOf("server"), sup.PidOf("learner"), sup.PidOf("actor-0"),
                             sup.PidOf("actor-1")};
  pid_t grandchild = 0;
  {
    std::ifstream in(dir_ + "/grandchild");
    in >> grandchild;
  }
  ASSERT_GT(grandchild, 0);
  EXPECT_TRUE(PidAlive(grandchild));
  sup.ShutdownAll();
  for (pid_t p : pids) EXPECT_FALSE(ProcessGroupAlive(p)) << p;
  // The grandchild was re-parented to us (subreaper), killed with its group and reaped:
  // not even a zombie is left.
  EXPECT_FALSE(std::filesystem::exists("/proc/" + std::to_string(grandchild)));
  std::ifstream events(dir_ + "/events");
  std::vector<std::string> order;
  for (std::string line; std::getline(events, line);) order.push_back(line);
  EXPECT_EQ(order, (std::vector<std::string>{"actor-0 sigterm", "learner sigterm",
                                             "server sigterm"}));
  EXPECT_THAT(Reports(), HasSubstr("actor-1 did not stop within 500ms; sending SIGKILL"));
}

TEST(MetricsParseTest, ParsesLabelsValuesAndSums) {
  const std::string body =
      "# HELP x help\n# TYPE x counter\n"
      "rlhf_a_total{component=\"actor\",actor_id=\"1\"} 3\n"
      "rlhf_a_total{component=\"actor\",actor_id=\"2\"} 4.5\n"
      "rlhf_b 1e3 1700000000\n"
      "rlhf_c{q=\"a\\\"b\"} +Inf\n";
  auto s = ParseMetrics(body);
  ASSERT_EQ(s.size(), 4u);
  EXPECT_EQ(s[0].labels.at("actor_id"), "1");
  EXPECT_EQ(SumMetric(s, "rlhf_a_total"), 7.5);
  EXPECT_EQ(SumMetric(s, "rlhf_a_total", {{"actor_id", "2"}}), 4.5);
  EXPECT_EQ(SumMetric(s, "rlhf_b"), 1000.0);
  EXPECT_EQ(s[3].labels.at("q"), "a\"b");
  EXPECT_FALSE(SumMetric(s, "rlhf_missing").has_value());
  EXPECT_EQ(UrlEncode("up{job=\"x\"}"), "up%7Bjob%3D%22x%22%7D");
}

TEST_F(LauncherTest, HttpGetReadsAChildsMetrics) {
  ChildSpec spec = Spec("m", {"--metrics_port=0", "--metrics_port_file=" + dir_ + "/m.metrics"});
  Supervisor sup(Options(), nullptr);
  ASSERT_TRUE(sup.Start(spec).ok());
  std::ifstream in(dir_ + "/m.metrics");
  int port = 0;
  in >> port;
  ASSERT_GT(port, 0);
  auto body = HttpGet("127.0.0.1", port, "/metrics", absl::Seconds(5));
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_TRUE(SumMetric(ParseMetrics(*body), "rlhf_fake_ticks_total").has_value()) << *body;
  auto missing = HttpGet("127.0.0.1", port, "/nope", absl::Seconds(5));
  EXPECT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("HTTP 404"));
}

TEST(PairedGainTest, AveragesPerPromptThenDifferencesWithTheirInterval) {
  // p1: 0.6 -> 0.8 (+0.2); p2: 0.2 -> 0.5 (+0.3); p3 and p4 are seen by one side only.
  auto g = PairedPromptGain({{"p1", 0.5}, {"p1", 0.7}, {"p2", 0.2}, {"p3", 1.0}},
                            {{"p1", 0.8}, {"p2", 0.4}, {"p2", 0.6}, {"p4", 0.3}});
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->prompts, 2);
  EXPECT_NEAR(g->mean, 0.25, 1e-12);
  // sd of {0.2, 0.3} = 0.0707107; 1.96 * sd / sqrt(2) = 0.098.
  EXPECT_NEAR(g->half_width, 0.098, 1e-9);
  auto too_few = PairedPromptGain({{"p1", 0.5}}, {{"p1", 0.6}, {"p2", 0.1}});
  EXPECT_EQ(too_few.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace rlhf::launcher
