#include "core/train/training_common.h"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "core/tokenizer/tokenizer.h"

namespace rlhf {
namespace {

TEST(TokenFormatTest, PromptGetsBosResponseGetsEos) {
  ByteTokenizer tok;
  EXPECT_EQ(EncodePrompt(tok, "Hi"), (std::vector<int32_t>{256, 'H', 'i'}));
  EXPECT_EQ(EncodeResponse(tok, "Ok."), (std::vector<int32_t>{'O', 'k', '.', 257}));
  EXPECT_EQ(EncodeResponse(tok, ""), (std::vector<int32_t>{257}));
}

TEST(TokenFormatTest, TruncationDropsPromptFromTheLeftThenResponseFromTheRight) {
  std::vector<int32_t> prompt = {256, 1, 2, 3, 4}, response = {5, 6, 257};
  ASSERT_TRUE(TruncateToFit(6, &prompt, &response));
  EXPECT_EQ(prompt, (std::vector<int32_t>{256, 3, 4}));  // BOS kept, oldest bytes dropped
  EXPECT_EQ(response, (std::vector<int32_t>{5, 6, 257}));
  ASSERT_TRUE(TruncateToFit(3, &prompt, &response));
  EXPECT_EQ(prompt, (std::vector<int32_t>{256}));
  EXPECT_EQ(response, (std::vector<int32_t>{5, 6}));  // EOS dropped first
  EXPECT_FALSE(TruncateToFit(1, &prompt, &response));  // nothing of the response left
  std::vector<int32_t> p2 = {256, 1}, r2 = {2, 257};
  ASSERT_TRUE(TruncateToFit(0, &p2, &r2));  // 0 = no limit
  EXPECT_EQ(r2.size(), 2u);
}

TEST(PackBatchTest, MasksAndLastIndex) {
  PackedBatch b = PackBatch({{256, 10}, {256}}, {{11, 257}, {12, 13, 257}}, 258, false);
  ASSERT_EQ(b.ids.sizes(), (torch::IntArrayRef{2, 4}));
  EXPECT_TRUE(torch::equal(b.ids, torch::tensor({{256, 10, 11, 257}, {256, 12, 13, 257}}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(b.target_mask, torch::tensor({{0.f, 0.f, 1.f, 1.f}, {0.f, 1.f, 1.f, 1.f}})));
  EXPECT_TRUE(torch::equal(b.last_index, torch::tensor({3, 3}, torch::kInt64)));
  EXPECT_EQ(b.real_tokens, 8);
  PackedBatch c = PackBatch({{256, 10, 11}, {256}}, {{12}, {13}}, 258, true);
  EXPECT_TRUE(torch::equal(c.ids, torch::tensor({{256, 10, 11, 12}, {256, 13, 258, 258}}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(c.attention_mask, torch::tensor({{1, 1, 1, 1}, {1, 1, 0, 0}}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(c.target_mask, torch::tensor({{0.f, 1.f, 1.f, 1.f}, {0.f, 1.f, 0.f, 0.f}})));
  EXPECT_TRUE(torch::equal(c.last_index, torch::tensor({3, 1}, torch::kInt64)));
}

TEST(LearningRateTest, WarmupThenCosine) {
  // 10 warmup steps to 1e-3, cosine over the remaining 90 to 0.1 * 1e-3.
  EXPECT_NEAR(LearningRate(0, 100, 10, 1e-3, 0.1), 1e-4, 1e-12);
  EXPECT_NEAR(LearningRate(9, 100, 10, 1e-3, 0.1), 1e-3, 1e-12);
  EXPECT_NEAR(LearningRate(10, 100, 10, 1e-3, 0.1), 1e-3, 1e-12);
  // Halfway through the decay: cosine term 0.5 -> 0.1 + 0.9 * 0.5 = 0.55.
  EXPECT_NEAR(LearningRate(55, 100, 10, 1e-3, 0.1), 0.55e-3, 1e-12);
  EXPECT_NEAR(LearningRate(100, 100, 10, 1e-3, 0.1), 1e-4, 1e-12);
}

TEST(ClipGradNormTest, ScalesToMaxNorm) {
  auto a = torch::zeros({2}, torch::requires_grad());
  auto b = torch::zeros({1}, torch::requires_grad());
  ((a * torch::tensor({3.f, 0.f})).sum() + (b * 4.f).sum()).backward();  // (3, 0), (4): norm 5
  EXPECT_NEAR(ClipGradNorm({a, b}, 1.0), 5.0, 1e-6);
  EXPECT_NEAR(a.grad()[0].item<float>(), 0.6, 1e-5);
  EXPECT_NEAR(b.grad()[0].item<float>(), 0.8, 1e-5);
  EXPECT_NEAR(ClipGradNorm({a, b}, 0.0), 1.0, 1e-5);  // 0 = measure only
}

TEST(BatchSamplerTest, DeterministicPassesCoverEveryExample) {
  BatchSampler s1(10, 4, 7), s2(10, 4, 7), s3(10, 4, 8);
  std::vector<int> counts(10, 0);
  for (int step = 0; step < 5; ++step) {  // 20 draws = two full passes
    const auto b = s1.Batch(step);
    EXPECT_EQ(b, s2.Batch(step));
    for (int64_t i : b) counts[i]++;
  }
  for (int c : counts) EXPECT_EQ(c, 2);
  // Random access gives the same answer as sequential access.
  BatchSampler s4(10, 4, 7);
  EXPECT_EQ(s4.Batch(3), s1.Batch(3));
  bool differs = false;
  for (int step = 0; step < 5; ++step) differs = differs || s3.Batch(step) != s1.Batch(step);
  EXPECT_TRUE(differs);
}

TEST(FormatProgressTest, ShowsStepLossRateAndEta) {
  TrainProgress p;
  p.stage = "sft";
  p.step = 100;
  p.total_steps = 600;
  p.loss = 1.23456;
  p.lr = 9.5e-4;
  p.tokens_per_sec = 12345.4;
  p.elapsed_sec = 20;
  p.eta_sec = 100;
  EXPECT_EQ(FormatProgress(p),
            "sft step 100/600 loss 1.2346 lr 9.50e-04 tok/s 12345 elapsed 20s eta 1m40s");
}

}  // namespace
}  // namespace rlhf
