// The shipped Prometheus files pass promtool; every PromQL expression of the Grafana
// dashboard parses; the config and file_sd `rlhf run` writes pass promtool; the
// launcher's /metrics body passes `promtool check metrics`.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "absl/strings/str_cat.h"
#include "tests/integration/monitoring_util.h"
#include "tools/launcher/prometheus.h"
#include "tools/launcher/supervisor.h"

namespace rlhf::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

class PromtoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/promtool_", ::getpid());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(PromtoolTest, ShippedScrapeConfigIsValid) {
  auto r = RunShell("promtool check config " + SourceDir() + "/deploy/prometheus/prometheus.yml");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("is valid prometheus config file syntax"));
}

TEST_F(PromtoolTest, ShippedAlertRulesAreValid) {
  const std::string rules = SourceDir() + "/deploy/prometheus/alerts.yml";
  auto r = RunShell("promtool check rules " + rules);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("SUCCESS: 8 rules found"));
  // Each alert the monitoring issue asks for is there.
  std::ifstream in(rules);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const char* alert : {"RlhfTargetDown", "RlhfLearnerNoProgress", "RlhfStalenessAboveBound",
                            "RlhfRewardServerErrors", "RlhfKlFarAboveTarget",
                            "RlhfActorsBelowConfigured", "RlhfLearnerNonFiniteUpdates",
                            "RlhfLearnerBatchesDropped"}) {
    EXPECT_THAT(text, HasSubstr(absl::StrCat("alert: ", alert)));
  }
}

TEST_F(PromtoolTest, PromtoolRejectsABrokenRule) {
  // The check above can fail: a syntax error in an expression is caught.
  std::ofstream(dir_ + "/bad.yml") << "groups:\n  - name: x\n    rules:\n      - alert: A\n"
                                      "        expr: sum(rate(rlhf_x_total[5m]) > \n";
  auto r = RunShell("promtool check rules " + dir_ + "/bad.yml");
  EXPECT_NE(r.exit_code, 0) << r.output;
}

TEST_F(PromtoolTest, EveryDashboardExpressionParses) {
  const auto exprs = DashboardExpressions(SourceDir() + "/deploy/grafana/rlhf-dashboard.json");
  ASSERT_GE(exprs.size(), 10u);
  // promtool has no "check expr": wrap each expression in a recording rule.
  std::ofstream out(dir_ + "/dashboard_rules.yml");
  out << "groups:\n  - name: dashboard\n    rules:\n";
  for (size_t i = 0; i < exprs.size(); ++i) {
    nlohmann::json quoted = exprs[i];
    out << "      - record: dashboard_expr_" << i << "\n        expr: " << quoted.dump() << "\n";
  }
  out.close();
  auto r = RunShell("promtool check rules " + dir_ + "/dashboard_rules.yml");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr(absl::StrCat("SUCCESS: ", exprs.size(), " rules found")));
}

TEST(PromQLNamesTest, ExtractsMetricNamesOnly) {
  EXPECT_THAT(MetricNamesInPromQL(
                  "histogram_quantile(0.99, sum by (le, method) "
                  "(rate(rlhf_reward_server_request_duration_seconds_bucket{code!=\"OK\"}[5m])))"),
              UnorderedElementsAre("rlhf_reward_server_request_duration_seconds_bucket"));
  EXPECT_THAT(MetricNamesInPromQL("sum(rlhf_a{component=\"actor\"}) < "
                                  "sum(rlhf_b{component=\"rlhf_not_a_metric\"})"),
              UnorderedElementsAre("rlhf_a", "rlhf_b"));
  EXPECT_THAT(MetricNamesInPromQL("up{component=~\"learner|actor\"} == 0"),
              UnorderedElementsAre("up"));
  EXPECT_THAT(MetricNamesInPromQL("max(rlhf_x) > 2 * max(rlhf_y)"),
              UnorderedElementsAre("rlhf_x", "rlhf_y"));
}

TEST_F(PromtoolTest, GeneratedJobConfigAndTargetsAreValid) {
  launcher::PrometheusJobOptions o;
  o.scrape_interval_ms = 1000;
  o.file_sd_path = dir_ + "/targets.json";
  o.rule_files = {SourceDir() + "/deploy/prometheus/alerts.yml"};
  ASSERT_TRUE(launcher::WriteFileSd(
                  o.file_sd_path,
                  {{"127.0.0.1:9100", {{"component", "learner"}}},
                   {"127.0.0.1:9101", {{"component", "actor"}, {"actor_id", "0"}}}})
                  .ok());
  std::ofstream(dir_ + "/prometheus.yml") << launcher::PrometheusConfigYaml(o);
  auto r = RunShell("promtool check config " + dir_ + "/prometheus.yml");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("SUCCESS: 1 rule files found"));
  std::ifstream in(o.file_sd_path);
  auto sd = nlohmann::json::parse(in);
  ASSERT_EQ(sd.size(), 2u);
  EXPECT_EQ(sd[1]["targets"][0], "127.0.0.1:9101");
  EXPECT_EQ(sd[1]["labels"]["actor_id"], "0");
}

TEST_F(PromtoolTest, LauncherMetricsPassPromtoolCheckMetrics) {
  auto registry = std::make_shared<prometheus::Registry>();
  {
    launcher::SupervisorOptions so;
    so.report = [](const std::string&) {};
    launcher::Supervisor sup(so, registry.get());
    launcher::ChildSpec spec;
    spec.process.name = "sleeper";
    spec.process.argv = {"/bin/sleep", "30"};
    spec.component = "actor";
    ASSERT_TRUE(sup.Start(spec).ok());
    sup.Tick();
  }
  prometheus::TextSerializer ser;
  const std::string body = ser.Serialize(registry->Collect());
  ASSERT_THAT(body, HasSubstr("rlhf_launcher_processes_up"));
  auto r = RunShell("promtool check metrics", body);
  EXPECT_EQ(r.exit_code, 0) << r.output << "\n" << body;
  // And the check can fail: a counter without _total is reported.
  auto bad = RunShell("promtool check metrics",
                      "# HELP rlhf_bad Bad.\n# TYPE rlhf_bad counter\nrlhf_bad 1\n");
  EXPECT_NE(bad.exit_code, 0) << bad.output;
}

}  // namespace
}  // namespace rlhf::testing
