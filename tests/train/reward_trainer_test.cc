#include "core/train/reward_trainer.h"

#include <cctype>
#include <cstdio>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/utils.h>

#include "core/data/builtin_task.h"
#include "core/data/gold_labeler.h"
#include "core/data/jsonl.h"
#include "core/model/checkpoint.h"
#include "core/tokenizer/tokenizer.h"
#include "core/train/sft_trainer.h"

namespace rlhf {
namespace {

double Sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

TEST(RewardPairLossTest, ValueAndGradientMatchHandComputation) {
  // Scores of three responses; pairs (winner, loser): (0,1), (2,0), (2,1).
  auto s = torch::tensor({1.0, 0.0, 2.0}, torch::dtype(torch::kFloat64).requires_grad(true));
  auto loss = RewardPairLoss(s, {{0, 1}, {2, 0}, {2, 1}});
  // Margins 1, 1, 2: loss = mean(-log σ(1), -log σ(1), -log σ(2)).
  const double expected = (2 * std::log1p(std::exp(-1.0)) + std::log1p(std::exp(-2.0))) / 3;
  EXPECT_NEAR(loss.item<double>(), expected, 1e-12);
  EXPECT_NEAR(loss.item<double>(), 0.2511505, 1e-6);
  loss.backward();
  // d/dr_w -log σ(r_w - r_l) = -(1 - σ(m)); d/dr_l = +(1 - σ(m)); each pair weighs 1/3.
  const double g1 = 1 - Sigmoid(1.0), g2 = 1 - Sigmoid(2.0);
  auto grad = s.grad();
  EXPECT_NEAR(grad[0].item<double>(), (-g1 + g1) / 3, 1e-12);  // winner once, loser once
  EXPECT_NEAR(grad[1].item<double>(), (g1 + g2) / 3, 1e-12);
  EXPECT_NEAR(grad[2].item<double>(), (-g1 - g2) / 3, 1e-12);
  EXPECT_NEAR(grad[1].item<double>(), 0.1293814, 1e-6);
}

TEST(RewardPairLossTest, IceExamplePairsFromOneEncodingPerResponse) {
  const char* src = std::getenv("RLHF_SOURCE_DIR");
  auto records =
      ReadPreferenceJsonl(std::string(src != nullptr ? src : ".") + "/core/data/fixtures/ice.jsonl");
  ASSERT_TRUE(records.ok()) << records.status();
  const auto pairs = ExpandPairs((*records)[0]);
  ASSERT_EQ(pairs.size(), 6u);
  // Scores that agree with the ranking C > D > A > B give every pair a positive margin.
  auto s = torch::tensor({1.0, 0.0, 3.0, 2.0}, torch::kFloat64);
  double expected = 0;
  for (const IndexPair& p : pairs) {
    const double m = s[p.winner].item<double>() - s[p.loser].item<double>();
    EXPECT_GT(m, 0);
    expected += std::log1p(std::exp(-m)) / 6;
  }
  EXPECT_NEAR(RewardPairLoss(s, pairs).item<double>(), expected, 1e-12);
}

TEST(RewardModelTest, FromSftKeepsTrunkAndAddsScalarHead) {
  ModelConfig c;
  c.d_model = 32;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 2;
  c.d_ff = 64;
  c.max_seq_len = 64;
  LoadedCheckpoint sft;
  torch::manual_seed(0);
  sft.model = TransformerLM(c);
  sft.config = c;
  auto rm = RewardModelFromSft(sft, 1);
  ASSERT_TRUE(rm.ok()) << rm.status();
  EXPECT_FALSE((*rm)->config().lm_head);
  EXPECT_TRUE((*rm)->config().scalar_head);
  ByteTokenizer tok;
  PackedBatch batch = PackBatch({EncodePrompt(tok, "Name a fruit.")}, {EncodeResponse(tok, "Fig.")},
                                tok.pad_id(), false);
  torch::NoGradGuard no_grad;
  // Same trunk: the final hidden states agree.
  auto h_sft = sft.model->forward(batch.ids, batch.attention_mask).hidden;
  auto h_rm = (*rm)->forward(batch.ids, batch.attention_mask).hidden;
  EXPECT_TRUE(torch::allclose(h_sft, h_rm, 1e-5, 1e-6));
  EXPECT_EQ(LastTokenScores(*rm, batch).sizes(), (torch::IntArrayRef{1}));
}

// The built-in task is learnable: a small reward model (d_model 64, 3 layers) trained
// for a test-sized budget (1000 SFT + 600 RM steps, ~2 minutes on 2 cores) ranks the
// held-out pairs of unseen prompts at >= 0.9 (issue 3's criterion), and reliably the
// preferences RL acts on (form and count; minimal pairs built from ideal answers of
// held-out prompts). The remaining errors are mostly pairs that need the item/attribute
// table ("cherry" is red, "lime" is not) or counting against the prompt's N.
TEST(RewardTrainerTest, HeldOutPairwiseAccuracyOnBuiltinTask) {
  BuiltinTaskOptions data;
  data.seed = 2;
  data.num_sft = 2000;
  data.num_sft_heldout = 0;
  data.num_rank = 2400;
  data.num_rank_heldout = 200;
  data.num_rl_train = data.num_rl_heldout = 0;
  data.num_pretrain = 600;
  auto task = GenerateBuiltinTask(data);
  ASSERT_TRUE(task.ok());
  ModelConfig c;
  c.d_model = 64;
  c.n_layers = 3;  // 2 layers level off at 0.91 here
  c.n_heads = 4;
  c.n_kv_heads = 4;
  c.d_ff = 4 * c.d_model;
  c.max_seq_len = 128;
  ByteTokenizer tok;
  // SFT first, as in the pipeline: the trunk learns the vocabulary (a 100-step trunk
  // gives a reward model of 0.89 here, a 1000-step one 0.91).
  torch::manual_seed(1);
  SftOptions so;
  so.steps = 1000;
  so.batch_size = 16;
  so.lr = 3e-3;
  so.warmup_steps = 10;
  so.eval_every = so.checkpoint_every = 0;
  // Demonstrations plus the task's pretraining sentences ("Cherry is a red fruit."),
  // which carry the facts the reward model needs; a text is an empty-prompt record.
  std::vector<SftRecord> lm_data = task->sft;
  for (const TextRecord& t : task->pretrain) lm_data.push_back({"", t.text});
  auto sft = SftTrainer::Create(TransformerLM(c), tok, so, lm_data, {});
  ASSERT_TRUE(sft.ok());
  ASSERT_TRUE((*sft)->Train().ok());
  LoadedCheckpoint trunk;
  trunk.model = (*sft)->model();
  trunk.config = c;
  auto rm = RewardModelFromSft(trunk, 1);
  ASSERT_TRUE(rm.ok());

  RewardOptions ro;
  ro.steps = 600;
  ro.prompts_per_batch = 8;
  ro.lr = 3e-3;
  ro.warmup_steps = 10;
  ro.eval_every = ro.checkpoint_every = 0;
  ro.out_dir = ::testing::TempDir() + "/rm_builtin";
  auto trainer = RewardTrainer::Create(*rm, tok, ro, task->rank, task->rank_heldout);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  const RewardTrainer::Eval before = (*trainer)->Evaluate();
  auto result = (*trainer)->Train();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_GT(result->heldout_pairs, 500);
  fprintf(stderr, "held-out pair accuracy %.3f over %lld pairs (before training %.3f)\n",
          result->heldout_accuracy, static_cast<long long>(result->heldout_pairs),
          before.accuracy);
  // Measured 0.916 over 3807 pairs (2 layers: 0.910; 0.90-0.92 over the budgets and
  // seeds tried, this size levels off there; the quickstart's `tiny` RM reaches 0.93).
  EXPECT_GE(result->heldout_accuracy, 0.9) << "before training: " << before.accuracy;
  EXPECT_LT(before.accuracy, 0.6);
  EXPECT_LT(result->heldout_loss, before.loss);

  // Mean/std of the reference set are saved for servers that normalise.
  auto ckpt = LoadCheckpoint(ro.out_dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_NEAR(ckpt->metadata["reward_mean"].get<double>(), result->reward_mean, 1e-9);
  EXPECT_GT(ckpt->metadata["reward_std"].get<double>(), 0.0);
  EXPECT_TRUE(ckpt->config.scalar_head);
  EXPECT_FALSE(ckpt->config.lm_head);
  // Minimal pairs on held-out prompts: the ideal answer against the same answer with
  // one flaw of form or count. These are what RL changes first.
  int right = 0, total = 0;
  std::vector<std::string> prompts, responses;
  for (const RankedRecord& r : task->rank_heldout) {
    const std::string ideal = IdealResponse(r.prompt);
    std::string lower = ideal, no_period = ideal.substr(0, ideal.size() - 1);
    lower[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(lower[0])));
    std::vector<std::string> flawed = {lower, no_period, "Sure, " + lower};
    const size_t and_pos = ideal.rfind(" and ");
    if (and_pos != std::string::npos) {  // one item fewer: "A, B and C." -> "A and B."
      std::string head = ideal.substr(0, and_pos);
      const size_t comma = head.rfind(", ");
      flawed.push_back(comma == std::string::npos
                           ? head + "."
                           : head.substr(0, comma) + " and " + head.substr(comma + 2) + ".");
    }
    for (const std::string& f : flawed) {
      ASSERT_LT(GoldScore(r.prompt, f), GoldScore(r.prompt, ideal)) << f;
      prompts.insert(prompts.end(), {r.prompt, r.prompt});
      responses.insert(responses.end(), {ideal, f});
    }
  }
  const std::vector<double> minimal = ScoreTexts(ckpt->model, tok, prompts, responses);
  for (size_t i = 0; i < minimal.size(); i += 2, ++total) right += minimal[i] > minimal[i + 1];
  EXPECT_GT(total, 200);
  // Measured 186 of 216 (0.86).
  EXPECT_GE(static_cast<double>(right) / total, 0.8) << right << " of " << total;

  // The gold labeler's preferences show up in the learned reward.
  std::vector<double> s = ScoreTexts(ckpt->model, tok,
                                     {"Name two red fruits.", "Name two red fruits."},
                                     {"Cherry and apple.", "dog, dog, dog, dog"});
  EXPECT_GT(s[0], s[1]);
}

}  // namespace
}  // namespace rlhf
