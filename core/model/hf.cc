#include "core/model/hf.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/tokenizer/tokenizer.h"
#include "core/status_macros.h"

namespace rlhf {
namespace {

namespace fs = std::filesystem;

constexpr const char* kTokenizerFiles[] = {
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
    "merges.txt",     "tokenizer.model",       "added_tokens.json",
};

absl::Status Bad(const std::string& what) { return absl::InvalidArgumentError(what); }

// Typed reads of optional config.json fields with HF's defaults; null counts as absent
// (HF writes e.g. "n_inner": null).
struct HfFields {
  const nlohmann::json& j;
  absl::Status status;

  const nlohmann::json* Find(const char* key) const {
    auto it = j.find(key);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  }
  int64_t Int(const char* key, int64_t def) {
    const auto* v = Find(key);
    if (v == nullptr) return def;
    if (!v->is_number_integer()) {
      Fail(absl::StrCat("config.json: field \"", key, "\" must be an integer, got ", v->dump()));
      return def;
    }
    return v->get<int64_t>();
  }
  double Double(const char* key, double def) {
    const auto* v = Find(key);
    if (v == nullptr) return def;
    if (!v->is_number()) {
      Fail(absl::StrCat("config.json: field \"", key, "\" must be a number, got ", v->dump()));
      return def;
    }
    return v->get<double>();
  }
  bool Bool(const char* key, bool def) {
    const auto* v = Find(key);
    if (v == nullptr) return def;
    if (!v->is_boolean()) {
      Fail(absl::StrCat("config.json: field \"", key, "\" must be a boolean, got ", v->dump()));
      return def;
    }
    return v->get<bool>();
  }
  std::string String(const char* key, const std::string& def) {
    const auto* v = Find(key);
    if (v == nullptr) return def;
    if (!v->is_string()) {
      Fail(absl::StrCat("config.json: field \"", key, "\" must be a string, got ", v->dump()));
      return def;
    }
    return v->get<std::string>();
  }
  void Fail(const std::string& message) {
    if (status.ok()) status = Bad(message);
  }
};

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool StartsWith(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

// architectures[0] (if any) decides causal LM vs sequence classification.
absl::StatusOr<bool> IsSequenceClassification(const nlohmann::json& hf) {
  auto it = hf.find("architectures");
  if (it == hf.end() || it->is_null()) return false;
  if (!it->is_array() || it->empty() || !(*it)[0].is_string()) {
    return Bad(absl::StrCat("config.json: field \"architectures\" must be a non-empty list of names, got ",
                            it->dump()));
  }
  const std::string arch = (*it)[0].get<std::string>();
  if (EndsWith(arch, "ForSequenceClassification")) return true;
  if (EndsWith(arch, "ForCausalLM") || arch == "GPT2LMHeadModel" || EndsWith(arch, "Model")) {
    return false;
  }
  return Bad(absl::StrCat("config.json: architectures[0] = \"", arch,
                          "\" is not supported (a causal LM or *ForSequenceClassification)"));
}

// The model family of a supported model_type.
enum class Family { kGpt2, kLlama, kMistral, kQwen2 };

absl::StatusOr<Family> FamilyOf(const std::string& model_type) {
  if (model_type == "gpt2") return Family::kGpt2;
  if (model_type == "llama") return Family::kLlama;
  if (model_type == "mistral") return Family::kMistral;
  if (model_type == "qwen2") return Family::kQwen2;
  return Bad(absl::StrCat("config.json: field \"model_type\" = \"", model_type,
                          "\" is not supported (supported: gpt2, llama, mistral, qwen2)"));
}

std::string ArchitectureName(Family f, bool seq_cls) {
  const char* base = f == Family::kGpt2 ? "GPT2" : f == Family::kLlama ? "Llama"
                                                  : f == Family::kMistral ? "Mistral" : "Qwen2";
  if (seq_cls) return absl::StrCat(base, "ForSequenceClassification");
  if (f == Family::kGpt2) return "GPT2LMHeadModel";
  return absl::StrCat(base, "ForCausalLM");
}

// ---- name/layout mapping -------------------------------------------------------------

// One parameter of ours and the HF tensor(s) it comes from: several parts are stacked
// along dim 0 (q;k;v and gate;up); `transpose` marks GPT-2's Conv1D [in, out] weights.
struct MapEntry {
  std::string ours;
  std::vector<std::string> hf;
  std::vector<std::vector<int64_t>> hf_shapes;
  bool transpose = false;
};

std::vector<MapEntry> BuildPlan(const ModelConfig& c, Family family, const std::string& prefix,
                                bool seq_cls) {
  std::vector<MapEntry> plan;
  const int64_t d = c.d_model, V = c.vocab_size, F = c.d_ff;
  const int64_t H = c.n_heads, KV = c.n_kv_heads, D = c.head_dim();
  auto add = [&](std::string ours, std::string hf, std::vector<int64_t> shape, bool transpose = false) {
    plan.push_back({std::move(ours), {std::move(hf)}, {std::move(shape)}, transpose});
  };
  if (family == Family::kGpt2) {
    add("wte.weight", prefix + "wte.weight", {V, d});
    add("wpe.weight", prefix + "wpe.weight", {c.max_seq_len, d});
    for (int64_t i = 0; i < c.n_layers; ++i) {
      const std::string o = absl::StrCat("blocks.", i, ".");
      const std::string h = absl::StrCat(prefix, "h.", i, ".");
      add(o + "ln1.weight", h + "ln_1.weight", {d});
      add(o + "ln1.bias", h + "ln_1.bias", {d});
      add(o + "attn.qkv.weight", h + "attn.c_attn.weight", {d, 3 * d}, true);
      add(o + "attn.qkv.bias", h + "attn.c_attn.bias", {3 * d});
      add(o + "attn.out.weight", h + "attn.c_proj.weight", {d, d}, true);
      add(o + "attn.out.bias", h + "attn.c_proj.bias", {d});
      add(o + "ln2.weight", h + "ln_2.weight", {d});
      add(o + "ln2.bias", h + "ln_2.bias", {d});
      add(o + "mlp.fc.weight", h + "mlp.c_fc.weight", {d, F}, true);
      add(o + "mlp.fc.bias", h + "mlp.c_fc.bias", {F});
      add(o + "mlp.proj.weight", h + "mlp.c_proj.weight", {F, d}, true);
      add(o + "mlp.proj.bias", h + "mlp.c_proj.bias", {d});
    }
    add("ln_f.weight", prefix + "ln_f.weight", {d});
    add("ln_f.bias", prefix + "ln_f.bias", {d});
  } else {
    add("wte.weight", prefix + "embed_tokens.weight", {V, d});
    for (int64_t i = 0; i < c.n_layers; ++i) {
      const std::string o = absl::StrCat("blocks.", i, ".");
      const std::string h = absl::StrCat(prefix, "layers.", i, ".");
      add(o + "ln1.weight", h + "input_layernorm.weight", {d});
      plan.push_back({o + "attn.qkv.weight",
                      {h + "self_attn.q_proj.weight", h + "self_attn.k_proj.weight",
                       h + "self_attn.v_proj.weight"},
                      {{H * D, d}, {KV * D, d}, {KV * D, d}}});
      if (c.qkv_bias) {
        plan.push_back({o + "attn.qkv.bias",
                        {h + "self_attn.q_proj.bias", h + "self_attn.k_proj.bias",
                         h + "self_attn.v_proj.bias"},
                        {{H * D}, {KV * D}, {KV * D}}});
      }
      add(o + "attn.out.weight", h + "self_attn.o_proj.weight", {d, H * D});
      if (c.out_bias) add(o + "attn.out.bias", h + "self_attn.o_proj.bias", {d});
      add(o + "ln2.weight", h + "post_attention_layernorm.weight", {d});
      plan.push_back({o + "mlp.gate_up.weight", {h + "mlp.gate_proj.weight", h + "mlp.up_proj.weight"},
                      {{F, d}, {F, d}}});
      if (c.mlp_bias) {
        plan.push_back({o + "mlp.gate_up.bias", {h + "mlp.gate_proj.bias", h + "mlp.up_proj.bias"},
                        {{F}, {F}}});
      }
      add(o + "mlp.down.weight", h + "mlp.down_proj.weight", {d, F});
      if (c.mlp_bias) add(o + "mlp.down.bias", h + "mlp.down_proj.bias", {d});
    }
    add("ln_f.weight", prefix + "norm.weight", {d});
  }
  if (c.lm_head && !c.tie_embeddings) add("lm_head.weight", "lm_head.weight", {V, d});
  if (c.scalar_head && seq_cls) add("scalar_head.weight", "score.weight", {1, d});
  return plan;
}

// HF tensors that are buffers or duplicates, never weights.
bool Ignorable(const std::string& name, const ModelConfig& c) {
  if (EndsWith(name, ".attn.bias") || EndsWith(name, ".attn.masked_bias")) return true;  // GPT-2
  if (EndsWith(name, ".rotary_emb.inv_freq")) return true;  // older LLaMA checkpoints
  if (name == "lm_head.weight" && c.tie_embeddings) return true;  // a copy of the embedding
  return false;
}

// Shared base-model prefix: "transformer." (GPT-2) / "model." (others) or none.
std::string DetectPrefix(Family family, const std::vector<std::string>& names) {
  const std::string p = family == Family::kGpt2 ? "transformer." : "model.";
  for (const auto& n : names) {
    if (StartsWith(n, p)) return p;
  }
  return "";
}

absl::StatusOr<torch::ScalarType> ExportDtype(const std::string& name) {
  if (name == "F32") return torch::kFloat32;
  if (name == "F16") return torch::kFloat16;
  if (name == "BF16") return torch::kBFloat16;
  return Bad(absl::StrCat("export dtype must be F32, F16 or BF16, got \"", name, "\""));
}

const char* TorchDtypeName(torch::ScalarType t) {
  return t == torch::kFloat16 ? "float16" : t == torch::kBFloat16 ? "bfloat16" : "float32";
}

}  // namespace

bool IsHfConfigJson(const nlohmann::json& config) {
  return config.is_object() && config.contains("model_type") && !config.contains("format");
}

absl::StatusOr<ModelConfig> ModelConfigFromHf(const nlohmann::json& hf, const HfLoadOptions& options) {
  if (!hf.is_object()) return Bad("config.json: not a JSON object");
  HfFields f{hf, absl::OkStatus()};
  const std::string model_type = f.String("model_type", "");
  RLHF_RETURN_IF_ERROR(f.status);
  RLHF_ASSIGN_OR_RETURN(const Family family, FamilyOf(model_type));
  RLHF_ASSIGN_OR_RETURN(const bool seq_cls, IsSequenceClassification(hf));
  ModelConfig c;
  if (family == Family::kGpt2) {
    c.arch = Architecture::kGpt2;
    c.vocab_size = f.Int("vocab_size", 50257);
    c.max_seq_len = f.Int("n_positions", 1024);
    c.d_model = f.Int("n_embd", 768);
    c.n_layers = f.Int("n_layer", 12);
    c.n_heads = f.Int("n_head", 12);
    c.n_kv_heads = c.n_heads;
    c.d_ff = f.Int("n_inner", 4 * c.d_model);
    c.norm_eps = f.Double("layer_norm_epsilon", 1e-5);
    c.tie_embeddings = f.Bool("tie_word_embeddings", true);
    const std::string act = f.String("activation_function", "gelu_new");
    // gelu_new, gelu_pytorch_tanh and gelu_fast are all the tanh approximation.
    if (act != "gelu_new" && act != "gelu_pytorch_tanh" && act != "gelu_fast") {
      f.Fail(absl::StrCat("config.json: field \"activation_function\" = \"", act,
                          "\" is not supported (gelu_new, gelu_pytorch_tanh)"));
    }
    if (!f.Bool("scale_attn_weights", true)) {
      f.Fail("config.json: field \"scale_attn_weights\" = false is not supported");
    }
    if (f.Bool("scale_attn_by_inverse_layer_idx", false)) {
      f.Fail("config.json: field \"scale_attn_by_inverse_layer_idx\" = true is not supported");
    }
    if (f.Bool("add_cross_attention", false)) {
      f.Fail("config.json: field \"add_cross_attention\" = true is not supported");
    }
  } else {
    c.arch = Architecture::kLlama;
    const bool mistral = family == Family::kMistral, qwen2 = family == Family::kQwen2;
    c.vocab_size = f.Int("vocab_size", qwen2 ? 151936 : 32000);
    c.d_model = f.Int("hidden_size", 4096);
    c.d_ff = f.Int("intermediate_size", mistral ? 14336 : qwen2 ? 22016 : 11008);
    c.n_layers = f.Int("num_hidden_layers", 32);
    c.n_heads = f.Int("num_attention_heads", 32);
    c.n_kv_heads = f.Int("num_key_value_heads", mistral ? 8 : c.n_heads);
    if (f.Find("head_dim") != nullptr) {
      const int64_t hd = f.Int("head_dim", 0);
      // Store it only when it differs from the implied width, so that native and
      // imported configs of the same shape compare equal.
      if (c.n_heads <= 0 || hd * c.n_heads != c.d_model || c.d_model % c.n_heads != 0) {
        c.explicit_head_dim = hd;
      }
    }
    c.max_seq_len =
        f.Int("max_position_embeddings", mistral ? 131072 : qwen2 ? 32768 : 2048);
    c.norm_eps = f.Double("rms_norm_eps", 1e-6);
    c.tie_embeddings = f.Bool("tie_word_embeddings", false);
    const std::string act = f.String("hidden_act", "silu");
    if (act != "silu") {
      f.Fail(absl::StrCat("config.json: field \"hidden_act\" = \"", act, "\" is not supported (silu)"));
    }
    if (qwen2) {
      c.qkv_bias = true;  // Qwen2Attention: q/k/v with bias, o_proj without
    } else if (!mistral) {
      c.qkv_bias = c.out_bias = f.Bool("attention_bias", false);
      c.mlp_bias = f.Bool("mlp_bias", false);
    }
    // rope_theta at top level (older files) or in rope_parameters (newer); rope_scaling
    // (or rope_parameters' rope_type) other than "default" changes the frequencies.
    c.rope_theta = f.Double("rope_theta", 10000.0);
    for (const char* key : {"rope_scaling", "rope_parameters"}) {
      const auto* rp = f.Find(key);
      if (rp == nullptr) continue;
      if (!rp->is_object()) {
        f.Fail(absl::StrCat("config.json: field \"", key, "\" must be an object"));
        continue;
      }
      std::string type = "default";
      for (const char* tk : {"rope_type", "type"}) {
        if (rp->contains(tk) && (*rp)[tk].is_string()) type = (*rp)[tk].get<std::string>();
      }
      if (type != "default") {
        f.Fail(absl::StrCat("config.json: field \"", key, "\" rope_type \"", type,
                            "\" is not supported (only default RoPE)"));
      }
      if (rp->contains("rope_theta")) {
        if (!(*rp)["rope_theta"].is_number()) {
          f.Fail(absl::StrCat("config.json: field \"", key, ".rope_theta\" must be a number"));
        } else {
          c.rope_theta = (*rp)["rope_theta"].get<double>();
        }
      }
    }
    // Sliding-window attention never applies to sequences no longer than the window, so
    // instead of the banded mask: an error when the caller's sequences are longer, else
    // max_seq_len capped at the window (a longer input is then rejected by forward).
    bool sliding = false;
    if (mistral) sliding = f.Find("sliding_window") != nullptr;
    if (qwen2) {
      sliding = f.Bool("use_sliding_window", false) &&
                f.Int("max_window_layers", 28) < c.n_layers && f.Find("sliding_window") != nullptr;
    }
    if (sliding) {
      const int64_t window = f.Int("sliding_window", 4096);
      if (window <= 0) {
        f.Fail("config.json: field \"sliding_window\" must be > 0");
      } else if (options.max_seq_len > window) {
        f.Fail(absl::StrCat(
            "config.json: field \"sliding_window\" = ", window,
            qwen2 ? " (with use_sliding_window = true)" : "",
            " would apply to the sequences of length ", options.max_seq_len,
            " this job runs, and sliding-window attention is not implemented; run with "
            "max_seq_len <= ", window, " (model.max_seq_len / --max_seq_len)"));
      } else {
        c.max_seq_len = std::min(c.max_seq_len, window);
      }
    }
  }
  // HF's score layer never has a bias: a reward or value model built later on this
  // trunk (RewardModelFromSft copies the config) stays exportable.
  c.scalar_head_bias = false;
  if (seq_cls) {
    int64_t num_labels = 2;  // PretrainedConfig's default
    if (const auto* id2label = f.Find("id2label"); id2label != nullptr && id2label->is_object()) {
      num_labels = static_cast<int64_t>(id2label->size());
    } else {
      num_labels = f.Int("num_labels", 2);
    }
    if (num_labels != 1) {
      f.Fail(absl::StrCat("config.json: num_labels (id2label) = ", num_labels,
                          ": a reward/value model needs a scalar score (num_labels 1)"));
    }
    c.lm_head = false;
    c.scalar_head = true;
  }
  RLHF_RETURN_IF_ERROR(f.status);
  if (auto s = ValidateModelConfig(c); !s.ok()) {
    return Bad(absl::StrCat("config.json: ", s.message()));
  }
  return c;
}

absl::StatusOr<LoadedCheckpoint> LoadHfDirectory(const std::string& dir, const HfLoadOptions& options) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  RLHF_ASSIGN_OR_RETURN(std::string config_text, ReadFileToString(config_path));
  const nlohmann::json hf = nlohmann::json::parse(config_text, nullptr, false);
  if (hf.is_discarded() || !hf.is_object()) return Bad(absl::StrCat(config_path, ": not a JSON object"));
  auto config = ModelConfigFromHf(hf, options);
  if (!config.ok()) return Bad(absl::StrCat(config_path, ": ", config.status().message()));
  const ModelConfig& c = *config;
  const Family family = *FamilyOf(hf["model_type"].get<std::string>());
  const bool seq_cls = *IsSequenceClassification(hf);

  // Open the weight files (headers only).
  std::vector<SafetensorsFile> files;
  struct Where {
    size_t file;
    size_t entry;
  };
  std::map<std::string, Where> where;
  const std::string index_path = (fs::path(dir) / "model.safetensors.index.json").string();
  const std::string single_path = (fs::path(dir) / "model.safetensors").string();
  std::error_code ec;
  if (fs::exists(index_path, ec)) {
    RLHF_ASSIGN_OR_RETURN(std::string index_text, ReadFileToString(index_path));
    const nlohmann::json index = nlohmann::json::parse(index_text, nullptr, false);
    if (index.is_discarded() || !index.is_object() || !index.contains("weight_map") ||
        !index["weight_map"].is_object()) {
      return Bad(absl::StrCat(index_path, ": not a JSON object with a \"weight_map\" object"));
    }
    std::map<std::string, std::string> weight_map;
    std::map<std::string, std::string> first_tensor_of_shard;
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      if (!it.value().is_string()) {
        return Bad(absl::StrCat(index_path, ": weight_map[\"", it.key(), "\"] is not a file name"));
      }
      const std::string shard = it.value().get<std::string>();
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..") {
        return Bad(absl::StrCat(index_path, ": tensor \"", it.key(), "\": shard name \"", shard,
                                "\" is not a plain file name"));
      }
      weight_map[it.key()] = shard;
      first_tensor_of_shard.emplace(shard, it.key());
    }
    std::map<std::string, size_t> shard_file;
    for (const auto& [shard, tensor] : first_tensor_of_shard) {
      const std::string path = (fs::path(dir) / shard).string();
      auto file = SafetensorsFile::Open(path);
      if (!file.ok()) {
        if (absl::IsNotFound(file.status())) {
          return Bad(absl::StrCat(index_path, ": shard \"", shard, "\" (tensor \"", tensor,
                                  "\") does not exist"));
        }
        return file.status();
      }
      shard_file[shard] = files.size();
      files.push_back(std::move(*file));
    }
    for (const auto& [shard, fi] : shard_file) {
      const auto& entries = files[fi].header().entries;
      for (size_t e = 0; e < entries.size(); ++e) {
        auto wm = weight_map.find(entries[e].name);
        if (wm == weight_map.end() || wm->second != shard) {
          return Bad(absl::StrCat(files[fi].path(), ": tensor \"", entries[e].name,
                                  "\" is not listed for this shard in ", index_path));
        }
        where[entries[e].name] = {fi, e};
      }
    }
    for (const auto& [tensor, shard] : weight_map) {
      if (where.count(tensor) == 0) {
        return Bad(absl::StrCat(index_path, ": tensor \"", tensor, "\" is listed in shard \"", shard,
                                "\", which does not contain it"));
      }
    }
  } else {
    auto file = SafetensorsFile::Open(single_path);
    if (!file.ok()) {
      if (absl::IsNotFound(file.status())) {
        return absl::NotFoundError(absl::StrCat(
            dir, ": neither model.safetensors nor model.safetensors.index.json "
                 "(pytorch_model.bin is not supported: convert it to safetensors)"));
      }
      return file.status();
    }
    files.push_back(std::move(*file));
    const auto& entries = files[0].header().entries;
    for (size_t e = 0; e < entries.size(); ++e) where[entries[e].name] = {0, e};
  }

  // Check every tensor against config.json before reading any data.
  std::vector<std::string> names;
  for (const auto& [name, w] : where) names.push_back(name);
  const std::string prefix = DetectPrefix(family, names);
  const std::vector<MapEntry> plan = BuildPlan(c, family, prefix, seq_cls);
  std::vector<std::string> problems;
  std::set<std::string> used;
  for (const MapEntry& m : plan) {
    for (size_t p = 0; p < m.hf.size(); ++p) {
      auto it = where.find(m.hf[p]);
      if (it == where.end()) {
        problems.push_back(absl::StrCat("missing tensor \"", m.hf[p], "\""));
        continue;
      }
      used.insert(m.hf[p]);
      const SafetensorsFile& file = files[it->second.file];
      const SafetensorsEntry& e = file.header().entries[it->second.entry];
      if (e.dtype != torch::kFloat32 && e.dtype != torch::kFloat16 && e.dtype != torch::kBFloat16) {
        problems.push_back(absl::StrCat(file.path(), ": tensor \"", e.name, "\" has dtype ",
                                        e.dtype_name, " (weights must be F32, F16 or BF16)"));
      }
      if (e.shape != m.hf_shapes[p]) {
        problems.push_back(absl::StrCat(file.path(), ": tensor \"", e.name, "\" has shape [",
                                        absl::StrJoin(e.shape, ", "), "] but config.json implies [",
                                        absl::StrJoin(m.hf_shapes[p], ", "), "]"));
      }
    }
  }
  for (const auto& [name, w] : where) {
    if (used.count(name) == 0 && !Ignorable(name, c)) {
      problems.push_back(absl::StrCat(files[w.file].path(), ": unexpected tensor \"", name, "\""));
    }
  }
  if (!problems.empty()) {
    constexpr size_t kShown = 12;
    const size_t more = problems.size() > kShown ? problems.size() - kShown : 0;
    problems.resize(std::min(problems.size(), kShown));
    if (more > 0) problems.push_back(absl::StrCat("and ", more, " more"));
    return Bad(absl::StrCat(dir, ": ", absl::StrJoin(problems, "; ")));
  }

  LoadedCheckpoint out;
  out.config = c;
  RLHF_ASSIGN_OR_RETURN(out.model, TorchCall([&] { return TransformerLM(c); }, "building model"));
  auto params = out.model->named_parameters(/*recurse=*/true);
  std::set<std::string> covered;
  for (const MapEntry& m : plan) {
    torch::Tensor* dst = params.find(m.ours);
    if (dst == nullptr) return absl::InternalError(absl::StrCat("HF import: no parameter ", m.ours));
    covered.insert(m.ours);
    int64_t row = 0;
    for (size_t p = 0; p < m.hf.size(); ++p) {
      const Where w = where.at(m.hf[p]);
      const SafetensorsEntry& e = files[w.file].header().entries[w.entry];
      RLHF_ASSIGN_OR_RETURN(torch::Tensor src, files[w.file].Read(e));
      RLHF_RETURN_IF_ERROR(TorchCall(
          [&] {
            torch::NoGradGuard no_grad;
            if (m.transpose) {
              dst->copy_(src.t());
            } else if (m.hf.size() == 1) {
              dst->copy_(src);
            } else {
              dst->narrow(0, row, src.size(0)).copy_(src);
            }
          },
          "HF import"));
      row += e.shape.empty() ? 0 : e.shape[0];
    }
  }
  for (const auto& item : params) {
    if (covered.count(item.key()) == 0) {
      return absl::InternalError(absl::StrCat("HF import: parameter ", item.key(), " has no source"));
    }
  }
  out.metadata = nlohmann::json::object();
  if (hf.contains("rlhf_metadata") && hf["rlhf_metadata"].is_object()) out.metadata = hf["rlhf_metadata"];
  out.metadata["hf_config"] = hf;
  out.metadata["hf_dir"] = fs::absolute(fs::path(dir), ec).lexically_normal().string();
  return out;
}

namespace {

// One HF tensor of an export and where it comes from: a whole parameter, rows of one
// (q;k;v and gate;up are stacked in ours), or a transposed one (GPT-2's Conv1D).
struct HfSlice {
  std::string name;
  torch::Tensor param;  // our parameter, detached, on the CPU
  std::vector<int64_t> shape;  // HF shape
  bool transpose = false;
  bool whole = true;
  int64_t row = 0;
  // The tensor in HF layout and the parameter's dtype: a view, except for a transposed
  // weight (a fresh contiguous copy).
  torch::Tensor Materialize() const {
    if (transpose) return param.t().contiguous();
    return whole ? param : param.narrow(0, row, shape[0]);
  }
};

absl::StatusOr<std::vector<HfSlice>> HfExportPlan(const TransformerLM& model, const std::string& model_type) {
  RLHF_ASSIGN_OR_RETURN(const Family family, FamilyOf(model_type));
  const ModelConfig& c = model->config();
  if ((family == Family::kGpt2) != (c.arch == Architecture::kGpt2)) {
    return Bad(absl::StrCat("HF export: model_type \"", model_type, "\" does not match the model's arch"));
  }
  if (family == Family::kQwen2 && (!c.qkv_bias || c.out_bias || c.mlp_bias)) {
    return Bad("HF export: qwen2 needs q/k/v biases and no o_proj/mlp biases");
  }
  if (family == Family::kMistral && (c.qkv_bias || c.out_bias || c.mlp_bias)) {
    return Bad("HF export: mistral has no attention or MLP biases");
  }
  if (family == Family::kLlama && c.qkv_bias != c.out_bias) {
    return Bad("HF export: llama's attention_bias covers q/k/v and o_proj alike");
  }
  if (c.lm_head == c.scalar_head) {
    return Bad("HF export: the model must be a causal LM (lm_head) or a reward/value model "
               "(scalar_head), not both or neither");
  }
  const bool seq_cls = c.scalar_head;
  const std::string prefix = family == Family::kGpt2 ? "transformer." : "model.";
  const std::vector<MapEntry> plan = BuildPlan(c, family, prefix, seq_cls);
  auto params = model->named_parameters(/*recurse=*/true);
  std::vector<HfSlice> out;
  for (const MapEntry& m : plan) {
    const torch::Tensor* src = params.find(m.ours);
    if (src == nullptr) return absl::InternalError(absl::StrCat("HF export: no parameter ", m.ours));
    const torch::Tensor t = src->detach().to(torch::kCPU);
    int64_t row = 0;
    for (size_t p = 0; p < m.hf.size(); ++p) {
      HfSlice slice{m.hf[p], t, m.hf_shapes[p], m.transpose, m.hf.size() == 1, row};
      if (!slice.whole) row += m.hf_shapes[p][0];
      out.push_back(std::move(slice));
    }
  }
  if (seq_cls && c.scalar_head_bias) {
    const torch::Tensor* b = params.find("scalar_head.bias");
    if (b != nullptr && b->defined() && b->abs().max().item<float>() != 0.0f) {
      return Bad(absl::StrCat("HF export: the scalar head has a bias (", b->item<float>(),
                              "); HF's score layer has none, so the scores would change"));
    }
  }
  return out;
}

absl::Status WriteError(const std::string& path, const char* what, int err) {
  const std::string message = absl::StrCat(path, ": ", what, ": ", std::strerror(err));
  if (err == ENOSPC || err == EDQUOT) return absl::ResourceExhaustedError(message);
  return absl::UnavailableError(message);
}

absl::Status WriteAll(int fd, const char* data, size_t size, const std::string& path) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return WriteError(path, "write", errno);
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// Writes one safetensors shard without holding it in memory: the header first (every
// size follows from the HF shapes), then each tensor converted to `dtype` and written in
// turn. Like WriteFileAtomically: a temporary file in the same directory, fsync'ed and
// renamed over `path`, so a reader never sees a partial shard.
absl::Status WriteShardStreaming(const std::string& path, const std::vector<const HfSlice*>& slices,
                                 torch::ScalarType dtype) {
  const uint16_t one = 1;
  if (*reinterpret_cast<const uint8_t*>(&one) != 1) {
    return absl::UnimplementedError("safetensors: big-endian host");
  }
  const char* dtype_name = dtype == torch::kFloat16 ? "F16" : dtype == torch::kBFloat16 ? "BF16" : "F32";
  const uint64_t elem = c10::elementSize(dtype);
  nlohmann::json header = {{"__metadata__", {{"format", "pt"}}}};
  std::vector<uint64_t> sizes;
  uint64_t offset = 0;
  for (const HfSlice* s : slices) {
    uint64_t bytes = elem;
    for (int64_t d : s->shape) bytes *= static_cast<uint64_t>(d);
    header[s->name] = {{"dtype", dtype_name}, {"shape", s->shape}, {"data_offsets", {offset, offset + bytes}}};
    sizes.push_back(bytes);
    offset += bytes;
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // align the data section to 8 bytes
  std::string prefix(8, '\0');
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>((json.size() >> (8 * i)) & 0xff);
  prefix += json;

  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return WriteError(tmp, "open", errno);
  auto fail = [&](absl::Status status) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return status;
  };
  if (auto st = WriteAll(fd, prefix.data(), prefix.size(), tmp); !st.ok()) return fail(st);
  for (size_t i = 0; i < slices.size(); ++i) {
    // The only copy alive at a time: this tensor in HF layout and the export dtype
    // (none at all for an F32 export of an untransposed fp32 parameter).
    auto t = TorchCall([&] { return slices[i]->Materialize().to(dtype).contiguous(); }, "HF export");
    if (!t.ok()) return fail(t.status());
    const uint64_t bytes = static_cast<uint64_t>(t->numel()) * t->element_size();
    if (bytes != sizes[i]) {
      return fail(absl::InternalError(absl::StrCat("HF export: tensor \"", slices[i]->name, "\" has ",
                                                   bytes, " bytes, the header says ", sizes[i])));
    }
    if (auto st = WriteAll(fd, static_cast<const char*>(t->data_ptr()), bytes, tmp); !st.ok()) {
      return fail(st);
    }
  }
  if (::fsync(fd) != 0) return fail(WriteError(tmp, "fsync", errno));
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return WriteError(tmp, "close", err);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return WriteError(path, "rename", err);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<NamedTensors> ToHfTensors(const TransformerLM& model, const std::string& model_type) {
  RLHF_ASSIGN_OR_RETURN(std::vector<HfSlice> plan, HfExportPlan(model, model_type));
  NamedTensors out;
  RLHF_RETURN_IF_ERROR(TorchCall(
      [&] {
        for (const HfSlice& s : plan) out.emplace_back(s.name, s.Materialize());
      },
      "HF export"));
  return out;
}

absl::Status ExportHfDirectory(const TransformerLM& model, const nlohmann::json& metadata,
                               const std::string& out_dir, const HfExportOptions& options) {
  RLHF_ASSIGN_OR_RETURN(const torch::ScalarType dtype, ExportDtype(options.dtype));
  if (options.max_shard_bytes == 0) return Bad("HF export: max_shard_bytes must be > 0");
  const ModelConfig& c = model->config();
  nlohmann::json source =
      metadata.is_object() && metadata.contains("hf_config") && metadata["hf_config"].is_object()
          ? metadata["hf_config"]
          : nlohmann::json::object();
  if (source.empty() && !options.tokenizer_dir.empty()) {
    // A model trained from an HF start (our checkpoints do not carry its config): the
    // tokenizer directory's config.json supplies the original fields.
    auto text = ReadFileToString((fs::path(options.tokenizer_dir) / "config.json").string());
    if (text.ok()) {
      auto j = nlohmann::json::parse(*text, nullptr, false);
      if (IsHfConfigJson(j)) source = j;
    }
  }
  std::string model_type;
  if (source.contains("model_type") && source["model_type"].is_string()) {
    model_type = source["model_type"].get<std::string>();
  } else if (c.arch == Architecture::kGpt2) {
    model_type = "gpt2";
  } else {
    // A native LLaMA-style model: q/k/v biases alone are Qwen2's layout.
    model_type = c.qkv_bias && !c.out_bias && !c.mlp_bias ? "qwen2" : "llama";
  }
  RLHF_ASSIGN_OR_RETURN(const Family family, FamilyOf(model_type));
  RLHF_ASSIGN_OR_RETURN(const std::vector<HfSlice> slices, HfExportPlan(model, model_type));
  const bool seq_cls = c.scalar_head;

  // config.json: the source's fields, then ours over them.
  nlohmann::json cfg = source;
  cfg["model_type"] = model_type;
  cfg["architectures"] = nlohmann::json::array({ArchitectureName(family, seq_cls)});
  cfg["torch_dtype"] = TorchDtypeName(dtype);
  cfg["vocab_size"] = c.vocab_size;
  cfg["tie_word_embeddings"] = c.tie_embeddings;
  if (family == Family::kGpt2) {
    cfg["n_positions"] = c.max_seq_len;
    if (!cfg.contains("n_ctx")) cfg["n_ctx"] = c.max_seq_len;
    cfg["n_embd"] = c.d_model;
    cfg["n_layer"] = c.n_layers;
    cfg["n_head"] = c.n_heads;
    cfg["n_inner"] = c.d_ff;
    if (!cfg.contains("activation_function")) cfg["activation_function"] = "gelu_new";
    cfg["layer_norm_epsilon"] = c.norm_eps;
  } else {
    cfg["hidden_size"] = c.d_model;
    cfg["intermediate_size"] = c.d_ff;
    cfg["num_hidden_layers"] = c.n_layers;
    cfg["num_attention_heads"] = c.n_heads;
    cfg["num_key_value_heads"] = c.n_kv_heads;
    cfg["head_dim"] = c.head_dim();
    cfg["hidden_act"] = "silu";
    // An imported sliding-window model had max_seq_len capped at the window: keep the
    // source's max_position_embeddings so the exported model is the same model.
    if (!source.contains("max_position_embeddings")) cfg["max_position_embeddings"] = c.max_seq_len;
    cfg["rms_norm_eps"] = c.norm_eps;
    if (cfg.contains("rope_parameters") && cfg["rope_parameters"].is_object()) {
      cfg["rope_parameters"]["rope_theta"] = c.rope_theta;
    } else {
      cfg["rope_theta"] = c.rope_theta;
    }
    if (family == Family::kLlama) {
      cfg["attention_bias"] = c.qkv_bias;
      cfg["mlp_bias"] = c.mlp_bias;
    }
  }
  const bool byte_vocab = c.vocab_size == ByteTokenizer::kVocabSize && !source.contains("bos_token_id");
  if (byte_vocab) {
    cfg["bos_token_id"] = ByteTokenizer::kBos;
    cfg["eos_token_id"] = ByteTokenizer::kEos;
    cfg["pad_token_id"] = ByteTokenizer::kPad;
  }
  if (seq_cls) {
    cfg["id2label"] = {{"0", "LABEL_0"}};
    cfg["label2id"] = {{"LABEL_0", 0}};
    cfg.erase("num_labels");
  } else {
    cfg.erase("id2label");
    cfg.erase("label2id");
    cfg.erase("num_labels");
  }
  nlohmann::json ours = nlohmann::json::object();
  if (metadata.is_object()) {
    for (auto it = metadata.begin(); it != metadata.end(); ++it) {
      if (it.key() != "hf_config" && it.key() != "hf_dir") ours[it.key()] = it.value();
    }
  }
  cfg["rlhf_metadata"] = ours;

  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(out_dir, ": create_directories: ", ec.message()));
  // A previous export's weights (other shard count) must not linger next to ours.
  for (const auto& entry : fs::directory_iterator(out_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (StartsWith(name, "model") && (EndsWith(name, ".safetensors") || name == "model.safetensors.index.json")) {
      fs::remove(entry.path(), ec);
    }
  }
  fs::remove(fs::path(out_dir) / "config.json", ec);

  // Group tensors into shards by size, in order; each shard is then streamed to disk.
  std::vector<std::vector<const HfSlice*>> shards(1);
  uint64_t in_shard = 0, total = 0;
  const uint64_t elem = c10::elementSize(dtype);
  for (const HfSlice& s : slices) {
    uint64_t bytes = elem;
    for (int64_t d : s.shape) bytes *= static_cast<uint64_t>(d);
    if (in_shard > 0 && in_shard + bytes > options.max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(&s);
    in_shard += bytes;
    total += bytes;
  }
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file = shards.size() == 1
                                 ? "model.safetensors"
                                 : absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, shards.size());
    for (const HfSlice* slice : shards[s]) weight_map[slice->name] = file;
    RLHF_RETURN_IF_ERROR(WriteShardStreaming((fs::path(out_dir) / file).string(), shards[s], dtype));
  }
  if (shards.size() > 1) {
    nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    RLHF_RETURN_IF_ERROR(WriteFileAtomically(
        (fs::path(out_dir) / "model.safetensors.index.json").string(), index.dump(2) + "\n"));
  }

  // Tokenizer files and generation_config.json, unchanged.
  std::string tok_dir = options.tokenizer_dir;
  if (tok_dir.empty() && metadata.is_object() && metadata.contains("hf_dir") && metadata["hf_dir"].is_string()) {
    tok_dir = metadata["hf_dir"].get<std::string>();
  }
  bool have_generation_config = false;
  if (!tok_dir.empty() && fs::weakly_canonical(tok_dir, ec) != fs::weakly_canonical(out_dir, ec)) {
    std::vector<std::string> names(std::begin(kTokenizerFiles), std::end(kTokenizerFiles));
    names.push_back("generation_config.json");
    for (const std::string& name : names) {
      const fs::path from = fs::path(tok_dir) / name;
      if (!fs::exists(from, ec)) continue;
      fs::copy_file(from, fs::path(out_dir) / name, fs::copy_options::overwrite_existing, ec);
      if (ec) return absl::InternalError(absl::StrCat("copying ", from.string(), ": ", ec.message()));
      if (name == "generation_config.json") have_generation_config = true;
    }
  } else if (fs::exists(fs::path(out_dir) / "generation_config.json", ec)) {
    have_generation_config = true;
  }
  if (!have_generation_config) {
    nlohmann::json gen = {{"_from_model_config", true}};
    for (const char* key : {"bos_token_id", "eos_token_id", "pad_token_id"}) {
      if (cfg.contains(key) && !cfg[key].is_null()) gen[key] = cfg[key];
    }
    RLHF_RETURN_IF_ERROR(WriteFileAtomically((fs::path(out_dir) / "generation_config.json").string(),
                                             gen.dump(2) + "\n"));
  }
  // config.json last: a directory with a config.json has complete weights.
  return WriteFileAtomically((fs::path(out_dir) / "config.json").string(), cfg.dump(2) + "\n");
}

}  // namespace rlhf
