// Bring your own task, end to end with the real binaries (issue 17). The built-in task
// is exported as plain JSONL (`rlhf data`), re-shaped into user formats (SFT as chat
// messages), and run as data.task "files" with a prompt template and NO gold labeler:
// data -> SFT -> RM -> RL -> eval must report the RM win rate of RL over SFT and the
// paired RM gain with 95% intervals (and no gold columns). A second job adds the Python
// example reward server (examples/python_reward_server) as a "remote" scorer next to the
// RM; its scores (offset by +10) must reach the learner's reward.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "tests/integration/monitoring_util.h"
#include "tools/launcher/process.h"

namespace rlhf::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using Json = nlohmann::json;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Runs a command to completion; returns its log.
std::string RunToEnd(const std::vector<std::string>& argv, const std::string& log,
                     int timeout_s, int* exit_code) {
  launcher::ProcessSpec spec;
  spec.name = argv[0];
  spec.argv = argv;
  spec.log_path = log;
  auto p = launcher::Process::Spawn(spec);
  EXPECT_TRUE(p.ok()) << p.status();
  if (!p.ok()) return "";
  EXPECT_TRUE((*p)->WaitExit(absl::Now() + absl::Seconds(timeout_s))) << ReadAll(log);
  *exit_code = (*p)->exit_code();
  return ReadAll(log);
}

std::vector<Json> JsonLines(const std::string& path) {
  std::vector<Json> out;
  std::ifstream in(path);
  for (std::string l; std::getline(in, l);) {
    if (!l.empty()) out.push_back(Json::parse(l));
  }
  return out;
}

const char* kStages =
    "sft:\n  steps: 30\n  batch_size: 16\n  eval_every: 30\n  checkpoint_every: 30\n"
    "rm:\n  steps: 15\n  prompts_per_batch: 4\n  eval_every: 15\n  label_samples_per_prompt: 0\n"
    "sampling:\n  max_new_tokens: 24\n"
    "actors:\n  count: 1\n  prompts_per_lease: 4\n";

TEST(RunUserDataE2eTest, UserFilesWithoutGoldThenPythonRewardServer) {
  const std::string dir =
      fs::path(absl::StrCat(::testing::TempDir(), "/run_userdata_", ::getpid())).lexically_normal();
  fs::remove_all(dir);
  fs::create_directories(dir + "/user");
  int rc = -1;

  // 1. The built-in task as plain JSONL files, the SFT set re-shaped as chat records.
  std::string log = RunToEnd({BinDir() + "/rlhf", "data", "--out=" + dir + "/builtin",
                              "--seed=3", "--num_sft=300", "--num_sft_heldout=20",
                              "--num_rank=100", "--num_rank_heldout=20", "--num_rl_train=64",
                              "--num_rl_heldout=16", "--num_pretrain=10"},
                             dir + "/export.log", 120, &rc);
  ASSERT_EQ(rc, 0) << log;
  {
    std::ofstream chat(dir + "/user/sft_chat.jsonl");
    for (const Json& r : JsonLines(dir + "/builtin/sft.jsonl")) {
      chat << Json{{"messages", Json::array({{{"role", "user"}, {"content", r["prompt"]}},
                                             {{"role", "assistant"}, {"content", r["response"]}}})}}
                  .dump()
           << "\n";
    }
  }
  const std::string b = dir + "/builtin/";
  const std::string data_yaml = absl::StrCat(
      "prompt_template: \"User: {prompt}\\nAssistant: \"\n"
      "data:\n  task: files\n  heldout_fraction: 0.1\n"
      "  sft:\n    files: [", dir, "/user/sft_chat.jsonl]\n"
      "  preferences:\n    files: [", b, "rank.jsonl]\n    heldout: [", b, "rank_heldout.jsonl]\n"
      "  prompts:\n    files: [", b, "rl_train.jsonl]\n    heldout: [", b, "rl_heldout.jsonl]\n");

  // 2. The whole recipe on the user files.
  const std::string run1 = dir + "/run1";
  std::ofstream(dir + "/job1.yaml")
      << "name: userdata\nrun_dir: " << run1 << "\nseed: 3\n" << data_yaml << kStages
      << "rl:\n  steps: 3\n  prompts_per_step: 4\n  samples_per_prompt: 2\n"
      << "  minibatch_size: 8\n  checkpoint_every: 3\n"
      << "eval:\n  num_prompts: 16\n  num_examples: 2\n"
      << "launcher:\n  status_interval_ms: 500\n";
  log = RunToEnd({BinDir() + "/rlhf", "run", "--config=" + dir + "/job1.yaml"},
                 dir + "/run1.log", 500, &rc);
  ASSERT_EQ(rc, 0) << log;
  // The data stage read the user's files (per-file summaries) and rendered the prompts.
  EXPECT_THAT(log, HasSubstr("read sft " + dir + "/user/sft_chat.jsonl: 300 records"));
  EXPECT_THAT(log, HasSubstr("read prompts (held-out) " + b + "rl_heldout.jsonl: 16 records"));
  const auto heldout = JsonLines(run1 + "/data/rl_heldout.jsonl");
  ASSERT_EQ(heldout.size(), 16u);
  EXPECT_EQ(heldout[0]["prompt"].get<std::string>().rfind("User: ", 0), 0u);
  EXPECT_THAT(heldout[0]["prompt"].get<std::string>(), ::testing::EndsWith("\nAssistant: "));
  // sft_heldout was carved off by prompt (none given).
  EXPECT_GT(JsonLines(run1 + "/data/sft_heldout.jsonl").size(), 0u);

  const Json summary = Json::parse(ReadAll(run1 + "/summary.json"));
  EXPECT_EQ(summary["state"], "completed");
  for (const char* who : {"sft", "rl"}) {
    SCOPED_TRACE(who);
    const Json& s = summary[who];
    EXPECT_FALSE(s.contains("gold_score")) << s.dump(1);  // no gold labeler in this job
    EXPECT_TRUE(std::isfinite(s["rm_score"].get<double>()));
    EXPECT_LE(s["rm_score_ci95"][0].get<double>(), s["rm_score"].get<double>());
    EXPECT_GT(s["response_tokens"].get<double>(), 0.0);
  }
  const Json& rl = summary["rl"];
  const double win = rl["rm_win_rate"].get<double>();
  EXPECT_GE(win, 0.0);
  EXPECT_LE(win, 1.0);
  EXPECT_LE(rl["rm_win_rate_ci95"][0].get<double>(), win);
  EXPECT_GE(rl["rm_win_rate_ci95"][1].get<double>(), win);
  const double gain = rl["rm_gain_over_sft"].get<double>();
  EXPECT_TRUE(std::isfinite(gain));
  EXPECT_LT(rl["rm_gain_over_sft_ci95"][0].get<double>(), rl["rm_gain_over_sft_ci95"][1].get<double>());
  EXPECT_EQ(rl["comparison_prompts"].get<int>(), 16);
  EXPECT_NEAR(summary["sft"]["kl_to_sft"].get<double>(), 0.0, 1e-4);
  EXPECT_EQ(summary["sample_pairs"].size(), 2u);
  EXPECT_THAT(log, HasSubstr("RM win rate RL > SFT"));
  EXPECT_THAT(log, HasSubstr("RM gain RL - SFT"));
  EXPECT_THAT(log, Not(HasSubstr("gold score")));
  double max_abs_reward = 0;
  for (const Json& j : JsonLines(run1 + "/metrics.jsonl")) {
    if (j.contains("reward_mean")) max_abs_reward = std::max(max_abs_reward, std::fabs(j["reward_mean"].get<double>()));
  }

  // 3. The Python example reward server, started here, added as a scorer next to the RM.
  launcher::ProcessSpec py;
  py.name = "python-reward";
  py.argv = {"/usr/bin/python3", SourceDir() + "/examples/python_reward_server/reward_server.py",
             "--port=0", "--port_file=" + dir + "/py.port", "--stubs_dir=" + dir + "/stubs",
             "--offset=10"};
  py.log_path = dir + "/python.log";
  auto server = launcher::Process::Spawn(py);
  ASSERT_TRUE(server.ok()) << server.status();
  auto port = launcher::WaitForPortFile(dir + "/py.port", **server, absl::Now() + absl::Seconds(60));
  ASSERT_TRUE(port.ok()) << port.status() << ReadAll(py.log_path);
  const std::string run2 = dir + "/run2";
  std::ofstream(dir + "/job2.yaml")
      << "name: userdata-python\nrun_dir: " << run2 << "\nseed: 3\n" << data_yaml << kStages
      << "model:\n  sft_checkpoint: " << run1 << "/sft\n  rm_checkpoint: " << run1 << "/rm\n"
      << "reward_server:\n  scorers:\n    - {type: rm}\n"
      << "    - {type: remote, name: python, address: \"127.0.0.1:" << *port << "\", weight: 1}\n"
      << "rl:\n  steps: 2\n  prompts_per_step: 4\n  samples_per_prompt: 2\n"
      << "  minibatch_size: 8\n  checkpoint_every: 2\n"
      << "launcher:\n  status_interval_ms: 500\n  eval: false\n";
  log = RunToEnd({BinDir() + "/rlhf", "run", "--config=" + dir + "/job2.yaml"},
                 dir + "/run2.log", 300, &rc);
  (*server)->Stop(absl::Seconds(5));
  ASSERT_EQ(rc, 0) << log;
  EXPECT_THAT(log, HasSubstr("sft: using checkpoint"));
  EXPECT_THAT(ReadAll(run2 + "/logs/reward_server.log"), HasSubstr("scorer 'python' weight 1"));
  // The learner's reward is the RM's normalised score (|mean| < 5 in run 1) plus the
  // Python scorer's 10 + period + length term (in [9, 11]): every step shows it.
  int steps = 0;
  for (const Json& j : JsonLines(run2 + "/metrics.jsonl")) {
    if (!j.contains("reward_mean")) continue;
    ++steps;
    EXPECT_GT(j["reward_mean"].get<double>(), max_abs_reward + 5.0) << j.dump();
  }
  EXPECT_GE(steps, 1);
  EXPECT_LT(max_abs_reward, 5.0);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace rlhf::testing
