#include "core/data/builtin_task.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "core/data/gold_labeler.h"
#include "core/data/jsonl.h"

namespace rlhf {
namespace {

BuiltinTaskOptions Small(uint64_t seed) {
  BuiltinTaskOptions o;
  o.seed = seed;
  o.num_sft = 300;
  o.num_sft_heldout = 50;
  o.num_rank = 100;
  o.num_rank_heldout = 30;
  o.num_rl_train = 64;
  o.num_rl_heldout = 32;
  o.num_pretrain = 50;
  return o;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(BuiltinTaskTest, DeterministicGivenSeedAndDifferentAcrossSeeds) {
  const std::string a = ::testing::TempDir() + "/task_a", b = ::testing::TempDir() + "/task_b",
                    c = ::testing::TempDir() + "/task_c";
  auto ta = GenerateBuiltinTask(Small(7));
  auto tb = GenerateBuiltinTask(Small(7));
  auto tc = GenerateBuiltinTask(Small(8));
  ASSERT_TRUE(ta.ok() && tb.ok() && tc.ok());
  ASSERT_TRUE(WriteBuiltinTask(*ta, a).ok());
  ASSERT_TRUE(WriteBuiltinTask(*tb, b).ok());
  ASSERT_TRUE(WriteBuiltinTask(*tc, c).ok());
  for (const char* f : {"sft.jsonl", "sft_heldout.jsonl", "rank.jsonl", "rank_heldout.jsonl",
                        "rl_train.jsonl", "rl_heldout.jsonl", "pretrain.jsonl"}) {
    SCOPED_TRACE(f);
    const std::string fa = Slurp(a + "/" + f);
    EXPECT_FALSE(fa.empty());
    EXPECT_EQ(fa, Slurp(b + "/" + f));
  }
  EXPECT_NE(Slurp(a + "/sft.jsonl"), Slurp(c + "/sft.jsonl"));
  // What was written reads back identically.
  auto sft = ReadSftJsonl(a + "/sft.jsonl");
  ASSERT_TRUE(sft.ok()) << sft.status();
  ASSERT_EQ(sft->size(), ta->sft.size());
  EXPECT_EQ((*sft)[3].response, ta->sft[3].response);
  auto rank = ReadPreferenceJsonl(a + "/rank.jsonl");
  ASSERT_TRUE(rank.ok()) << rank.status();
  EXPECT_EQ((*rank)[5].ranking, ta->rank[5].ranking);
}

TEST(BuiltinTaskTest, HeldOutPromptsAreDisjointFromTraining) {
  auto t = GenerateBuiltinTask(Small(3));
  ASSERT_TRUE(t.ok());
  std::set<std::string> train, heldout;
  for (const auto& r : t->sft) train.insert(r.prompt);
  for (const auto& r : t->rank) train.insert(r.prompt);
  for (const auto& r : t->rl_train) train.insert(r.prompt);
  for (const auto& r : t->sft_heldout) heldout.insert(r.prompt);
  for (const auto& r : t->rank_heldout) heldout.insert(r.prompt);
  std::set<std::string> rl_heldout;
  for (const auto& r : t->rl_heldout) rl_heldout.insert(r.prompt);
  EXPECT_EQ(rl_heldout.size(), t->rl_heldout.size());  // distinct
  heldout.insert(rl_heldout.begin(), rl_heldout.end());
  for (const auto& p : heldout) EXPECT_EQ(train.count(p), 0u) << p;
}

TEST(BuiltinTaskTest, RankingsFollowTheGoldScoreAndKInRange) {
  auto t = GenerateBuiltinTask(Small(5));
  ASSERT_TRUE(t.ok());
  for (const RankedRecord& r : t->rank) {
    const int k = static_cast<int>(r.responses.size());
    ASSERT_GE(k, 4);
    ASSERT_LE(k, 9);
    ASSERT_TRUE(ValidateRanking(r.ranking, k).ok());
    for (const IndexPair& p : ExpandPairs(r)) {
      EXPECT_GE(GoldScore(r.prompt, r.responses[p.winner]),
                GoldScore(r.prompt, r.responses[p.loser]));
    }
  }
}

TEST(BuiltinTaskTest, DemonstrationsAreImperfectButMostlyGood) {
  BuiltinTaskOptions o = Small(11);
  o.num_sft = 2000;
  auto t = GenerateBuiltinTask(o);
  ASSERT_TRUE(t.ok());
  int perfect = 0;
  double mean = 0;
  for (const SftRecord& r : t->sft) {
    const double s = GoldScore(r.prompt, r.response);
    perfect += s == 1.0;
    mean += s / t->sft.size();
    EXPECT_LE(r.response.size(), 48u);
  }
  const double frac = static_cast<double>(perfect) / t->sft.size();
  EXPECT_NEAR(frac, 0.5, 0.05);  // sft_imperfect_fraction = 0.5
  EXPECT_LT(mean, 0.85);
  EXPECT_GT(mean, 0.6);
}

TEST(BuiltinTaskTest, DefaultOptionsGenerate) {
  auto t = GenerateBuiltinTask(BuiltinTaskOptions{});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->sft.size(), 2000u);
  EXPECT_EQ(t->rank.size(), 1000u);
  EXPECT_EQ(t->rl_train.size(), 512u);
  EXPECT_EQ(t->rl_heldout.size(), 128u);
  EXPECT_EQ(t->pretrain.size(), 1000u);
}

TEST(BuiltinTaskTest, BadOptionsNameTheField) {
  BuiltinTaskOptions o = Small(1);
  o.max_k = 3;
  auto t = GenerateBuiltinTask(o);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("max_k"), std::string::npos);
  o = Small(1);
  o.num_rl_heldout = 100000;
  t = GenerateBuiltinTask(o);
  EXPECT_NE(t.status().message().find("num_rl_heldout"), std::string::npos);
}

}  // namespace
}  // namespace rlhf
