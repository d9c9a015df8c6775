// Byte-pair-encoding tokenizers, exact to the id against HuggingFace `tokenizers`
// (and transformers.js, the oracle our tests compare with).
//
// One implementation reads both formats:
//  - HF `tokenizer.json` with model.type "BPE": byte-level BPE (GPT-2, Llama-3, Qwen2/3,
//    Mistral-Nemo...) and SentencePiece-style BPE (Llama-2: `▁` for spaces,
//    byte_fallback <0xXX> tokens).
//  - GPT-2's original files: `encoder.json`/`vocab.json` + `vocab.bpe`/`merges.txt`
//    (byte-level BPE with GPT-2's pre-tokenizer regex, `<|endoftext|>` special).
//
// Pipeline of Encode(text), as HF runs it:
//  1. added tokens (special or not) are matched first, leftmost-longest, and become
//     their ids unchanged (`lstrip`/`rstrip` trim the neighbouring whitespace);
//  2. each other section is normalized (NFC/NFD/NFKC/NFKD via ICU, Lowercase, Prepend,
//     Replace, Strip, Sequence);
//  3. pre-tokenized (Split with the file's regex run as written by PCRE2, which has the
//     lookahead and \p{L}/\p{N} classes these regexes need; ByteLevel; Metaspace; Digits;
//     Whitespace/WhitespaceSplit; Sequence);
//  4. each word is merged by rank (lowest rank first, leftmost on ties); `ignore_merges`
//     (Llama-3) takes a word that is itself in the vocabulary whole; pieces missing from
//     the vocabulary become <0xXX> byte tokens (`byte_fallback`) or unk.
// Results per word are kept in a bounded, sharded, mutex-guarded cache.
//
// Byte-level models keep their vocabulary as raw bytes internally (the GPT-2 byte <->
// unicode alphabet is undone at load), so decoding gives back the exact input bytes,
// also when a UTF-8 character is split across tokens, and text that is not valid UTF-8
// still round-trips (PCRE2 treats invalid sequences as unmatched gaps, normalizers leave
// such text alone).
//
// Thread-safety: immutable after construction except the internal word cache, which is
// synchronized; every method is safe to call concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/tokenizer/tokenizer.h"

namespace rlhf {

// BOS/EOS/PAD/UNK token *strings* (from tokenizer_config.json / special_tokens_map.json);
// empty = the model has none.
struct SpecialTokenNames {
  std::string bos;
  std::string eos;
  std::string pad;
  std::string unk;
};

class BpeTokenizer final : public Tokenizer {
 public:
  // `tokenizer_json`: the parsed file; `file` names it in errors. `names` resolves
  // BOS/EOS/PAD (an empty pad means pad with EOS). `spec` is what Spec() returns.
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> FromHfJson(
      const nlohmann::json& tokenizer_json, const std::string& file,
      const SpecialTokenNames& names, nlohmann::json spec);
  // Reads and parses `path` first.
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> FromHfJsonFile(
      const std::string& path, const SpecialTokenNames& names, nlohmann::json spec);
  // GPT-2's files: `vocab_path` (encoder.json / vocab.json: token -> id) and
  // `merges_path` (vocab.bpe / merges.txt: "#version" line, then "a b" per line).
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> FromGpt2Files(
      const std::string& vocab_path, const std::string& merges_path,
      const SpecialTokenNames& names, nlohmann::json spec);

  ~BpeTokenizer() override;

  std::vector<int32_t> Encode(absl::string_view text) const override;
  std::string Decode(const std::vector<int32_t>& ids) const override;
  std::string DecodeWithSpecial(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override;
  int32_t bos_id() const override;
  int32_t eos_id() const override;
  int32_t pad_id() const override;
  std::string name() const override;
  nlohmann::json Spec() const override;
  bool IsSpecial(int32_t id) const override;

  // The id of a token string as written in the vocabulary file (byte-level tokens in
  // their "Ġ" alphabet) or an added token's content; -1 when absent.
  int32_t TokenToId(absl::string_view token) const;

  struct Impl;

 private:
  explicit BpeTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace rlhf
