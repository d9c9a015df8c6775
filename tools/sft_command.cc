#include "tools/sft_command.h"

#include <cstdio>

#include <nlohmann/json.hpp>
#include <torch/utils.h>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "core/data/jsonl.h"
#include "core/model/checkpoint.h"
#include "core/tokenizer/tokenizer.h"
#include "core/train/sft_trainer.h"
#include "tools/common_flags.h"

ABSL_FLAG(bool, train_on_prompt, false, "sft: include prompt tokens in the loss");
ABSL_FLAG(int64_t, log_every, 10, "sft/rm: steps between progress lines");
ABSL_FLAG(bool, skip_malformed, false, "sft/rm: skip (and count) malformed JSONL records");

namespace rlhf::tools {

int RunSftCommand(const std::vector<std::string>& args) {
  if (!args.empty()) return Fail("sft", absl::InvalidArgumentError("unexpected argument " + args[0]));
  ApplyThreads();
  const std::string data = absl::GetFlag(FLAGS_data);
  if (data.empty()) return Fail("sft", absl::InvalidArgumentError("--data is required"));
  JsonlReadOptions read;
  read.skip_malformed = absl::GetFlag(FLAGS_skip_malformed);
  {
    auto tmpl = PromptTemplateFromFlag();
    if (!tmpl.ok()) return Fail("sft", tmpl.status());
    read.prompt_template = *tmpl;
  }
  JsonlStats stats;
  auto train = ReadSftJsonl(data, read, &stats);
  if (!train.ok()) return Fail("sft", train.status());
  std::vector<SftRecord> heldout;
  if (!absl::GetFlag(FLAGS_heldout).empty()) {
    auto h = ReadSftJsonl(absl::GetFlag(FLAGS_heldout), read);
    if (!h.ok()) return Fail("sft", h.status());
    heldout = std::move(*h);
  }
  std::fprintf(stderr, "sft: %zu training records (%lld malformed skipped, %lld empty responses "
               "dropped), %zu held-out\n", train->size(), static_cast<long long>(stats.malformed),
               static_cast<long long>(stats.empty_responses), heldout.size());

  torch::manual_seed(absl::GetFlag(FLAGS_seed));
  TransformerLM model{nullptr};
  if (!absl::GetFlag(FLAGS_init).empty()) {
    auto ckpt = LoadForTraining(absl::GetFlag(FLAGS_init));
    if (!ckpt.ok()) return Fail("sft", ckpt.status());
    model = ckpt->model;
  } else {
    auto config = PresetConfig();
    if (!config.ok()) return Fail("sft", config.status());
    model = TransformerLM(*config);
  }
  SftOptions options;
  options.out_dir = absl::GetFlag(FLAGS_out);
  if (options.out_dir.empty()) return Fail("sft", absl::InvalidArgumentError("--out is required"));
  if (absl::GetFlag(FLAGS_steps) >= 0) options.steps = absl::GetFlag(FLAGS_steps);
  if (absl::GetFlag(FLAGS_batch_size) > 0) options.batch_size = absl::GetFlag(FLAGS_batch_size);
  if (absl::GetFlag(FLAGS_lr) > 0) options.lr = absl::GetFlag(FLAGS_lr);
  if (absl::GetFlag(FLAGS_warmup_steps) >= 0) options.warmup_steps = absl::GetFlag(FLAGS_warmup_steps);
  if (absl::GetFlag(FLAGS_eval_every) >= 0) options.eval_every = absl::GetFlag(FLAGS_eval_every);
  if (absl::GetFlag(FLAGS_checkpoint_every) >= 0) {
    options.checkpoint_every = absl::GetFlag(FLAGS_checkpoint_every);
  }
  options.log_every = absl::GetFlag(FLAGS_log_every);
  options.train_on_prompt = absl::GetFlag(FLAGS_train_on_prompt);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.resume = absl::GetFlag(FLAGS_resume);

  auto tokenizer = TokenizerForModel(absl::GetFlag(FLAGS_init), model);
  if (!tokenizer.ok()) return Fail("sft", tokenizer.status());
  auto trainer = SftTrainer::Create(model, **tokenizer, options, *train, heldout);
  if (!trainer.ok()) return Fail("sft", trainer.status());
  auto result = (*trainer)->Train(
      [](const TrainProgress& p) { std::fprintf(stderr, "%s\n", FormatProgress(p).c_str()); });
  if (!result.ok()) return Fail("sft", result.status());
  std::printf("sft done: %lld steps in %.1fs, train loss %.4f, heldout loss %.4f, %.0f tok/s, "
              "checkpoint %s\n",
              static_cast<long long>(result->steps), result->seconds, result->final_train_loss,
              result->heldout_loss, result->tokens_per_sec, options.out_dir.c_str());
  if (!absl::GetFlag(FLAGS_json_out).empty()) {
    nlohmann::json j = {{"steps", result->steps},
                        {"seconds", result->seconds},
                        {"train_loss", result->final_train_loss},
                        {"heldout_loss", result->heldout_loss},
                        {"tokens_per_sec", result->tokens_per_sec},
                        {"dropped_records", result->dropped_records},
                        {"checkpoint", options.out_dir}};
    absl::Status st = WriteText(absl::GetFlag(FLAGS_json_out), j.dump(2) + "\n");
    if (!st.ok()) return Fail("sft", st);
  }
  return 0;
}

}  // namespace rlhf::tools
