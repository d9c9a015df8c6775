// Byte tokenizer and the sequence-batch / response log-prob helpers, against
// hand-computed values.
#include <cmath>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/model/logprobs.h"
#include "core/tokenizer/tokenizer.h"

namespace rlhf {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ByteTokenizerTest, RoundTripAndSpecials) {
  ByteTokenizer tok;
  const std::string text = std::string("h\xc3\xa9llo\n\0\xff", 9);
  const auto ids = tok.Encode(text);
  ASSERT_EQ(ids.size(), 9u);
  EXPECT_EQ(ids[1], 0xc3);
  EXPECT_EQ(ids[7], 0);
  EXPECT_EQ(ids[8], 255);
  EXPECT_EQ(tok.Decode(ids), text);
  EXPECT_EQ(tok.Decode({ByteTokenizer::kBos, 'a', ByteTokenizer::kPad, 'b', ByteTokenizer::kEos, 999, -1}),
            "ab");
  EXPECT_EQ(tok.vocab_size(), 259);
  EXPECT_EQ(tok.bos_id(), 256);
  EXPECT_EQ(tok.eos_id(), 257);
  EXPECT_EQ(tok.pad_id(), 258);
  EXPECT_TRUE(tok.IsSpecial(257));
  EXPECT_FALSE(tok.IsSpecial(255));
}

TEST(ByteTokenizerTest, Factory) {
  auto a = MakeTokenizer(nlohmann::json{{"type", "byte"}});
  ASSERT_TRUE(a.ok());
  EXPECT_EQ((*a)->name(), "byte");
  auto b = MakeTokenizer((*a)->Spec());
  ASSERT_TRUE(b.ok());
  EXPECT_EQ((*b)->vocab_size(), 259);
  EXPECT_TRUE(MakeTokenizer(nlohmann::json("byte")).ok());
  EXPECT_THAT(std::string(MakeTokenizer(nlohmann::json{{"type", "wordpiece"}}).status().message()),
              HasSubstr("wordpiece"));
  EXPECT_THAT(std::string(MakeTokenizer(nlohmann::json::object()).status().message()),
              HasSubstr("type"));
  EXPECT_EQ(MakeTokenizerByName("bpe").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SequenceBatchTest, LayoutIsHandChecked) {
  SequenceBatchOptions o;
  o.pad_id = 9;
  auto b = MakeSequenceBatch({{1, 2}, {3}}, {{4}, {5, 6, 7}}, o);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->ids.sizes(), (std::vector<int64_t>{2, 4}));
  auto row = [](const torch::Tensor& t, int64_t r) {
    std::vector<int64_t> v;
    for (int64_t i = 0; i < t.size(1); ++i) v.push_back(t[r][i].item().toLong());
    return v;
  };
  EXPECT_THAT(row(b->ids, 0), ElementsAre(1, 2, 4, 9));
  EXPECT_THAT(row(b->ids, 1), ElementsAre(3, 5, 6, 7));
  EXPECT_THAT(row(b->attention_mask, 0), ElementsAre(1, 1, 1, 0));
  EXPECT_THAT(row(b->response_mask, 0), ElementsAre(0, 0, 1, 0));
  EXPECT_THAT(row(b->response_mask, 1), ElementsAre(0, 1, 1, 1));
  EXPECT_THAT(row(b->position_ids, 0), ElementsAre(0, 1, 2, 0));
  EXPECT_THAT(b->prompt_lengths, ElementsAre(2, 1));
  EXPECT_THAT(b->response_lengths, ElementsAre(1, 3));
}

TEST(SequenceBatchTest, TruncationAndErrors) {
  SequenceBatchOptions o;
  o.max_len = 4;
  EXPECT_THAT(std::string(MakeSequenceBatch({{1, 2, 3}}, {{4, 5}}, o).status().message()),
              HasSubstr("sequence 0: length 5"));
  o.truncation = TruncationPolicy::kTruncateResponse;
  auto r = MakeSequenceBatch({{1, 2, 3}}, {{4, 5}}, o);
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(r->response_lengths, ElementsAre(1));
  o.truncation = TruncationPolicy::kTruncatePromptLeft;
  r = MakeSequenceBatch({{1, 2, 3}}, {{4, 5}}, o);
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(r->prompt_lengths, ElementsAre(2));
  EXPECT_EQ(r->ids[0][0].item<int64_t>(), 2);  // dropped from the left
  r = MakeSequenceBatch({{1}}, {{4, 5, 6, 7, 8}}, o);  // keeps 1 prompt token
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(r->response_lengths, ElementsAre(3));
  EXPECT_THAT(std::string(MakeSequenceBatch({{1}, {}}, {{}, {}}, {}).status().message()),
              HasSubstr("prompts[1] is empty"));
  EXPECT_THAT(std::string(MakeSequenceBatch({{1}}, {{}, {}}, {}).status().message()),
              HasSubstr("responses has 2 entries but prompts has 1"));
}

TEST(ResponseLogProbsTest, HandComputed) {
  // One row: prompt {0}, response {1, 0}; V = 2.
  auto b = MakeSequenceBatch({{0}}, {{1, 0}}, {});
  ASSERT_TRUE(b.ok());
  // Position 0 predicts token 1 with p = 3/4; position 1 predicts token 0 with p = 1/2.
  auto logits = torch::tensor({0.0f, std::log(3.0f), 5.0f, 5.0f, 1.0f, 2.0f}).view({1, 3, 2});
  const auto lp = ResponseLogProbs(logits, *b);
  EXPECT_NEAR(lp[0][0].item<float>(), 0.0, 1e-7);
  EXPECT_NEAR(lp[0][1].item<float>(), std::log(0.75), 1e-6);
  EXPECT_NEAR(lp[0][2].item<float>(), std::log(0.5), 1e-6);
  // Temperature 2 on position 0: logits/2 = {0, ln3/2} -> p(1) = sqrt3/(1+sqrt3).
  EXPECT_NEAR(ResponseLogProbs(logits, *b, 2.0)[0][1].item<float>(),
              std::log(std::sqrt(3.0) / (1 + std::sqrt(3.0))), 1e-6);
  const auto rows = ResponseLogProbRows(logits, *b);
  ASSERT_EQ(rows.sizes(), (std::vector<int64_t>{2, 2}));
  EXPECT_NEAR(rows[0][0].item<float>(), std::log(0.25), 1e-6);
  EXPECT_NEAR(rows[1][1].item<float>(), std::log(0.5), 1e-6);
  const auto per = PerSequenceResponseValues(lp, *b);
  ASSERT_EQ(per.size(), 1u);
  EXPECT_EQ(per[0].size(), 2u);
  auto back = ScatterResponseValues(per, *b);
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(torch::allclose(*back, lp));
  EXPECT_THAT(std::string(ScatterResponseValues({{1.0f}}, *b).status().message()),
              HasSubstr("values[0] has 1 entries"));
}

}  // namespace
}  // namespace rlhf
