// The tokenizer of a model directory (HF layout), whichever files it has:
//
//   tokenizer.json                      -> BpeTokenizer (HF fast tokenizer; preferred)
//   tokenizer.model                     -> SentencePieceTokenizer
//   vocab.json + merges.txt             -> BpeTokenizer, GPT-2 files
//   encoder.json + vocab.bpe            -> BpeTokenizer, GPT-2 files (OpenAI's names)
//
// BOS/EOS/PAD/UNK token strings come from tokenizer_config.json, then
// special_tokens_map.json (each value a string or {"content": ...}; null = none). With
// neither file, GPT-2 files use <|endoftext|>, and tokenizer.json uses the first of the
// usual names it contains ("<s>"/"<|begin_of_text|>", "</s>"/"<|end_of_text|>"/
// "<|endoftext|>"). No pad token => pad with EOS, as HF users do.
//
// Errors name the directory or the file and field: NotFound when no tokenizer file is
// there, InvalidArgument for malformed JSON or a token missing from the vocabulary,
// Unimplemented for tokenizer types we do not run (e.g. a Unigram tokenizer.json).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/tokenizer/bpe_tokenizer.h"
#include "core/tokenizer/tokenizer.h"

namespace rlhf {

// The spec of the result is {"type": "hf"|"gpt2"|"sentencepiece", "dir": dir}.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerFromModelDir(const std::string& dir);

// The tokenizer files present in `dir` (base names, in the table's order plus
// tokenizer_config.json / special_tokens_map.json), for code that copies a model's
// tokenizer next to its weights (checkpoints, exports).
std::vector<std::string> TokenizerFilesInDir(const std::string& dir);

// The tokenizer a model or checkpoint directory carries, in this order:
//  1. config.json's "metadata"."tokenizer" spec (our checkpoints record it; a relative
//     "dir" such as "." resolves against `dir`);
//  2. tokenizer files in `dir` (an HF model directory: LoadTokenizerFromModelDir);
//  3. the byte tokenizer (checkpoints of the built-in byte-vocabulary models).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerForModel(const std::string& dir);

// LoadTokenizerForModel(dir) for the model loaded from `dir`, whose embedding has
// `model_vocab_size` rows: InvalidArgument naming `dir` when the tokenizer has more ids
// than the model (its ids would index past the embedding). Every process that loads a
// model takes its BOS/EOS/PAD from here.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerForModel(const std::string& dir,
                                                                 int64_t model_vocab_size);

// For checkpoint and export writers: copies the files of `tok` (Spec()'s "dir") into
// `dest_dir` (created if needed; a no-op when it is the same directory) and returns the
// spec to record in the checkpoint's metadata ({"type": ..., "dir": "."}). The byte
// tokenizer has no files and returns {"type": "byte"}. Copies are atomic per file.
absl::StatusOr<nlohmann::json> SaveTokenizerFiles(const Tokenizer& tok,
                                                  const std::string& dest_dir);

// BOS/EOS/PAD/UNK names from tokenizer_config.json and special_tokens_map.json in `dir`
// (missing files are fine; malformed ones are errors naming file and field).
absl::StatusOr<SpecialTokenNames> ReadSpecialTokenNames(const std::string& dir,
                                                        bool* found_config);

}  // namespace rlhf
