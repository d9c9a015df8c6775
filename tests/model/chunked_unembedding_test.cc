#include "core/model/chunked_unembedding.h"

#include <functional>
#include <string>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/types.h>

#include "core/model/model.h"
#include "core/model/torch_compat.h"
#include "tests/testing/tiny_model.h"

namespace rlhf {
namespace {

// The loss as one writes it with whole logits: LibTorch's log_softmax, gather and
// autograd, none of chunked_unembedding.cc's code.
torch::Tensor ReferenceNll(const torch::Tensor& hidden, const torch::Tensor& w,
                           const torch::Tensor& targets, const torch::Tensor& row_weights) {
  const torch::Tensor logp = torch::log_softmax(hidden.matmul(w.t()), -1);
  return -(logp.gather(1, targets.unsqueeze(1)).squeeze(1) * row_weights).sum();
}

struct Problem {
  torch::Tensor hidden, w, targets, row_weights;
};

Problem RandomProblem(int64_t n, int64_t v, int64_t d, torch::Dtype dtype, uint64_t seed) {
  torch::manual_seed(seed);
  Problem p;
  p.hidden = torch::randn({n, d}, dtype);
  p.w = torch::randn({v, d}, dtype);
  p.targets = torch::randint(v, {n}, torch::kLong);
  p.row_weights = torch::rand({n}, dtype);
  if (n > 2) p.row_weights[1] = 0;  // a row that contributes nothing
  return p;
}

struct Gradients {
  torch::Tensor loss, hidden, w;
};

template <typename LossFn>
Gradients LossAndGradients(const Problem& p, LossFn loss_fn, double upstream = 1.0) {
  const torch::Tensor h = p.hidden.clone().requires_grad_(true);
  const torch::Tensor w = p.w.clone().requires_grad_(true);
  const torch::Tensor loss = loss_fn(h, w);
  (loss * upstream).backward();
  return {loss.detach(), h.grad(), w.grad()};
}

TEST(ChunkedUnembeddingTest, MatchesWholeLogitsInFloat64ForEveryBlockSize) {
  const Problem p = RandomProblem(/*n=*/10, /*v=*/7, /*d=*/5, torch::kFloat64, 1);
  const Gradients want = LossAndGradients(p, [&](const torch::Tensor& h, const torch::Tensor& w) {
    return ReferenceNll(h, w, p.targets, p.row_weights);
  });
  for (int64_t block : {1, 3, 4, 10, 64}) {
    SCOPED_TRACE("block_rows " + std::to_string(block));
    ChunkedUnembeddingOptions o;
    o.block_rows = block;
    const Gradients got = LossAndGradients(p, [&](const torch::Tensor& h, const torch::Tensor& w) {
      return ChunkedTokenNll(h, w, p.targets, p.row_weights, o);
    });
    EXPECT_EQ(got.loss.scalar_type(), torch::kFloat64);
    EXPECT_NEAR(got.loss.item<double>(), want.loss.item<double>(), 1e-12);
    EXPECT_TRUE(torch::allclose(got.hidden, want.hidden, 1e-10, 1e-12));
    EXPECT_TRUE(torch::allclose(got.w, want.w, 1e-10, 1e-12));
  }
  // The zero-weight row gets no gradient.
  ChunkedUnembeddingOptions o;
  o.block_rows = 3;
  const Gradients got = LossAndGradients(p, [&](const torch::Tensor& h, const torch::Tensor& w) {
    return ChunkedTokenNll(h, w, p.targets, p.row_weights, o);
  });
  EXPECT_EQ(got.hidden[1].abs().sum().item<double>(), 0.0);
  EXPECT_GT(got.hidden[2].abs().sum().item<double>(), 0.0);
}

TEST(ChunkedUnembeddingTest, BackwardScalesByTheIncomingGradient) {
  const Problem p = RandomProblem(6, 11, 4, torch::kFloat64, 2);
  auto chunked = [&](const torch::Tensor& h, const torch::Tensor& w) {
    return ChunkedTokenNll(h, w, p.targets, p.row_weights);
  };
  auto reference = [&](const torch::Tensor& h, const torch::Tensor& w) {
    return ReferenceNll(h, w, p.targets, p.row_weights);
  };
  const Gradients got = LossAndGradients(p, chunked, -2.5);
  const Gradients want = LossAndGradients(p, reference, -2.5);
  EXPECT_TRUE(torch::allclose(got.hidden, want.hidden, 1e-10, 1e-12));
  EXPECT_TRUE(torch::allclose(got.w, want.w, 1e-10, 1e-12));
}

TEST(ChunkedUnembeddingTest, Float32AtAVocabularyOfThousands) {
  const Problem p = RandomProblem(/*n=*/37, /*v=*/5000, /*d=*/16, torch::kFloat32, 3);
  ChunkedUnembeddingOptions o;
  o.block_rows = 8;
  const Gradients got = LossAndGradients(p, [&](const torch::Tensor& h, const torch::Tensor& w) {
    return ChunkedTokenNll(h, w, p.targets, p.row_weights, o);
  });
  Problem p64{p.hidden.to(torch::kFloat64), p.w.to(torch::kFloat64), p.targets,
              p.row_weights.to(torch::kFloat64)};
  const Gradients want = LossAndGradients(p64, [&](const torch::Tensor& h, const torch::Tensor& w) {
    return ReferenceNll(h, w, p64.targets, p64.row_weights);
  });
  EXPECT_EQ(got.loss.scalar_type(), torch::kFloat32);
  EXPECT_NEAR(got.loss.item<double>(), want.loss.item<double>(), 1e-4 * want.loss.item<double>());
  EXPECT_TRUE(torch::allclose(got.hidden.to(torch::kFloat64), want.hidden, 1e-4, 1e-6));
  EXPECT_TRUE(torch::allclose(got.w.to(torch::kFloat64), want.w, 1e-4, 1e-6));
}

TEST(ChunkedUnembeddingTest, OnlyTheGradientsAskedForAreMade) {
  const Problem p = RandomProblem(5, 9, 3, torch::kFloat64, 4);
  const Gradients want = LossAndGradients(p, [&](const torch::Tensor& h, const torch::Tensor& w) {
    return ReferenceNll(h, w, p.targets, p.row_weights);
  });
  {  // Only hidden requires a gradient: it is right, and none reaches the unembedding.
    const torch::Tensor h = p.hidden.clone().requires_grad_(true);
    ChunkedTokenNll(h, p.w, p.targets, p.row_weights).backward();
    ASSERT_TRUE(h.grad().defined());
    EXPECT_TRUE(torch::allclose(h.grad(), want.hidden, 1e-10, 1e-12));
    EXPECT_FALSE(p.w.grad().defined());
  }
  {  // Only the unembedding requires one: the other half of the computation alone.
    const torch::Tensor w = p.w.clone().requires_grad_(true);
    ChunkedTokenNll(p.hidden, w, p.targets, p.row_weights).backward();
    ASSERT_TRUE(w.grad().defined());
    EXPECT_TRUE(torch::allclose(w.grad(), want.w, 1e-10, 1e-12));
    EXPECT_FALSE(p.hidden.grad().defined());
  }
  {  // Under NoGradGuard: the loss alone, with no graph.
    torch::NoGradGuard no_grad;
    const torch::Tensor h = p.hidden.clone().requires_grad_(true);
    const torch::Tensor loss = ChunkedTokenNll(h, p.w, p.targets, p.row_weights);
    EXPECT_FALSE(loss.requires_grad());
    EXPECT_NEAR(loss.item<double>(),
                ReferenceNll(p.hidden, p.w, p.targets, p.row_weights).item<double>(), 1e-12);
  }
}

TEST(ChunkedUnembeddingTest, NoRowsIsALossOfZeroWithZeroGradients) {
  const torch::Tensor h = torch::zeros({0, 4}, torch::kFloat32).requires_grad_(true);
  const torch::Tensor w = torch::randn({6, 4}).requires_grad_(true);
  const torch::Tensor loss =
      ChunkedTokenNll(h, w, torch::zeros({0}, torch::kLong), torch::zeros({0}));
  EXPECT_EQ(loss.item<double>(), 0.0);
  loss.backward();
  EXPECT_EQ(w.grad().abs().sum().item<double>(), 0.0);
}

TEST(ChunkedUnembeddingTest, BadArgumentsAreNamed) {
  const torch::Tensor h = torch::randn({3, 4}), w = torch::randn({6, 4});
  const torch::Tensor ids = torch::tensor({0, 5, 2}, torch::kLong), ones = torch::ones({3});
  auto message = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const c10::Error& e) {
      return std::string(e.what_without_backtrace());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([&] {
              ChunkedTokenNll(h, w, torch::tensor({0, 6, 2}), ones);
            }).find("target ids must lie in [0, 6), got ids from 0 to 6"),
            std::string::npos);
  EXPECT_NE(message([&] {
              ChunkedTokenNll(h, w, torch::tensor({-1, 1, 2}), ones);
            }).find("got ids from -1 to 2"),
            std::string::npos);
  EXPECT_NE(message([&] {
              ChunkedTokenNll(h, torch::randn({6, 5}), ids, ones);
            }).find("unembedding must be [V, 4]"),
            std::string::npos);
  EXPECT_NE(message([&] {
              ChunkedTokenNll(h, w, ids, torch::ones({2}));
            }).find("row_weights must be [3]"),
            std::string::npos);
  EXPECT_NE(message([&] {
              ChunkedTokenNll(h, w, ids.to(torch::kFloat32), ones);
            }).find("targets must be [3] integer ids"),
            std::string::npos);
}

// MaskedNextTokenNll against the same loss written over whole logits: position t
// predicts ids[:, t + 1], weighted by target_mask[:, t + 1], divided by the mask's sum.
TEST(ChunkedUnembeddingTest, MaskedNextTokenNllIsTheMeanOverTargets) {
  torch::manual_seed(5);
  const int64_t B = 3, T = 6, V = 13, d = 4;
  const torch::Tensor hidden = torch::randn({B, T, d}, torch::kFloat64);
  const torch::Tensor w = torch::randn({V, d}, torch::kFloat64);
  const torch::Tensor ids = torch::randint(V, {B, T}, torch::kLong);
  const torch::Tensor mask = (torch::rand({B, T}) > 0.4).to(torch::kFloat32);
  mask[1].fill_(0);  // a row with no target at all
  mask[0][0] = 1;    // column 0 is never a target, whatever the mask says
  mask[0][2] = 1;

  auto reference = [&](const torch::Tensor& h, const torch::Tensor& u) {
    const torch::Tensor logp = torch::log_softmax(h.narrow(1, 0, T - 1).matmul(u.t()), -1);
    const torch::Tensor target_logp =
        logp.gather(2, ids.narrow(1, 1, T - 1).unsqueeze(2)).squeeze(2);
    const torch::Tensor m = mask.narrow(1, 1, T - 1).to(torch::kFloat64);
    return -(target_logp * m).sum() / m.sum();
  };
  const Problem p{hidden, w, ids, mask};
  const Gradients want = LossAndGradients(p, reference);
  ChunkedUnembeddingOptions o;
  o.block_rows = 2;
  const Gradients got = LossAndGradients(p, [&](const torch::Tensor& h, const torch::Tensor& u) {
    return MaskedNextTokenNll(h, u, ids, mask, o);
  });
  EXPECT_NEAR(got.loss.item<double>(), want.loss.item<double>(), 1e-12);
  EXPECT_TRUE(torch::allclose(got.hidden, want.hidden, 1e-10, 1e-12));
  EXPECT_TRUE(torch::allclose(got.w, want.w, 1e-10, 1e-12));
  EXPECT_EQ(got.hidden[1].abs().sum().item<double>(), 0.0);  // no targets, no gradient

  // No target anywhere: 0, not NaN.
  const torch::Tensor none = torch::zeros({B, T});
  EXPECT_EQ(MaskedNextTokenNll(hidden, w, ids, none).item<double>(), 0.0);
}

// Whole-logits log-probs and entropies, written with LibTorch's ops alone.
ChunkedLogProbs ReferenceLogProbs(const torch::Tensor& hidden, const torch::Tensor& w,
                                  const torch::Tensor& targets, double temperature) {
  const torch::Tensor lsm = torch::log_softmax(hidden.matmul(w.t()) / temperature, -1);
  return {lsm.gather(-1, targets.unsqueeze(-1)).squeeze(-1), -(lsm.exp() * lsm).sum(-1)};
}

TEST(ChunkedUnembeddingTest, LogProbsAndEntropiesWithTheirGradients) {
  const Problem p = RandomProblem(/*n=*/9, /*v=*/12, /*d=*/5, torch::kFloat64, 7);
  torch::manual_seed(8);
  // A loss mixing both outputs with arbitrary signs, as the policy step does.
  const torch::Tensor a = torch::randn({9}, torch::kFloat64),
                      c = torch::randn({9}, torch::kFloat64);
  for (double temperature : {1.0, 0.7}) {
    const Gradients want = LossAndGradients(p, [&](const torch::Tensor& h, const torch::Tensor& w) {
      const ChunkedLogProbs r = ReferenceLogProbs(h, w, p.targets, temperature);
      return (r.logp * a).sum() + (r.entropy * c).sum();
    });
    for (int64_t block : {1, 4, 64}) {
      SCOPED_TRACE("temperature " + std::to_string(temperature) + " block_rows " +
                   std::to_string(block));
      ChunkedUnembeddingOptions o;
      o.block_rows = block;
      torch::Tensor logp, entropy;
      const Gradients got =
          LossAndGradients(p, [&](const torch::Tensor& h, const torch::Tensor& w) {
            const ChunkedLogProbs r =
                ChunkedTokenLogProbs(h, w, p.targets, temperature, /*with_entropy=*/true, o);
            logp = r.logp.detach();
            entropy = r.entropy.detach();
            return (r.logp * a).sum() + (r.entropy * c).sum();
          });
      const ChunkedLogProbs ref = ReferenceLogProbs(p.hidden, p.w, p.targets, temperature);
      EXPECT_TRUE(torch::allclose(logp, ref.logp, 1e-10, 1e-12));
      EXPECT_TRUE(torch::allclose(entropy, ref.entropy, 1e-10, 1e-12));
      EXPECT_TRUE(torch::allclose(got.hidden, want.hidden, 1e-10, 1e-12));
      EXPECT_TRUE(torch::allclose(got.w, want.w, 1e-10, 1e-12));
    }
  }
  // Through the entropies alone (no gradient reaches the log-probs).
  {
    const Gradients want_entropy =
        LossAndGradients(p, [&](const torch::Tensor& h, const torch::Tensor& w) {
          return (ReferenceLogProbs(h, w, p.targets, 0.7).entropy * c).sum();
        });
    const Gradients got_entropy = LossAndGradients(p, [&](const torch::Tensor& h,
                                                          const torch::Tensor& w) {
      return (ChunkedTokenLogProbs(h, w, p.targets, 0.7, /*with_entropy=*/true).entropy * c).sum();
    });
    EXPECT_TRUE(torch::allclose(got_entropy.hidden, want_entropy.hidden, 1e-10, 1e-12));
    EXPECT_TRUE(torch::allclose(got_entropy.w, want_entropy.w, 1e-10, 1e-12));
  }
  // Without entropies: none is returned, and the gradient is the log-probs' alone.
  const Gradients want = LossAndGradients(p, [&](const torch::Tensor& h, const torch::Tensor& w) {
    return (ReferenceLogProbs(h, w, p.targets, 1.0).logp * a).sum();
  });
  const Gradients got = LossAndGradients(p, [&](const torch::Tensor& h, const torch::Tensor& w) {
    const ChunkedLogProbs r = ChunkedTokenLogProbs(h, w, p.targets, 1.0, /*with_entropy=*/false);
    EXPECT_FALSE(r.entropy.defined());
    return (r.logp * a).sum();
  });
  EXPECT_TRUE(torch::allclose(got.hidden, want.hidden, 1e-10, 1e-12));
  EXPECT_TRUE(torch::allclose(got.w, want.w, 1e-10, 1e-12));
  // Entropies made but only logged (the policy step's first epoch): the same gradient.
  const Gradients logged = LossAndGradients(p, [&](const torch::Tensor& h, const torch::Tensor& w) {
    const ChunkedLogProbs r = ChunkedTokenLogProbs(h, w, p.targets, 1.0, /*with_entropy=*/true);
    EXPECT_GT(r.entropy.detach().sum().item<double>(), 0.0);
    return (r.logp * a).sum();
  });
  EXPECT_TRUE(torch::allclose(logged.hidden, want.hidden, 1e-10, 1e-12));
  EXPECT_TRUE(torch::allclose(logged.w, want.w, 1e-10, 1e-12));
}

// Under bf16 autocast the forward's logits are a bf16 product; backward, which runs
// after the guard is gone, must make them again the same way, or its softmax is not the
// forward's. Reference: the bf16 logits as a leaf, their gradient from LibTorch's
// autograd, multiplied back in fp32 (the chunked path's grad products are fp32).
TEST(ChunkedUnembeddingTest, BackwardRepeatsTheForwardsAutocastProduct) {
  const Problem p = RandomProblem(/*n=*/6, /*v=*/40, /*d=*/8, torch::kFloat32, 10);
  torch::manual_seed(11);
  const torch::Tensor a = torch::randn({6});
  const torch::Tensor logits =
      at::mm(p.hidden.to(torch::kBFloat16), p.w.to(torch::kBFloat16).t()).to(torch::kFloat32);
  const torch::Tensor z = logits.clone().requires_grad_(true);
  const torch::Tensor lsm = torch::log_softmax(z, -1);
  const torch::Tensor want_logp = lsm.gather(1, p.targets.unsqueeze(1)).squeeze(1);
  (want_logp * a).sum().backward();
  const torch::Tensor want_grad_h = at::mm(z.grad(), p.w);

  const torch::Tensor h = p.hidden.clone().requires_grad_(true);
  torch::Tensor logp;
  {
    compat::AutocastGuard autocast(torch::kCPU, torch::kBFloat16);
    logp = ChunkedTokenLogProbs(h, p.w, p.targets, 1.0, /*with_entropy=*/false).logp;
  }
  EXPECT_TRUE(torch::allclose(logp.detach(), want_logp.detach(), 1e-6, 1e-6));
  (logp * a).sum().backward();
  EXPECT_TRUE(torch::allclose(h.grad(), want_grad_h, 1e-5, 1e-6))
      << (h.grad() - want_grad_h).abs().max().item<float>();
}

// ResponseLogProbsFromHidden against logprobs.h's ResponseLogProbs over whole logits,
// on a right-padded batch of prompts and responses of different lengths.
TEST(ChunkedUnembeddingTest, ResponseLogProbsFromHiddenMatchesTheLogitsPath) {
  auto batch = MakeSequenceBatch({{3, 4}, {5}, {6, 7, 8}}, {{9, 10, 11}, {}, {12}}, {});
  ASSERT_TRUE(batch.ok()) << batch.status();
  const int64_t B = batch->ids.size(0), T = batch->ids.size(1), V = 16, d = 6;
  torch::manual_seed(9);
  const torch::Tensor hidden = torch::randn({B, T, d}, torch::kFloat64);
  const torch::Tensor w = torch::randn({V, d}, torch::kFloat64);
  const torch::Tensor a = torch::randn({B, T}, torch::kFloat64);
  const double temperature = 0.8;
  const Problem p{hidden, w, batch->ids, torch::Tensor()};
  torch::Tensor want_entropy;
  const Gradients want = LossAndGradients(p, [&](const torch::Tensor& h, const torch::Tensor& u) {
    const torch::Tensor logits = h.matmul(u.t());
    const torch::Tensor logp = ResponseLogProbs(logits, *batch, temperature);
    // The entropy that predicted token t sits at t: shift right by one.
    const torch::Tensor lsm = torch::log_softmax(logits / temperature, -1);
    const torch::Tensor ent = -(lsm.exp() * lsm).sum(-1);
    const torch::Tensor shifted =
        torch::cat({torch::zeros({B, 1}, ent.options()), ent.narrow(1, 0, T - 1)}, 1) *
        batch->response_mask.to(torch::kFloat64);
    want_entropy = shifted.detach();
    return (logp * a).sum() + shifted.sum();
  });
  torch::Tensor got_entropy;
  ChunkedUnembeddingOptions o;
  o.block_rows = 2;
  const Gradients got = LossAndGradients(p, [&](const torch::Tensor& h, const torch::Tensor& u) {
    const ChunkedLogProbs r =
        ResponseLogProbsFromHidden(h, u, *batch, temperature, /*with_entropy=*/true, o);
    got_entropy = r.entropy.detach();
    return (r.logp * a).sum() + r.entropy.sum();
  });
  EXPECT_NEAR(got.loss.item<double>(), want.loss.item<double>(), 1e-10);
  EXPECT_TRUE(torch::allclose(got_entropy, want_entropy, 1e-10, 1e-12));
  EXPECT_TRUE(torch::allclose(got.hidden, want.hidden, 1e-10, 1e-12));
  EXPECT_TRUE(torch::allclose(got.w, want.w, 1e-10, 1e-12));
  // Row 1 has no response: nothing of it is read.
  EXPECT_EQ(got.hidden[1].abs().sum().item<double>(), 0.0);

  // ResponseHiddenRows: unembedded, the rows ResponseLogProbRows takes from whole logits.
  const torch::Tensor rows = ResponseHiddenRows(hidden, *batch);
  ASSERT_EQ(rows.size(0), 4);  // 3 + 0 + 1 response tokens
  EXPECT_TRUE(torch::allclose(torch::log_softmax(rows.matmul(w.t()) / temperature, -1),
                              ResponseLogProbRows(hidden.matmul(w.t()), *batch, temperature), 1e-12,
                              1e-12));
}

// The model's forward_hidden and unembedding() give what forward's logits give, tied
// and untied.
TEST(ChunkedUnembeddingTest, ModelHiddenAndUnembeddingMakeTheLogits) {
  for (bool tied : {true, false}) {
    SCOPED_TRACE(tied ? "tied" : "untied");
    torch::manual_seed(6);
    ModelConfig c = testing::TinyModelConfig();
    c.tie_embeddings = tied;
    TransformerLM model(c);
    const torch::Tensor ids = torch::randint(c.vocab_size, {2, 8}, torch::kLong);
    torch::NoGradGuard no_grad;
    const ForwardOutput full = model->forward(ids);
    const ForwardOutput hidden_only = model->forward_hidden(ids);
    EXPECT_FALSE(hidden_only.logits.defined());
    EXPECT_TRUE(torch::allclose(hidden_only.hidden, full.hidden));
    EXPECT_TRUE(torch::allclose(hidden_only.hidden.matmul(model->unembedding().t()), full.logits,
                                1e-5, 1e-5));
  }
  const ModelConfig scorer = testing::TinyModelConfig(/*scalar_head=*/true);
  EXPECT_THROW(TransformerLM(scorer)->unembedding(), c10::Error);
}

}  // namespace
}  // namespace rlhf
