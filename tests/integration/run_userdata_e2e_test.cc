// Bring your own task, end to end with the real binaries (issue 17). The built-in task
// is exported as plain JSONL (`rlhf data`), re-shaped into user formats (SFT as chat
// messages), and run as data.task "files" with a prompt template and NO gold labeler:
// data -> SFT -> RM -> RL -> eval must report the RM win rate of RL over SFT and the
// paired RM gain with 95% intervals (and no gold columns). A second job adds the Python
// example reward server (examples/python_reward_server) as a "remote" scorer next to the
// RM, with a distinctive offset (+50, far inside the learner's --max_abs_reward bound):
// the learner's reward at step 1 (trajectories of the same SFT policy scored by the same
// RM in both runs) must be run 1's plus the Python scores, i.e. up by 50 ± 1 (the example's
// period + length terms) ± the two batches' sampling noise.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
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
      << "  minibatch_size: 8\n  checkpoint_every: 1\n"
      << "eval:\n  num_prompts: 16\n  num_examples: 2\n  step_prompts: 6\n"
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
  // The RM win rate at RL checkpoints (eval.step_prompts): in the learner's records of
  // metrics.jsonl, at least at the final step, each the mean over the 6 prompts of
  // 1 / 0.5 / 0 for the step's sample beating / tying / losing to the SFT sample (one
  // each, from eval_steps/), computed here again from the two eval files.
  std::vector<int64_t> steps_seen, win_steps;
  for (const Json& j : JsonLines(run1 + "/metrics.jsonl")) {
    ASSERT_TRUE(j.contains("step")) << j.dump();
    const int64_t step = j["step"].get<int64_t>();
    EXPECT_EQ(step, steps_seen.empty() ? 1 : steps_seen.back() + 1) << "one record per step";
    steps_seen.push_back(step);
    if (!j.contains("rm_win_rate")) continue;
    SCOPED_TRACE(j.dump());
    win_steps.push_back(step);
    EXPECT_EQ(j["eval_prompts"].get<int>(), 6);
    const Json sft_eval = Json::parse(ReadAll(run1 + "/eval_steps/sft.json"));
    const Json step_eval = Json::parse(
        ReadAll(absl::StrFormat("%s/eval_steps/step-%08d.json", run1, step)));
    ASSERT_EQ(sft_eval["samples"].size(), 6u);
    ASSERT_EQ(step_eval["samples"].size(), 6u);
    double wins = 0, rm_sum = 0;
    for (size_t i = 0; i < 6; ++i) {
      const Json& a = sft_eval["samples"][i];
      const Json& b = step_eval["samples"][i];
      ASSERT_EQ(a["prompt"], b["prompt"]);
      const double sa = a["rm"].get<double>(), sb = b["rm"].get<double>();
      wins += sb > sa ? 1.0 : sb == sa ? 0.5 : 0.0;
      rm_sum += sb;
    }
    EXPECT_NEAR(j["rm_win_rate"].get<double>(), wins / 6, 1e-9);
    EXPECT_NEAR(j["eval_rm_score"].get<double>(), rm_sum / 6, 1e-6);
    EXPECT_LE(j["rm_win_rate_ci95"][0].get<double>(), j["rm_win_rate"].get<double>());
    EXPECT_GE(j["rm_win_rate_ci95"][1].get<double>(), j["rm_win_rate"].get<double>());
  }
  EXPECT_EQ(steps_seen.size(), 3u);  // rl.steps
  ASSERT_FALSE(win_steps.empty());
  EXPECT_EQ(win_steps.back(), 3);  // the final checkpoint is evaluated after RL
  EXPECT_THAT(ReadAll(run1 + "/plot.html"), HasSubstr("data-series=\"rm_win_rate\""));
  EXPECT_THAT(log, HasSubstr("[eval] step 3: RM win rate over SFT"));

  // Step 1 trains on the SFT policy's own samples (no update yet), so its reward is the
  // RM's score of SFT samples: the control for run 2.
  const auto step1 = [](const std::string& metrics) -> std::optional<Json> {
    for (const Json& j : JsonLines(metrics)) {
      if (j.value("step", 0) == 1 && j.contains("reward_mean")) return j;
    }
    return std::nullopt;
  };
  const std::optional<Json> control = step1(run1 + "/metrics.jsonl");
  ASSERT_TRUE(control.has_value()) << ReadAll(run1 + "/metrics.jsonl");

  // 3. The Python example reward server, started here, added as a scorer next to the RM.
  constexpr double kOffset = 50;
  launcher::ProcessSpec py;
  py.name = "python-reward";
  py.argv = {"/usr/bin/python3", SourceDir() + "/examples/python_reward_server/reward_server.py",
             "--port=0", "--port_file=" + dir + "/py.port", "--stubs_dir=" + dir + "/stubs",
             absl::StrCat("--offset=", kOffset)};
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
  // The learner's reward is the weighted sum 1 * RM + 1 * Python. At step 1 both runs
  // train on samples of the same SFT policy for the same prompts, scored by the same RM,
  // so the difference of the learner's reward means is the mean Python score, which is
  // kOffset + period (0 or 1) - |length - 40| / 40 (responses of <= 24 bytes: [-1, -0.4]),
  // i.e. in [kOffset - 1, kOffset + 0.6], up to the RM's sampling noise: four standard
  // errors of the difference of two batch means (without the scorer the difference is
  // about 0; with a lost or mis-weighted Python term it is far from kOffset).
  const std::optional<Json> with_python = step1(run2 + "/metrics.jsonl");
  ASSERT_TRUE(with_python.has_value()) << ReadAll(run2 + "/metrics.jsonl");
  const double n = 4 * 2;  // rl.prompts_per_step x rl.samples_per_prompt, both runs
  const double s1 = (*control)["reward_std"].get<double>();
  // Run 2's spread adds the Python term's (at most 1.6 wide); the RM's alone is run 1's.
  const double noise = 4.0 * std::sqrt(2 * s1 * s1 / n);
  const double delta =
      (*with_python)["reward_mean"].get<double>() - (*control)["reward_mean"].get<double>();
  std::printf("step-1 reward mean: %.4f without, %.4f with the Python scorer: +%.4f "
              "(expected [%.1f, %.1f] +- %.4f)\n",
              (*control)["reward_mean"].get<double>(), (*with_python)["reward_mean"].get<double>(),
              delta, kOffset - 1.0, kOffset + 0.6, noise);
  EXPECT_GT(delta, kOffset - 1.0 - noise) << control->dump() << "\n" << with_python->dump();
  EXPECT_LT(delta, kOffset + 0.6 + noise) << control->dump() << "\n" << with_python->dump();
  // The interval must stay narrow enough to tell the Python term from its absence.
  EXPECT_LT(noise, kOffset / 2) << control->dump();
  // The learner refused nothing at its door (rewards within its --max_abs_reward), and
  // every step has its record.
  std::vector<int64_t> run2_steps;
  for (const Json& j : JsonLines(run2 + "/metrics.jsonl")) {
    EXPECT_EQ(j.value("trajectories_rejected_total", 0), 0) << j.dump();
    run2_steps.push_back(j.value("step", int64_t{0}));
  }
  EXPECT_THAT(run2_steps, ::testing::ElementsAre(1, 2));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace rlhf::testing
