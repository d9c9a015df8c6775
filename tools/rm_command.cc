#include "tools/rm_command.h"

#include <cstdio>
#include <iterator>

#include <nlohmann/json.hpp>
#include <torch/utils.h>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "core/data/jsonl.h"
#include "core/model/checkpoint.h"
#include "core/tokenizer/tokenizer.h"
#include "core/train/reward_trainer.h"
#include "tools/common_flags.h"

ABSL_DECLARE_FLAG(int64_t, log_every);
ABSL_DECLARE_FLAG(bool, skip_malformed);

namespace rlhf::tools {

int RunRmCommand(const std::vector<std::string>& args) {
  if (!args.empty()) return Fail("rm", absl::InvalidArgumentError("unexpected argument " + args[0]));
  ApplyThreads();
  const std::string data = absl::GetFlag(FLAGS_data);
  if (data.empty()) return Fail("rm", absl::InvalidArgumentError("--data is required"));
  JsonlReadOptions read;
  read.skip_malformed = absl::GetFlag(FLAGS_skip_malformed);
  {
    auto tmpl = PromptTemplateFromFlag();
    if (!tmpl.ok()) return Fail("rm", tmpl.status());
    read.prompt_template = *tmpl;
  }
  // --data may list several files (e.g. the synthetic rankings and `rlhf label`'s
  // rankings of SFT samples); their records are concatenated.
  JsonlStats stats;
  std::vector<RankedRecord> train;
  for (absl::string_view path : absl::StrSplit(data, ',', absl::SkipEmpty())) {
    JsonlStats file_stats;
    auto records = ReadPreferenceJsonl(std::string(path), read, &file_stats);
    if (!records.ok()) return Fail("rm", records.status());
    stats.malformed += file_stats.malformed;
    stats.duplicate_pairs += file_stats.duplicate_pairs;
    train.insert(train.end(), std::make_move_iterator(records->begin()),
                 std::make_move_iterator(records->end()));
  }
  std::vector<RankedRecord> heldout;
  if (!absl::GetFlag(FLAGS_heldout).empty()) {
    auto h = ReadPreferenceJsonl(absl::GetFlag(FLAGS_heldout), read);
    if (!h.ok()) return Fail("rm", h.status());
    heldout = std::move(*h);
  }
  std::fprintf(stderr,
               "rm: %zu ranked prompts from %s (%lld malformed skipped, %lld duplicate-response "
               "pairs dropped), %zu held-out\n",
               train.size(), data.c_str(), static_cast<long long>(stats.malformed),
               static_cast<long long>(stats.duplicate_pairs), heldout.size());

  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  TransformerLM model{nullptr};
  if (!absl::GetFlag(FLAGS_init).empty()) {
    auto sft = LoadForTraining(absl::GetFlag(FLAGS_init));
    if (!sft.ok()) return Fail("rm", sft.status());
    auto rm = RewardModelFromSft(*sft, seed);
    if (!rm.ok()) return Fail("rm", rm.status());
    model = *rm;
  } else {
    auto config = PresetConfig();
    if (!config.ok()) return Fail("rm", config.status());
    config->lm_head = false;
    config->scalar_head = true;
    torch::manual_seed(seed);
    model = TransformerLM(*config);
  }
  RewardOptions options;
  options.out_dir = absl::GetFlag(FLAGS_out);
  if (options.out_dir.empty()) return Fail("rm", absl::InvalidArgumentError("--out is required"));
  if (absl::GetFlag(FLAGS_steps) >= 0) options.steps = absl::GetFlag(FLAGS_steps);
  if (absl::GetFlag(FLAGS_batch_size) > 0) options.prompts_per_batch = absl::GetFlag(FLAGS_batch_size);
  if (absl::GetFlag(FLAGS_lr) > 0) options.lr = absl::GetFlag(FLAGS_lr);
  if (absl::GetFlag(FLAGS_warmup_steps) >= 0) options.warmup_steps = absl::GetFlag(FLAGS_warmup_steps);
  if (absl::GetFlag(FLAGS_eval_every) >= 0) options.eval_every = absl::GetFlag(FLAGS_eval_every);
  if (absl::GetFlag(FLAGS_checkpoint_every) >= 0) {
    options.checkpoint_every = absl::GetFlag(FLAGS_checkpoint_every);
  }
  options.log_every = absl::GetFlag(FLAGS_log_every);
  options.seed = seed;
  options.resume = absl::GetFlag(FLAGS_resume);

  auto tokenizer = TokenizerForModel(absl::GetFlag(FLAGS_init), model);
  if (!tokenizer.ok()) return Fail("rm", tokenizer.status());
  auto trainer = RewardTrainer::Create(model, **tokenizer, options, train, heldout);
  if (!trainer.ok()) return Fail("rm", trainer.status());
  auto result = (*trainer)->Train(
      [](const TrainProgress& p) { std::fprintf(stderr, "%s\n", FormatProgress(p).c_str()); });
  if (!result.ok()) return Fail("rm", result.status());
  std::printf("rm done: %lld steps in %.1fs, train loss %.4f, heldout accuracy %.4f over %lld "
              "pairs, reward mean %.4f std %.4f, %.0f tok/s, checkpoint %s\n",
              static_cast<long long>(result->steps), result->seconds, result->final_train_loss,
              result->heldout_accuracy, static_cast<long long>(result->heldout_pairs),
              result->reward_mean, result->reward_std, result->tokens_per_sec,
              options.out_dir.c_str());
  if (!absl::GetFlag(FLAGS_json_out).empty()) {
    nlohmann::json j = {{"steps", result->steps},
                        {"seconds", result->seconds},
                        {"train_loss", result->final_train_loss},
                        {"heldout_accuracy", result->heldout_accuracy},
                        {"heldout_loss", result->heldout_loss},
                        {"heldout_pairs", result->heldout_pairs},
                        {"reward_mean", result->reward_mean},
                        {"reward_std", result->reward_std},
                        {"tokens_per_sec", result->tokens_per_sec},
                        {"checkpoint", options.out_dir}};
    absl::Status st = WriteText(absl::GetFlag(FLAGS_json_out), j.dump(2) + "\n");
    if (!st.ok()) return Fail("rm", st);
  }
  return 0;
}

}  // namespace rlhf::tools
