#include "core/tokenizer/model_dir.h"

#include <sys/stat.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/tokenizer/sentencepiece_tokenizer.h"
#include "core/tokenizer/text_util.h"

namespace rlhf {
namespace {

bool FileExists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string Join(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

// A token value: "text", {"content": "text", ...} or null.
absl::Status ReadTokenField(const nlohmann::json& j, const std::string& file,
                            const std::string& key, std::string* out, bool* seen) {
  auto it = j.find(key);
  if (it == j.end()) return absl::OkStatus();
  *seen = true;
  if (it->is_null()) {
    out->clear();
    return absl::OkStatus();
  }
  if (it->is_string()) {
    *out = it->get<std::string>();
    return absl::OkStatus();
  }
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    *out = (*it)["content"].get<std::string>();
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      file, ": field \"", key, "\" must be a string, {\"content\": string} or null"));
}

}  // namespace

absl::StatusOr<SpecialTokenNames> ReadSpecialTokenNames(const std::string& dir,
                                                        bool* found_config) {
  SpecialTokenNames names;
  bool seen_bos = false, seen_eos = false, seen_pad = false, seen_unk = false;
  *found_config = false;
  for (const char* base : {"tokenizer_config.json", "special_tokens_map.json"}) {
    const std::string path = Join(dir, base);
    if (!FileExists(path)) continue;
    *found_config = true;
    auto j = ReadJsonFile(path);
    if (!j.ok()) return j.status();
    if (!j->is_object()) return absl::InvalidArgumentError(path + ": must be a JSON object");
    // The first file that names a token wins (tokenizer_config.json is newer).
    struct Field {
      const char* key;
      std::string* out;
      bool* seen;
    };
    for (Field f : {Field{"bos_token", &names.bos, &seen_bos}, Field{"eos_token", &names.eos, &seen_eos},
                    Field{"pad_token", &names.pad, &seen_pad}, Field{"unk_token", &names.unk, &seen_unk}}) {
      if (*f.seen) continue;
      absl::Status s = ReadTokenField(*j, path, f.key, f.out, f.seen);
      if (!s.ok()) return s;
    }
  }
  return names;
}

std::vector<std::string> TokenizerFilesInDir(const std::string& dir) {
  std::vector<std::string> files;
  for (const char* base : {"tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt",
                           "encoder.json", "vocab.bpe", "tokenizer_config.json",
                           "special_tokens_map.json"}) {
    if (FileExists(Join(dir, base))) files.push_back(base);
  }
  return files;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerFromModelDir(const std::string& dir) {
  struct stat st;
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::NotFoundError(absl::StrCat("tokenizer: model directory \"", dir, "\" does not exist"));
  }
  bool found_config = false;
  auto names = ReadSpecialTokenNames(dir, &found_config);
  if (!names.ok()) return names.status();

  if (FileExists(Join(dir, "tokenizer.json"))) {
    const std::string path = Join(dir, "tokenizer.json");
    auto j = ReadJsonFile(path);
    if (!j.ok()) return j.status();
    SpecialTokenNames n = *names;
    if (!found_config && j->is_object()) {
      // No config: the usual names, if the file has them as added tokens.
      std::vector<std::string> added;
      if (j->contains("added_tokens") && (*j)["added_tokens"].is_array()) {
        for (const auto& a : (*j)["added_tokens"])
          if (a.is_object() && a.contains("content") && a["content"].is_string())
            added.push_back(a["content"].get<std::string>());
      }
      auto first_of = [&](std::initializer_list<const char*> candidates) {
        for (const char* c : candidates)
          for (const std::string& a : added)
            if (a == c) return a;
        return std::string();
      };
      n.bos = first_of({"<s>", "<|begin_of_text|>", "<bos>"});
      n.eos = first_of({"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"});
    }
    auto tok = BpeTokenizer::FromHfJson(*j, path, n, {{"type", "hf"}, {"dir", dir}});
    if (!tok.ok()) return tok.status();
    return std::unique_ptr<Tokenizer>(std::move(*tok));
  }
  if (FileExists(Join(dir, "tokenizer.model"))) {
    auto tok = SentencePieceTokenizer::Load(Join(dir, "tokenizer.model"),
                                            {{"type", "sentencepiece"}, {"dir", dir}});
    if (!tok.ok()) return tok.status();
    return std::unique_ptr<Tokenizer>(std::move(*tok));
  }
  for (auto [vocab, merges] : {std::make_pair("vocab.json", "merges.txt"),
                               std::make_pair("encoder.json", "vocab.bpe")}) {
    const bool has_vocab = FileExists(Join(dir, vocab));
    const bool has_merges = FileExists(Join(dir, merges));
    if (has_vocab != has_merges) {
      return absl::NotFoundError(absl::StrCat("tokenizer: ", dir, " has ",
                                              has_vocab ? vocab : merges, " but not ",
                                              has_vocab ? merges : vocab));
    }
    if (!has_vocab) continue;
    auto tok = BpeTokenizer::FromGpt2Files(Join(dir, vocab), Join(dir, merges), *names,
                                           {{"type", "gpt2"}, {"dir", dir}});
    if (!tok.ok()) return tok.status();
    return std::unique_ptr<Tokenizer>(std::move(*tok));
  }
  return absl::NotFoundError(absl::StrCat(
      "tokenizer: no tokenizer files in \"", dir,
      "\" (looked for tokenizer.json, tokenizer.model, vocab.json + merges.txt, "
      "encoder.json + vocab.bpe)"));
}

}  // namespace rlhf
