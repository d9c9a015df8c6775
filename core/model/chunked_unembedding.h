// Losses and log-probabilities straight from hidden states: the unembedding, the
// log-softmax over the vocabulary and the gradients, a block of rows at a time, so the
// [rows, vocab] logits never exist whole. The SFT step and the RL stage's pretraining term
// (MaskedNextTokenNll), the policy step and the scorers (ResponseLogProbsFromHidden) use
// them, each with the rows that have a target only.
//
// The plain way to write a language-model loss (logits = hidden · Wᵀ, then log_softmax,
// gather, mean, backward) keeps several [rows, vocab] float tensors alive: the logits,
// their log-softmax, and in backward the gradient of each. For gpt2-small's 50,257-word
// vocabulary a 32 x 128 batch makes each of them 823 MB; the passes over them took ~15%
// of gpt2-small's SFT step, and they raised its peak memory by 2 GB (docs/benchmarks.md,
// "The loss without the logits"). ChunkedTokenNll computes the same loss and the same
// gradients block by block: for each block of rows it multiplies by the unembedding,
// takes the log-softmax, reads the loss at the targets, and, when a gradient is wanted,
// turns the block into d loss / d logits in place (softmax · w - onehot · w) and
// multiplies that back into the gradients of `hidden` and of the unembedding. The
// gradients are therefore computed in the forward call (the loss is linear in its
// per-row terms, so backward only scales them by the incoming gradient): no extra
// FLOPs, and one block's logits in memory instead of several whole tensors.
//
// Thread-safety: stateless; safe from any thread (the products use LibTorch's pool).
#pragma once

#include <cstdint>

#include <torch/types.h>

#include "core/model/logprobs.h"

namespace rlhf {

struct ChunkedUnembeddingOptions {
  // Rows per block. 0 = as many as keep a block's fp32 logits within kDefaultBlockBytes.
  int64_t block_rows = 0;
  static constexpr int64_t kDefaultBlockBytes = int64_t{64} << 20;  // 64 MiB
};

// Σ_n row_weights[n] · -log softmax(hidden[n] · unembeddingᵀ)[targets[n]], a scalar
// float32 tensor (float64 when `hidden` is float64).
//
// hidden: [N, d], any float dtype. The products run in the unembedding's dtype (in
//   autocast's under an autocast guard), the softmax in float32 or better.
// unembedding: [V, d], the model's output matrix (TransformerLMImpl::unembedding()).
// targets: [N] integer ids in [0, V).
// row_weights: [N] float; a row of weight 0 costs its products but contributes nothing
//   (MaskedNextTokenNll drops such rows first). N may be 0 (the loss is then 0).
// Differentiable with respect to `hidden` and `unembedding` (first order only: the
// gradients are computed during this call when either requires one under GradMode, and
// held until backward). Throws c10::Error naming the argument when shapes, dtypes or
// target ids are wrong; TorchCall turns that into a Status at the caller's boundary.
torch::Tensor ChunkedTokenNll(const torch::Tensor& hidden, const torch::Tensor& unembedding,
                              const torch::Tensor& targets, const torch::Tensor& row_weights,
                              const ChunkedUnembeddingOptions& options = {});

// The mean next-token loss of a batch, as the SFT step and the RL stage's pretraining
// term define it: over the positions t >= 1 where target_mask[b, t] > 0,
//   -Σ target_mask[b, t] · log p(ids[b, t] | ids[b, <t]) / max(Σ target_mask, 1).
// hidden: [B, T, d] the model's final hidden states for `ids` [B, T]; target_mask:
// [B, T] float (column 0 is ignored: nothing predicts the first token). Only the rows
// with a target go through the unembedding (a prompt's or padding's rows cost nothing).
torch::Tensor MaskedNextTokenNll(const torch::Tensor& hidden, const torch::Tensor& unembedding,
                                 const torch::Tensor& ids, const torch::Tensor& target_mask,
                                 const ChunkedUnembeddingOptions& options = {});

// Per-token log-probabilities (and optionally entropies) from hidden states, for losses
// that are not a plain sum of log-probs (the policy-gradient step):
//   logp[n]    = log softmax(hidden[n] · unembeddingᵀ / temperature)[targets[n]]
//   entropy[n] = -Σ_v p_v log p_v of that distribution (undefined unless with_entropy).
// Both are differentiable with respect to `hidden` and `unembedding` (first order). The
// incoming gradients are not known here, so backward makes each block's logits again:
// one more product the size of the unembedding's forward, instead of keeping [N, V]
// floats alive between forward and backward. Under an autocast guard the logits'
// product runs in autocast's dtype, and backward (which runs after the guard is gone)
// repeats it in that dtype, so its softmax is the forward's. Arguments as
// ChunkedTokenNll's; temperature > 0.
struct ChunkedLogProbs {
  torch::Tensor logp;     // [N] float32 (float64 for float64 inputs)
  torch::Tensor entropy;  // [N], or undefined
};
ChunkedLogProbs ChunkedTokenLogProbs(const torch::Tensor& hidden, const torch::Tensor& unembedding,
                                     const torch::Tensor& targets, double temperature,
                                     bool with_entropy,
                                     const ChunkedUnembeddingOptions& options = {});

// ResponseLogProbs (logprobs.h) of a batch from the model's final hidden states `hidden`
// [B, T, d] rather than its logits: logp [B, T] holds log π(ids[b, t] | ids[b, <t]) at
// response positions (response_mask > 0) and 0 elsewhere; entropy [B, T] (when
// with_entropy) the entropy of the distribution that token was drawn from, at the same
// positions. Only the response rows go through the unembedding (ChunkedTokenLogProbs).
ChunkedLogProbs ResponseLogProbsFromHidden(const torch::Tensor& hidden,
                                           const torch::Tensor& unembedding,
                                           const SequenceBatch& batch, double temperature,
                                           bool with_entropy,
                                           const ChunkedUnembeddingOptions& options = {});

// The hidden states that predict `batch`'s response tokens: [N, d], N = Σ response
// lengths, row n = hidden[b, t - 1] for the n-th response token (b, t) in row-major
// order: the rows of ResponseLogProbRows (logprobs.h). Unembedding them gives full
// distributions at the response positions only (exact KL), not at the prompt's.
torch::Tensor ResponseHiddenRows(const torch::Tensor& hidden, const SequenceBatch& batch);

}  // namespace rlhf
