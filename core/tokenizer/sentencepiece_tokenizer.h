// SentencePiece `tokenizer.model` files (Llama-1/2, T5, Gemma, ...) run by our own reader
// and encoder (sentencepiece_model.h; no libsentencepiece): ids are exactly what
// SentencePiece 0.1.97's `spm_encode --output_format=id` gives, text what `spm_decode`
// gives. UNIGRAM, BPE, WORD and CHAR models; the model's normalization rules
// (precompiled charsmap, e.g. nmt_nfkc), user-defined symbols and byte fallback.
// BOS/EOS/PAD are the trainer spec's pieces when they are CONTROL pieces (-1 otherwise);
// no pad => pad with EOS.
// Thread-safety: immutable after construction; all methods are safe concurrently.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/tokenizer/tokenizer.h"

namespace rlhf {
namespace spm {
class Model;
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // `path`: the .model file; `spec` is what Spec() returns. A missing file is NotFound,
  // a malformed one InvalidArgument naming the file and the field or byte offset.
  static absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> Load(const std::string& path,
                                                                      nlohmann::json spec);
  ~SentencePieceTokenizer() override;

  std::vector<int32_t> Encode(absl::string_view text) const override;
  // As spm_decode: CONTROL pieces (all the special ids) decode to "".
  std::string Decode(const std::vector<int32_t>& ids) const override;
  // CONTROL pieces (<s>, </s>, ...) are written as their piece text.
  std::string DecodeWithSpecial(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override;
  int32_t bos_id() const override;
  int32_t eos_id() const override;
  int32_t pad_id() const override;
  std::string name() const override { return "sentencepiece"; }
  nlohmann::json Spec() const override { return spec_; }
  // CONTROL pieces and the pad id.
  bool IsSpecial(int32_t id) const override;

  const spm::Model& model() const { return *model_; }

 private:
  SentencePieceTokenizer(std::unique_ptr<spm::Model> model, nlohmann::json spec);
  std::unique_ptr<spm::Model> model_;
  nlohmann::json spec_;
};

}  // namespace rlhf
