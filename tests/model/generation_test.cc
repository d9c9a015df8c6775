// Batched KV-cache generation: reported log-probs equal a full forward (renormalised
// over the kept set under top-k/top-p), batching and
// companions do not change a seeded row, greedy/top-k/top-p behave, bad input is named.
#include <algorithm>
#include <limits>
#include <numeric>
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
  // Scale up the weights so the random model has peaked, varied distributions.
  torch::NoGradGuard g;
  for (auto& p : model->parameters()) {
    if (p.dim() == 2) p.mul_(5.0);
  }
  return model;
}

const std::vector<std::vector<int32_t>> kPrompts = {
    {256, 72, 101, 108, 108, 111}, {256, 10}, {256, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}};

// Full-forward log-probs of each response: [b][t] under `temperature`, plus the full
// log-prob rows at each response position.
struct FullForward {
  std::vector<std::vector<float>> logprobs;
  torch::Tensor rows;  // [N, V]
};
FullForward Recompute(TransformerLM& model, const std::vector<std::vector<int32_t>>& prompts,
                      const GenerationResult& r, double temperature) {
  torch::NoGradGuard g;
  SequenceBatchOptions o;
  o.pad_id = 258;
  auto batch = MakeSequenceBatch(prompts, r.responses, o);
  EXPECT_TRUE(batch.ok()) << batch.status();
  const auto logits = model->forward(batch->ids, batch->attention_mask, batch->position_ids).logits;
  return {PerSequenceResponseValues(ResponseLogProbs(logits, *batch, temperature), *batch),
          ResponseLogProbRows(logits, *batch, temperature)};
}

class GenerationArchTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GenerationArchTest, ReportedLogProbsEqualFullForward) {
  TransformerLM model = MakeModel(GetParam(), 1);
  SamplingOptions o;
  o.temperature = 0.7;  // no truncation: the sampling distribution is the full one
  o.max_new_tokens = 17;
  o.stop_tokens = {257};
  auto r = Generate(model, kPrompts, {1, 2, 3}, o);
  ASSERT_TRUE(r.ok()) << r.status();
  const auto full = Recompute(model, kPrompts, *r, LogProbTemperature(o));
  for (size_t b = 0; b < kPrompts.size(); ++b) {
    ASSERT_EQ(r->logprobs[b].size(), r->responses[b].size());
    ASSERT_EQ(full.logprobs[b].size(), r->responses[b].size());
    EXPECT_GE(r->responses[b].size(), 1u);
    for (size_t t = 0; t < r->responses[b].size(); ++t) {
      EXPECT_NEAR(r->logprobs[b][t], full.logprobs[b][t], 1e-5) << "seq " << b << " t " << t;
    }
  }
}

TEST_P(GenerationArchTest, BatchedEqualsOneAtATimeAndCompanionsDoNotMatter) {
  TransformerLM model = MakeModel(GetParam(), 2);
  SamplingOptions o;
  o.temperature = 1.0;
  o.max_new_tokens = 12;
  const std::vector<uint64_t> seeds = {11, 22, 33};
  auto batched = Generate(model, kPrompts, seeds, o);
  ASSERT_TRUE(batched.ok()) << batched.status();
  for (size_t b = 0; b < kPrompts.size(); ++b) {
    auto single = Generate(model, {kPrompts[b]}, {seeds[b]}, o);
    ASSERT_TRUE(single.ok());
    EXPECT_EQ(single->responses[0], batched->responses[b]) << "row " << b;
    for (size_t t = 0; t < single->logprobs[0].size(); ++t) {
      EXPECT_NEAR(single->logprobs[0][t], batched->logprobs[b][t], 1e-5);
    }
  }
  // Same prompt + seed with other companions, in another position.
  auto mixed = Generate(model, {kPrompts[0], kPrompts[2], kPrompts[1], kPrompts[2]},
                        {99, 33, 7, 1234}, o);
  ASSERT_TRUE(mixed.ok());
  EXPECT_EQ(mixed->responses[1], batched->responses[2]);
  // A different seed gives a different sample (12 tokens from a spread distribution).
  EXPECT_NE(mixed->responses[3], batched->responses[2]);
  // Same call twice: identical.
  auto again = Generate(model, kPrompts, seeds, o);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->responses, batched->responses);
}

TEST_P(GenerationArchTest, GreedyIsArgmaxAndEqualsTinyTemperature) {
  TransformerLM model = MakeModel(GetParam(), 3);
  SamplingOptions greedy;
  greedy.temperature = 0;
  greedy.max_new_tokens = 10;
  auto g = Generate(model, kPrompts, {1, 2, 3}, greedy);
  ASSERT_TRUE(g.ok());
  SamplingOptions cold = greedy;
  cold.temperature = 1e-4;
  auto c = Generate(model, kPrompts, {4, 5, 6}, cold);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(g->responses, c->responses);
  // Every greedy token is the argmax of the full-forward distribution at its position.
  const auto full = Recompute(model, kPrompts, *g, 1.0);
  const auto argmax = full.rows.argmax(-1);
  int64_t n = 0;
  for (size_t b = 0; b < kPrompts.size(); ++b) {
    for (size_t t = 0; t < g->responses[b].size(); ++t, ++n) {
      EXPECT_EQ(argmax[n].item<int64_t>(), g->responses[b][t]);
      EXPECT_NEAR(g->logprobs[b][t], full.logprobs[b][t], 1e-5);  // temperature-1 log-probs
    }
  }
}

TEST_P(GenerationArchTest, TopKAndTopPNeverLeaveTheirSupport) {
  TransformerLM model = MakeModel(GetParam(), 4);
  for (int mode = 0; mode < 2; ++mode) {
    SamplingOptions o;
    o.temperature = 1.3;  // flatter: many tokens would be drawn without truncation
    o.max_new_tokens = 16;
    if (mode == 0) o.top_k = 3; else o.top_p = 0.3;
    std::vector<std::vector<int32_t>> prompts;
    std::vector<uint64_t> seeds;
    for (int i = 0; i < 8; ++i) {
      prompts.push_back(kPrompts[i % 3]);
      seeds.push_back(100 + i);
    }
    auto r = Generate(model, prompts, seeds, o);
    ASSERT_TRUE(r.ok());
    const auto full = Recompute(model, prompts, *r, o.temperature);
    int64_t n = 0;
    std::set<int32_t> distinct;
    for (size_t b = 0; b < prompts.size(); ++b) {
      for (size_t t = 0; t < r->responses[b].size(); ++t, ++n) {
        const int32_t tok = r->responses[b][t];
        distinct.insert(tok);
        const auto row = full.rows[n];
        if (mode == 0) {
          // Rank of the token: how many tokens are strictly more likely.
          const int64_t better = (row > row[tok]).sum().item<int64_t>();
          EXPECT_LT(better, 3) << "top-k violated at seq " << b << " t " << t;
        } else {
          // Nucleus: mass of strictly more likely tokens must be < top_p.
          const double before = row.exp().masked_select(row > row[tok]).sum().item<double>();
          EXPECT_LT(before, 0.3 + 1e-5) << "top-p violated at seq " << b << " t " << t;
        }
      }
    }
    EXPECT_GT(distinct.size(), 3u) << "sampling should not be degenerate";
  }
}

// Under top-k / top-p the reported log-prob is that of the distribution the token was
// drawn from: the full-forward row restricted to the kept set and renormalised. The kept
// set is rebuilt here from the full forward (top-k: the k largest; top-p: tokens whose
// strictly-more-likely mass is < p), and so is the reported top-K distribution.
TEST_P(GenerationArchTest, TruncatedSamplingReportsTheRenormalisedLogProb) {
  TransformerLM model = MakeModel(GetParam(), 8);
  for (int mode = 0; mode < 2; ++mode) {
    SamplingOptions o;
    o.temperature = 1.3;
    o.max_new_tokens = 10;
    o.return_top_k_distributions = 5;
    if (mode == 0) o.top_k = 3; else o.top_p = 0.5;
    auto r = Generate(model, kPrompts, {5, 6, 7}, o);
    ASSERT_TRUE(r.ok()) << r.status();
    const auto full = Recompute(model, kPrompts, *r, o.temperature);
    int64_t n = 0, truncated_steps = 0;
    for (size_t b = 0; b < kPrompts.size(); ++b) {
      for (size_t t = 0; t < r->responses[b].size(); ++t, ++n) {
        const torch::Tensor row = full.rows[n].to(torch::kDouble);
        torch::Tensor kept;
        if (mode == 0) {
          kept = row >= std::get<0>(row.topk(3)).min();
        } else {
          const torch::Tensor p = row.exp();
          torch::Tensor before = torch::zeros_like(p);
          for (int64_t v = 0; v < row.size(0); ++v) {
            before[v] = p.masked_select(row > row[v]).sum();
          }
          kept = before < 0.5;
        }
        const double log_z = row.masked_select(kept).logsumexp(0).item<double>();
        if (log_z < -1e-4) ++truncated_steps;
        const int32_t tok = r->responses[b][t];
        ASSERT_TRUE(kept[tok].item<bool>()) << "sampled outside the kept set";
        EXPECT_NEAR(r->logprobs[b][t], row[tok].item<double>() - log_z, 2e-5)
            << "mode " << mode << " seq " << b << " t " << t;
        // The reported distribution: kept tokens renormalised, the rest -inf.
        const auto& d = r->top_k[b][t];
        ASSERT_EQ(d.ids.size(), 5u);
        for (size_t k = 0; k < d.ids.size(); ++k) {
          if (kept[d.ids[k]].item<bool>()) {
            EXPECT_NEAR(d.logprobs[k], row[d.ids[k]].item<double>() - log_z, 2e-5);
          } else {
            EXPECT_EQ(d.logprobs[k], -std::numeric_limits<float>::infinity());
          }
        }
      }
    }
    EXPECT_GT(truncated_steps, n / 2) << "the test must exercise truncation (mode " << mode << ")";
  }
}

TEST_P(GenerationArchTest, StopTokensEndRowsAndFinishedRowsLeaveTheBatch) {
  TransformerLM model = MakeModel(GetParam(), 5);
  SamplingOptions o;
  o.temperature = 0;
  o.max_new_tokens = 12;
  auto free_run = Generate(model, kPrompts, {0, 0, 0}, o);
  ASSERT_TRUE(free_run.ok());
  // Stop on row 1's third token: row 1 must end there, the others continue unchanged
  // unless they emit it too.
  const int32_t stop = free_run->responses[1][2];
  o.stop_tokens = {stop};
  auto r = Generate(model, kPrompts, {0, 0, 0}, o);
  ASSERT_TRUE(r.ok());
  for (size_t b = 0; b < kPrompts.size(); ++b) {
    const auto& full = free_run->responses[b];
    auto it = std::find(full.begin(), full.end(), stop);
    if (it == full.end()) {
      EXPECT_EQ(r->responses[b], full);
      EXPECT_FALSE(r->finished[b]);
    } else {
      EXPECT_EQ(r->responses[b], std::vector<int32_t>(full.begin(), it + 1));
      EXPECT_TRUE(r->finished[b]);
    }
  }
  EXPECT_TRUE(r->finished[1]);
  EXPECT_LE(r->responses[1].size(), 3u);
  // One decode step per token after the first, for the longest row only: finished rows
  // do not keep the loop going.
  size_t longest = 0;
  for (const auto& resp : r->responses) longest = std::max(longest, resp.size());
  EXPECT_EQ(r->decode_steps, static_cast<int64_t>(longest) - 1);

  // A row that stops on its first token costs no decode step at all.
  SamplingOptions first = o;
  first.stop_tokens = {free_run->responses[0][0]};
  auto alone = Generate(model, {kPrompts[0]}, {0}, first);
  ASSERT_TRUE(alone.ok());
  EXPECT_EQ(alone->responses[0], std::vector<int32_t>{free_run->responses[0][0]});
  EXPECT_TRUE(alone->finished[0]);
  EXPECT_EQ(alone->decode_steps, 0);
}

TEST_P(GenerationArchTest, TopKDistributionsAreReported) {
  TransformerLM model = MakeModel(GetParam(), 6);
  SamplingOptions o;
  o.temperature = 0.9;
  o.max_new_tokens = 5;
  o.return_top_k_distributions = 4;
  auto r = Generate(model, kPrompts, {1, 2, 3}, o);
  ASSERT_TRUE(r.ok());
  const auto full = Recompute(model, kPrompts, *r, 0.9);
  int64_t n = 0;
  ASSERT_EQ(r->top_k.size(), kPrompts.size());
  for (size_t b = 0; b < kPrompts.size(); ++b) {
    ASSERT_EQ(r->top_k[b].size(), r->responses[b].size());
    for (size_t t = 0; t < r->responses[b].size(); ++t, ++n) {
      const auto& d = r->top_k[b][t];
      ASSERT_EQ(d.ids.size(), 4u);
      const auto top = full.rows[n].topk(4);
      for (int k = 0; k < 4; ++k) {
        EXPECT_EQ(d.ids[k], std::get<1>(top)[k].item<int64_t>());
        EXPECT_NEAR(d.logprobs[k], std::get<0>(top)[k].item<float>(), 1e-5);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(BothArchitectures, GenerationArchTest,
                         ::testing::Values("tiny", "llama-tiny"));

TEST(GenerationValidationTest, BadInputIsNamed) {
  TransformerLM model = MakeModel("tiny", 7);
  SamplingOptions o;
  o.max_new_tokens = 4;
  auto msg = [&](const std::vector<std::vector<int32_t>>& prompts,
                 const std::vector<uint64_t>& seeds, const SamplingOptions& opts) {
    auto r = Generate(model, prompts, seeds, opts);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(r.status().message());
  };
  EXPECT_THAT(msg({{1}, {}}, {1, 2}, o), HasSubstr("prompts[1] is empty"));
  EXPECT_THAT(msg({{1, 259}}, {1}, o), HasSubstr("prompts[0][1] = 259"));
  EXPECT_THAT(msg({{1, -1}}, {1}, o), HasSubstr("prompts[0][1] = -1"));
  EXPECT_THAT(msg({{1}, {2}}, {1}, o), HasSubstr("seeds has 1 entries but prompts has 2"));
  EXPECT_THAT(msg({}, {}, o), HasSubstr("prompts is empty"));
  SamplingOptions long_opts = o;
  long_opts.max_new_tokens = 159;
  EXPECT_THAT(msg({{1}, {1, 2}}, {1, 2}, long_opts), HasSubstr("prompts[1]: length 2 + max_new_tokens 159 > max_seq_len 160"));
  SamplingOptions bad = o;
  bad.top_p = 0;
  EXPECT_THAT(msg({{1}}, {1}, bad), HasSubstr("top_p"));
  bad = o;
  bad.temperature = -1;
  EXPECT_THAT(msg({{1}}, {1}, bad), HasSubstr("temperature"));
  bad = o;
  bad.top_k = -2;
  EXPECT_THAT(msg({{1}}, {1}, bad), HasSubstr("top_k"));
  bad = o;
  bad.max_new_tokens = 0;
  EXPECT_THAT(msg({{1}}, {1}, bad), HasSubstr("max_new_tokens"));
  bad = o;
  bad.stop_tokens = {300};
  EXPECT_THAT(msg({{1}}, {1}, bad), HasSubstr("stop_tokens"));
  // The boundary case is accepted: 1 + 159 == max_seq_len.
  EXPECT_TRUE(Generate(model, {{1}}, {1}, long_opts).ok());
}

}  // namespace
}  // namespace rlhf
