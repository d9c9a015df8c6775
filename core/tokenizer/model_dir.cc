#include "core/tokenizer/model_dir.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

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

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerForModel(const std::string& dir) {
  const std::string config_path = Join(dir, "config.json");
  if (FileExists(config_path)) {
    auto config = ReadJsonFile(config_path);
    if (!config.ok()) return config.status();
    if (config->is_object() && config->contains("metadata") && (*config)["metadata"].is_object() &&
        (*config)["metadata"].contains("tokenizer")) {
      auto tok = MakeTokenizer((*config)["metadata"]["tokenizer"], dir);
      if (!tok.ok()) {
        return absl::Status(tok.status().code(),
                            absl::StrCat(config_path, ": field \"metadata.tokenizer\": ",
                                         tok.status().message()));
      }
      return tok;
    }
  }
  if (!TokenizerFilesInDir(dir).empty()) return LoadTokenizerFromModelDir(dir);
  return MakeTokenizerByName("byte");
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerForModel(const std::string& dir,
                                                                 int64_t model_vocab_size) {
  auto tok = LoadTokenizerForModel(dir);
  if (!tok.ok()) return tok.status();
  if ((*tok)->vocab_size() > model_vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the tokenizer of ", dir, " (", (*tok)->name(), ") has ", (*tok)->vocab_size(),
        " ids but the model's vocabulary has ", model_vocab_size));
  }
  return tok;
}

absl::StatusOr<nlohmann::json> SaveTokenizerFiles(const Tokenizer& tok,
                                                  const std::string& dest_dir) {
  nlohmann::json spec = tok.Spec();
  if (!spec.is_object() || !spec.contains("dir") || !spec["dir"].is_string()) return spec;
  const std::string src = spec["dir"].get<std::string>();
  mkdir(dest_dir.c_str(), 0755);
  struct stat a, b;
  const bool same = stat(src.c_str(), &a) == 0 && stat(dest_dir.c_str(), &b) == 0 &&
                    a.st_dev == b.st_dev && a.st_ino == b.st_ino;
  if (!same) {
    for (const std::string& base : TokenizerFilesInDir(src)) {
      auto bytes = ReadFileToString(Join(src, base));
      if (!bytes.ok()) return bytes.status();
      const std::string dest = Join(dest_dir, base);
      const std::string tmp = dest + ".tmp." + std::to_string(getpid());
      {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out << *bytes;
        out.flush();
        if (!out) return absl::InternalError(absl::StrCat(tmp, ": write failed"));
      }
      if (std::rename(tmp.c_str(), dest.c_str()) != 0) {
        return absl::InternalError(absl::StrCat(dest, ": rename failed"));
      }
    }
  }
  spec["dir"] = ".";
  return spec;
}

}  // namespace rlhf
