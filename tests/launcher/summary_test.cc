// summary.json contents from stage outputs (hand-computed paired gain), the comparison
// table against a golden text (tests/launcher/testdata/summary_table.txt, written with
// Python's printf), and the status line's rate.
#include "tools/launcher/summary.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "tests/testing/temp_dir.h"
#include "tools/launcher/status.h"

namespace rlhf::launcher {
namespace {

using Json = nlohmann::json;

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(SummaryTable, MatchesTheGoldenText) {
  const Json summary = Json::parse(R"({
    "sft": {"gold_score": 0.25, "gold_score_ci95": [0.2, 0.3], "rm_score": -0.5,
            "kl_to_sft": 0.0,
            "samples": [{"prompt": "p1", "response": "r1", "gold": 0.1},
                        {"prompt": "p2", "response": "r3", "gold": 0.2}]},
    "rl": {"gold_score": 0.45, "gold_score_ci95": [0.4, 0.5], "rm_score": 1.25,
           "kl_to_sft": 2.5, "gold_gain_over_sft": 0.2,
           "gold_gain_over_sft_ci95": [0.004, 0.396], "gold_gain_prompts": 2,
           "samples": [{"prompt": "p1", "response": "r2", "gold": 0.5}]},
    "rm": {"heldout_pair_accuracy": 0.9},
    "wall_seconds": {"sft": 1.0, "rl": 12.34}
  })");
  const char* src = std::getenv("RLHF_SOURCE_DIR");
  const std::string golden =
      Slurp(std::string(src != nullptr ? src : ".") + "/tests/launcher/testdata/summary_table.txt");
  ASSERT_FALSE(golden.empty());
  EXPECT_EQ(FormatSummaryTable(summary, /*num_examples=*/1), golden);
}

TEST(SummaryTable, MissingValuesPrintAsDashes) {
  const std::string table = FormatSummaryTable(Json::object(), 3);
  EXPECT_NE(table.find("gold score             -                          -"), std::string::npos)
      << table;
  EXPECT_EQ(table.find("gold gain"), std::string::npos);
}

TEST(StageResults, PairedGainAndOneSamplePerPrompt) {
  const std::string dir = testing::MakeTempDir("rlhf_summary_");
  ASSERT_FALSE(dir.empty());
  // Two samples per prompt: SFT means A 0.2, B 0.4; RL means A 0.5, B 0.5.
  std::ofstream(dir + "/eval_sft.json") << R"({"gold_mean": 0.3, "gold_ci95": 0.05, "n": 4,
    "samples": [{"prompt": "A", "gold": 0.1}, {"prompt": "A", "gold": 0.3},
                {"prompt": "B", "gold": 0.4}, {"prompt": "B", "gold": 0.4}]})";
  std::ofstream(dir + "/eval_rl.json") << R"({"gold_mean": 0.5, "kl_mean": 1.5,
    "samples": [{"prompt": "A", "gold": 0.5}, {"prompt": "A", "gold": 0.5},
                {"prompt": "B", "gold": 0.6}, {"prompt": "B", "gold": 0.4}]})";
  std::ofstream(dir + "/rm.json") << R"({"heldout_accuracy": 0.875})";
  Json s = Json::object();
  AddStageResults(dir, /*samples_per_prompt=*/2, &s);
  EXPECT_DOUBLE_EQ(s["sft"]["gold_score"].get<double>(), 0.3);
  EXPECT_NEAR(s["sft"]["gold_score_ci95"][0].get<double>(), 0.25, 1e-12);
  EXPECT_NEAR(s["sft"]["gold_score_ci95"][1].get<double>(), 0.35, 1e-12);
  EXPECT_DOUBLE_EQ(s["rl"]["kl_to_sft"].get<double>(), 1.5);
  EXPECT_DOUBLE_EQ(s["rm"]["heldout_pair_accuracy"].get<double>(), 0.875);
  EXPECT_FALSE(s["sft"]["eval"].contains("samples"));
  ASSERT_EQ(s["sft"]["samples"].size(), 2u);  // first sample of A, first of B
  EXPECT_EQ(s["sft"]["samples"][1]["prompt"], "B");
  // Per-prompt differences 0.3 and 0.1: mean 0.2, sd 0.1414, half-width
  // 1.96 * 0.1414 / sqrt(2) = 0.196.
  EXPECT_NEAR(s["rl"]["gold_gain_over_sft"].get<double>(), 0.2, 1e-12);
  EXPECT_NEAR(s["rl"]["gold_gain_over_sft_ci95"][0].get<double>(), 0.004, 1e-9);
  EXPECT_NEAR(s["rl"]["gold_gain_over_sft_ci95"][1].get<double>(), 0.396, 1e-9);
  EXPECT_EQ(s["rl"]["gold_gain_prompts"].get<int>(), 2);
  std::filesystem::remove_all(dir);
}

TEST(StatusTracker, TrajectoryRateFollowsEachNewStep) {
  StatusTracker t(/*total_steps=*/10);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  auto rec = [](int step, double trajectories) {
    return Json{{"step", step}, {"trajectories_trained_total", trajectories}};
  };
  TrainingStatus s = t.Update(rec(1, 8), 2, 2, t0);
  EXPECT_FALSE(s.trajectories_per_s.has_value());
  s = t.Update(rec(2, 16), 2, 2, t0 + absl::Seconds(2));  // 8 in 2 s
  ASSERT_TRUE(s.trajectories_per_s.has_value());
  EXPECT_DOUBLE_EQ(*s.trajectories_per_s, 4.0);
  s = t.Update(rec(4, 48), 2, 2, t0 + absl::Seconds(4));  // 40 in 4 s: the rate moves
  EXPECT_DOUBLE_EQ(*s.trajectories_per_s, 10.0);
  ASSERT_TRUE(s.eta.has_value());
  EXPECT_EQ(*s.eta, absl::Seconds(8));  // 3 steps in 4 s since step 1; 6 steps left
  // A record that reports its own rate wins.
  Json direct = rec(5, 50);
  direct["trajectories_per_s"] = 3.5;
  s = t.Update(direct, 2, 2, t0 + absl::Seconds(5));
  EXPECT_DOUBLE_EQ(*s.trajectories_per_s, 3.5);
}

}  // namespace
}  // namespace rlhf::launcher
