// RL vs SFT without a gold labeler (tools/launcher/paired_gain.h, eval_report.h): the
// win rate, paired gains and their 95% intervals against numbers worked out by hand,
// and the summary/table built from two `rlhf eval` JSON files with no gold columns.
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tools/launcher/eval_report.h"
#include "tools/launcher/paired_gain.h"

namespace rlhf::launcher {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using Json = nlohmann::json;

// Hand computation, one sample per prompt:
//   SFT  p1 0.2  p2 0.5  p3 0.9  p4 0.1
//   RL   p1 0.4  p2 0.5  p3 0.3  p4 0.6
//   wins 1, 0.5 (tie), 0, 1 -> mean 0.625; sd = sqrt(0.6875 / 3) = 0.478714;
//   half width 1.96 * 0.478714 / 2 = 0.469139.
//   gains 0.2, 0, -0.6, 0.5 -> mean 0.025; sd = sqrt(0.6475 / 3) = 0.464579;
//   half width 1.96 * 0.464579 / 2 = 0.455287.
const std::vector<std::pair<std::string, double>> kSft = {
    {"p1", 0.2}, {"p2", 0.5}, {"p3", 0.9}, {"p4", 0.1}};
const std::vector<std::pair<std::string, double>> kRl = {
    {"p1", 0.4}, {"p2", 0.5}, {"p3", 0.3}, {"p4", 0.6}};

TEST(WinRateTest, OneSamplePerPromptMatchesHandComputation) {
  auto w = PairedWinRate(kSft, kRl);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_DOUBLE_EQ(w->rate, 0.625);
  EXPECT_NEAR(w->half_width, 0.469139, 1e-6);
  EXPECT_EQ(w->prompts, 4);
  auto g = PairedPromptGain(kSft, kRl);
  ASSERT_TRUE(g.ok());
  EXPECT_NEAR(g->mean, 0.025, 1e-12);
  EXPECT_NEAR(g->half_width, 0.455287, 1e-6);
  // Swapping the sides mirrors the win rate.
  EXPECT_DOUBLE_EQ(PairedWinRate(kRl, kSft)->rate, 0.375);
}

TEST(WinRateTest, SeveralSamplesComparePairwiseWithinAPrompt) {
  // p1: RL {0.2, 0.4} vs SFT {0.1, 0.3}: 0.2>0.1, 0.2<0.3, 0.4>0.1, 0.4>0.3 -> 3/4.
  // p2: RL {0.0, 1.0} vs SFT {1.0}: loss, tie -> 0.5/2 = 1/4. p3 only on one side.
  // Mean 0.5; sd of {0.75, 0.25} = 0.353553; half width 1.96 * 0.353553 / sqrt(2) = 0.49.
  auto w = PairedWinRate({{"p1", 0.1}, {"p1", 0.3}, {"p2", 1.0}, {"p3", 0.7}},
                         {{"p1", 0.2}, {"p1", 0.4}, {"p2", 0.0}, {"p2", 1.0}});
  ASSERT_TRUE(w.ok());
  EXPECT_DOUBLE_EQ(w->rate, 0.5);
  EXPECT_NEAR(w->half_width, 0.49, 1e-9);
  EXPECT_EQ(w->prompts, 2);
  EXPECT_FALSE(PairedWinRate({{"p1", 0.1}}, {{"p1", 0.2}, {"p2", 0.3}}).ok());
}

void WriteEval(const std::string& path, const std::vector<std::pair<std::string, double>>& rm,
               const std::vector<double>& rm2, const std::string& tag) {
  Json samples = Json::array();
  for (size_t i = 0; i < rm.size(); ++i) {
    samples.push_back({{"prompt", rm[i].first},
                       {"response", tag + " answer " + rm[i].first},
                       {"finished", true},
                       {"gold", nullptr},
                       {"kl", 0.0},
                       {"rm", rm[i].second},
                       {"rm2", rm2[i]},
                       {"tokens", 5}});
  }
  Json j = {{"n", rm.size()},           {"gold_mean", nullptr},  {"gold_ci95", nullptr},
            {"rm_mean", 0.5},           {"rm_ci95", 0.1},        {"rm2_mean", 0.4},
            {"rm2_ci95", 0.2},          {"kl_mean", 0.0},        {"mean_response_tokens", 5.0},
            {"mean_response_bytes", 12.0}, {"samples", samples}};
  std::ofstream(path) << j.dump();
}

TEST(EvalReportTest, SummaryAndTableFromTwoEvalFiles) {
  const std::string dir = ::testing::TempDir() + "/eval_report_test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  // Held-out RM: SFT 0.3 0.9 0.5 0.2, RL 0.1 0.2 0.3 0.4 -> wins 0,0,0,1 = 0.25 with
  // half width 1.96 * 0.5 / 2 = 0.49; gains -0.2 -0.7 -0.2 0.2 = -0.225 with half width
  // 1.96 * sqrt(0.4075 / 3) / 2 = 0.361185.
  WriteEval(dir + "/eval_sft.json", kSft, {0.3, 0.9, 0.5, 0.2}, "sft");
  WriteEval(dir + "/eval_rl.json", kRl, {0.1, 0.2, 0.3, 0.4}, "rl");
  Json summary = Json::object();
  AddPolicyComparison(dir, 2, &summary);
  const Json& rl = summary["rl"];
  EXPECT_DOUBLE_EQ(rl["rm_win_rate"].get<double>(), 0.625);
  EXPECT_NEAR(rl["rm_win_rate_ci95"][0].get<double>(), 0.625 - 0.469139, 1e-6);
  EXPECT_NEAR(rl["rm_win_rate_ci95"][1].get<double>(), 0.625 + 0.469139, 1e-6);
  EXPECT_NEAR(rl["rm_gain_over_sft"].get<double>(), 0.025, 1e-12);
  EXPECT_NEAR(rl["rm_gain_over_sft_ci95"][1].get<double>(), 0.025 + 0.455287, 1e-6);
  EXPECT_DOUBLE_EQ(rl["heldout_rm_win_rate"].get<double>(), 0.25);
  EXPECT_NEAR(rl["heldout_rm_win_rate_ci95"][0].get<double>(), 0.25 - 0.49, 1e-9);
  EXPECT_NEAR(rl["heldout_rm_gain_over_sft"].get<double>(), -0.225, 1e-12);
  EXPECT_NEAR(rl["heldout_rm_gain_over_sft_ci95"][0].get<double>(), -0.225 - 0.361185, 1e-6);
  EXPECT_EQ(rl["comparison_prompts"].get<int>(), 4);
  EXPECT_NEAR(summary["sft"]["rm_score_ci95"][0].get<double>(), 0.4, 1e-12);
  EXPECT_DOUBLE_EQ(summary["sft"]["heldout_rm_score"].get<double>(), 0.4);
  EXPECT_DOUBLE_EQ(rl["response_tokens"].get<double>(), 5.0);
  EXPECT_FALSE(rl.contains("gold_score"));
  ASSERT_EQ(summary["sample_pairs"].size(), 2u);
  EXPECT_EQ(summary["sample_pairs"][0]["sft"], "sft answer p1");
  EXPECT_EQ(summary["sample_pairs"][0]["rl"], "rl answer p1");
  EXPECT_DOUBLE_EQ(summary["sample_pairs"][0]["rl_rm"].get<double>(), 0.4);

  const std::string table = PolicyComparisonTable(summary);
  EXPECT_THAT(table, HasSubstr("RM win rate RL > SFT"));
  EXPECT_THAT(table, HasSubstr("0.625 [0.156, 1.094] (not significant)"));
  EXPECT_THAT(table, HasSubstr("RM gain RL - SFT"));
  EXPECT_THAT(table, HasSubstr("+0.025 [-0.430, 0.480]"));
  EXPECT_THAT(table, HasSubstr("held-out RM win rate"));
  EXPECT_THAT(table, HasSubstr("(paired by prompt over 4 held-out prompts)"));
  EXPECT_THAT(table, HasSubstr("    RL  [0.40]: rl answer p1"));
  EXPECT_THAT(table, Not(HasSubstr("gold")));

  // Only one side evaluated: per-policy fields, no comparison.
  std::filesystem::remove(dir + "/eval_rl.json");
  Json partial = Json::object();
  AddPolicyComparison(dir, 2, &partial);
  EXPECT_TRUE(partial["sft"].contains("rm_score_ci95"));
  EXPECT_FALSE(partial.contains("rl"));
  EXPECT_FALSE(partial.contains("sample_pairs"));
  std::filesystem::remove_all(dir);
}

TEST(EvalReportTest, PlotHasOnePolylinePerSeriesAtTheRightPlaces) {
  // Steps 1..3, reward 0, 1, 0.5: x from 40 to 440, y from 160 (min) to 40 (max).
  std::vector<Json> records = {{{"step", 1}, {"reward_mean", 0.0}, {"kl_mean", 0.1}},
                               {{"step", 2}, {"reward_mean", 1.0}},
                               {{"step", 3}, {"reward_mean", 0.5}, {"kl_mean", 0.3}},
                               {{"final", true}, {"reward_mean", 9.0}}};  // no step: skipped
  Json summary = {{"rl", {{"rm_win_rate", 0.625}, {"rm_win_rate_ci95", {0.156, 1.094}}}}};
  const std::string html = MetricsPlotHtml(records, {"reward_mean", "kl_mean", "beta"}, summary);
  EXPECT_THAT(html, HasSubstr("final RM win rate RL over SFT 0.625 [0.156, 1.094]"));
  EXPECT_THAT(html, HasSubstr("data-series=\"reward_mean\" fill=\"none\" stroke=\"#1f77b4\" "
                              "stroke-width=\"2\" points=\"40.0,160.0 240.0,40.0 440.0,100.0\""));
  EXPECT_THAT(html, HasSubstr("points=\"40.0,160.0 440.0,40.0\""));  // kl_mean: steps 1 and 3
  EXPECT_THAT(html, Not(HasSubstr("beta over RL steps")));          // no data: no panel
}

TEST(EvalReportTest, StepWinRateMatchesHandComputation) {
  // SFT   p1 0.0  p2 1.0  p3 -0.5  p4 2.0  p5 0.3
  // step  p1 0.5  p2 1.0  p3 -1.0  p4 2.5  p5 0.1  (p6: no RM score, ignored)
  // wins 1, 0.5 (tie), 0, 1, 0 -> 0.5; deviations +-0.5 (four) and 0: sd = sqrt(1 / 4) =
  // 0.5; half width 1.96 * 0.5 / sqrt(5) = 0.438269. Mean step RM (0.5+1-1+2.5+0.1)/5 = 0.62.
  auto eval = [](const std::vector<std::pair<std::string, Json>>& rm) {
    Json samples = Json::array();
    for (const auto& [prompt, score] : rm) {
      samples.push_back({{"prompt", prompt}, {"response", "r"}, {"rm", score}});
    }
    return Json{{"samples", samples}};
  };
  const Json sft = eval({{"p1", 0.0}, {"p2", 1.0}, {"p3", -0.5}, {"p4", 2.0}, {"p5", 0.3}});
  const Json step = eval(
      {{"p1", 0.5}, {"p2", 1.0}, {"p3", -1.0}, {"p4", 2.5}, {"p5", 0.1}, {"p6", nullptr}});
  std::optional<Json> f = StepWinRateFields(sft, step);
  ASSERT_TRUE(f.has_value());
  EXPECT_DOUBLE_EQ((*f)["rm_win_rate"].get<double>(), 0.5);
  EXPECT_NEAR((*f)["rm_win_rate_ci95"][0].get<double>(), 0.5 - 0.438269, 1e-6);
  EXPECT_NEAR((*f)["rm_win_rate_ci95"][1].get<double>(), 0.5 + 0.438269, 1e-6);
  EXPECT_NEAR((*f)["eval_rm_score"].get<double>(), 0.62, 1e-12);
  EXPECT_EQ((*f)["eval_prompts"].get<int>(), 5);
  // Against itself (the same seed gives the same samples): every prompt ties.
  EXPECT_DOUBLE_EQ((*StepWinRateFields(sft, sft))["rm_win_rate"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ((*StepWinRateFields(sft, sft))["rm_win_rate_ci95"][0].get<double>(), 0.5);
  // Fewer than two shared prompts with scores: nothing to report.
  EXPECT_FALSE(StepWinRateFields(sft, eval({{"p1", 0.5}, {"p9", 1.0}})).has_value());
  EXPECT_FALSE(StepWinRateFields(Json::object(), step).has_value());
}

TEST(EvalReportTest, MergeKeepsOneRecordPerStepInStepOrder) {
  std::vector<Json> records = {{{"step", 1}, {"reward_mean", 0.1}},
                               {{"note", "no step"}},
                               {{"step", 2}, {"reward_mean", 0.2}},
                               {{"step", 4}, {"final", true}}};
  std::map<int64_t, Json> fields = {{2, {{"rm_win_rate", 0.4}}},
                                    {3, {{"rm_win_rate", 0.6}}},
                                    {4, {{"rm_win_rate", 0.7}}},
                                    {5, {{"rm_win_rate", 0.8}}}};
  const std::vector<Json> out = MergeStepFields(records, fields);
  const std::vector<Json> want = {{{"step", 1}, {"reward_mean", 0.1}},
                                  {{"note", "no step"}},
                                  {{"step", 2}, {"reward_mean", 0.2}, {"rm_win_rate", 0.4}},
                                  {{"step", 3}, {"rm_win_rate", 0.6}},
                                  {{"step", 4}, {"final", true}, {"rm_win_rate", 0.7}},
                                  {{"step", 5}, {"rm_win_rate", 0.8}}};
  ASSERT_EQ(out.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(out[i], want[i]) << i;
  EXPECT_EQ(MergeStepFields(records, {}), records);
}

TEST(EvalReportTest, WinRatePanelIsOnZeroToOneWithIntervalsAndTheEvenLine) {
  // Steps 4 then 2 (appended out of order): x 2 -> 40, 4 -> 440; y on [0, 1]:
  // 160 - 120 y, so 0.25 -> 130, 0.75 -> 70, 0.5 -> 100; the interval [0.5, 1.2] is
  // clipped to the panel (1 -> 40).
  std::vector<Json> records = {
      {{"step", 4}, {"rm_win_rate", 0.75}, {"rm_win_rate_ci95", {0.5, 1.2}}},
      {{"step", 3}, {"reward_mean", 1.0}},
      {{"step", 2}, {"rm_win_rate", 0.25}, {"rm_win_rate_ci95", {0.0, 0.5}}}};
  const std::string html = MetricsPlotHtml(records, {"reward_mean", "rm_win_rate"}, Json::object());
  EXPECT_THAT(html, HasSubstr("<h3>rm_win_rate over RL steps</h3>"));
  EXPECT_THAT(html, HasSubstr("data-series=\"rm_win_rate\" fill=\"none\" stroke=\"#1f77b4\" "
                              "stroke-width=\"2\" points=\"40.0,130.0 440.0,70.0\""));
  EXPECT_THAT(html, HasSubstr("<line data-ci=\"rm_win_rate\" x1=\"40.0\" y1=\"160.0\" "
                              "x2=\"40.0\" y2=\"100.0\""));
  EXPECT_THAT(html, HasSubstr("<line data-ci=\"rm_win_rate\" x1=\"440.0\" y1=\"100.0\" "
                              "x2=\"440.0\" y2=\"40.0\""));
  EXPECT_THAT(html, HasSubstr("<line x1=\"40.0\" y1=\"100.0\" x2=\"440.0\" y2=\"100.0\" "
                              "stroke=\"#999\" stroke-dasharray=\"4 3\"/>"));
  // reward_mean has no interval and no even line.
  EXPECT_THAT(html, Not(HasSubstr("data-ci=\"reward_mean\"")));

  // WriteMetricsPlot reads metrics.jsonl, win-rate fields included.
  const std::string dir = ::testing::TempDir() + "/eval_report_plot_test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  {
    std::ofstream out(dir + "/metrics.jsonl");
    for (const Json& r : records) out << r.dump() << "\n";
  }
  ASSERT_TRUE(WriteMetricsPlot(dir, Json::object()));
  std::ifstream in(dir + "/plot.html");
  const std::string written((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_THAT(written, HasSubstr("points=\"40.0,130.0 440.0,70.0\""));
  EXPECT_THAT(written, HasSubstr("<h3>reward_mean over RL steps</h3>"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace rlhf::launcher
