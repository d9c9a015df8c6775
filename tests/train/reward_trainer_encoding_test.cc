// The reward trainer's two structural promises (reward_trainer.h):
//  - each response of a ranked prompt is encoded ONCE per step and all C(K,2) pairs are
//    formed from those scores: the rows through the token embedding while gradients are
//    on (training forwards; evaluation runs without grad) are counted with a LibTorch
//    RecordFunction observer, and must be Σ K per step, not 2 per pair;
//  - resume: stopping after step 2 and resuming to step 4 gives bitwise the weights of
//    an uninterrupted 4-step run.
#include <atomic>
#include <cstdlib>
#include <string>
#include <vector>

#include <unistd.h>

#include <ATen/record_function.h>
#include <gtest/gtest.h>

#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "core/train/reward_trainer.h"

namespace rlhf {
namespace {

constexpr int64_t kVocab = 259;
std::atomic<int64_t> g_embedding_rows{0};
std::atomic<int64_t> g_embedding_calls{0};

// Counts rows looked up in a vocabulary-sized embedding table with grad mode on.
std::unique_ptr<at::ObserverContext> OnOp(const at::RecordFunction& fn) {
  if (std::string(fn.name()) != "aten::embedding" || !at::GradMode::is_enabled()) return nullptr;
  const auto inputs = fn.inputs();
  if (inputs.size() < 2 || !inputs[0].isTensor() || !inputs[1].isTensor()) return nullptr;
  const at::Tensor& weight = inputs[0].toTensor();
  const at::Tensor& ids = inputs[1].toTensor();
  if (weight.dim() == 2 && weight.size(0) == kVocab && ids.dim() == 2) {
    g_embedding_rows += ids.size(0);
    ++g_embedding_calls;
  }
  return nullptr;
}

TransformerLM RewardModel(uint64_t seed) {
  ModelConfig c;
  c.d_model = 32;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 2;
  c.d_ff = 64;
  c.max_seq_len = 64;
  c.vocab_size = kVocab;
  c.lm_head = false;
  c.scalar_head = true;
  torch::manual_seed(seed);
  return TransformerLM(c);
}

std::vector<RankedRecord> Records() {
  return {{"What is ice?",
           {"It's the solid form of water.", "Frozen water that's cold to touch.",
            "Water that has turned solid due to low temperatures.",
            "A crystalline substance formed when water freezes."},
           {2, 3, 0, 1}},
          {"Name a fruit.", {"apple", "a red apple", "rock"}, {1, 0, 2}}};
}

RewardOptions Options(int64_t steps) {
  RewardOptions o;
  o.steps = steps;
  o.prompts_per_batch = 2;  // both records every step: 4 + 3 responses, 6 + 3 pairs
  o.warmup_steps = 0;
  o.eval_every = 0;
  o.checkpoint_every = 0;
  o.log_every = 100;
  o.max_reference = 0;
  return o;
}

TEST(RewardTrainerEncodingTest, EachResponseIsEncodedOncePerStep) {
  const ByteTokenizer tokenizer;
  auto trainer = RewardTrainer::Create(RewardModel(1), tokenizer, Options(3), Records(), {});
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  g_embedding_rows = 0;
  g_embedding_calls = 0;
  auto handle = at::addThreadLocalCallback(at::RecordFunctionCallback(&OnOp).needsInputs(true));
  auto result = (*trainer)->Train();
  at::removeCallback(handle);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(g_embedding_calls.load(), 3) << "one training forward per step";
  EXPECT_EQ(g_embedding_rows.load(), 3 * (4 + 3)) << "K rows per record per step, not 2 per pair";
}

TEST(RewardTrainerEncodingTest, ResumeContinuesExactly) {
  const ByteTokenizer tokenizer;
  const std::string base = ::testing::TempDir() + "/rm_resume_" + std::to_string(::getpid());
  std::system(("rm -rf " + base).c_str());
  RewardOptions whole = Options(4);
  auto straight = RewardTrainer::Create(RewardModel(1), tokenizer, whole, Records(), {});
  ASSERT_TRUE(straight.ok());
  ASSERT_TRUE((*straight)->Train().ok());

  RewardOptions first = Options(4);
  first.out_dir = base;
  first.stop_at_step = 2;
  auto a = RewardTrainer::Create(RewardModel(1), tokenizer, first, Records(), {});
  ASSERT_TRUE(a.ok());
  auto ra = (*a)->Train();
  ASSERT_TRUE(ra.ok()) << ra.status();
  EXPECT_EQ(ra->steps, 2);
  RewardOptions second = Options(4);
  second.out_dir = base;
  second.resume = true;
  // A different initialisation: everything must come from the checkpoint.
  auto b = RewardTrainer::Create(RewardModel(2), tokenizer, second, Records(), {});
  ASSERT_TRUE(b.ok());
  auto rb = (*b)->Train();
  ASSERT_TRUE(rb.ok()) << rb.status();
  EXPECT_EQ(rb->steps, 4);

  auto want = (*straight)->model()->named_parameters();
  auto got = (*b)->model()->named_parameters();
  ASSERT_EQ(want.size(), got.size());
  for (const auto& item : want) {
    EXPECT_TRUE(torch::equal(item.value(), got[item.key()])) << item.key();
  }
  // And resuming is not a no-op: two steps fewer give other weights.
  RewardOptions shorter = Options(4);
  shorter.stop_at_step = 2;
  auto c = RewardTrainer::Create(RewardModel(1), tokenizer, shorter, Records(), {});
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE((*c)->Train().ok());
  bool differs = false;
  for (const auto& item : (*c)->model()->named_parameters()) {
    differs |= !torch::equal(item.value(), got[item.key()]);
  }
  EXPECT_TRUE(differs);
  std::system(("rm -rf " + base).c_str());
}

}  // namespace
}  // namespace rlhf
