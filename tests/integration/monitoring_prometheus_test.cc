// `rlhf run` with monitoring.prometheus: true starts a real Prometheus (Debian's
// /usr/bin/prometheus) on the job's file_sd targets. Over its HTTP API: every target is
// up, the learner's step counter increases, an actor's metrics carry its actor_id
// label, the launcher's own metrics are scraped; after SIGTERM nothing is left running.
// Children are stand-ins (launcher_fake_child symlinked as the real binaries), so this
// exercises the launcher's monitoring plumbing independent of the models.
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "tests/integration/monitoring_util.h"
#include "tools/launcher/http.h"
#include "tools/launcher/process.h"

namespace rlhf::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

class PrometheusJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(absl::StrCat(::testing::TempDir(), "/monitoring_", ::getpid()))
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
  void TearDown() override { fs::remove_all(dir_); }

  // Prometheus instant query; the "result" array.
  nlohmann::json Query(int port, const std::string& promql) {
    auto body = launcher::HttpGet("127.0.0.1", port,
                                  "/api/v1/query?query=" + launcher::UrlEncode(promql),
                                  absl::Seconds(5));
    if (!body.ok()) return nlohmann::json::array();
    auto j = nlohmann::json::parse(*body, nullptr, false);
    if (j.is_discarded() || j.value("status", "") != "success") return nlohmann::json::array();
    return j["data"]["result"];
  }

  std::string dir_, run_dir_;
};

double Value(const nlohmann::json& sample) {
  double v = 0;
  (void)absl::SimpleAtod(sample["value"][1].get<std::string>(), &v);
  return v;
}

TEST_F(PrometheusJobTest, RealPrometheusScrapesEveryProcess) {
  std::ofstream(dir_ + "/job.yaml")
      << "name: mon\nrun_dir: " << run_dir_ << "\n"
      << "rl:\n  steps: 100000\n"
      << "actors:\n  count: 2\n"
      << "reward_server:\n  scorers:\n    - type: gold\n"
      << "monitoring:\n  prometheus: true\n  scrape_interval_ms: 200\n"
      << "launcher:\n  train_missing: false\n  eval: false\n  status_interval_ms: 200\n"
      << "  grace_period_ms: 3000\n";
  launcher::ProcessSpec spec;
  spec.name = "rlhf-run";
  spec.argv = {dir_ + "/bin/rlhf", "run", "--config=" + dir_ + "/job.yaml",
               "--bin_dir=" + dir_ + "/bin"};
  spec.log_path = dir_ + "/run.log";
  spec.env = {"FAKE_STEPS=1000000", "FAKE_STEP_MS=100"};
  auto run = launcher::Process::Spawn(spec);
  ASSERT_TRUE(run.ok()) << run.status();

  // The launcher prints the URL and writes it to <run_dir>/prometheus/url.
  const absl::Time deadline = absl::Now() + absl::Seconds(90);
  int port = 0;
  while (absl::Now() < deadline && (*run)->Poll() && port == 0) {
    std::string url = ReadAll(run_dir_ + "/prometheus/url");
    if (auto colon = url.rfind(':'); colon != std::string::npos) {
      (void)absl::SimpleAtoi(url.substr(colon + 1, url.find_first_of("\n/", colon) - colon - 1),
                             &port);
    }
    if (port == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_GT(port, 0) << ReadAll(dir_ + "/run.log");
  EXPECT_THAT(ReadAll(dir_ + "/run.log"), HasSubstr(absl::StrCat("Prometheus at http://127.0.0.1:", port)));

  // Every target up: launcher, learner, two servers, two actors.
  nlohmann::json up;
  while (absl::Now() < deadline) {
    up = Query(port, "up");
    int n_up = 0;
    for (const auto& s : up) n_up += Value(s) == 1.0;
    if (up.size() == 6 && n_up == 6) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_EQ(up.size(), 6u) << up.dump(1);
  std::set<std::string> components;
  for (const auto& s : up) {
    EXPECT_EQ(Value(s), 1.0) << s.dump();
    components.insert(s["metric"]["component"].get<std::string>());
  }
  EXPECT_EQ(components, (std::set<std::string>{"launcher", "learner", "reward_server",
                                               "reference_server", "actor"}));

  // The learner's step counter increases between two scrapes.
  auto steps = [&]() {
    auto r = Query(port, "rlhf_learner_steps_total{component=\"learner\"}");
    return r.empty() ? -1.0 : Value(r[0]);
  };
  const double first = steps();
  ASSERT_GE(first, 0.0);
  double later = first;
  while (absl::Now() < deadline && later <= first) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    later = steps();
  }
  EXPECT_GT(later, first);

  // An actor's metrics carry its label; the launcher reports both actors up.
  auto actor1 = Query(port, "rlhf_fake_ticks_total{component=\"actor\",actor_id=\"1\"}");
  ASSERT_EQ(actor1.size(), 1u);
  EXPECT_GT(Value(actor1[0]), 0.0);
  auto actors_up = Query(port, "rlhf_launcher_processes_up{kind=\"actor\"}");
  ASSERT_EQ(actors_up.size(), 1u) << Query(port, "{__name__=~\"rlhf_launcher.*\"}").dump(1);
  EXPECT_EQ(Value(actors_up[0]), 2.0);
  // The shipped alert rules are loaded.
  auto rules = launcher::HttpGet("127.0.0.1", port, "/api/v1/rules", absl::Seconds(5));
  ASSERT_TRUE(rules.ok());
  EXPECT_THAT(*rules, HasSubstr("RlhfActorsBelowConfigured"));

  ASSERT_EQ(::kill((*run)->pid(), SIGTERM), 0);
  ASSERT_TRUE((*run)->WaitExit(absl::Now() + absl::Seconds(60)));
  EXPECT_EQ((*run)->exit_code(), 130) << ReadAll(dir_ + "/run.log");
  // Prometheus went down with the job.
  EXPECT_FALSE(launcher::HttpGet("127.0.0.1", port, "/-/ready", absl::Seconds(2)).ok());
}

}  // namespace
}  // namespace rlhf::testing
