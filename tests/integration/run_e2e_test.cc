// The whole job at test size with the real binaries: `rlhf run` generates the data,
// trains SFT and the reward model, runs distributed RL (reward server, reference
// server, learner, two actors, and a real Prometheus), evaluates both policies, and
// writes summary.json. Checks that the summary's numbers are present and sane, that
// metrics.jsonl follows the learner, and that every process's final /metrics body
// passes `promtool check metrics` and exposes every metric the shipped dashboard and
// alert rules refer to.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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

// Metric names a /metrics body exposes: every sample name, plus every declared family
// (a family with no series yet still counts), histograms with _bucket/_sum/_count.
std::set<std::string> ExposedNames(const std::string& body) {
  std::set<std::string> names;
  for (const auto& s : launcher::ParseMetrics(body)) names.insert(s.name);
  std::istringstream in(body);
  for (std::string line; std::getline(in, line);) {
    if (!absl::StartsWith(line, "# TYPE ")) continue;
    std::istringstream f(line.substr(7));
    std::string name, type;
    f >> name >> type;
    names.insert(name);
    if (type == "histogram" || type == "summary") {
      for (const char* suffix : {"_bucket", "_sum", "_count"}) names.insert(name + suffix);
    }
  }
  return names;
}

TEST(RunE2eTest, WholePipelineAtTestSize) {
  const std::string dir =
      fs::path(absl::StrCat(::testing::TempDir(), "/run_e2e_", ::getpid())).lexically_normal();
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string run_dir = dir + "/run";
  std::ofstream(dir + "/job.yaml")
      << "name: e2e\nrun_dir: " << run_dir << "\nseed: 3\n"
      << "data:\n  num_sft: 300\n  num_rank: 100\n  num_rl_train: 64\n  num_rl_heldout: 16\n"
      << "  num_pretrain: 50\n"
      << "sft:\n  steps: 30\n  batch_size: 16\n  eval_every: 30\n  checkpoint_every: 30\n"
      << "rm:\n  steps: 15\n  prompts_per_batch: 4\n  eval_every: 15\n"
      << "  label_prompts: 40\n  label_samples_per_prompt: 4\n"
      << "sampling:\n  max_new_tokens: 24\n"
      << "rl:\n  steps: 4\n  prompts_per_step: 4\n  samples_per_prompt: 2\n"
      << "  minibatch_size: 8\n  checkpoint_every: 2\n"
      << "actors:\n  count: 2\n  prompts_per_lease: 4\n"
      << "monitoring:\n  prometheus: true\n  scrape_interval_ms: 500\n"
      // No status tick after the first during the ~1 s RL stage: the actors' snapshots
      // must come from their own --metrics_file (a tick could catch them by chance).
      << "launcher:\n  status_interval_ms: 60000\n"
      << "eval:\n  num_prompts: 16\n  num_examples: 2\n";
  launcher::ProcessSpec spec;
  spec.name = "rlhf-run";
  spec.argv = {BinDir() + "/rlhf", "run", "--config=" + dir + "/job.yaml"};
  spec.log_path = dir + "/run.log";
  auto run = launcher::Process::Spawn(spec);
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_TRUE((*run)->WaitExit(absl::Now() + absl::Seconds(400))) << ReadAll(spec.log_path);
  const std::string log = ReadAll(spec.log_path);
  ASSERT_EQ((*run)->exit_code(), 0) << log;

  // The comparison table was printed.
  EXPECT_THAT(log, HasSubstr("SFT policy"));
  EXPECT_THAT(log, HasSubstr("RL policy"));
  EXPECT_THAT(log, HasSubstr("Prometheus at http://127.0.0.1:"));

  auto summary = nlohmann::json::parse(ReadAll(run_dir + "/summary.json"));
  EXPECT_EQ(summary["state"], "completed");
  for (const char* who : {"sft", "rl"}) {
    SCOPED_TRACE(who);
    ASSERT_TRUE(summary.contains(who)) << summary.dump(1);
    const auto& s = summary[who];
    ASSERT_TRUE(s.contains("gold_score")) << s.dump(1);
    const double gold = s["gold_score"].get<double>();
    EXPECT_GE(gold, 0.0);
    EXPECT_LE(gold, 1.0);
    const auto& ci = s["gold_score_ci95"];
    EXPECT_LE(ci[0].get<double>(), gold);
    EXPECT_GE(ci[1].get<double>(), gold);
    EXPECT_TRUE(std::isfinite(s["rm_score"].get<double>()));
    EXPECT_TRUE(std::isfinite(s["kl_to_sft"].get<double>()));
    EXPECT_EQ(s["eval_samples"].get<double>(), 16.0);
  }
  // The SFT policy's KL to itself is zero; the RL policy moved away from it.
  EXPECT_NEAR(summary["sft"]["kl_to_sft"].get<double>(), 0.0, 1e-4);
  EXPECT_NE(summary["rl"]["kl_to_sft"].get<double>(), 0.0);
  const double acc = summary["rm"]["heldout_pair_accuracy"].get<double>();
  EXPECT_GE(acc, 0.0);
  EXPECT_LE(acc, 1.0);
  // The RM also trained on rankings of the SFT policy's own samples (`rlhf label`).
  const auto& labelled = summary["rm"]["policy_rankings"];
  EXPECT_EQ(labelled["prompts"].get<int64_t>(), 40) << labelled.dump();
  EXPECT_EQ(labelled["samples"].get<int64_t>(), 160) << labelled.dump();
  EXPECT_GT(labelled["records"].get<int64_t>(), 0) << labelled.dump();
  EXPECT_TRUE(fs::exists(run_dir + "/rank_policy.jsonl"));
  EXPECT_THAT(ReadAll(run_dir + "/logs/rm.log"), HasSubstr("rank_policy.jsonl"));
  for (const char* stage : {"data", "sft", "label", "rm", "rl", "eval", "total"}) {
    EXPECT_GT(summary["wall_seconds"][stage].get<double>(), 0.0) << stage;
  }
  EXPECT_TRUE(fs::exists(summary["rl"]["checkpoint"].get<std::string>() + "/config.json"));

  // metrics.jsonl has a record of every learner step, once, in order (the RL stage lasts
  // about a second: several steps finish between two of the launcher's polls).
  std::ifstream jsonl(run_dir + "/metrics.jsonl");
  int64_t last_step = 0;
  int lines = 0;
  for (std::string l; std::getline(jsonl, l); ++lines) {
    auto j = nlohmann::json::parse(l);
    EXPECT_EQ(j["step"].get<int64_t>(), last_step + 1) << l;
    last_step = j["step"].get<int64_t>();
    if (!j.value("final", false)) {  // the closing record comes from the learner's log
      EXPECT_TRUE(j.contains("reward_mean")) << l;
      EXPECT_TRUE(j.contains("kl_mean")) << l;
    }
  }
  EXPECT_GE(lines, 1);
  EXPECT_EQ(last_step, 4);

  // Every process's final /metrics: promtool-clean, and together they expose every
  // metric the dashboard and the alert rules use.
  std::set<std::string> exposed;
  std::set<std::string> processes;
  for (const auto& e : fs::directory_iterator(run_dir + "/metrics")) {
    if (e.path().extension() != ".prom") continue;
    processes.insert(e.path().stem().string());
    const std::string body = ReadAll(e.path().string());
    auto r = RunShell("promtool check metrics", body);
    EXPECT_EQ(r.exit_code, 0) << e.path() << ":\n" << r.output;
    for (const auto& n : ExposedNames(body)) exposed.insert(n);
  }
  EXPECT_EQ(processes, (std::set<std::string>{"launcher", "learner", "reward_server",
                                              "reference_server", "actor-0", "actor-1"}))
      << "actor-0.log:\n"
      << ReadAll(run_dir + "/logs/actor-0.log") << "\nactor-1.log:\n"
      << ReadAll(run_dir + "/logs/actor-1.log") << "\nrun.log:\n"
      << log;
  exposed.insert("up");  // synthesised by Prometheus for every target
  std::vector<std::string> exprs =
      DashboardExpressions(SourceDir() + "/deploy/grafana/rlhf-dashboard.json");
  for (const auto& e : RuleExpressions(SourceDir() + "/deploy/prometheus/alerts.yml")) {
    exprs.push_back(e);
  }
  ASSERT_GE(exprs.size(), 16u);
  std::set<std::string> missing;
  for (const auto& e : exprs) {
    for (const auto& name : MetricNamesInPromQL(e)) {
      if (exposed.count(name) == 0) missing.insert(name);
    }
  }
  EXPECT_THAT(missing, ::testing::IsEmpty())
      << "used by the dashboard or alerts but not exposed: " << absl::StrJoin(missing, ", ");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace rlhf::testing
