#include "core/train/sft_trainer.h"

#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/utils.h>

#include "core/data/builtin_task.h"
#include "core/model/checkpoint.h"
#include "core/tokenizer/tokenizer.h"

namespace rlhf {
namespace {

ModelConfig Micro() {
  ModelConfig c;
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 2;
  c.n_kv_heads = 2;
  c.d_ff = 64;
  c.max_seq_len = 96;
  return c;
}

std::vector<SftRecord> TaskDemos(int n, int heldout, std::vector<SftRecord>* held) {
  BuiltinTaskOptions o;
  o.num_sft = n;
  o.num_sft_heldout = heldout;
  o.num_rank = o.num_rank_heldout = 0;
  o.num_rl_train = o.num_rl_heldout = 0;
  o.num_pretrain = 0;
  auto task = GenerateBuiltinTask(o);
  EXPECT_TRUE(task.ok());
  if (held != nullptr) *held = task->sft_heldout;
  return task->sft;
}

TEST(SftLossTest, MasksPromptAndPaddingAgainstHandBuiltBatch) {
  // Vocabulary of 3. Row 0: prompt [2, 0], response [1, 2]. Row 1: prompt [1],
  // response [0], then one pad (id 2).
  PackedBatch masked = PackBatch({{2, 0}, {1}}, {{1, 2}, {0}}, 2, false);
  PackedBatch all = PackBatch({{2, 0}, {1}}, {{1, 2}, {0}}, 2, true);
  const float l2 = std::log(2.f), l3 = std::log(3.f), l4 = std::log(4.f);
  // logits[b, t] predicts ids[b, t + 1]. With the identity as the unembedding, the
  // hidden states are the logits.
  const auto eye = torch::eye(3);
  auto logits = torch::tensor({{{0.f, 0.f, 0.f}, {l2, 0.f, 0.f}, {0.f, 0.f, l3}, {5.f, 5.f, 5.f}},
                               {{0.f, l4, 0.f}, {9.f, 0.f, 0.f}, {0.f, 9.f, 0.f}, {1.f, 2.f, 3.f}}});
  // Targets: row 0 t=2 (id 1, p = 1/4), t=3 (id 2, p = 3/5); row 1 t=1 (id 0, p = 1/6).
  const double masked_expected = (std::log(4.0) - std::log(0.6) + std::log(6.0)) / 3;
  EXPECT_NEAR(SftLoss(logits, eye, masked).item<double>(), masked_expected, 1e-6);
  // With the prompt: also row 0 t=1 (id 0, p = 1/3). Row 1's padding never counts.
  const double all_expected = (std::log(3.0) + std::log(4.0) - std::log(0.6) + std::log(6.0)) / 4;
  EXPECT_NEAR(SftLoss(logits, eye, all).item<double>(), all_expected, 1e-6);

  // The gradient reaches only target-predicting positions.
  auto g = logits.clone().requires_grad_(true);
  SftLoss(g, eye, masked).backward();
  EXPECT_EQ(g.grad()[0][0].abs().sum().item<float>(), 0.f);  // predicts a prompt token
  EXPECT_EQ(g.grad()[0][3].abs().sum().item<float>(), 0.f);  // last position predicts nothing
  EXPECT_EQ(g.grad()[1][1].abs().sum().item<float>(), 0.f);  // predicts padding
  EXPECT_GT(g.grad()[0][1].abs().sum().item<float>(), 0.f);
}

TEST(SftTrainerTest, LossGoesDownOnTinyData) {
  torch::manual_seed(1);
  ByteTokenizer tok;
  std::vector<SftRecord> heldout;
  const auto train = TaskDemos(64, 32, &heldout);
  SftOptions o;
  o.steps = 60;
  o.batch_size = 16;
  o.lr = 3e-3;
  o.warmup_steps = 5;
  o.eval_every = 0;
  o.checkpoint_every = 0;
  auto trainer = SftTrainer::Create(TransformerLM(Micro()), tok, o, train, heldout);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  const double before = (*trainer)->HeldoutLoss();
  EXPECT_NEAR(before, std::log(259.0), 0.5);  // untrained: about uniform
  std::vector<double> losses;
  auto result = (*trainer)->Train([&](const TrainProgress& p) { losses.push_back(p.loss); });
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_GE(losses.size(), 2u);
  EXPECT_LT(losses.back(), 0.6 * losses.front());
  EXPECT_LT(result->heldout_loss, 0.6 * before);
}

TEST(SftTrainerTest, ResumeContinuesExactlyLikeAnUninterruptedRun) {
  ByteTokenizer tok;
  const auto train = TaskDemos(40, 0, nullptr);
  SftOptions o;
  o.steps = 6;
  o.batch_size = 4;
  o.warmup_steps = 2;
  o.eval_every = 0;
  o.checkpoint_every = 0;
  const std::string straight = ::testing::TempDir() + "/sft_straight";
  const std::string sliced = ::testing::TempDir() + "/sft_sliced";

  torch::manual_seed(3);
  o.out_dir = straight;
  auto a = SftTrainer::Create(TransformerLM(Micro()), tok, o, train, {});
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE((*a)->Train().ok());

  torch::manual_seed(3);
  o.out_dir = sliced;
  o.stop_at_step = 3;
  auto b1 = SftTrainer::Create(TransformerLM(Micro()), tok, o, train, {});
  ASSERT_TRUE(b1.ok());
  auto r1 = (*b1)->Train();
  ASSERT_TRUE(r1.ok()) << r1.status();
  EXPECT_EQ(r1->steps, 3);
  // A fresh process: different initial weights, state comes from the checkpoint.
  torch::manual_seed(99);
  o.stop_at_step = -1;
  o.resume = true;
  auto b2 = SftTrainer::Create(TransformerLM(Micro()), tok, o, train, {});
  ASSERT_TRUE(b2.ok());
  auto r2 = (*b2)->Train();
  ASSERT_TRUE(r2.ok()) << r2.status();

  auto ca = LoadCheckpoint(straight);
  auto cb = LoadCheckpoint(sliced);
  ASSERT_TRUE(ca.ok() && cb.ok());
  EXPECT_EQ(cb->metadata["step"].get<int64_t>(), 6);
  EXPECT_EQ(cb->metadata["stage"].get<std::string>(), "sft");
  const NamedTensors ta = ModelTensors(ca->model), tb = ModelTensors(cb->model);
  ASSERT_EQ(ta.size(), tb.size());
  for (size_t i = 0; i < ta.size(); ++i) {
    EXPECT_EQ(ta[i].first, tb[i].first);
    EXPECT_TRUE(torch::allclose(ta[i].second, tb[i].second, 1e-5, 1e-6)) << ta[i].first;
  }
}

TEST(SftTrainerTest, RejectsBadInput) {
  ByteTokenizer tok;
  SftOptions o;
  o.batch_size = 0;
  EXPECT_EQ(SftTrainer::Create(TransformerLM(Micro()), tok, o, {{"p", "r"}}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.batch_size = 2;
  auto none = SftTrainer::Create(TransformerLM(Micro()), tok, o, {}, {});
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  ModelConfig rm = Micro();
  rm.lm_head = false;
  rm.scalar_head = true;
  EXPECT_FALSE(SftTrainer::Create(TransformerLM(rm), tok, o, {{"p", "r"}}, {}).ok());
}

}  // namespace
}  // namespace rlhf
