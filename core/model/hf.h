// HuggingFace model directories in and out: GPT-2 (`GPT2LMHeadModel`), LLaMA, Mistral and
// Qwen2 (`*ForCausalLM`), and their `*ForSequenceClassification` reward models.
//
// Import (LoadHfDirectory, reached through LoadCheckpoint for every checkpoint flag):
//   config.json -> ModelConfig (HF field names and defaults; anything we do not implement
//   is an error naming the field), then `model.safetensors` or the shards listed in
//   `model.safetensors.index.json`, F32/F16/BF16 on disk, loaded as fp32 (LoadModel in
//   core/model/compute_dtype.h casts to another compute dtype). Tensors are
//   read one at a time (pread) and copied into the model, so the peak extra memory is
//   about one tensor, not one copy of the weights. Every header, name, shape and dtype is
//   checked against config.json before any byte is read; errors name the file and
//   tensor. Mapping (ours <- HF):
//     GPT-2 (keys with or without "transformer."): wte, wpe, h.{i}.ln_1/ln_2 -> ln1/ln2,
//       attn.c_attn -> attn.qkv, attn.c_proj -> attn.out, mlp.c_fc -> mlp.fc,
//       mlp.c_proj -> mlp.proj (Conv1D weights are [in, out]: transposed), ln_f;
//       attn.bias / attn.masked_bias buffers ignored; lm_head absent when tied.
//     LLaMA/Mistral/Qwen2 (keys with or without "model."): embed_tokens -> wte,
//       layers.{i}.input_layernorm/post_attention_layernorm -> ln1/ln2,
//       self_attn.{q,k,v}_proj -> attn.qkv (rows concatenated q;k;v), o_proj -> attn.out,
//       mlp.{gate,up}_proj -> mlp.gate_up (rows gate;up), down_proj -> mlp.down, norm -> ln_f.
//     lm_head.weight (untied) -> lm_head.weight; score.weight [1, hidden] -> scalar_head.weight
//     (no bias: ModelConfig.scalar_head_bias = false).
//   Sliding-window attention (Mistral `sliding_window`, Qwen2 `use_sliding_window`) is
//   not implemented: a window smaller than the caller's sequence length
//   (HfLoadOptions::max_seq_len) is an error naming `sliding_window`; otherwise max_seq_len
//   is capped at the window, so a longer input is rejected rather than silently computed
//   with full attention.
//   The returned metadata holds "hf_config" (the original config.json), "hf_dir" (the
//   absolute source directory) and whatever an export stored under "rlhf_metadata".
//
// Export (ExportHfDirectory): the inverse mapping (GPT-2 keys with "transformer."),
// config.json (the original fields kept when the model came from HF, `architectures`,
// `torch_dtype`, our metadata under "rlhf_metadata"), `model.safetensors` or shards plus
// index past max_shard_bytes, generation_config.json, and tokenizer files copied unchanged.
// Shards are streamed: the header is written first (every size is known from the
// config), then each tensor is converted and written in turn, so the peak extra memory is
// one tensor (a transposed GPT-2 Conv1D weight or a dtype conversion), not one shard.
//
// Thread-safety: free functions without shared state.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/model/checkpoint.h"
#include "core/model/model.h"

namespace rlhf {

// True for an HF config.json: an object with "model_type" and without our "format".
bool IsHfConfigJson(const nlohmann::json& config);

struct HfLoadOptions {
  // The longest sequence (prompt + response, in tokens) the caller will run; 0 = not
  // known. Only consulted for sliding-window models (see the file comment): a window
  // smaller than this is an error naming `sliding_window`.
  int64_t max_seq_len = 0;
};

// HF config.json -> ModelConfig, with HF's defaults for absent fields. A
// *ForSequenceClassification architecture gives lm_head = false, scalar_head = true
// (and needs num_labels 1); scalar_head_bias is always false (HF's `score` has none).
// Errors name the field.
absl::StatusOr<ModelConfig> ModelConfigFromHf(const nlohmann::json& hf,
                                              const HfLoadOptions& options = {});

// Imports an HF directory (see the file comment). NotFound when config.json or the
// weights are absent; InvalidArgument naming file and tensor for anything malformed.
absl::StatusOr<LoadedCheckpoint> LoadHfDirectory(const std::string& dir,
                                                 const HfLoadOptions& options = {});

struct HfExportOptions {
  // On-disk dtype: "F32", "F16" or "BF16".
  std::string dtype = "F32";
  // A shard holds at most this many bytes of tensor data (a larger single tensor gets a
  // shard of its own). Default 5 GB, transformers' save_pretrained default.
  uint64_t max_shard_bytes = 5'000'000'000ull;
  // Directory whose tokenizer files (tokenizer.json, tokenizer_config.json,
  // special_tokens_map.json, vocab.json, merges.txt, tokenizer.model, added_tokens.json)
  // and generation_config.json are copied unchanged; "" = metadata's "hf_dir" if any.
  // Its config.json, when an HF one, also supplies the original config fields when the
  // metadata has no "hf_config" (a model trained from that HF start).
  std::string tokenizer_dir;
};

// Writes `out_dir` (created if needed) as an HF directory. The model is either a causal
// LM (lm_head) -> *ForCausalLM / GPT2LMHeadModel, or a reward/value model (scalar_head,
// no lm_head) -> *ForSequenceClassification; a scalar head with a non-zero bias cannot be
// expressed in HF's `score` and is an error. `metadata` is LoadedCheckpoint::metadata.
absl::Status ExportHfDirectory(const TransformerLM& model, const nlohmann::json& metadata,
                               const std::string& out_dir, const HfExportOptions& options = {});

// The model's weights under HF names and layouts (the model's dtype), as written by
// ExportHfDirectory (which converts them one at a time instead of all at once).
// model_type: "gpt2", "llama", "mistral" or "qwen2".
absl::StatusOr<NamedTensors> ToHfTensors(const TransformerLM& model, const std::string& model_type);

}  // namespace rlhf
