// Flags shared by several `rlhf` subcommands (defined in common_flags.cc). Numeric
// flags default to -1 / "" meaning "the subcommand's own default" (documented in each
// subcommand's --help text).
#pragma once

#include <cstdint>
#include <string>

#include "absl/flags/declare.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/data/prompt_template.h"
#include "core/model/compute_dtype.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"

ABSL_DECLARE_FLAG(std::string, data);
ABSL_DECLARE_FLAG(std::string, heldout);
ABSL_DECLARE_FLAG(std::string, out);
ABSL_DECLARE_FLAG(std::string, init);
ABSL_DECLARE_FLAG(std::string, preset);
ABSL_DECLARE_FLAG(int64_t, steps);
ABSL_DECLARE_FLAG(int64_t, batch_size);
ABSL_DECLARE_FLAG(double, lr);
ABSL_DECLARE_FLAG(int64_t, warmup_steps);
ABSL_DECLARE_FLAG(uint64_t, seed);
ABSL_DECLARE_FLAG(int32_t, threads);
ABSL_DECLARE_FLAG(bool, resume);
ABSL_DECLARE_FLAG(std::string, json_out);
ABSL_DECLARE_FLAG(int64_t, max_seq_len);
ABSL_DECLARE_FLAG(int64_t, eval_every);
ABSL_DECLARE_FLAG(int64_t, checkpoint_every);
ABSL_DECLARE_FLAG(std::string, prompt_template);
ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(std::string, compute_dtype);

namespace rlhf::tools {

// --prompt_template, parsed (InvalidArgument naming the flag's problem).
absl::StatusOr<PromptTemplate> PromptTemplateFromFlag();
// Sets LibTorch's intra-op threads from --threads (default 2).
void ApplyThreads();
// A fresh model from --preset (default "tiny"), with --max_seq_len when > 0, seeded.
absl::StatusOr<ModelConfig> PresetConfig();
// The tokenizer of the model in `dir` (LoadTokenizerForModel: recorded spec, tokenizer
// files, else the byte tokenizer); empty dir = a preset model = the byte tokenizer. An
// error if it has more ids than the model's vocabulary.
absl::StatusOr<std::unique_ptr<Tokenizer>> TokenizerForModel(const std::string& dir,
                                                             const TransformerLM& model);
// Loads a checkpoint (ours or HF) that this command only runs forward: in --compute_dtype
// (default fp32), with --max_seq_len (when > 0) for the sliding-window check of HF models.
absl::StatusOr<LoadedCheckpoint> LoadForInference(const std::string& dir);
// Loads a checkpoint to train from: fp32 (a --compute_dtype other than fp32 is an error
// naming the flag: training keeps fp32 weights), with --max_seq_len as above.
absl::StatusOr<LoadedCheckpoint> LoadForTraining(const std::string& dir);
// Prints "rlhf <cmd>: <status>" to stderr and returns 1.
int Fail(const char* command, const absl::Status& status);
// Writes text to path atomically (json_out).
absl::Status WriteText(const std::string& path, const std::string& text);

}  // namespace rlhf::tools
