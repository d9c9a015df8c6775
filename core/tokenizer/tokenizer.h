// Tokenizers: text <-> token ids.
//
// `Tokenizer` is the interface every component codes against; `ByteTokenizer` is the
// built-in one (the tiny model's vocabulary). The factory takes a JSON spec so that a
// BPE implementation reading a HuggingFace `tokenizer.json` can be added behind the same
// interface without touching callers:
//
//   {"type": "byte"}                                  -> ByteTokenizer
//   {"type": "bpe", "path": ".../tokenizer.json"}     -> (future) BPE tokenizer
//
// Thread-safety: implementations are immutable after construction; all methods are
// const and safe to call concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rlhf {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Text -> ids. Adds NO special tokens (callers add bos_id()/eos_id() where their
  // format wants them). Never fails: every byte string is encodable.
  virtual std::vector<int32_t> Encode(absl::string_view text) const = 0;
  // Ids -> text. Special tokens (BOS/EOS/PAD) and ids outside [0, vocab_size()) are
  // skipped, so decoding a generated response that ends in EOS gives just the text.
  virtual std::string Decode(const std::vector<int32_t>& ids) const = 0;

  virtual int64_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
  virtual int32_t pad_id() const = 0;
  // Stable name recorded in checkpoints ("byte").
  virtual std::string name() const = 0;
  // The spec that MakeTokenizer() turns back into an equivalent tokenizer.
  virtual nlohmann::json Spec() const = 0;

  bool IsSpecial(int32_t id) const { return id == bos_id() || id == eos_id() || id == pad_id(); }
};

// Bytes 0..255 are ids 0..255; BOS = 256, EOS = 257, PAD = 258; vocabulary 259.
// Encode is a plain byte copy (UTF-8 or not); Decode drops ids >= 256 and < 0.
class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kBos = 256;
  static constexpr int32_t kEos = 257;
  static constexpr int32_t kPad = 258;
  static constexpr int64_t kVocabSize = 259;

  std::vector<int32_t> Encode(absl::string_view text) const override;
  std::string Decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override { return kVocabSize; }
  int32_t bos_id() const override { return kBos; }
  int32_t eos_id() const override { return kEos; }
  int32_t pad_id() const override { return kPad; }
  std::string name() const override { return "byte"; }
  nlohmann::json Spec() const override { return {{"type", "byte"}}; }
};

// Builds a tokenizer from its spec: an object {"type": "byte"} or a bare string "byte".
// Unknown types (and "bpe", not implemented yet) are InvalidArgument naming the field.
absl::StatusOr<std::unique_ptr<Tokenizer>> MakeTokenizer(const nlohmann::json& spec);
// Same, by name ("byte").
absl::StatusOr<std::unique_ptr<Tokenizer>> MakeTokenizerByName(absl::string_view name);

}  // namespace rlhf
