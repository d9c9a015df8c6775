// Transformer forward pass: KV-cache decoding and padding must not change log-probs,
// gradients match finite differences, configs validate.
#include <cmath>
#include <string>

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/model/logprobs.h"
#include "core/model/model.h"

namespace rlhf {
namespace {

using ::testing::HasSubstr;

ModelConfig Preset(const std::string& name) {
  auto c = ModelConfigPreset(name);
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

torch::Tensor RandomIds(int64_t b, int64_t t, int64_t vocab, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randint(vocab, {b, t}, gen, torch::kLong);
}

class ModelArchTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelArchTest, KvCacheDecodingMatchesFullForward) {
  torch::manual_seed(1);
  TransformerLM model(Preset(GetParam()));
  model->eval();
  torch::NoGradGuard no_grad;
  const int64_t T = 24, prefix = 7;
  const auto ids = RandomIds(2, T, model->config().vocab_size, 5);
  const auto full = at::log_softmax(model->forward(ids).logits, -1);
  for (int64_t capacity : {int64_t{0}, T}) {  // concatenating cache and preallocated cache
    KVCache cache;
    cache.Reserve(capacity);
    std::vector<torch::Tensor> pieces;
    pieces.push_back(model->forward(ids.narrow(1, 0, prefix), {}, {}, &cache).logits);
    for (int64_t t = prefix; t < T; ++t) {
      pieces.push_back(model->forward(ids.narrow(1, t, 1), {}, {}, &cache).logits);
    }
    EXPECT_EQ(cache.length(), T);
    const auto inc = at::log_softmax(at::cat(pieces, 1), -1);
    EXPECT_LE((inc - full).abs().max().item<double>(), 1e-5) << "capacity " << capacity;
  }
}

TEST_P(ModelArchTest, LeftPaddedBatchMatchesOneAtATime) {
  torch::manual_seed(2);
  TransformerLM model(Preset(GetParam()));
  torch::NoGradGuard no_grad;
  const int64_t V = model->config().vocab_size;
  const std::vector<int64_t> lengths = {9, 4, 13};
  const int64_t T = 13;
  auto ids = torch::zeros({3, T}, torch::kLong);
  auto mask = torch::zeros({3, T}, torch::kLong);
  std::vector<torch::Tensor> singles;
  for (int64_t b = 0; b < 3; ++b) {
    const auto seq = RandomIds(1, lengths[b], V, 10 + b);
    singles.push_back(at::log_softmax(model->forward(seq).logits, -1));
    ids[b].narrow(0, T - lengths[b], lengths[b]).copy_(seq[0]);
    // Pad id that is not 0, to show padded content is ignored.
    ids[b].narrow(0, 0, T - lengths[b]).fill_(V - 1);
    mask[b].narrow(0, T - lengths[b], lengths[b]).fill_(1);
  }
  const auto batched = at::log_softmax(model->forward(ids, mask).logits, -1);
  for (int64_t b = 0; b < 3; ++b) {
    const auto real = batched[b].narrow(0, T - lengths[b], lengths[b]);
    EXPECT_LE((real - singles[b][0]).abs().max().item<double>(), 1e-5) << "row " << b;
    EXPECT_TRUE(at::isfinite(batched[b]).all().item<bool>());
  }
}

TEST_P(ModelArchTest, RightPaddedSequenceBatchMatchesOneAtATime) {
  torch::manual_seed(3);
  TransformerLM model(Preset(GetParam()));
  torch::NoGradGuard no_grad;
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3}, {7}, {9, 8, 7, 6, 5}};
  const std::vector<std::vector<int32_t>> responses = {{4, 5}, {10, 11, 12, 13, 14}, {}};
  SequenceBatchOptions opts;
  opts.pad_id = 258;
  auto batch = MakeSequenceBatch(prompts, responses, opts);
  ASSERT_TRUE(batch.ok()) << batch.status();
  const auto lp = ResponseLogProbs(
      model->forward(batch->ids, batch->attention_mask, batch->position_ids).logits, *batch);
  const auto per_seq = PerSequenceResponseValues(lp, *batch);
  for (size_t b = 0; b < prompts.size(); ++b) {
    auto single = MakeSequenceBatch({prompts[b]}, {responses[b]}, opts);
    ASSERT_TRUE(single.ok());
    const auto s = PerSequenceResponseValues(
        ResponseLogProbs(model->forward(single->ids).logits, *single), *single)[0];
    ASSERT_EQ(s.size(), per_seq[b].size());
    for (size_t t = 0; t < s.size(); ++t) EXPECT_NEAR(s[t], per_seq[b][t], 1e-5);
  }
}

TEST_P(ModelArchTest, ForwardLastEqualsLastColumnOfForward) {
  torch::manual_seed(4);
  TransformerLM model(Preset(GetParam()));
  torch::NoGradGuard no_grad;
  const auto ids = RandomIds(2, 6, model->config().vocab_size, 3);
  const auto all = model->forward(ids).logits;
  const auto last = model->forward_last(ids).logits;
  ASSERT_EQ(last.size(1), 1);
  EXPECT_LE((all.narrow(1, 5, 1) - last).abs().max().item<double>(), 1e-5);
}

// Decoding a left-padded batch one token at a time (the path generation takes: no
// autograd, one query per row, which runs a fused single-query attention kernel on the
// CPU, and GEMV instead of GEMM for a batch of one) gives every row the logits of its
// own unpadded sequence run through the batched-matmul path with autograd on.
TEST_P(ModelArchTest, PaddedDecodingMatchesEachSequenceWithAutograd) {
  torch::manual_seed(6);
  TransformerLM model(Preset(GetParam()));
  const int64_t V = model->config().vocab_size;
  const std::vector<int64_t> prompt_lengths = {5, 2, 8};
  const int64_t steps = 6, P = 8, B = 3;
  std::vector<torch::Tensor> seqs;
  for (int64_t b = 0; b < B; ++b)
    seqs.push_back(RandomIds(1, prompt_lengths[b] + steps, V, 20 + b));
  // References: each sequence alone, autograd on (the generic attention path).
  std::vector<torch::Tensor> want;
  for (int64_t b = 0; b < B; ++b) {
    ASSERT_TRUE(at::GradMode::is_enabled());
    want.push_back(model->forward(seqs[b]).logits.detach());
  }
  torch::NoGradGuard no_grad;
  for (int64_t capacity : {int64_t{0}, P + steps}) {
    KVCache cache;
    cache.Reserve(capacity);
    auto ids = torch::zeros({B, P}, torch::kLong);
    auto mask = torch::zeros({B, P + steps}, torch::kLong);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t pad = P - prompt_lengths[b];
      ids[b].narrow(0, pad, prompt_lengths[b]).copy_(seqs[b][0].narrow(0, 0, prompt_lengths[b]));
      mask[b].narrow(0, pad, prompt_lengths[b] + steps).fill_(1);
    }
    model->forward(ids, mask.narrow(1, 0, P), {}, &cache);
    for (int64_t s = 0; s < steps; ++s) {
      auto step_ids = torch::empty({B, 1}, torch::kLong);
      auto positions = torch::empty({B, 1}, torch::kLong);
      for (int64_t b = 0; b < B; ++b) {
        step_ids[b][0] = seqs[b][0][prompt_lengths[b] + s].item<int64_t>();
        positions[b][0] = prompt_lengths[b] + s;
      }
      const auto got =
          model->forward(step_ids, mask.narrow(1, 0, P + s + 1), positions, &cache).logits;
      for (int64_t b = 0; b < B; ++b) {
        const auto expected = want[b][0][prompt_lengths[b] + s];
        EXPECT_LE((got[b][0] - expected).abs().max().item<double>(), 1e-4)
            << "row " << b << " step " << s << " capacity " << capacity;
      }
    }
  }
  // A batch of one decodes through GEMV: same logits as the autograd path.
  KVCache cache;
  const auto& seq = seqs[2];
  model->forward(seq.narrow(1, 0, 3), {}, {}, &cache);
  for (int64_t t = 3; t < seq.size(1); ++t) {
    const auto got = model->forward(seq.narrow(1, t, 1), {}, {}, &cache).logits;
    EXPECT_LE((got[0][0] - want[2][0][t]).abs().max().item<double>(), 1e-4) << "position " << t;
  }
}

// Inference logits of several rows multiply by a cached transposed copy of the
// unembedding; an in-place weight update (how actors and checkpoint loads apply weights)
// must be seen by the next forward, exactly as the autograd path (no cache) sees it.
TEST_P(ModelArchTest, InferenceLogitsFollowInPlaceWeightUpdates) {
  torch::manual_seed(7);
  TransformerLM model(Preset(GetParam()));
  const auto ids = RandomIds(3, 5, model->config().vocab_size, 30);
  for (int update = 0; update < 3; ++update) {
    const auto want = model->forward(ids).logits.detach();  // autograd on: no cache
    torch::Tensor got;
    {
      torch::NoGradGuard no_grad;
      got = model->forward(ids).logits;
      const auto last = model->forward_last(ids).logits;
      EXPECT_LE((last - want.narrow(1, 4, 1)).abs().max().item<double>(), 1e-5)
          << "update " << update;
      for (auto& p : model->parameters()) p.copy_(p + 0.05 * torch::randn_like(p));
    }
    EXPECT_LE((got - want).abs().max().item<double>(), 1e-5) << "update " << update;
  }
}

// Central finite differences in float64 against autograd, through the whole model and
// ResponseLogProbs.
TEST_P(ModelArchTest, GradientMatchesFiniteDifferences) {
  ModelConfig c = Preset(GetParam());
  c.vocab_size = 11;
  c.d_model = 16;
  c.n_layers = 2;
  c.d_ff = 24;
  c.max_seq_len = 8;
  c.scalar_head = true;
  torch::manual_seed(5);
  TransformerLM model(c);
  model->to(torch::kFloat64);
  // Larger weights than the 0.02 init so that every path carries signal.
  {
    torch::NoGradGuard g;
    for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.3);
  }
  auto batch = MakeSequenceBatch({{1, 2, 3}, {4, 5}}, {{6, 7}, {8, 9, 10}}, {});
  ASSERT_TRUE(batch.ok());
  auto loss_fn = [&]() {
    const auto out = model->forward(batch->ids, batch->attention_mask, batch->position_ids);
    return ResponseLogProbs(out.logits, *batch).sum() + 0.5 * (out.scalar * batch->response_mask.to(torch::kFloat64)).sum();
  };
  model->zero_grad();
  loss_fn().backward();
  int checked = 0;
  for (auto& item : model->named_parameters()) {
    auto p = item.value();
    const auto grad = p.grad().clone();
    auto flat = p.view({-1});
    for (int64_t i : {int64_t{0}, flat.numel() / 2, flat.numel() - 1}) {
      const double eps = 1e-6;
      double plus, minus;
      {
        torch::NoGradGuard g;
        const double orig = flat[i].item<double>();
        flat[i].fill_(orig + eps);
        plus = loss_fn().item<double>();
        flat[i].fill_(orig - eps);
        minus = loss_fn().item<double>();
        flat[i].fill_(orig);
      }
      const double numeric = (plus - minus) / (2 * eps);
      const double analytic = grad.view({-1})[i].item<double>();
      EXPECT_NEAR(analytic, numeric, 1e-6 + 1e-5 * std::abs(numeric)) << item.key() << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 30);
}

INSTANTIATE_TEST_SUITE_P(BothArchitectures, ModelArchTest,
                         ::testing::Values("tiny", "llama-tiny"));

TEST(ModelConfigTest, PresetsAndParameterCounts) {
  // GPT-2 small with tied embeddings has 124,439,808 parameters.
  EXPECT_EQ(CountParameters(Preset("gpt2-small")), 124439808);
  for (const char* name : {"tiny", "small", "llama-tiny"}) {
    const ModelConfig c = Preset(name);
    TransformerLM model(c);
    int64_t n = 0;
    for (const auto& p : model->parameters()) n += p.numel();
    EXPECT_EQ(CountParameters(c), n) << name;
  }
  ModelConfig rm = Preset("tiny");
  rm.lm_head = false;
  rm.scalar_head = true;
  TransformerLM model(rm);
  int64_t n = 0;
  for (const auto& p : model->parameters()) n += p.numel();
  EXPECT_EQ(CountParameters(rm), n);
  EXPECT_FALSE(model->forward(torch::zeros({1, 3}, torch::kLong)).logits.defined());
  EXPECT_EQ(model->forward(torch::zeros({1, 3}, torch::kLong)).scalar.sizes(),
            (std::vector<int64_t>{1, 3}));
  EXPECT_FALSE(ModelConfigPreset("huge").ok());
}

TEST(ModelConfigTest, GqaValidationNamesTheField) {
  ModelConfig c = Preset("llama-tiny");
  c.n_kv_heads = 3;
  auto s = ValidateModelConfig(c);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("n_kv_heads"));
  c.n_kv_heads = 8;
  EXPECT_THAT(std::string(ValidateModelConfig(c).message()), HasSubstr("n_kv_heads (8) must be <= n_heads"));
  c.n_kv_heads = 0;
  EXPECT_THAT(std::string(ValidateModelConfig(c).message()), HasSubstr("n_kv_heads"));
  ModelConfig g = Preset("tiny");
  g.n_kv_heads = 2;
  EXPECT_THAT(std::string(ValidateModelConfig(g).message()), HasSubstr("gpt2"));
  g = Preset("tiny");
  g.n_heads = 3;
  EXPECT_THAT(std::string(ValidateModelConfig(g).message()), HasSubstr("n_heads"));
  EXPECT_TRUE(ValidateModelConfig(Preset("llama-tiny")).ok());
}

TEST(ModelConfigTest, JsonRoundTripAndErrors) {
  const ModelConfig c = Preset("llama-tiny");
  auto back = ModelConfigFromJson(ModelConfigToJson(c));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(ModelConfigToJson(*back), ModelConfigToJson(c));
  EXPECT_EQ(back->arch, Architecture::kLlama);
  EXPECT_EQ(back->n_kv_heads, 2);
  EXPECT_THAT(std::string(ModelConfigFromJson(R"({"d_modell": 3})").status().message()),
              HasSubstr("d_modell"));
  EXPECT_THAT(std::string(ModelConfigFromJson(R"({"d_model": "x"})").status().message()),
              HasSubstr("d_model must be an integer"));
  EXPECT_THAT(std::string(ModelConfigFromJson("{").status().message()), HasSubstr("invalid JSON"));
  EXPECT_THAT(std::string(ModelConfigFromJson(R"({"arch": "gpt3"})").status().message()),
              HasSubstr("arch"));
}

}  // namespace
}  // namespace rlhf
