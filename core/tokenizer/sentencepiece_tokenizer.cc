#include "core/tokenizer/sentencepiece_tokenizer.h"

#include "core/tokenizer/sentencepiece_model.h"

namespace rlhf {

SentencePieceTokenizer::SentencePieceTokenizer(std::unique_ptr<spm::Model> model,
                                               nlohmann::json spec)
    : model_(std::move(model)), spec_(std::move(spec)) {}
SentencePieceTokenizer::~SentencePieceTokenizer() = default;

absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> SentencePieceTokenizer::Load(
    const std::string& path, nlohmann::json spec) {
  auto model = spm::Model::Load(path);
  if (!model.ok()) return model.status();
  return std::unique_ptr<SentencePieceTokenizer>(
      new SentencePieceTokenizer(*std::move(model), std::move(spec)));
}

std::vector<int32_t> SentencePieceTokenizer::Encode(absl::string_view text) const {
  return model_->Encode(text);
}

// Special ids are all CONTROL pieces (pad is one, or EOS), which the model decodes to
// "" exactly where spm_decode does (a control piece between byte pieces splits their run).
std::string SentencePieceTokenizer::Decode(const std::vector<int32_t>& ids) const {
  return model_->Decode(ids);
}

std::string SentencePieceTokenizer::DecodeWithSpecial(const std::vector<int32_t>& ids) const {
  return model_->Decode(ids, /*render_control=*/true);
}

int64_t SentencePieceTokenizer::vocab_size() const { return model_->size(); }
int32_t SentencePieceTokenizer::bos_id() const { return model_->bos_id(); }
int32_t SentencePieceTokenizer::eos_id() const { return model_->eos_id(); }
int32_t SentencePieceTokenizer::pad_id() const {
  return model_->pad_id() >= 0 ? model_->pad_id() : model_->eos_id();
}
bool SentencePieceTokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < vocab_size() &&
         (model_->type(id) == spm::PieceType::kControl || id == pad_id());
}

}  // namespace rlhf
