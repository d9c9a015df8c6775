#include "core/tokenizer/tokenizer.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

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
  if (name == "bpe") {
    return absl::UnimplementedError("tokenizer type \"bpe\" is not implemented yet");
  }
  return absl::InvalidArgumentError(
      absl::StrCat("tokenizer type: unknown \"", name, "\" (known: \"byte\")"));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> MakeTokenizer(const nlohmann::json& spec) {
  if (spec.is_string()) return MakeTokenizerByName(spec.get<std::string>());
  if (!spec.is_object()) {
    return absl::InvalidArgumentError("tokenizer spec must be a string or an object");
  }
  auto it = spec.find("type");
  if (it == spec.end() || !it->is_string()) {
    return absl::InvalidArgumentError("tokenizer spec: field \"type\" (string) is required");
  }
  const std::string type = it->get<std::string>();
  for (auto field = spec.begin(); field != spec.end(); ++field) {
    if (field.key() != "type" && type == "byte") {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer spec: unknown field \"", field.key(), "\" for type byte"));
    }
  }
  return MakeTokenizerByName(type);
}

}  // namespace rlhf
