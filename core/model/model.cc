#include "core/model/model.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <torch/nn/init.h>

#include "absl/strings/str_cat.h"
#include "core/model/linear.h"
#include "core/model/threads.h"

namespace rlhf {
namespace {

// Masked scores get this instead of -inf: a fully masked row (a left-padding query)
// then softmaxes to a finite uniform row instead of NaN, and exp(kMasked - max) is an
// exact 0 in every row that has at least one real key.
constexpr float kMasked = -1e30f;

// bf16/fp16 -> fp32; fp32 and fp64 (gradient checks) unchanged.
torch::ScalarType AtLeastFloat(torch::ScalarType t) { return at::promote_types(t, torch::kFloat32); }

// RMSNorm as HF's LlamaRMSNorm: the statistics in (at least) fp32 whatever the compute
// dtype, then back to it before the weight (for an fp32 model the casts are no-ops).
torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  const auto xf = x.to(AtLeastFloat(x.scalar_type()));
  return (xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps)).to(x.scalar_type()) * weight;
}

// LayerNorm (GPT-2, weight + bias) or RMSNorm (LLaMA, weight only).
class NormImpl : public torch::nn::Module {
 public:
  NormImpl(int64_t dim, bool with_bias, double eps) : dim_(dim), eps_(eps) {
    weight = register_parameter("weight", torch::ones({dim}));
    if (with_bias) bias = register_parameter("bias", torch::zeros({dim}));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    if (bias.defined()) return at::layer_norm(x, {dim_}, weight, bias, eps_);
    return RmsNorm(x, weight, eps_);
  }
  torch::Tensor weight, bias;

 private:
  int64_t dim_;
  double eps_;
};
TORCH_MODULE(Norm);

// Rotary embedding (rotate-half convention): x [B, T, heads, D], cos/sin [B, T, 1, D/2].
torch::Tensor ApplyRope(const torch::Tensor& x, const torch::Tensor& cos,
                        const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const auto x1 = x.narrow(-1, 0, half);
  const auto x2 = x.narrow(-1, half, half);
  return at::cat({x1 * cos - x2 * sin, x2 * cos + x1 * sin}, -1);
}

// Single-query attention (one decoding step) on the CPU in fp32 without autograd: per
// (batch row, query head) the scores over the cached keys, their softmax and the
// weighted sum of the values in one pass over the cache, no temporaries. The batched
// matmul path it replaces runs one tiny GEMM per (row, head) on the CPU (aten::bmm loops
// over the batch): 384 BLAS calls per layer per step for gpt2-small at batch 32, ~29% of
// the step (rlhf_bench_model --profile). Same result up to float rounding (model_test).
// q [B, 1, H, D]; k, v [B, KV, Lk, D] (last dim contiguous); mask [Bm, 1, 1, 1, Lk]
// additive (Bm = 1 or B). Returns [B, 1, H * D].
torch::Tensor DecodeAttentionCpu(const torch::Tensor& q_in, const torch::Tensor& k_in,
                                 const torch::Tensor& v_in, const torch::Tensor& mask_in,
                                 int64_t n_kv) {
  const auto q = q_in.contiguous();
  const auto k = k_in.stride(-1) == 1 ? k_in : k_in.contiguous();
  const auto v = v_in.stride(-1) == 1 ? v_in : v_in.contiguous();
  const auto mask = mask_in.to(torch::kFloat32).contiguous();
  const int64_t B = q.size(0), H = q.size(2), D = q.size(3), Lk = k.size(2);
  const int64_t G = H / n_kv;
  const int64_t mask_rows = mask.size(0);
  auto ctx = at::empty({B, 1, H * D}, q.options());
  auto scratch = at::empty({B * H, Lk}, q.options());
  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  const float* mp = mask.data_ptr<float>();
  float* out = ctx.data_ptr<float>();
  float* sp = scratch.data_ptr<float>();
  const int64_t kb = k.stride(0), kh = k.stride(1), kl = k.stride(2);
  const int64_t vb = v.stride(0), vh = v.stride(1), vl = v.stride(2);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  ParallelFor(0, B * H, /*work_per_item=*/2 * Lk * D, [&](int64_t begin, int64_t end) {
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H, g = h / G;
      const float* qrow = qp + (b * H + h) * D;
      const float* kbase = kp + b * kb + g * kh;
      const float* vbase = vp + b * vb + g * vh;
      const float* mrow = mp + (mask_rows == 1 ? 0 : b) * Lk;
      float* scores = sp + bh * Lk;
      float max_score = -std::numeric_limits<float>::infinity();
      for (int64_t l = 0; l < Lk; ++l) {
        const float* krow = kbase + l * kl;
        // Eight partial sums: independent chains the compiler turns into vector lanes.
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t d = 0;
        for (; d + 8 <= D; d += 8) {
          for (int j = 0; j < 8; ++j) acc[j] += qrow[d + j] * krow[d + j];
        }
        float dot =
            ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        for (; d < D; ++d) dot += qrow[d] * krow[d];
        scores[l] = dot * scale + mrow[l];
        max_score = std::max(max_score, scores[l]);
      }
      float total = 0;
      for (int64_t l = 0; l < Lk; ++l) {
        scores[l] = std::exp(scores[l] - max_score);
        total += scores[l];
      }
      float* orow = out + (b * H + h) * D;
      std::fill(orow, orow + D, 0.0f);
      const float inv_total = 1.0f / total;
      for (int64_t l = 0; l < Lk; ++l) {
        const float p = scores[l] * inv_total;
        const float* vrow = vbase + l * vl;
        for (int64_t e = 0; e < D; ++e) orow[e] += p * vrow[e];
      }
    }
  });
  return ctx;
}

class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const ModelConfig& c)
      : n_heads_(c.n_heads), n_kv_(c.n_kv_heads), head_dim_(c.head_dim()),
        rope_(c.arch == Architecture::kLlama) {
    const bool gpt2 = c.arch == Architecture::kGpt2;
    qkv = register_module(
        "qkv", torch::nn::Linear(torch::nn::LinearOptions(
                                     c.d_model, (n_heads_ + 2 * n_kv_) * head_dim_)
                                     .bias(gpt2 || c.qkv_bias)));
    out = register_module("out", torch::nn::Linear(torch::nn::LinearOptions(
                                                       n_heads_ * head_dim_, c.d_model)
                                                       .bias(gpt2 || c.out_bias)));
  }

  // x [B, T, d]; mask [B, 1, 1, T, Lk] additive; cos/sin [B, T, 1, D/2] (LLaMA).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask,
                        const torch::Tensor& cos, const torch::Tensor& sin, KVCache* cache,
                        size_t layer) {
    const int64_t B = x.size(0), T = x.size(1), D = head_dim_;
    const int64_t H = n_heads_, KV = n_kv_, G = H / KV;
    const auto qkv_out = LinearForward(x, qkv->weight, qkv->bias);
    auto q = qkv_out.narrow(-1, 0, H * D).view({B, T, H, D});
    auto k = qkv_out.narrow(-1, H * D, KV * D).view({B, T, KV, D});
    auto v = qkv_out.narrow(-1, (H + KV) * D, KV * D).view({B, T, KV, D});
    if (rope_) {
      q = ApplyRope(q, cos, sin);
      k = ApplyRope(k, cos, sin);
    }
    k = k.transpose(1, 2);  // [B, KV, T, D]
    v = v.transpose(1, 2);
    if (cache != nullptr) {
      const int64_t past =
          cache->keys[layer].defined() ? cache->keys[layer].size(2) : 0;
      if (cache->capacity > 0 && past + T <= cache->capacity) {
        if (!cache->key_storage[layer].defined()) {
          cache->key_storage[layer] = at::empty({B, KV, cache->capacity, D}, k.options());
          cache->value_storage[layer] = at::empty({B, KV, cache->capacity, D}, v.options());
        }
        cache->key_storage[layer].narrow(2, past, T).copy_(k);
        cache->value_storage[layer].narrow(2, past, T).copy_(v);
        k = cache->key_storage[layer].narrow(2, 0, past + T);
        v = cache->value_storage[layer].narrow(2, 0, past + T);
      } else {
        if (past > 0) {
          k = at::cat({cache->keys[layer], k}, 2);
          v = at::cat({cache->values[layer], v}, 2);
        } else {
          k = k.contiguous();
          v = v.contiguous();
        }
        if (cache->capacity > 0) {  // outgrew the reservation: storage no longer used
          cache->key_storage[layer] = torch::Tensor();
          cache->value_storage[layer] = torch::Tensor();
        }
      }
      cache->keys[layer] = k;
      cache->values[layer] = v;
    }
    const int64_t Lk = k.size(2);
    if (T == 1 && x.is_cpu() && x.scalar_type() == torch::kFloat32 && !at::GradMode::is_enabled()) {
      return LinearForward(DecodeAttentionCpu(q, k, v, mask, KV), out->weight, out->bias);
    }
    // Queries grouped by their kv head: [B, KV, G*T, D], row g*T + t.
    auto qg = (q * (1.0 / std::sqrt(static_cast<double>(D))))
                  .view({B, T, KV, G, D})
                  .permute({0, 2, 3, 1, 4})
                  .reshape({B, KV, G * T, D});
    auto scores = BatchedMatmul(qg, k.transpose(-1, -2)).view({B, KV, G, T, Lk});
    // The mask is at least fp32: in a bf16/fp16 model the scores are promoted and the
    // softmax runs in fp32 (as HF's), then back to the compute dtype.
    scores = at::softmax(scores + mask, -1).to(v.scalar_type()).view({B, KV, G * T, Lk});
    auto ctx = BatchedMatmul(scores, v)  // [B, KV, G*T, D]
                   .view({B, H, T, D})
                   .transpose(1, 2)
                   .reshape({B, T, H * D});
    return LinearForward(ctx, out->weight, out->bias);
  }

  torch::nn::Linear qkv{nullptr}, out{nullptr};

 private:
  int64_t n_heads_, n_kv_, head_dim_;
  bool rope_;
};
TORCH_MODULE(Attention);

class MlpImpl : public torch::nn::Module {
 public:
  explicit MlpImpl(const ModelConfig& c) : llama_(c.arch == Architecture::kLlama), d_ff_(c.d_ff) {
    if (llama_) {
      gate_up = register_module(
          "gate_up", torch::nn::Linear(torch::nn::LinearOptions(c.d_model, 2 * c.d_ff).bias(c.mlp_bias)));
      down = register_module(
          "down", torch::nn::Linear(torch::nn::LinearOptions(c.d_ff, c.d_model).bias(c.mlp_bias)));
    } else {
      fc = register_module("fc", torch::nn::Linear(c.d_model, c.d_ff));
      proj = register_module("proj", torch::nn::Linear(c.d_ff, c.d_model));
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    if (llama_) {
      const auto gu = LinearForward(x, gate_up->weight, gate_up->bias);
      const auto h = at::silu(gu.narrow(-1, 0, d_ff_)) * gu.narrow(-1, d_ff_, d_ff_);
      return LinearForward(h, down->weight, down->bias);
    }
    return LinearForward(at::gelu(LinearForward(x, fc->weight, fc->bias), "tanh"), proj->weight,
                         proj->bias);
  }
  torch::nn::Linear fc{nullptr}, proj{nullptr}, gate_up{nullptr}, down{nullptr};

 private:
  bool llama_;
  int64_t d_ff_;
};
TORCH_MODULE(Mlp);

class BlockImpl : public torch::nn::Module {
 public:
  explicit BlockImpl(const ModelConfig& c) {
    const bool bias = c.arch == Architecture::kGpt2;
    ln1 = register_module("ln1", Norm(c.d_model, bias, c.norm_eps));
    attn = register_module("attn", Attention(c));
    ln2 = register_module("ln2", Norm(c.d_model, bias, c.norm_eps));
    mlp = register_module("mlp", Mlp(c));
  }
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& mask, const torch::Tensor& cos,
                        const torch::Tensor& sin, KVCache* cache, size_t layer) {
    x = x + attn->forward(ln1->forward(x), mask, cos, sin, cache, layer);
    return x + mlp->forward(ln2->forward(x));
  }
  Norm ln1{nullptr}, ln2{nullptr};
  Attention attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(Block);

const char* ArchName(Architecture a) { return a == Architecture::kLlama ? "llama" : "gpt2"; }

}  // namespace

absl::Status ValidateModelConfig(const ModelConfig& c) {
  auto bad = [](auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (c.vocab_size <= 0) return bad("vocab_size must be > 0, got ", c.vocab_size);
  if (c.max_seq_len <= 0) return bad("max_seq_len must be > 0, got ", c.max_seq_len);
  if (c.d_model <= 0) return bad("d_model must be > 0, got ", c.d_model);
  if (c.n_layers <= 0) return bad("n_layers must be > 0, got ", c.n_layers);
  if (c.n_heads <= 0) return bad("n_heads must be > 0, got ", c.n_heads);
  if (c.explicit_head_dim < 0) return bad("explicit_head_dim must be >= 0, got ", c.explicit_head_dim);
  if (c.explicit_head_dim == 0 && c.d_model % c.n_heads != 0) {
    return bad("d_model (", c.d_model, ") must be divisible by n_heads (", c.n_heads, ")");
  }
  if (c.arch == Architecture::kGpt2 && c.explicit_head_dim != 0 &&
      c.explicit_head_dim * c.n_heads != c.d_model) {
    return bad("explicit_head_dim (", c.explicit_head_dim, ") x n_heads must equal d_model for arch gpt2");
  }
  if (c.arch == Architecture::kGpt2 && (c.qkv_bias || c.out_bias || c.mlp_bias)) {
    return bad("qkv_bias/out_bias/mlp_bias are LLaMA-style options (arch gpt2 always has biases)");
  }
  if (c.n_kv_heads <= 0) return bad("n_kv_heads must be > 0, got ", c.n_kv_heads);
  if (c.n_kv_heads > c.n_heads) {
    return bad("n_kv_heads (", c.n_kv_heads, ") must be <= n_heads (", c.n_heads, ")");
  }
  if (c.n_heads % c.n_kv_heads != 0) {
    return bad("n_heads (", c.n_heads, ") must be divisible by n_kv_heads (", c.n_kv_heads, ")");
  }
  if (c.arch == Architecture::kGpt2 && c.n_kv_heads != c.n_heads) {
    return bad("n_kv_heads (", c.n_kv_heads, ") must equal n_heads (", c.n_heads,
               ") for arch gpt2: grouped-query attention is LLaMA-style only");
  }
  if (c.arch == Architecture::kLlama && c.head_dim() % 2 != 0) {
    return bad("head_dim (", c.head_dim(), ") must be even for RoPE");
  }
  if (c.d_ff <= 0) return bad("d_ff must be > 0, got ", c.d_ff);
  if (!(c.norm_eps > 0) || !std::isfinite(c.norm_eps)) return bad("norm_eps must be > 0");
  if (!(c.rope_theta > 0) || !std::isfinite(c.rope_theta)) return bad("rope_theta must be > 0");
  return absl::OkStatus();
}

std::string ModelConfigToJson(const ModelConfig& c) {
  nlohmann::json j = {{"arch", ArchName(c.arch)},
                      {"vocab_size", c.vocab_size},
                      {"max_seq_len", c.max_seq_len},
                      {"d_model", c.d_model},
                      {"n_layers", c.n_layers},
                      {"n_heads", c.n_heads},
                      {"n_kv_heads", c.n_kv_heads},
                      {"d_ff", c.d_ff},
                      {"norm_eps", c.norm_eps},
                      {"rope_theta", c.rope_theta},
                      {"tie_embeddings", c.tie_embeddings},
                      {"lm_head", c.lm_head},
                      {"scalar_head", c.scalar_head},
                      {"scalar_head_bias", c.scalar_head_bias},
                      {"explicit_head_dim", c.explicit_head_dim},
                      {"qkv_bias", c.qkv_bias},
                      {"out_bias", c.out_bias},
                      {"mlp_bias", c.mlp_bias}};
  return j.dump(2);
}

absl::StatusOr<ModelConfig> ModelConfigFromJson(const std::string& json_text) {
  const nlohmann::json j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("model config: invalid JSON");
  if (!j.is_object()) return absl::InvalidArgumentError("model config: expected a JSON object");
  ModelConfig c;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const nlohmann::json& v = it.value();
    auto want_int = [&](int64_t* out) -> absl::Status {
      if (!v.is_number_integer()) {
        return absl::InvalidArgumentError(absl::StrCat("model config: ", key, " must be an integer"));
      }
      *out = v.get<int64_t>();
      return absl::OkStatus();
    };
    auto want_double = [&](double* out) -> absl::Status {
      if (!v.is_number()) {
        return absl::InvalidArgumentError(absl::StrCat("model config: ", key, " must be a number"));
      }
      *out = v.get<double>();
      return absl::OkStatus();
    };
    auto want_bool = [&](bool* out) -> absl::Status {
      if (!v.is_boolean()) {
        return absl::InvalidArgumentError(absl::StrCat("model config: ", key, " must be a boolean"));
      }
      *out = v.get<bool>();
      return absl::OkStatus();
    };
    absl::Status s;
    if (key == "arch") {
      if (v == "gpt2") {
        c.arch = Architecture::kGpt2;
      } else if (v == "llama") {
        c.arch = Architecture::kLlama;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("model config: arch must be \"gpt2\" or \"llama\", got ", v.dump()));
      }
    } else if (key == "vocab_size") { s = want_int(&c.vocab_size);
    } else if (key == "max_seq_len") { s = want_int(&c.max_seq_len);
    } else if (key == "d_model") { s = want_int(&c.d_model);
    } else if (key == "n_layers") { s = want_int(&c.n_layers);
    } else if (key == "n_heads") { s = want_int(&c.n_heads);
    } else if (key == "n_kv_heads") { s = want_int(&c.n_kv_heads);
    } else if (key == "d_ff") { s = want_int(&c.d_ff);
    } else if (key == "norm_eps") { s = want_double(&c.norm_eps);
    } else if (key == "rope_theta") { s = want_double(&c.rope_theta);
    } else if (key == "tie_embeddings") { s = want_bool(&c.tie_embeddings);
    } else if (key == "lm_head") { s = want_bool(&c.lm_head);
    } else if (key == "scalar_head") { s = want_bool(&c.scalar_head);
    } else if (key == "scalar_head_bias") { s = want_bool(&c.scalar_head_bias);
    } else if (key == "explicit_head_dim") { s = want_int(&c.explicit_head_dim);
    } else if (key == "qkv_bias") { s = want_bool(&c.qkv_bias);
    } else if (key == "out_bias") { s = want_bool(&c.out_bias);
    } else if (key == "mlp_bias") { s = want_bool(&c.mlp_bias);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("model config: unknown key \"", key, "\""));
    }
    if (!s.ok()) return s;
  }
  if (auto s = ValidateModelConfig(c); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("model config: ", s.message()));
  }
  return c;
}

absl::StatusOr<ModelConfig> ModelConfigPreset(const std::string& name) {
  ModelConfig c;
  if (name == "tiny") {
    c.d_model = 128; c.n_layers = 4; c.n_heads = 4; c.n_kv_heads = 4; c.d_ff = 512;
    c.max_seq_len = 160; c.vocab_size = 259;
  } else if (name == "small") {
    c.d_model = 256; c.n_layers = 6; c.n_heads = 8; c.n_kv_heads = 8; c.d_ff = 1024;
    c.max_seq_len = 256; c.vocab_size = 259;
  } else if (name == "gpt2-small") {
    c.vocab_size = 50257; c.d_model = 768; c.n_layers = 12; c.n_heads = 12; c.n_kv_heads = 12;
    c.d_ff = 3072; c.max_seq_len = 1024;
  } else if (name == "llama-tiny") {
    c.arch = Architecture::kLlama;
    c.d_model = 128; c.n_layers = 4; c.n_heads = 4; c.n_kv_heads = 2; c.d_ff = 344;
    c.max_seq_len = 160; c.vocab_size = 259; c.tie_embeddings = false;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "model preset: unknown \"", name, "\" (known: tiny, small, gpt2-small, llama-tiny)"));
  }
  return c;
}

int64_t CountParameters(const ModelConfig& c) {
  const int64_t d = c.d_model, D = c.head_dim();
  const bool gpt2 = c.arch == Architecture::kGpt2;
  const int64_t qkv_out = (c.n_heads + 2 * c.n_kv_heads) * D;
  int64_t layer = 0;
  if (gpt2) {
    layer = 2 * d + (d * qkv_out + qkv_out) + (c.n_heads * D * d + d) + 2 * d +
            (d * c.d_ff + c.d_ff) + (c.d_ff * d + d);
  } else {
    layer = d + d * qkv_out + c.n_heads * D * d + d + d * 2 * c.d_ff + c.d_ff * d;
    if (c.qkv_bias) layer += qkv_out;
    if (c.out_bias) layer += d;
    if (c.mlp_bias) layer += 2 * c.d_ff + d;
  }
  int64_t total = c.vocab_size * d + c.n_layers * layer + (gpt2 ? 2 * d : d);
  if (gpt2) total += c.max_seq_len * d;
  if (c.lm_head && !c.tie_embeddings) total += c.vocab_size * d;
  if (c.scalar_head) total += d + (c.scalar_head_bias ? 1 : 0);
  return total;
}

void KVCache::SelectRows(const torch::Tensor& rows) {
  for (size_t l = 0; l < keys.size(); ++l) {
    if (!keys[l].defined()) continue;
    const int64_t len = keys[l].size(2);
    if (l < key_storage.size() && key_storage[l].defined()) {
      key_storage[l] = key_storage[l].index_select(0, rows);
      value_storage[l] = value_storage[l].index_select(0, rows);
      keys[l] = key_storage[l].narrow(2, 0, len);
      values[l] = value_storage[l].narrow(2, 0, len);
    } else {
      keys[l] = keys[l].index_select(0, rows);
      values[l] = values[l].index_select(0, rows);
    }
  }
}

TransformerLMImpl::TransformerLMImpl(const ModelConfig& config) : config_(config) {
  const absl::Status valid = ValidateModelConfig(config);
  TORCH_CHECK(valid.ok(), "invalid ModelConfig: ", std::string(valid.message()));
  const bool gpt2 = config.arch == Architecture::kGpt2;
  wte_ = register_module("wte", torch::nn::Embedding(config.vocab_size, config.d_model));
  if (gpt2) {
    wpe_ = register_module("wpe", torch::nn::Embedding(config.max_seq_len, config.d_model));
  }
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.n_layers; ++i) blocks_->push_back(Block(config));
  auto ln_f = register_module("ln_f", Norm(config.d_model, gpt2, config.norm_eps));
  ln_f_weight_ = ln_f->weight;
  ln_f_bias_ = ln_f->bias;
  if (config.lm_head && !config.tie_embeddings) {
    lm_head_weight_ = register_module("lm_head", torch::nn::Linear(torch::nn::LinearOptions(
                                                     config.d_model, config.vocab_size)
                                                     .bias(false)))
                          ->weight;
  }
  if (config.scalar_head) {
    scalar_head_ = register_module(
        "scalar_head",
        torch::nn::Linear(torch::nn::LinearOptions(config.d_model, 1).bias(config.scalar_head_bias)));
  }

  // GPT-2 initialisation: N(0, 0.02), residual output projections scaled by
  // 1/sqrt(2 * n_layers), zero biases, unit norms.
  torch::NoGradGuard no_grad;
  const double std_resid = 0.02 / std::sqrt(2.0 * config.n_layers);
  for (auto& item : named_parameters()) {
    const std::string& name = item.key();
    torch::Tensor& p = item.value();
    const bool is_norm = name.find("ln") != std::string::npos;
    const bool is_bias = name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0;
    if (is_norm) continue;  // constructed as ones / zeros
    if (is_bias) {
      p.zero_();
    } else if (name.find("attn.out.") != std::string::npos ||
               name.find("mlp.proj.") != std::string::npos ||
               name.find("mlp.down.") != std::string::npos) {
      p.normal_(0.0, std_resid);
    } else {
      p.normal_(0.0, 0.02);
    }
  }

  if (!gpt2) {
    const int64_t half = config.head_dim() / 2;
    auto inv_freq = torch::pow(config.rope_theta,
                               torch::arange(0, half, torch::kFloat64) * (-2.0 / config.head_dim()));
    auto angles = torch::arange(0, config.max_seq_len, torch::kFloat64).unsqueeze(1) *
                  inv_freq.unsqueeze(0);
    rope_cos_ = angles.cos().to(torch::kFloat32);
    rope_sin_ = angles.sin().to(torch::kFloat32);
  }
}

torch::Tensor TransformerLMImpl::TransposedUnembedding(const torch::Tensor& weight) {
  absl::MutexLock lock(&unembedding_t_mu_);
  if (!unembedding_t_.defined() || unembedding_t_source_ != weight.data_ptr() ||
      unembedding_t_version_ != weight._version()) {
    unembedding_t_ = weight.detach().t().contiguous();
    unembedding_t_source_ = weight.data_ptr();
    unembedding_t_version_ = weight._version();
  }
  return unembedding_t_;
}

const torch::Tensor& TransformerLMImpl::unembedding() const {
  TORCH_CHECK(config_.lm_head, "the model has no LM head (lm_head = false)");
  return config_.tie_embeddings ? wte_->weight : lm_head_weight_;
}

torch::Tensor TransformerLMImpl::Unembed(const torch::Tensor& hidden) {
  TORCH_CHECK(config_.lm_head, "Unembed: model has no lm_head");
  // At least fp32 logits whatever the compute dtype (a no-op for an fp32 model):
  // log-probs and sampling downstream read them as float.
  const torch::Tensor& weight = unembedding();
  const int64_t rows = hidden.numel() / hidden.size(-1);
  const bool cpu_inference = hidden.is_cpu() && hidden.scalar_type() == torch::kFloat32 &&
                             weight.scalar_type() == torch::kFloat32 && !at::GradMode::is_enabled();
  // The thin-product kernel reads the [vocab, d_model] weight as it is: no copy.
  if (cpu_inference && rows >= 2 && !ThinProductKernelTakes(rows)) {
    return LinearForward(hidden, TransposedUnembedding(weight), {}, WeightLayout::kInOut);
  }
  const auto logits = LinearForward(hidden, weight, {});
  return logits.to(AtLeastFloat(logits.scalar_type()));
}

ForwardOutput TransformerLMImpl::forward(const torch::Tensor& ids,
                                         const torch::Tensor& attention_mask,
                                         const torch::Tensor& position_ids, KVCache* cache) {
  return Run(ids, attention_mask, position_ids, cache, LogitsMode::kAll);
}

ForwardOutput TransformerLMImpl::forward_last(const torch::Tensor& ids,
                                              const torch::Tensor& attention_mask,
                                              const torch::Tensor& position_ids, KVCache* cache) {
  return Run(ids, attention_mask, position_ids, cache, LogitsMode::kLast);
}

ForwardOutput TransformerLMImpl::forward_hidden(const torch::Tensor& ids,
                                                const torch::Tensor& attention_mask,
                                                const torch::Tensor& position_ids) {
  return Run(ids, attention_mask, position_ids, /*cache=*/nullptr, LogitsMode::kNone);
}

ForwardOutput TransformerLMImpl::Run(const torch::Tensor& ids, const torch::Tensor& attention_mask,
                                     const torch::Tensor& position_ids, KVCache* cache,
                                     LogitsMode mode) {
  TORCH_CHECK(ids.dim() == 2, "ids must be [B, T], got ", ids.sizes());
  const int64_t B = ids.size(0), T = ids.size(1);
  TORCH_CHECK(T > 0, "ids must have at least one position");
  const size_t n_layers = static_cast<size_t>(config_.n_layers);
  if (cache != nullptr) {
    if (cache->keys.size() != n_layers) {
      cache->keys.assign(n_layers, torch::Tensor());
      cache->values.assign(n_layers, torch::Tensor());
    }
    if (cache->key_storage.size() != n_layers) {
      cache->key_storage.assign(n_layers, torch::Tensor());
      cache->value_storage.assign(n_layers, torch::Tensor());
    }
    TORCH_CHECK(cache->length() == 0 || cache->keys[0].size(0) == B,
                "KV cache batch ", cache->keys[0].size(0), " != ids batch ", B);
  }
  const int64_t past = cache != nullptr ? cache->length() : 0;
  const int64_t Lk = past + T;
  TORCH_CHECK(Lk <= config_.max_seq_len, "sequence length ", Lk, " exceeds max_seq_len ",
              config_.max_seq_len);

  torch::Tensor key_mask;
  if (attention_mask.defined()) {
    TORCH_CHECK(attention_mask.dim() == 2 && attention_mask.size(0) == B &&
                    attention_mask.size(1) == Lk,
                "attention_mask must be [", B, ", ", Lk, "], got ", attention_mask.sizes());
    key_mask = attention_mask.to(torch::kBool);
  }
  torch::Tensor positions = position_ids;
  if (!positions.defined()) {
    if (key_mask.defined()) {
      positions = (key_mask.to(torch::kLong).cumsum(1) - 1).narrow(1, past, T).clamp_min(0);
    } else {
      positions = torch::arange(past, Lk, ids.options().dtype(torch::kLong)).unsqueeze(0).expand({B, T});
    }
  } else {
    TORCH_CHECK(positions.dim() == 2 && positions.size(0) == B && positions.size(1) == T,
                "position_ids must be [", B, ", ", T, "], got ", positions.sizes());
  }

  // Additive mask [B, 1, 1, T, Lk]: causal (key j visible to query t iff j <= past + t)
  // and padded keys hidden.
  const auto opts =
      torch::TensorOptions().dtype(AtLeastFloat(wte_->weight.scalar_type())).device(ids.device());
  auto qpos = torch::arange(past, Lk, torch::TensorOptions().dtype(torch::kLong).device(ids.device()));
  auto kpos = torch::arange(0, Lk, torch::TensorOptions().dtype(torch::kLong).device(ids.device()));
  auto allowed = kpos.unsqueeze(0) <= qpos.unsqueeze(1);  // [T, Lk]
  torch::Tensor visible = key_mask.defined()
                              ? at::logical_and(allowed.unsqueeze(0), key_mask.unsqueeze(1))
                              : allowed.unsqueeze(0);  // [B or 1, T, Lk]
  auto mask = at::zeros(visible.sizes(), opts)
                  .masked_fill_(visible.logical_not(), kMasked)
                  .view({visible.size(0), 1, 1, T, Lk});

  torch::Tensor x = wte_->forward(ids);
  torch::Tensor cos, sin;
  if (config_.arch == Architecture::kGpt2) {
    x = x + wpe_->forward(positions);
  } else {
    if (rope_cos_.device() != ids.device()) {
      rope_cos_ = rope_cos_.to(ids.device());
      rope_sin_ = rope_sin_.to(ids.device());
    }
    cos = rope_cos_.index_select(0, positions.reshape({-1})).view({B, T, 1, -1}).to(x.scalar_type());
    sin = rope_sin_.index_select(0, positions.reshape({-1})).view({B, T, 1, -1}).to(x.scalar_type());
  }
  for (size_t l = 0; l < n_layers; ++l) {
    x = blocks_[l]->as<BlockImpl>()->forward(x, mask, cos, sin, cache, l);
  }
  ForwardOutput out;
  out.hidden = ln_f_bias_.defined() ? at::layer_norm(x, {config_.d_model}, ln_f_weight_, ln_f_bias_, config_.norm_eps)
                                    : RmsNorm(x, ln_f_weight_, config_.norm_eps);
  if (config_.lm_head && mode != LogitsMode::kNone) {
    out.logits = Unembed(mode == LogitsMode::kLast ? out.hidden.narrow(1, T - 1, 1) : out.hidden);
  }
  if (config_.scalar_head) {
    out.scalar = LinearForward(out.hidden, scalar_head_->weight, scalar_head_->bias).squeeze(-1);
    out.scalar = out.scalar.to(AtLeastFloat(out.scalar.scalar_type()));
  }
  return out;
}

}  // namespace rlhf
