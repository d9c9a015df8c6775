#include "core/tokenizer/tokenizer.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/tokenizer/model_dir.h"

namespace rlhf {

std::vector<int32_t> ByteTokenizer::Encode(absl::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (char c : text) ids.push_back(static_cast<int32_t>(static_cast<unsigned char>(c)));
  return ids;
}

std::string ByteTokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::string text;
  text.reserve(ids.size());
  for (int32_t id : ids) {
    if (id >= 0 && id < 256) text.push_back(static_cast<char>(id));
  }
  return text;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> MakeTokenizerByName(absl::string_view name) {
  if (name == "byte") return std::unique_ptr<Tokenizer>(new ByteTokenizer());
  // A path: the tokenizer that model or checkpoint directory carries.
  if (name.find('/') != absl::string_view::npos) return LoadTokenizerForModel(std::string(name));
  if (name == "hf" || name == "gpt2" || name == "sentencepiece" || name == "model_dir" ||
      name == "bpe") {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer type \"", name, "\" needs its files: use the spec {\"type\": \"", name,
        "\", \"dir\": MODEL_DIR} or a model directory"));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "tokenizer type: unknown \"", name,
      "\" (known: \"byte\", \"hf\", \"gpt2\", \"sentencepiece\", \"model_dir\")"));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> MakeTokenizer(const nlohmann::json& spec,
                                                         const std::string& base_dir) {
  if (spec.is_string()) return MakeTokenizerByName(spec.get<std::string>());
  if (!spec.is_object()) {
    return absl::InvalidArgumentError("tokenizer spec must be a string or an object");
  }
  auto it = spec.find("type");
  if (it == spec.end() || !it->is_string()) {
    return absl::InvalidArgumentError("tokenizer spec: field \"type\" (string) is required");
  }
  const std::string type = it->get<std::string>();
  if (type == "byte") {
    for (auto field = spec.begin(); field != spec.end(); ++field) {
      if (field.key() != "type") {
        return absl::InvalidArgumentError(
            absl::StrCat("tokenizer spec: unknown field \"", field.key(), "\" for type byte"));
      }
    }
    return MakeTokenizerByName(type);
  }
  if (type != "hf" && type != "gpt2" && type != "sentencepiece" && type != "model_dir") {
    return MakeTokenizerByName(type);
  }
  for (auto field = spec.begin(); field != spec.end(); ++field) {
    if (field.key() != "type" && field.key() != "dir") {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer spec: unknown field \"",
                                                     field.key(), "\" for type ", type));
    }
  }
  auto dir_it = spec.find("dir");
  if (dir_it == spec.end() || !dir_it->is_string() || dir_it->get<std::string>().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer spec: field \"dir\" (string) is required for type ", type));
  }
  std::string dir = dir_it->get<std::string>();
  if (dir[0] != '/' && !base_dir.empty()) dir = base_dir + "/" + dir;
  auto tok = LoadTokenizerFromModelDir(dir);
  if (!tok.ok()) return tok.status();
  if (type != "model_dir" && (*tok)->name() != type) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer spec: type \"", type, "\" but ",
                                                   dir, " holds a \"", (*tok)->name(),
                                                   "\" tokenizer"));
  }
  return tok;
}

}  // namespace rlhf
