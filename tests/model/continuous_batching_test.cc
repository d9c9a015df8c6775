// Continuous batching (GenerateContinuous): each prompt gets what Generate gives it alone
// (greedy and seeded sampling), the log-probs equal a full forward without a cache, the
// batch is refilled while prompts wait, the shared time axis is compacted, bad input is
// named.
#include <algorithm>
#include <string>

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/model/generation.h"
#include "core/model/logprobs.h"
#include "core/model/model.h"

namespace rlhf {
namespace {

using ::testing::HasSubstr;

TransformerLM MakeModel(const std::string& preset, uint64_t seed) {
  torch::manual_seed(seed);
  auto c = ModelConfigPreset(preset);
  EXPECT_TRUE(c.ok());
  TransformerLM model(*c);
  torch::NoGradGuard g;  // peaked, varied distributions from a random model
  for (auto& p : model->parameters()) {
    if (p.dim() == 2) p.mul_(5.0);
  }
  return model;
}

// Prompts of lengths 1..12 (a length-1 prompt has no prefix to prefill).
std::vector<std::vector<int32_t>> Prompts(int n) {
  std::vector<std::vector<int32_t>> out;
  for (int i = 0; i < n; ++i) {
    std::vector<int32_t> p = {256};
    for (int t = 0; t < (i * 5) % 12; ++t) p.push_back((i * 31 + t * 7) % 250);
    out.push_back(p);
  }
  return out;
}

// The per-prompt reference: Generate on each prompt alone.
void ExpectEqualsAlone(TransformerLM& model, const std::vector<std::vector<int32_t>>& prompts,
                       const std::vector<uint64_t>& seeds, const SamplingOptions& o,
                       const GenerationResult& r) {
  ASSERT_EQ(r.responses.size(), prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto alone = Generate(model, {prompts[i]}, {seeds[i]}, o);
    ASSERT_TRUE(alone.ok()) << alone.status();
    EXPECT_EQ(r.responses[i], alone->responses[0]) << "prompt " << i;
    EXPECT_EQ(r.finished[i], alone->finished[0]) << "prompt " << i;
    ASSERT_EQ(r.logprobs[i].size(), alone->logprobs[0].size());
    for (size_t t = 0; t < r.logprobs[i].size(); ++t) {
      EXPECT_NEAR(r.logprobs[i][t], alone->logprobs[0][t], 1e-4) << "prompt " << i << " t " << t;
    }
  }
}

class ContinuousBatchingTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ContinuousBatchingTest, GreedyEqualsStaticAndRefillsKeepTheBatchFull) {
  TransformerLM model = MakeModel(GetParam(), 1);
  const auto prompts = Prompts(10);
  const std::vector<uint64_t> seeds(prompts.size(), 0);
  SamplingOptions o;
  o.temperature = 0;
  o.max_new_tokens = 14;
  // Stop tokens picked from a free run so the responses have mixed lengths.
  auto free_run = Generate(model, prompts, seeds, o);
  ASSERT_TRUE(free_run.ok());
  o.stop_tokens = {free_run->responses[1][2], free_run->responses[4][5]};

  ContinuousBatchingStats stats;
  auto r = GenerateContinuous(model, prompts, seeds, o, /*max_batch=*/3, &stats);
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectEqualsAlone(model, prompts, seeds, o, *r);

  // Static batching, as the actor does it today: chunks of 3 through Generate.
  int64_t total = 0, static_steps = 0;
  size_t shortest = o.max_new_tokens, longest = 0;
  for (size_t i = 0; i < prompts.size(); i += 3) {
    const size_t end = std::min(prompts.size(), i + 3);
    std::vector<std::vector<int32_t>> chunk(prompts.begin() + i, prompts.begin() + end);
    auto s = Generate(model, chunk, std::vector<uint64_t>(chunk.size(), 0), o);
    ASSERT_TRUE(s.ok());
    for (size_t j = 0; j < chunk.size(); ++j) {
      EXPECT_EQ(s->responses[j], r->responses[i + j]) << "prompt " << i + j;
      total += static_cast<int64_t>(s->responses[j].size());
      shortest = std::min(shortest, s->responses[j].size());
      longest = std::max(longest, s->responses[j].size());
    }
    static_steps += s->decode_steps + 1;  // + the prompt pass's sample
  }
  ASSERT_LT(shortest, longest) << "the stop tokens should give mixed lengths";
  // One token per row per decode step, and the batch stays full while prompts wait:
  // fewer steps than static batching, at most ceil(total / 3) + one tail.
  EXPECT_EQ(stats.row_steps, total);
  EXPECT_EQ(stats.decode_steps, r->decode_steps);
  EXPECT_LT(stats.decode_steps, static_steps);
  EXPECT_LE(stats.decode_steps, (total + 2) / 3 + o.max_new_tokens);
  EXPECT_GT(stats.busy_fraction(), static_cast<double>(total) / (3.0 * static_steps));
}

TEST_P(ContinuousBatchingTest, SeededSamplingAndLogProbsMatchAFullForward) {
  TransformerLM model = MakeModel(GetParam(), 2);
  const auto prompts = Prompts(7);
  std::vector<uint64_t> seeds;
  for (size_t i = 0; i < prompts.size(); ++i) seeds.push_back(100 + i);
  SamplingOptions o;
  o.temperature = 0.8;
  o.max_new_tokens = 9;
  o.stop_tokens = {3, 17, 42, 99, 140, 201};
  auto r = GenerateContinuous(model, prompts, seeds, o, /*max_batch=*/2);
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectEqualsAlone(model, prompts, seeds, o, *r);

  // Independent of any cache: one full forward over prompt + response.
  torch::NoGradGuard g;
  SequenceBatchOptions so;
  so.pad_id = 258;
  auto batch = MakeSequenceBatch(prompts, r->responses, so);
  ASSERT_TRUE(batch.ok()) << batch.status();
  const auto logits =
      model->forward(batch->ids, batch->attention_mask, batch->position_ids).logits;
  const auto full = PerSequenceResponseValues(ResponseLogProbs(logits, *batch, 0.8), *batch);
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_EQ(full[i].size(), r->logprobs[i].size());
    for (size_t t = 0; t < full[i].size(); ++t) {
      EXPECT_NEAR(r->logprobs[i][t], full[i][t], 1e-4) << "prompt " << i << " t " << t;
    }
  }
}

TEST_P(ContinuousBatchingTest, CompactsTheSharedAxisAndReportsTopK) {
  TransformerLM model = MakeModel(GetParam(), 3);
  // 16 prompts x up to 20 tokens through 2 rows: ~160 steps on an axis of 2 x (12 + 20).
  const auto prompts = Prompts(16);
  const std::vector<uint64_t> seeds(prompts.size(), 5);
  SamplingOptions o;
  o.temperature = 1.0;
  o.max_new_tokens = 20;
  o.return_top_k_distributions = 3;
  ContinuousBatchingStats stats;
  auto r = GenerateContinuous(model, prompts, seeds, o, /*max_batch=*/2, &stats);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(stats.compactions, 0);
  ExpectEqualsAlone(model, prompts, seeds, o, *r);
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto alone = Generate(model, {prompts[i]}, {seeds[i]}, o);
    ASSERT_TRUE(alone.ok());
    ASSERT_EQ(r->top_k[i].size(), alone->top_k[0].size());
    for (size_t t = 0; t < r->top_k[i].size(); ++t) {
      EXPECT_EQ(r->top_k[i][t].ids, alone->top_k[0][t].ids) << "prompt " << i << " t " << t;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(BothArchitectures, ContinuousBatchingTest,
                         ::testing::Values("tiny", "llama-tiny"));

TEST(ContinuousBatchingValidationTest, BadInputIsNamed) {
  TransformerLM model = MakeModel("tiny", 7);
  SamplingOptions o;
  o.max_new_tokens = 4;
  auto r = GenerateContinuous(model, {{1}}, {1}, o, 0);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("max_batch must be >= 1, got 0"));
  r = GenerateContinuous(model, {{1}, {}}, {1, 2}, o, 2);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("prompts[1] is empty"));
  r = GenerateContinuous(model, {{1}, {2}}, {1}, o, 2);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("seeds has 1 entries"));
}

}  // namespace
}  // namespace rlhf
