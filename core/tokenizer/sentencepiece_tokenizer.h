// SentencePiece `tokenizer.model` files (Llama-1/2, T5, Gemma...) through Debian's
// libsentencepiece: ids are exactly what `spm_encode --output_format=id` gives.
// BOS/EOS/PAD come from the model's trainer spec; no pad => pad with EOS.
// Thread-safety: immutable after construction; all methods are safe concurrently.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/tokenizer/tokenizer.h"

namespace rlhf {
namespace spm {
class Processor;
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // `path`: the .model file; `spec` is what Spec() returns.
  static absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> Load(const std::string& path,
                                                                      nlohmann::json spec);
  ~SentencePieceTokenizer() override;

  std::vector<int32_t> Encode(absl::string_view text) const override;
  std::string Decode(const std::vector<int32_t>& ids) const override;
  std::string DecodeWithSpecial(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override;
  int32_t bos_id() const override;
  int32_t eos_id() const override;
  int32_t pad_id() const override;
  std::string name() const override { return "sentencepiece"; }
  nlohmann::json Spec() const override { return spec_; }
  bool IsSpecial(int32_t id) const override;

 private:
  SentencePieceTokenizer(std::unique_ptr<spm::Processor> sp, nlohmann::json spec);
  std::unique_ptr<spm::Processor> sp_;
  nlohmann::json spec_;
};

}  // namespace rlhf
