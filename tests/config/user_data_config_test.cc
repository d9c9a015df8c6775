// The job config's user-data fields (issue 17): data.task "files", the prompt template,
// the rule/remote scorers, eval.gold defaulting by task, and errors naming the field.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "services/config/config.h"

namespace rlhf::config {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<rlhf::v1::JobConfig> Parse(const std::string& yaml) {
  LoadOptions o;
  o.base_dir = "/base";
  o.check_files = false;
  return ParseJobConfigYaml(yaml, "job.yaml", o);
}

TEST(UserDataConfigTest, FilesTaskResolvesPathsAndDefaults) {
  auto c = Parse(
      "prompt_template: \"User: {prompt}\\nAssistant: \"\n"
      "data:\n  task: files\n  sft: {files: [my/sft.jsonl]}\n"
      "  prompts: {files: [my/prompts], heldout: [/abs/eval.jsonl]}\n"
      "reward_server:\n  scorers:\n    - {type: rm}\n    - {type: exact_match}\n"
      "    - {type: regex, pattern: \"\\\\d+\", forbidden: true, weight: 0}\n"
      "    - {type: remote, address: \"127.0.0.1:5000\"}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->prompt_template(), "User: {prompt}\nAssistant: ");
  EXPECT_EQ(c->data().sft().files(0), "/base/my/sft.jsonl");
  EXPECT_EQ(c->data().prompts().files(0), "/base/my/prompts");
  EXPECT_EQ(c->data().prompts().heldout(0), "/abs/eval.jsonl");
  EXPECT_FLOAT_EQ(c->data().heldout_fraction(), 0.1f);
  EXPECT_FALSE(c->eval().gold());  // no gold labeler for user data
  EXPECT_EQ(c->eval().step_prompts(), 8);  // win rate at RL checkpoints on by default
  const auto& em = c->reward_server().scorers(1);
  ASSERT_EQ(em.references_size(), 2);
  EXPECT_EQ(em.references(0), "/base/runs/rlhf/data/rl_train.jsonl");
  EXPECT_EQ(em.references(1), "/base/runs/rlhf/data/rl_heldout.jsonl");
  EXPECT_EQ(c->reward_server().scorers(2).pattern(), "\\d+");
  EXPECT_FLOAT_EQ(c->reward_server().scorers(2).weight(), 0.0f);  // explicit zero kept
  EXPECT_EQ(c->reward_server().scorers(3).timeout_ms(), 10000);
  // The builtin task keeps its gold columns.
  EXPECT_TRUE(Parse("")->eval().gold());
  // The resolved config round-trips through YAML (the learner reads it back).
  auto again = ParseJobConfigYaml(JobConfigToYaml(*c), "config.yaml", LoadOptions{});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->prompt_template(), c->prompt_template());
}

TEST(UserDataConfigTest, ErrorsNameTheField) {
  for (const auto& [yaml, error] : std::vector<std::pair<std::string, std::string>>{
           {"data: {task: files}", "data.prompts.files: required for data.task 'files'"},
           {"data: {task: hub}", "data.task: must be 'builtin' or 'files', got 'hub'"},
           {"data: {task: files, prompts: {files: [p]}, heldout_fraction: 1.5}",
            "data.heldout_fraction: must be in (0, 1)"},
           {"prompt_template: \"User: {x}\"", "prompt_template: the built-in task"},
           {"prompt_template: \"no placeholder\"\ndata: {task: files, prompts: {files: [p]}}",
            "prompt_template: 'no placeholder' has no {prompt}"},
           {"reward_server: {scorers: [{type: bleu}]}",
            "reward_server.scorers[0].type: must be one of rm, gold, length, regex"},
           {"reward_server: {scorers: [{type: regex}]}",
            "reward_server.scorers[0].pattern: required for type 'regex'"},
           {"reward_server: {scorers: [{type: length}]}",
            "reward_server.scorers[0].target_length: must be >= 1"},
           {"reward_server: {scorers: [{type: remote}]}",
            "reward_server.scorers[0].address: required for type 'remote'"},
           {"data: {task: files, prompts: {files: [p]}}\nreward_server: {scorers: [{type: gold}]}",
            "reward_server.scorers[0].type: 'gold' needs data.task 'builtin'"},
           {"data: {task: files, prompts: {files: [p]}}\neval: {gold: true}",
            "eval.gold: only the built-in task has a gold labeler"},
           {"eval: {step_prompts: -1}", "eval.step_prompts: must be >= 0"}}) {
    auto c = Parse(yaml);
    ASSERT_FALSE(c.ok()) << yaml;
    EXPECT_THAT(c.status().message(), HasSubstr(error)) << yaml;
  }
}

}  // namespace
}  // namespace rlhf::config
