// The SentencePiece backend when the build has no libsentencepiece (the default; see
// core/tokenizer/CMakeLists.txt): loading a tokenizer.model is a clear error.
#include "core/tokenizer/sentencepiece_backend.h"

namespace rlhf::spm {

struct Processor::State {};

Processor::Processor(std::unique_ptr<State> state) : state_(std::move(state)) {}
Processor::~Processor() = default;

std::unique_ptr<Processor> Processor::Load(const std::string& path, std::string* error) {
  *error = "SentencePiece models are not supported by this build (" + path +
           "): Debian's libsentencepiece bundles its own protobuf-lite and Abseil, which "
           "clash with LibTorch's and gRPC's in one process; use the model's tokenizer.json "
           "(HF tokenizers write one for every SentencePiece model), or build with "
           "-DRLHF_WITH_SENTENCEPIECE=ON for tokenizer-only tools";
  return nullptr;
}

std::vector<int> Processor::Encode(std::string_view) const { return {}; }
std::string Processor::Decode(const std::vector<int>&) const { return {}; }
int Processor::vocab_size() const { return 0; }
int Processor::bos_id() const { return -1; }
int Processor::eos_id() const { return -1; }
int Processor::pad_id() const { return -1; }
int Processor::unk_id() const { return -1; }
bool Processor::IsControl(int) const { return false; }

}  // namespace rlhf::spm
