// Decoder-only transformer language model covering GPT-2 style (learned positions,
// LayerNorm, GELU, tied embeddings) and LLaMA style (RoPE, RMSNorm, SwiGLU,
// grouped-query attention) through ModelConfig, with an optional scalar head (reward
// models, value functions) and incremental decoding through a KVCache.
//
// Thread-safety: a TransformerLM is a torch::nn::Module; concurrent forward() calls on
// one instance are safe only under torch::NoGradGuard/InferenceMode with distinct
// KVCache objects. Training (backward, optimizer step) needs external exclusion.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace rlhf {

enum class Architecture {
  kGpt2,   // learned positions, LayerNorm, GELU MLP, biases
  kLlama,  // RoPE, RMSNorm, SwiGLU MLP, grouped-query attention, no biases
};

struct ModelConfig {
  Architecture arch = Architecture::kGpt2;
  int64_t vocab_size = 259;  // ByteTokenizer: 256 bytes + BOS + EOS + PAD
  int64_t max_seq_len = 256; // learned positions (GPT-2) / RoPE table size (LLaMA)
  int64_t d_model = 128;
  int64_t n_layers = 4;
  int64_t n_heads = 4;
  int64_t n_kv_heads = 4;    // < n_heads = grouped-query attention (LLaMA only)
  int64_t d_ff = 512;        // MLP hidden width
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;
  bool tie_embeddings = true; // unembedding shares the token-embedding matrix
  bool lm_head = true;        // false: no unembedding (reward models)
  bool scalar_head = false;   // true: a Linear(d_model, 1) head on the final hidden states
  bool scalar_head_bias = true;  // false: the head is x w^T only (HF *ForSequenceClassification)
  // Per-head width; 0 = d_model / n_heads. HF LLaMA/Mistral/Qwen2 `head_dim` may differ
  // from hidden_size / num_attention_heads (then q/o project d_model <-> n_heads*head_dim).
  int64_t explicit_head_dim = 0;
  // LLaMA-style only (GPT-2 always has every bias): bias on the q/k/v projections
  // (HF `attention_bias`, always on in Qwen2), on the attention output projection
  // (`attention_bias`; never in Qwen2), and on gate/up/down (`mlp_bias`).
  bool qkv_bias = false;
  bool out_bias = false;
  bool mlp_bias = false;

  int64_t head_dim() const { return explicit_head_dim > 0 ? explicit_head_dim : d_model / n_heads; }
};

// Checks divisibility and ranges; the message names the offending field.
absl::Status ValidateModelConfig(const ModelConfig& config);
// JSON text <-> config (the `config.json` of a checkpoint). Unknown keys are errors.
std::string ModelConfigToJson(const ModelConfig& config);
absl::StatusOr<ModelConfig> ModelConfigFromJson(const std::string& json_text);
// Named presets: "tiny" (the built-in task's model, ~1M params), "small" (~5M),
// "gpt2-small" (124M shape), "llama-tiny" (LLaMA-style tiny with GQA).
absl::StatusOr<ModelConfig> ModelConfigPreset(const std::string& name);
// Total parameter count of a model built from this config.
int64_t CountParameters(const ModelConfig& config);

// Per-layer key/value cache for incremental decoding. Tensors are
// [B, n_kv_heads, T_cached, head_dim]. Owned by the caller; one per generation.
struct KVCache {
  std::vector<torch::Tensor> keys;    // one per layer (undefined until first use)
  std::vector<torch::Tensor> values;
  int64_t length() const { return keys.empty() || !keys[0].defined() ? 0 : keys[0].size(2); }
  // Keeps only the given batch rows (int64 index tensor): finished rows stop costing compute.
  void SelectRows(const torch::Tensor& rows);

  // Optional: reserve room for `max_length` positions before the first forward. Appends
  // then write into preallocated [B, n_kv_heads, max_length, head_dim] buffers and
  // keys/values become views of them (no torch::cat per step). Appending beyond the
  // reservation falls back to concatenation.
  void Reserve(int64_t max_length) { capacity = max_length; }
  int64_t capacity = 0;                    // 0 = grow by concatenation
  std::vector<torch::Tensor> key_storage;  // preallocated buffers (when capacity > 0)
  std::vector<torch::Tensor> value_storage;
};

struct ForwardOutput {
  torch::Tensor logits;  // [B, T, vocab] float (undefined when lm_head == false)
  torch::Tensor hidden;  // [B, T, d_model] final hidden states (after the final norm)
  torch::Tensor scalar;  // [B, T] scalar-head output (undefined when scalar_head == false)
};

class TransformerLMImpl : public torch::nn::Module {
 public:
  // Throws c10::Error on an invalid config (a torch module constructor cannot return a
  // Status): call ValidateModelConfig first, or build inside TorchCall.
  explicit TransformerLMImpl(const ModelConfig& config);

  // ids: [B, T] int64.
  // attention_mask: [B, T_cached + T] (1 = real token, 0 = padding); undefined = all ones.
  // position_ids: [B, T] int64; undefined = cumsum(attention_mask) - 1 over the
  //   new positions (so left padding does not shift positions).
  // cache: when non-null, attends over the cached keys/values and appends this call's.
  // Attention is causal; padded key positions are never attended to.
  ForwardOutput forward(const torch::Tensor& ids, const torch::Tensor& attention_mask = {},
                        const torch::Tensor& position_ids = {}, KVCache* cache = nullptr);

  // Like forward(), but the logits (if any) are computed for the last column only
  // (ids[:, T-1]): logits [B, 1, vocab]. With left padding that is every row's last real
  // token. Generation uses this: the unembedding of every
  // prompt position would cost 2*B*T*d*vocab FLOPs for nothing.
  ForwardOutput forward_last(const torch::Tensor& ids, const torch::Tensor& attention_mask = {},
                             const torch::Tensor& position_ids = {}, KVCache* cache = nullptr);

  // Like forward(), but without the unembedding (out.logits undefined), for losses that
  // unembed the hidden states themselves a block at a time (chunked_unembedding.h).
  ForwardOutput forward_hidden(const torch::Tensor& ids, const torch::Tensor& attention_mask = {},
                               const torch::Tensor& position_ids = {});

  // The [vocab, d_model] output matrix: wte's weight when tied, else lm_head's. Throws
  // c10::Error when the model has no LM head.
  const torch::Tensor& unembedding() const;

  // hidden [..., d_model] -> logits [..., vocab] (requires lm_head). Lets callers that
  // need logits at a few positions only (e.g. response tokens) skip the rest.
  // Without autograd on the CPU in fp32 and for two rows or more, it multiplies by a
  // transposed copy of the unembedding matrix ([d_model, vocab], contiguous), made on
  // first use and again whenever the weight changes (its storage or version counter, so
  // an in-place weight update is seen): OpenBLAS runs few-row GEMMs 1.3-1.5x faster on
  // that layout (docs/benchmarks.md). Costs vocab x d_model floats (31% of gpt2-small's
  // weights, ~2% of a 7B LLaMA's) in processes that score. Not for up to
  // kThinProductMaxRows rows on a CPU with AVX2 and FMA (decoding): linear.h's kernel
  // reads the weight as it is.
  torch::Tensor Unembed(const torch::Tensor& hidden);

  const ModelConfig& config() const { return config_; }

 private:
  enum class LogitsMode { kAll, kLast, kNone };
  ForwardOutput Run(const torch::Tensor& ids, const torch::Tensor& attention_mask,
                    const torch::Tensor& position_ids, KVCache* cache, LogitsMode mode);

  ModelConfig config_;
  // Submodules are registered with register_module so that named_parameters() gives
  // stable checkpoint names:
  //   wte.weight [V, d]; wpe.weight [max_seq_len, d] (GPT-2);
  //   blocks.{i}.{ln1,ln2}.{weight,bias}; blocks.{i}.attn.{qkv,out}.{weight,bias};
  //   blocks.{i}.mlp.{fc,proj}.{weight,bias} (GPT-2) or blocks.{i}.mlp.{gate_up,down}.weight
  //   (LLaMA; gate_up = [gate; up] fused); ln_f.{weight,bias}; lm_head.weight (untied);
  //   scalar_head.{weight,bias}. LLaMA has RMSNorm weights only and no biases unless
  //   qkv_bias (attn.qkv.bias), out_bias (attn.out.bias), mlp_bias (mlp.*.bias).
  torch::nn::Embedding wte_{nullptr};
  torch::nn::Embedding wpe_{nullptr};
  torch::nn::ModuleList blocks_{nullptr};
  torch::Tensor ln_f_weight_, ln_f_bias_;
  torch::Tensor lm_head_weight_;  // undefined when tied (uses wte) or lm_head == false
  torch::nn::Linear scalar_head_{nullptr};
  torch::Tensor rope_cos_, rope_sin_;  // [max_seq_len, head_dim/2] buffers (LLaMA)

  // The transposed unembedding (see Unembed) for `weight`, rebuilt when it changed.
  torch::Tensor TransposedUnembedding(const torch::Tensor& weight);
  absl::Mutex unembedding_t_mu_;  // concurrent inference forwards share the copy
  torch::Tensor unembedding_t_ ABSL_GUARDED_BY(unembedding_t_mu_);
  const void* unembedding_t_source_ ABSL_GUARDED_BY(unembedding_t_mu_) = nullptr;
  int64_t unembedding_t_version_ ABSL_GUARDED_BY(unembedding_t_mu_) = 0;
};
TORCH_MODULE(TransformerLM);

}  // namespace rlhf
