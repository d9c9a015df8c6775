#include "tools/common_flags.h"

#include <algorithm>
#include <cstdio>
#include <fstream>

#include <ATen/Parallel.h>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "core/model/checkpoint.h"
#include "core/model/threads.h"
#include "core/tokenizer/model_dir.h"

ABSL_FLAG(std::string, data, "",
          "training data (JSONL; rm: comma-separated files); or the data directory for `data`");
ABSL_FLAG(std::string, heldout, "", "held-out data (JSONL)");
ABSL_FLAG(std::string, out, "", "output directory");
ABSL_FLAG(std::string, init, "", "checkpoint directory to start from");
ABSL_FLAG(std::string, preset, "tiny", "model preset when no --init checkpoint is given");
ABSL_FLAG(int64_t, steps, -1, "optimizer steps (-1 = the subcommand's default)");
ABSL_FLAG(int64_t, batch_size, -1,
          "sft: sequences per step; rm: ranked prompts per step (-1 = default)");
ABSL_FLAG(double, lr, -1, "peak learning rate (-1 = the subcommand's default)");
ABSL_FLAG(int64_t, warmup_steps, -1, "linear warmup steps (-1 = default)");
ABSL_FLAG(uint64_t, seed, 1, "random seed (data order, initialisation, sampling)");
ABSL_FLAG(int32_t, threads, 2, "LibTorch intra-op threads");
ABSL_FLAG(bool, resume, false, "continue from the checkpoint in --out if there is one");
ABSL_FLAG(std::string, json_out, "", "also write the final numbers as JSON to this file");
ABSL_FLAG(int64_t, max_seq_len, -1, "override the preset's context length (-1 = preset's)");
ABSL_FLAG(int64_t, eval_every, -1, "steps between held-out evaluations (-1 = default)");
ABSL_FLAG(int64_t, checkpoint_every, -1, "steps between checkpoints (-1 = default)");
ABSL_FLAG(std::string, prompt_template, "",
          "how prompts are rendered for the model, e.g. \"User: {prompt}\\nAssistant: \" "
          "(exactly one {prompt}); empty = as is. `rlhf run` applies it once in the data "
          "stage, so its stages read rendered files and pass none");
ABSL_FLAG(std::string, compute_dtype, rlhf::kDefaultComputeDtype,
          "eval/label: dtype the loaded models run in: fp32, bf16 (fp16 has no CPU kernels in "
          "LibTorch 1.13); training commands need fp32");
ABSL_FLAG(std::string, model, "",
          "model directory in HF layout (tokenizer.json, tokenizer.model, vocab.json + "
          "merges.txt, ...); \"byte\" = the built-in byte tokenizer");

namespace rlhf::tools {

absl::StatusOr<PromptTemplate> PromptTemplateFromFlag() {
  return PromptTemplate::Parse(absl::GetFlag(FLAGS_prompt_template));
}

void ApplyThreads() {
  const int threads = absl::GetFlag(FLAGS_threads);
  rlhf::ConfigureComputeThreads(threads);
}

namespace {

absl::StatusOr<ModelLoadOptions> LoadOptionsFromFlags() {
  ModelLoadOptions options;
  auto dtype = ParseComputeDtype(absl::GetFlag(FLAGS_compute_dtype));
  if (!dtype.ok()) return absl::InvalidArgumentError(absl::StrCat("--", dtype.status().message()));
  options.compute_dtype = *dtype;
  options.max_seq_len = std::max<int64_t>(0, absl::GetFlag(FLAGS_max_seq_len));
  return options;
}

}  // namespace

absl::StatusOr<LoadedCheckpoint> LoadForInference(const std::string& dir) {
  auto options = LoadOptionsFromFlags();
  if (!options.ok()) return options.status();
  return LoadModel(dir, *options);
}

absl::StatusOr<LoadedCheckpoint> LoadForTraining(const std::string& dir) {
  auto options = LoadOptionsFromFlags();
  if (!options.ok()) return options.status();
  if (options->compute_dtype != torch::kFloat32) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--compute_dtype=", absl::GetFlag(FLAGS_compute_dtype),
        ": training runs in fp32 (the flag applies to forward-only commands: eval, label)"));
  }
  return LoadModel(dir, *options);
}

absl::StatusOr<ModelConfig> PresetConfig() {
  auto config = ModelConfigPreset(absl::GetFlag(FLAGS_preset));
  if (!config.ok()) return config.status();
  if (absl::GetFlag(FLAGS_max_seq_len) > 0) config->max_seq_len = absl::GetFlag(FLAGS_max_seq_len);
  return config;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> TokenizerForModel(const std::string& dir,
                                                             const TransformerLM& model) {
  if (!dir.empty()) return LoadTokenizerForModel(dir, model->config().vocab_size);
  auto tok = MakeTokenizerByName("byte");
  if (!tok.ok()) return tok.status();
  if ((*tok)->vocab_size() > model->config().vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the tokenizer of the preset (", (*tok)->name(), ") has ", (*tok)->vocab_size(),
        " ids but the model's vocabulary has ", model->config().vocab_size));
  }
  return tok;
}

int Fail(const char* command, const absl::Status& status) {
  std::fprintf(stderr, "rlhf %s: %s\n", command, std::string(status.message()).c_str());
  return 1;
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  return WriteFileAtomically(path, text);
}

}  // namespace rlhf::tools
