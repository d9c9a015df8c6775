// Tokenizers: text <-> token ids.
//
// `Tokenizer` is the interface every component codes against; `ByteTokenizer` is the
// built-in one (the tiny model's vocabulary). Real models carry their own tokenizer in
// their directory (core/tokenizer/model_dir.h: LoadTokenizerFromModelDir). The factory
// takes the JSON spec that checkpoints record (Tokenizer::Spec()):
//
//   {"type": "byte"}                               -> ByteTokenizer
//   {"type": "hf", "dir": DIR}                     -> tokenizer.json in DIR (bpe_tokenizer.h)
//   {"type": "gpt2", "dir": DIR}                   -> vocab.json/encoder.json + merges.txt/vocab.bpe
//   {"type": "sentencepiece", "dir": DIR}          -> tokenizer.model (sentencepiece_tokenizer.h)
//   {"type": "model_dir", "dir": DIR}              -> whichever of the above DIR holds
//
// A relative "dir" is resolved against the `base_dir` given to MakeTokenizer (e.g. the
// checkpoint directory that recorded the spec).
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
  // Ids -> text. Special tokens (IsSpecial) and ids outside [0, vocab_size()) are
  // skipped, so decoding a generated response that ends in EOS gives just the text.
  // Byte-level vocabularies give the exact bytes back, also when a UTF-8 character is
  // split across tokens (no replacement characters).
  virtual std::string Decode(const std::vector<int32_t>& ids) const = 0;
  // Same, but special tokens are rendered as their text ("<|im_end|>"), as HF's
  // decode(skip_special_tokens=False); ids outside the vocabulary are still skipped.
  virtual std::string DecodeWithSpecial(const std::vector<int32_t>& ids) const {
    return Decode(ids);
  }

  virtual int64_t vocab_size() const = 0;
  // -1 when the model has no such token (e.g. Qwen has no BOS). A model without a pad
  // token pads with EOS (pad_id() == eos_id()), as HF users do.
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
  virtual int32_t pad_id() const = 0;
  // Stable name recorded in checkpoints ("byte", "hf", "gpt2", "sentencepiece").
  virtual std::string name() const = 0;
  // The spec that MakeTokenizer() turns back into an equivalent tokenizer.
  virtual nlohmann::json Spec() const = 0;

  // BOS/EOS/PAD, and for HF tokenizers every added token marked "special".
  virtual bool IsSpecial(int32_t id) const {
    return id >= 0 && (id == bos_id() || id == eos_id() || id == pad_id());
  }
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

// Builds a tokenizer from its spec (table above), or a bare string "byte". Unknown types
// and fields are InvalidArgument naming the field; missing or malformed files are errors
// naming the file and field. Relative "dir"s are resolved against `base_dir`.
absl::StatusOr<std::unique_ptr<Tokenizer>> MakeTokenizer(const nlohmann::json& spec,
                                                         const std::string& base_dir = "");
// By name: "byte", or a path (containing '/') to a model or checkpoint directory, whose
// tokenizer LoadTokenizerForModel (model_dir.h) loads. Other types need a spec with "dir".
absl::StatusOr<std::unique_ptr<Tokenizer>> MakeTokenizerByName(absl::string_view name);

}  // namespace rlhf
