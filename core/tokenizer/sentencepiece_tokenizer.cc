#include "core/tokenizer/sentencepiece_tokenizer.h"

#include <fstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/tokenizer/sentencepiece_backend.h"

namespace rlhf {

SentencePieceTokenizer::SentencePieceTokenizer(std::unique_ptr<spm::Processor> sp,
                                               nlohmann::json spec)
    : sp_(std::move(sp)), spec_(std::move(spec)) {}
SentencePieceTokenizer::~SentencePieceTokenizer() = default;

absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> SentencePieceTokenizer::Load(
    const std::string& path, nlohmann::json spec) {
  if (!std::ifstream(path).good()) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::string error;
  auto sp = spm::Processor::Load(path, &error);
  if (sp == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a SentencePiece model: ", error));
  }
  return std::unique_ptr<SentencePieceTokenizer>(
      new SentencePieceTokenizer(std::move(sp), std::move(spec)));
}

std::vector<int32_t> SentencePieceTokenizer::Encode(absl::string_view text) const {
  std::vector<int> ids = sp_->Encode(std::string_view(text.data(), text.size()));
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::string SentencePieceTokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::vector<int> keep;
  keep.reserve(ids.size());
  for (int32_t id : ids)
    if (id >= 0 && id < vocab_size() && !IsSpecial(id)) keep.push_back(id);
  return sp_->Decode(keep);
}

std::string SentencePieceTokenizer::DecodeWithSpecial(const std::vector<int32_t>& ids) const {
  std::vector<int> keep;
  for (int32_t id : ids)
    if (id >= 0 && id < vocab_size()) keep.push_back(id);
  return sp_->Decode(keep);
}

int64_t SentencePieceTokenizer::vocab_size() const { return sp_->vocab_size(); }
int32_t SentencePieceTokenizer::bos_id() const { return sp_->bos_id(); }
int32_t SentencePieceTokenizer::eos_id() const { return sp_->eos_id(); }
int32_t SentencePieceTokenizer::pad_id() const {
  return sp_->pad_id() >= 0 ? sp_->pad_id() : sp_->eos_id();
}
bool SentencePieceTokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < vocab_size() && (sp_->IsControl(id) || id == pad_id());
}

}  // namespace rlhf
