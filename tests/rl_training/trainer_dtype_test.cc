// rl.train_dtype bf16: autocast forward/backward with fp32 master weights and AdamW state
// (core/model/torch_compat.h AutocastGuard), against the same step in fp32.
//
// Tolerances, from bf16's 8 significand bits (unit roundoff u = 2^-8 relative spacing,
// rounding error <= 2^-9 per value). Autocast rounds the two inputs of every matmul to
// bf16 and accumulates in fp32, so each product carries a relative error of up to
// 2 x 2^-9 = 2^-8. The tiny model's path from ids to logits has 13 matmuls (2 layers x
// qkv, scores, mix, out, fc, proj, + the unembedding); backward doubles that. Errors of
// independent roundings add in quadrature (sqrt(26) x 2^-8 ~ 0.02), in the worst case
// linearly (26 x 2^-8 ~ 0.1):
//   - per-token log-probs: |Δ logp| <= 2 max|Δ logit|, logits here are O(1): 0.05 nats;
//   - the whole gradient: relative L2 error <= 0.05 (between the two estimates);
//   - the loss: -token-mean(min(ρ, c) A) with |A| <= 1 (rewards in [0, 1], β = 0), and
//     min(·, c) is 1-Lipschitz, so |Δ loss| <= max|Δρ| = expm1(max|Δ logp|) exactly;
//   - weights after one AdamW step: the first step moves each weight by lr·g/(|g|+ε)
//     (bias-corrected moments), so bf16 and fp32 agree wherever the gradient's sign does
//     and never differ by more than 2·lr. bf16 MASTER weights would break this: near 1
//     (the norms' gains) bf16's spacing is 2^-7 = 7.8e-3 > 2·lr.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/model/torch_compat.h"
#include "core/rl_training/trainer.h"
#include "tests/rl_training/trainer_test_util.h"
#include "tests/testing/status_matchers.h"

namespace rlhf {
namespace {

using ::testing::HasSubstr;
using testing::MaxAbsDiff;
using testing::SampleBatch;
using testing::TinyModel;

constexpr double kLr = 1e-3;

TrainerOptions Options(torch::ScalarType dtype) {
  TrainerOptions o;
  o.algorithm = RlAlgorithm::kReinforce;
  o.lr = kLr;
  o.grad_clip = 0;          // raw gradients, comparable between the two runs
  o.minibatch_size = 1000;  // one optimizer step
  o.kl.initial_beta = 0;    // returns = rewards in [0, 1], so |A| <= 1
  o.kl.adaptive = false;
  o.train_dtype = dtype;
  return o;
}

torch::Tensor FlatGrad(TransformerLM& m) {
  std::vector<torch::Tensor> g;
  for (const auto& p : m->parameters()) {
    g.push_back(p.grad().defined() ? p.grad().reshape({-1}) : torch::zeros({p.numel()}));
  }
  return torch::cat(g);
}

TEST(TrainerDtype, Bf16AutocastStepMatchesFp32WithinBf16Tolerance) {
  TransformerLM ref = TinyModel(5);
  TransformerLM a = TinyModel(3), b = TinyModel(3), init = TinyModel(3);
  const std::vector<std::vector<int32_t>> prompts = {
      {1, 72, 105}, {1, 97, 98, 99}, {1, 120}, {1, 50, 51}};
  std::vector<Trajectory> batch = SampleBatch(init, ref, prompts, /*samples=*/4, 0, 0);
  // Spread rewards over [0, 1] (the sampled bytes of an untrained model rarely score):
  // non-zero advantages, still |A| <= 1.
  for (size_t i = 0; i < batch.size(); ++i) batch[i].reward = static_cast<float>(i % 3) / 2;
  auto ta = Trainer::Create(Options(torch::kFloat32), a);
  auto tb = Trainer::Create(Options(torch::kBFloat16), b);
  ASSERT_TRUE(ta.ok() && tb.ok());

  // Forward: bf16 log-probs differ (autocast is on) but within the tolerance.
  const auto lpa = *(*ta)->ResponseLogProbsOf(batch);
  const auto lpb = *(*tb)->ResponseLogProbsOf(batch);
  double d_lp = 0;
  int64_t tokens = 0;
  for (size_t i = 0; i < lpa.size(); ++i) {
    for (size_t t = 0; t < lpa[i].size(); ++t, ++tokens) {
      d_lp = std::max(d_lp, std::abs(double(lpa[i][t]) - lpb[i][t]));
    }
  }
  ASSERT_GT(tokens, 20);
  EXPECT_GT(d_lp, 0) << "bf16 log-probs are bitwise fp32's: autocast did not engage";
  EXPECT_LE(d_lp, 0.05);
  EXPECT_FALSE(compat::internal::AutocastEnabled(c10::DeviceType::CPU)) << "guard leaked";

  const TrainStats sa = *(*ta)->Step(batch);
  const TrainStats sb = *(*tb)->Step(batch);
  ASSERT_EQ(sa.optimizer_steps, 1);
  ASSERT_EQ(sb.optimizer_steps, 1);
  EXPECT_FALSE(compat::internal::AutocastEnabled(c10::DeviceType::CPU)) << "guard leaked";

  // Loss: bounded by the log-prob difference (see the header).
  EXPECT_LE(std::abs(sb.policy_loss - sa.policy_loss), std::expm1(d_lp) + 1e-6);
  // Gradient: relative L2 error, and it is not bitwise fp32's.
  const torch::Tensor ga = FlatGrad(a), gb = FlatGrad(b);
  ASSERT_EQ(gb.scalar_type(), torch::kFloat32);  // gradients land in the fp32 masters
  const double rel = (gb - ga).norm().item<double>() / ga.norm().item<double>();
  EXPECT_GT(rel, 0);
  EXPECT_LE(rel, 0.05);
  EXPECT_NEAR(sb.grad_norm, sa.grad_norm, 0.05 * sa.grad_norm);

  // Master weights and optimizer state stay fp32.
  for (const auto& p : b->named_parameters()) {
    EXPECT_EQ(p.value().scalar_type(), torch::kFloat32) << p.key();
  }
  const TrainerState st = (*tb)->ExportState();
  ASSERT_FALSE(st.optimizer_tensors.empty());
  for (const auto& [name, t] : st.optimizer_tensors)
    EXPECT_EQ(t.scalar_type(), torch::kFloat32) << name;

  // Weights: within 2·lr everywhere; identical where the gradient signs agree.
  const double moved = MaxAbsDiff(b, init);
  EXPECT_GT(moved, 0.5 * kLr);
  EXPECT_LE(MaxAbsDiff(a, b), 2 * kLr * (1 + 1e-3));
  int64_t same = 0, total = 0;
  for (const auto& item : a->named_parameters()) {
    const torch::Tensor d = (item.value() - b->named_parameters()[item.key()]).abs();
    same += (d <= 1e-2 * kLr).sum().item<int64_t>();
    total += d.numel();
  }
  const double agree = double(same) / total;
  EXPECT_GE(agree, 0.9);
  std::printf(
      "bf16 vs fp32: max|dlogp| %.3g over %lld tokens, |dloss| %.3g, grad rel L2 %.3g, "
      "grad_norm %.5g vs %.5g, identical updates %.4f of %lld weights\n",
      d_lp, static_cast<long long>(tokens), std::abs(sb.policy_loss - sa.policy_loss), rel,
      sb.grad_norm, sa.grad_norm, agree, static_cast<long long>(total));
}

TEST(TrainerDtype, RefusesFp16AndNonFp32MasterWeights) {
  TrainerOptions o = Options(torch::kFloat16);
  EXPECT_THAT(
      ValidateTrainerOptions(o),
      ::rlhf::testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                HasSubstr("rl.train_dtype must be fp32 or bf16, got fp16")));
  TransformerLM half = TinyModel(1);
  half->to(torch::kBFloat16);
  auto t = Trainer::Create(Options(torch::kBFloat16), half);
  EXPECT_THAT(t.status(), ::rlhf::testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                                    HasSubstr("fp32 master weights")));
}

}  // namespace
}  // namespace rlhf
