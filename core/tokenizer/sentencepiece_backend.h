// Thin wrapper around libsentencepiece, in a translation unit of its own: Debian's
// sentencepiece_processor.h declares `namespace absl { using std::string_view; }`, which
// clashes with Abseil's own absl::string_view, so no file may include both. This header
// uses the standard library only. Thread-safety: Encode/Decode are const and safe to
// call concurrently (SentencePieceProcessor's are).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace rlhf::spm {

class Processor {
 public:
  // Loads a `tokenizer.model`; on failure returns null and sets *error.
  static std::unique_ptr<Processor> Load(const std::string& path, std::string* error);
  ~Processor();

  std::vector<int> Encode(std::string_view text) const;
  std::string Decode(const std::vector<int>& ids) const;
  int vocab_size() const;
  int bos_id() const;  // -1 if the model has none
  int eos_id() const;
  int pad_id() const;
  int unk_id() const;
  bool IsControl(int id) const;  // <s>, </s>, <pad> and other control symbols

 private:
  struct State;
  explicit Processor(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace rlhf::spm
