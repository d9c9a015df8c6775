#include "core/model/chunked_unembedding.h"

#include <algorithm>
#include <utility>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "core/model/torch_compat.h"

namespace rlhf {
namespace {

int64_t BlockRows(int64_t vocab, const ChunkedUnembeddingOptions& options) {
  if (options.block_rows > 0) return options.block_rows;
  return std::max<int64_t>(
      1, ChunkedUnembeddingOptions::kDefaultBlockBytes / (4 * std::max<int64_t>(vocab, 1)));
}

at::ScalarType FloatType(const torch::Tensor& hidden, const torch::Tensor& w) {
  return hidden.scalar_type() == at::kDouble || w.scalar_type() == at::kDouble ? at::kDouble
                                                                               : at::kFloat;
}

// The scaled float logits of a block, as ResponseLogProbs makes them from the model's.
torch::Tensor BlockLogits(const torch::Tensor& h_block, const torch::Tensor& w,
                          at::ScalarType float_type, double temperature) {
  torch::Tensor z = at::mm(h_block, w.t()).to(float_type);
  if (temperature != 1.0) z.div_(temperature);
  return z;
}

struct NllResult {
  torch::Tensor loss;
  torch::Tensor grad_hidden;       // undefined unless asked for
  torch::Tensor grad_unembedding;  // undefined unless asked for
};

// `row_weights` may be undefined (the log-prob functions have none).
void CheckArguments(const char* fn, const torch::Tensor& hidden, const torch::Tensor& w,
                    const torch::Tensor& targets, const torch::Tensor& row_weights) {
  TORCH_CHECK(hidden.dim() == 2, fn, ": hidden must be [N, d], got ", hidden.sizes());
  TORCH_CHECK(w.dim() == 2 && w.size(1) == hidden.size(1), fn, ": unembedding must be [V, ",
              hidden.size(1), "], got ", w.sizes());
  TORCH_CHECK(at::isFloatingType(hidden.scalar_type()) && at::isFloatingType(w.scalar_type()), fn,
              ": hidden and unembedding must be floating point, got ", hidden.scalar_type(),
              " and ", w.scalar_type());
  const int64_t N = hidden.size(0);
  TORCH_CHECK(
      targets.dim() == 1 && targets.size(0) == N && !at::isFloatingType(targets.scalar_type()), fn,
      ": targets must be [", N, "] integer ids, got ", targets.sizes(), " ", targets.scalar_type());
  TORCH_CHECK(!row_weights.defined() || (row_weights.dim() == 1 && row_weights.size(0) == N), fn,
              ": row_weights must be [", N, "], got ", row_weights.sizes());
  if (N > 0) {
    const int64_t lo = targets.min().item<int64_t>(), hi = targets.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < w.size(0), fn, ": target ids must lie in [0, ", w.size(0),
                "), got ids from ", lo, " to ", hi);
  }
}

// The loss and, when asked, its gradients, one block of rows at a time. For a block,
// d loss / d logits[n, v] = row_weights[n] · (softmax[n, v] - [v == targets[n]]); it is
// made in place of the block's log-softmax and multiplied straight back.
NllResult Compute(const torch::Tensor& hidden, const torch::Tensor& w, const torch::Tensor& targets,
                  const torch::Tensor& row_weights, bool want_grad_hidden, bool want_grad_w,
                  int64_t block_rows) {
  const int64_t N = hidden.size(0);
  const at::ScalarType float_type = FloatType(hidden, w);
  // The products run in the unembedding's dtype, as the model's own unembedding does.
  const torch::Tensor h = hidden.to(w.scalar_type()).contiguous();
  const torch::Tensor ids = targets.to(at::kLong).unsqueeze(1);
  const torch::Tensor weights = row_weights.to(hidden.device(), float_type).unsqueeze(1);
  NllResult r;
  r.loss = at::zeros({}, h.options().dtype(float_type));
  if (want_grad_hidden) r.grad_hidden = at::empty_like(h);
  // Accumulated over blocks, so in float32 or better whatever the weight's dtype.
  if (want_grad_w) r.grad_unembedding = at::zeros(w.sizes(), w.options().dtype(float_type));
  for (int64_t start = 0; start < N; start += block_rows) {
    const int64_t n = std::min(block_rows, N - start);
    const torch::Tensor h_block = h.narrow(0, start, n);
    const torch::Tensor ids_block = ids.narrow(0, start, n);
    const torch::Tensor weights_block = weights.narrow(0, start, n);
    torch::Tensor logp = at::log_softmax(BlockLogits(h_block, w, float_type, 1.0), 1);
    r.loss.sub_((logp.gather(1, ids_block) * weights_block).sum());
    if (!want_grad_hidden && !want_grad_w) continue;
    torch::Tensor& grad_logits = logp;  // reused in place: softmax · w - onehot · w
    grad_logits.exp_().mul_(weights_block).scatter_add_(1, ids_block, -weights_block);
    if (want_grad_hidden) {
      torch::Tensor out = r.grad_hidden.narrow(0, start, n);
      at::mm_out(out, grad_logits.to(w.scalar_type()), w);
    }
    if (want_grad_w) r.grad_unembedding.addmm_(grad_logits.t(), h_block.to(float_type));
  }
  if (want_grad_hidden) r.grad_hidden = r.grad_hidden.to(hidden.scalar_type());
  if (want_grad_w) r.grad_unembedding = r.grad_unembedding.to(w.scalar_type());
  return r;
}

class ChunkedNllFunction : public torch::autograd::Function<ChunkedNllFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& hidden,
                               const torch::Tensor& w, const torch::Tensor& targets,
                               const torch::Tensor& row_weights, int64_t block_rows,
                               bool want_grad_hidden, bool want_grad_w) {
    NllResult r =
        Compute(hidden, w, targets, row_weights, want_grad_hidden, want_grad_w, block_rows);
    // The gradients are neither inputs nor outputs, so saved_data rather than
    // save_for_backward; they are freed with the graph.
    ctx->saved_data["grad_hidden"] = r.grad_hidden;
    ctx->saved_data["grad_unembedding"] = r.grad_unembedding;
    return r.loss;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::Tensor& g = grads[0];  // d (final) / d loss, a scalar
    torch::Tensor grad_hidden, grad_w;
    const c10::IValue& saved_hidden = ctx->saved_data["grad_hidden"];
    const c10::IValue& saved_w = ctx->saved_data["grad_unembedding"];
    if (ctx->needs_input_grad(0) && saved_hidden.isTensor()) {
      grad_hidden = saved_hidden.toTensor() * g.to(saved_hidden.toTensor().scalar_type());
    }
    if (ctx->needs_input_grad(1) && saved_w.isTensor()) {
      grad_w = saved_w.toTensor() * g.to(saved_w.toTensor().scalar_type());
    }
    return {grad_hidden,     grad_w,          torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

// The log-probs ([N]) and, with_entropy, entropies ([N], else [0]) of `h` (in w's dtype)
// at `ids` ([N, 1] int64), a block at a time, the logits' product in `compute_type`.
std::pair<torch::Tensor, torch::Tensor> LogProbBlocks(const torch::Tensor& h,
                                                      const torch::Tensor& w,
                                                      const torch::Tensor& ids, double temperature,
                                                      bool with_entropy, int64_t block_rows,
                                                      at::ScalarType compute_type) {
  const int64_t N = h.size(0);
  const at::ScalarType float_type = FloatType(h, w);
  const torch::Tensor w_compute = w.to(compute_type);
  torch::Tensor logp = at::empty({N}, h.options().dtype(float_type));
  torch::Tensor entropy = at::empty({with_entropy ? N : 0}, logp.options());
  for (int64_t start = 0; start < N; start += block_rows) {
    const int64_t n = std::min(block_rows, N - start);
    const torch::Tensor lsm = at::log_softmax(
        BlockLogits(h.narrow(0, start, n).to(compute_type), w_compute, float_type, temperature), 1);
    logp.narrow(0, start, n).copy_(lsm.gather(1, ids.narrow(0, start, n)).squeeze(1));
    if (with_entropy) entropy.narrow(0, start, n).copy_(-(lsm.exp() * lsm).sum(1));
  }
  return {logp, entropy};
}

class ChunkedLogProbsFunction : public torch::autograd::Function<ChunkedLogProbsFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const torch::Tensor& hidden, const torch::Tensor& w,
                                                const torch::Tensor& targets, double temperature,
                                                bool with_entropy, int64_t block_rows,
                                                int64_t compute_type) {
    const torch::Tensor h = hidden.to(w.scalar_type()).contiguous();
    const torch::Tensor ids = targets.to(at::kLong).unsqueeze(1);
    auto [logp, entropy] = LogProbBlocks(h, w, ids, temperature, with_entropy, block_rows,
                                         static_cast<at::ScalarType>(compute_type));
    ctx->save_for_backward({h, w, ids, entropy});
    // Backward makes the logits again in the forward's dtype, whatever autocast says then.
    ctx->saved_data["compute_type"] = compute_type;
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["block_rows"] = block_rows;
    ctx->saved_data["hidden_type"] = static_cast<int64_t>(hidden.scalar_type());
    if (!with_entropy) ctx->mark_non_differentiable({entropy});
    // An output no loss reads (the entropies when only logged) gets an undefined
    // gradient rather than zeros, and backward skips its term.
    ctx->set_materialize_grads(false);
    return {logp, entropy};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& h = saved[0];
    const torch::Tensor& w = saved[1];
    const torch::Tensor& ids = saved[2];
    const torch::Tensor& entropy = saved[3];
    const double temperature = ctx->saved_data["temperature"].toDouble();
    const int64_t block_rows = ctx->saved_data["block_rows"].toInt();
    const auto hidden_type = static_cast<at::ScalarType>(ctx->saved_data["hidden_type"].toInt());
    const auto compute_type = static_cast<at::ScalarType>(ctx->saved_data["compute_type"].toInt());
    const torch::Tensor w_compute = w.to(compute_type);
    const at::ScalarType float_type = FloatType(h, w);
    const int64_t N = h.size(0);
    const bool want_h = ctx->needs_input_grad(0), want_w = ctx->needs_input_grad(1);
    const torch::Tensor g_logp =
        grads[0].defined() ? grads[0].to(float_type).unsqueeze(1) : torch::Tensor();
    const torch::Tensor g_entropy =
        grads[1].defined() ? grads[1].to(float_type).unsqueeze(1) : torch::Tensor();
    torch::Tensor grad_h = want_h ? at::zeros_like(h) : torch::Tensor();
    torch::Tensor grad_w =
        want_w ? at::zeros(w.sizes(), w.options().dtype(float_type)) : torch::Tensor();
    if ((want_h || want_w) && (g_logp.defined() || g_entropy.defined())) {
      for (int64_t start = 0; start < N; start += block_rows) {
        const int64_t n = std::min(block_rows, N - start);
        const torch::Tensor h_block = h.narrow(0, start, n);
        const torch::Tensor lsm = at::log_softmax(
            BlockLogits(h_block.to(compute_type), w_compute, float_type, temperature), 1);
        const torch::Tensor p = lsm.exp();
        // d logp / d z = onehot - p;  d entropy / d z = -p (log p + entropy).
        torch::Tensor g;
        if (g_logp.defined()) {
          const torch::Tensor gl = g_logp.narrow(0, start, n);
          g = (p * -gl).scatter_add_(1, ids.narrow(0, start, n), gl);
        }
        if (g_entropy.defined()) {
          const torch::Tensor ge = g_entropy.narrow(0, start, n);
          const torch::Tensor d_entropy = p * (lsm + entropy.narrow(0, start, n).unsqueeze(1)) * ge;
          g = g.defined() ? g.sub_(d_entropy) : d_entropy.neg_();
        }
        if (temperature != 1.0) g.div_(temperature);
        if (want_h) {
          torch::Tensor out = grad_h.narrow(0, start, n);
          at::mm_out(out, g.to(w.scalar_type()), w);
        }
        if (want_w) grad_w.addmm_(g.t(), h_block.to(float_type));
      }
    }
    if (want_h) grad_h = grad_h.to(hidden_type);
    if (want_w) grad_w = grad_w.to(w.scalar_type());
    return {grad_h,          grad_w,          torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

// Indices into the [B * (T - 1)] rows of hidden[:, :T-1] (the rows that predict
// ids[:, 1:]) where `mask` [B, T] is > 0 at the predicted token, in row-major order.
// T >= 2.
torch::Tensor PredictingRowIndex(const torch::Tensor& mask) {
  const int64_t T = mask.size(1);
  return mask.narrow(1, 1, T - 1).reshape({-1}).gt(0).nonzero().squeeze(1);
}

// Those rows of hidden [B, T, d]: [rows.size(0), d].
torch::Tensor PredictingRows(const torch::Tensor& hidden, const torch::Tensor& rows) {
  return hidden.narrow(1, 0, hidden.size(1) - 1)
      .reshape({-1, hidden.size(2)})
      .index_select(0, rows);
}

void CheckHiddenMatchesBatch(const torch::Tensor& hidden, const SequenceBatch& batch) {
  TORCH_CHECK(hidden.dim() == 3 && hidden.size(0) == batch.ids.size(0) &&
                  hidden.size(1) == batch.ids.size(1),
              "hidden must be [B, T, d] matching the batch ", batch.ids.sizes(), ", got ",
              hidden.sizes());
}

}  // namespace

torch::Tensor ChunkedTokenNll(const torch::Tensor& hidden, const torch::Tensor& unembedding,
                              const torch::Tensor& targets, const torch::Tensor& row_weights,
                              const ChunkedUnembeddingOptions& options) {
  TORCH_CHECK(row_weights.defined(), "ChunkedTokenNll: row_weights is undefined");
  CheckArguments("ChunkedTokenNll", hidden, unembedding, targets, row_weights);
  const int64_t block_rows = BlockRows(unembedding.size(0), options);
  // Decided here: inside forward, autograd's context has no edges to ask when no input
  // requires a gradient.
  const bool grad = at::GradMode::is_enabled();
  return ChunkedNllFunction::apply(hidden, unembedding, targets, row_weights, block_rows,
                                   grad && hidden.requires_grad(),
                                   grad && unembedding.requires_grad());
}

torch::Tensor MaskedNextTokenNll(const torch::Tensor& hidden, const torch::Tensor& unembedding,
                                 const torch::Tensor& ids, const torch::Tensor& target_mask,
                                 const ChunkedUnembeddingOptions& options) {
  TORCH_CHECK(hidden.dim() == 3, "MaskedNextTokenNll: hidden must be [B, T, d], got ",
              hidden.sizes());
  const int64_t B = hidden.size(0), T = hidden.size(1);
  TORCH_CHECK(ids.dim() == 2 && ids.size(0) == B && ids.size(1) == T,
              "MaskedNextTokenNll: ids must be [", B, ", ", T, "], got ", ids.sizes());
  TORCH_CHECK(target_mask.sizes() == ids.sizes(), "MaskedNextTokenNll: target_mask must be [", B,
              ", ", T, "], got ", target_mask.sizes());
  TORCH_CHECK(T >= 1, "MaskedNextTokenNll: the batch has no columns");
  const at::ScalarType float_type = hidden.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  // Position t predicts ids[:, t + 1].
  const torch::Tensor mask = target_mask.narrow(1, 1, T - 1).reshape({-1}).to(float_type);
  const torch::Tensor rows = PredictingRowIndex(target_mask);
  const torch::Tensor selected_hidden = PredictingRows(hidden, rows);
  const torch::Tensor selected_ids = ids.narrow(1, 1, T - 1).reshape({-1}).index_select(0, rows);
  const torch::Tensor selected_mask = mask.index_select(0, rows);
  const torch::Tensor row_weights = selected_mask / at::clamp_min(mask.sum(), 1.0);
  return ChunkedTokenNll(selected_hidden, unembedding, selected_ids, row_weights, options);
}

ChunkedLogProbs ChunkedTokenLogProbs(const torch::Tensor& hidden, const torch::Tensor& unembedding,
                                     const torch::Tensor& targets, double temperature,
                                     bool with_entropy, const ChunkedUnembeddingOptions& options) {
  CheckArguments("ChunkedTokenLogProbs", hidden, unembedding, targets, torch::Tensor());
  TORCH_CHECK(temperature > 0, "ChunkedTokenLogProbs: temperature must be > 0, got ", temperature);
  const int64_t block_rows = BlockRows(unembedding.size(0), options);
  const at::ScalarType compute_type =
      compat::AutocastMatmulType(hidden.device(), unembedding.scalar_type());
  ChunkedLogProbs r;
  if (!at::GradMode::is_enabled() || !(hidden.requires_grad() || unembedding.requires_grad())) {
    // Scoring: no graph to record (and none can be under InferenceMode).
    auto [logp, entropy] = LogProbBlocks(hidden.to(unembedding.scalar_type()).contiguous(),
                                         unembedding, targets.to(at::kLong).unsqueeze(1),
                                         temperature, with_entropy, block_rows, compute_type);
    r.logp = logp;
    if (with_entropy) r.entropy = entropy;
    return r;
  }
  const torch::autograd::variable_list out =
      ChunkedLogProbsFunction::apply(hidden, unembedding, targets, temperature, with_entropy,
                                     block_rows, static_cast<int64_t>(compute_type));
  r.logp = out[0];
  if (with_entropy) r.entropy = out[1];
  return r;
}

torch::Tensor ResponseHiddenRows(const torch::Tensor& hidden, const SequenceBatch& batch) {
  CheckHiddenMatchesBatch(hidden, batch);
  if (hidden.size(1) < 2) return hidden.new_empty({0, hidden.size(2)});
  return PredictingRows(hidden, PredictingRowIndex(batch.response_mask.to(hidden.device())));
}

ChunkedLogProbs ResponseLogProbsFromHidden(const torch::Tensor& hidden,
                                           const torch::Tensor& unembedding,
                                           const SequenceBatch& batch, double temperature,
                                           bool with_entropy,
                                           const ChunkedUnembeddingOptions& options) {
  CheckHiddenMatchesBatch(hidden, batch);
  const int64_t B = hidden.size(0), T = hidden.size(1);
  const at::ScalarType float_type = FloatType(hidden, unembedding);
  const auto opts = hidden.options().dtype(float_type);
  const torch::Tensor mask = batch.response_mask.to(hidden.device(), float_type);
  ChunkedLogProbs r;
  if (T < 2) {
    r.logp = at::zeros({B, T}, opts);
    if (with_entropy) r.entropy = at::zeros({B, T}, opts);
    return r;
  }
  const torch::Tensor rows = PredictingRowIndex(mask);
  const torch::Tensor b = at::div(rows, T - 1, "floor"), t = rows - b * (T - 1);
  const torch::Tensor out_index = b * T + t + 1;
  const ChunkedLogProbs rows_out = ChunkedTokenLogProbs(
      PredictingRows(hidden, rows), unembedding,
      batch.ids.to(hidden.device()).narrow(1, 1, T - 1).reshape({-1}).index_select(0, rows),
      temperature, with_entropy, options);
  auto place = [&](const torch::Tensor& values) {
    return at::zeros({B * T}, opts).index_add(0, out_index, values).view({B, T}) * mask;
  };
  r.logp = place(rows_out.logp);
  if (with_entropy) r.entropy = place(rows_out.entropy);
  return r;
}

}  // namespace rlhf
