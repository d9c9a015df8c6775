#include "core/tokenizer/sentencepiece_backend.h"

#include <sentencepiece_processor.h>

namespace rlhf::spm {

struct Processor::State {
  sentencepiece::SentencePieceProcessor sp;
};

Processor::Processor(std::unique_ptr<State> state) : state_(std::move(state)) {}
Processor::~Processor() = default;

std::unique_ptr<Processor> Processor::Load(const std::string& path, std::string* error) {
  auto state = std::make_unique<State>();
  auto status = state->sp.Load(path);
  if (!status.ok()) {
    *error = status.ToString();
    return nullptr;
  }
  return std::unique_ptr<Processor>(new Processor(std::move(state)));
}

std::vector<int> Processor::Encode(std::string_view text) const {
  std::vector<int> ids;
  // Encode only fails for an unloaded model, which Load() rules out.
  (void)state_->sp.Encode(text, &ids);
  return ids;
}

std::string Processor::Decode(const std::vector<int>& ids) const {
  std::string text;
  (void)state_->sp.Decode(ids, &text);
  return text;
}

int Processor::vocab_size() const { return state_->sp.GetPieceSize(); }
int Processor::bos_id() const { return state_->sp.bos_id(); }
int Processor::eos_id() const { return state_->sp.eos_id(); }
int Processor::pad_id() const { return state_->sp.pad_id(); }
int Processor::unk_id() const { return state_->sp.unk_id(); }
bool Processor::IsControl(int id) const { return state_->sp.IsControl(id); }

}  // namespace rlhf::spm
