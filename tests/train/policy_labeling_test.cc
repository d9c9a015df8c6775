#include "core/train/policy_labeling.h"

#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/utils.h>

#include "core/data/gold_labeler.h"
#include "core/data/jsonl.h"
#include "core/tokenizer/tokenizer.h"

namespace rlhf {
namespace {

TransformerLM TinyPolicy() {
  ModelConfig c;
  c.d_model = 32;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 2;
  c.d_ff = 64;
  c.max_seq_len = 96;
  torch::manual_seed(3);
  return TransformerLM(c);
}

// Short samples of an untrained policy, `samples` per prompt.
PolicyLabelOptions ShortSamples(int64_t samples, double min_gold_gap) {
  PolicyLabelOptions o;
  o.samples_per_prompt = samples;
  o.max_new_tokens = 12;
  o.min_gold_gap = min_gold_gap;
  return o;
}

const std::vector<std::string> kPrompts = {"Name two red fruits.", "List three animals.",
                                           "Give me a green vegetable."};

TEST(PolicyLabelingTest, RanksEachPromptsOwnSamplesByGoldScore) {
  TransformerLM policy = TinyPolicy();
  ByteTokenizer tok;
  PolicyLabelOptions o = ShortSamples(6, /*min_gold_gap=*/0);  // every distinct sample
  o.comparable_only = false;
  PolicyLabelStats stats;
  auto records = RankPolicySamples(policy, tok, kPrompts, o, &stats);
  ASSERT_TRUE(records.ok()) << records.status();
  EXPECT_EQ(stats.prompts, 3);
  EXPECT_EQ(stats.samples, 18);
  // An untrained byte model's 12-byte samples are all distinct: one record per prompt,
  // in prompt order, with all six samples.
  ASSERT_EQ(records->size(), 3u);
  EXPECT_EQ(stats.records, 3);
  EXPECT_EQ(stats.kept, 18);
  for (size_t i = 0; i < records->size(); ++i) {
    const RankedRecord& r = (*records)[i];
    EXPECT_EQ(r.prompt, kPrompts[i]);
    ASSERT_EQ(r.responses.size(), 6u);
    ASSERT_TRUE(ValidateRanking(r.ranking, 6).ok());
    for (const IndexPair& p : ExpandPairs(r)) {
      EXPECT_GE(GoldScore(r.prompt, r.responses[p.winner]),
                GoldScore(r.prompt, r.responses[p.loser]));
    }
  }
  // Deterministic given the seed; another seed samples other responses.
  auto again = RankPolicySamples(policy, tok, kPrompts, o, nullptr);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)[1].responses, (*records)[1].responses);
  o.seed = 2;
  auto other = RankPolicySamples(policy, tok, kPrompts, o, nullptr);
  ASSERT_TRUE(other.ok());
  EXPECT_NE((*other)[1].responses, (*records)[1].responses);
}

TEST(PolicyLabelingTest, GoldGapDropsNearTies) {
  TransformerLM policy = TinyPolicy();
  ByteTokenizer tok;
  PolicyLabelOptions o = ShortSamples(8, /*min_gold_gap=*/0.05);
  PolicyLabelStats stats;
  auto records = RankPolicySamples(policy, tok, kPrompts, o, &stats);
  ASSERT_TRUE(records.ok()) << records.status();
  // Garbage from an untrained model mostly scores alike: most samples are dropped, and
  // what is kept is pairwise >= 0.05 apart.
  EXPECT_LT(stats.kept, stats.samples);
  for (const RankedRecord& r : *records) {
    ASSERT_GE(r.responses.size(), 2u);
    for (size_t a = 0; a < r.responses.size(); ++a) {
      for (size_t b = a + 1; b < r.responses.size(); ++b) {
        EXPECT_GE(std::fabs(GoldScore(r.prompt, r.responses[a]) -
                            GoldScore(r.prompt, r.responses[b])),
                  0.05 - 1e-12);
      }
    }
  }
}

TEST(PolicyLabelingTest, ComparableOnlyKeepsPairsWhereOneHasEveryFlawOfTheOther) {
  TransformerLM policy = TinyPolicy();
  ByteTokenizer tok;
  PolicyLabelOptions o = ShortSamples(6, /*min_gold_gap=*/0);
  PolicyLabelStats all, comparable;
  o.comparable_only = false;
  ASSERT_TRUE(RankPolicySamples(policy, tok, kPrompts, o, &all).ok());
  o.comparable_only = true;
  auto records = RankPolicySamples(policy, tok, kPrompts, o, &comparable);
  ASSERT_TRUE(records.ok()) << records.status();
  // The same 18 samples (same seed). An untrained model's random bytes all score 0
  // but trade garbage for filler words and capitals for periods: some are left out.
  EXPECT_EQ(all.kept, 18);
  EXPECT_LT(comparable.kept, all.kept);
  EXPECT_GT(comparable.records, 0);
  for (const RankedRecord& r : *records) {
    for (const IndexPair& p : ExpandPairs(r)) {
      const GoldBreakdown winner = GoldScoreBreakdown(r.prompt, r.responses[p.winner]);
      const GoldBreakdown loser = GoldScoreBreakdown(r.prompt, r.responses[p.loser]);
      // Tied in gold (min_gold_gap 0), either may have every flaw of the other.
      EXPECT_TRUE(GoldDominates(winner, loser) || GoldDominates(loser, winner))
          << r.responses[p.winner] << " vs " << r.responses[p.loser];
    }
  }
}

TEST(PolicyLabelingTest, BadOptionsNameTheField) {
  TransformerLM policy = TinyPolicy();
  ByteTokenizer tok;
  PolicyLabelOptions o;
  o.samples_per_prompt = 1;
  auto r = RankPolicySamples(policy, tok, kPrompts, o, nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("samples_per_prompt"), std::string::npos);
  o = PolicyLabelOptions();
  o.temperature = 0;
  r = RankPolicySamples(policy, tok, kPrompts, o, nullptr);
  EXPECT_NE(r.status().message().find("temperature"), std::string::npos);
  o = PolicyLabelOptions();
  o.min_gold_gap = 0.5;
  r = RankPolicySamples(policy, tok, kPrompts, o, nullptr);
  EXPECT_NE(r.status().message().find("min_gold_gap"), std::string::npos);
  r = RankPolicySamples(policy, tok, {}, PolicyLabelOptions(), nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace rlhf
