#include "tools/data_command.h"

#include <cstdio>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "core/data/builtin_task.h"
#include "core/data/user_data.h"
#include "tools/common_flags.h"

ABSL_FLAG(std::string, task, "builtin",
          "data: \"builtin\" generates the built-in task; \"files\" materialises the "
          "user's JSONL files (--sft_files, --preference_files, --prompt_files, ...) into --out");
ABSL_FLAG(std::vector<std::string>, sft_files, {}, "data files: SFT files or directories");
ABSL_FLAG(std::vector<std::string>, sft_heldout_files, {}, "data files: held-out SFT files");
ABSL_FLAG(std::vector<std::string>, preference_files, {}, "data files: preference files");
ABSL_FLAG(std::vector<std::string>, preference_heldout_files, {},
          "data files: held-out preference files");
ABSL_FLAG(std::vector<std::string>, prompt_files, {}, "data files: RL prompt files (required)");
ABSL_FLAG(std::vector<std::string>, prompt_heldout_files, {},
          "data files: held-out prompt files (evaluation)");
ABSL_FLAG(std::vector<std::string>, pretrain_files, {}, "data files: pretraining text files");
ABSL_FLAG(double, heldout_fraction, 0.1,
          "data files: fraction of prompts carved off (seeded) where no held-out files are given");
ABSL_DECLARE_FLAG(bool, skip_malformed);
ABSL_FLAG(int32_t, num_sft, 2000, "data: SFT demonstrations");
ABSL_FLAG(int32_t, num_sft_heldout, 200, "data: held-out SFT demonstrations");
ABSL_FLAG(int32_t, num_rank, 1000, "data: ranked prompts (K in [4, 9] responses each)");
ABSL_FLAG(int32_t, num_rank_heldout, 200, "data: held-out ranked prompts");
ABSL_FLAG(int32_t, num_rl_train, 512, "data: RL training prompts");
ABSL_FLAG(int32_t, num_rl_heldout, 128, "data: held-out RL prompts (distinct)");
ABSL_FLAG(int32_t, num_pretrain, 1000, "data: pretraining sentences");

namespace rlhf::tools {

namespace {

int RunFiles(const std::string& out) {
  UserDataOptions o;
  o.sft = {absl::GetFlag(FLAGS_sft_files), absl::GetFlag(FLAGS_sft_heldout_files)};
  o.preferences = {absl::GetFlag(FLAGS_preference_files),
                   absl::GetFlag(FLAGS_preference_heldout_files)};
  o.prompts = {absl::GetFlag(FLAGS_prompt_files), absl::GetFlag(FLAGS_prompt_heldout_files)};
  o.pretrain = {absl::GetFlag(FLAGS_pretrain_files), {}};
  o.heldout_fraction = absl::GetFlag(FLAGS_heldout_fraction);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.skip_malformed = absl::GetFlag(FLAGS_skip_malformed);
  o.out_dir = out;
  auto tmpl = PromptTemplateFromFlag();
  if (!tmpl.ok()) return Fail("data", tmpl.status());
  o.prompt_template = *tmpl;
  auto report = MaterializeUserData(o);
  if (!report.ok()) return Fail("data", report.status());
  for (const std::string& line : report->summaries) std::printf("read %s\n", line.c_str());
  std::printf(
      "wrote %s: sft %lld, sft_heldout %lld, rank %lld, rank_heldout %lld, rl_train %lld, "
      "rl_heldout %lld, pretrain %lld\n",
      out.c_str(), static_cast<long long>(report->sft),
      static_cast<long long>(report->sft_heldout), static_cast<long long>(report->rank),
      static_cast<long long>(report->rank_heldout), static_cast<long long>(report->rl_train),
      static_cast<long long>(report->rl_heldout), static_cast<long long>(report->pretrain));
  return 0;
}

}  // namespace

int RunDataCommand(const std::vector<std::string>& args) {
  if (!args.empty()) return Fail("data", absl::InvalidArgumentError("unexpected argument " + args[0]));
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) return Fail("data", absl::InvalidArgumentError("--out is required"));
  if (absl::GetFlag(FLAGS_task) == "files") return RunFiles(out);
  if (absl::GetFlag(FLAGS_task) != "builtin") {
    return Fail("data", absl::InvalidArgumentError("--task: \"builtin\" or \"files\", got \"" +
                                                   absl::GetFlag(FLAGS_task) + "\""));
  }
  BuiltinTaskOptions options;
  options.seed = absl::GetFlag(FLAGS_seed);
  options.num_sft = absl::GetFlag(FLAGS_num_sft);
  options.num_sft_heldout = absl::GetFlag(FLAGS_num_sft_heldout);
  options.num_rank = absl::GetFlag(FLAGS_num_rank);
  options.num_rank_heldout = absl::GetFlag(FLAGS_num_rank_heldout);
  options.num_rl_train = absl::GetFlag(FLAGS_num_rl_train);
  options.num_rl_heldout = absl::GetFlag(FLAGS_num_rl_heldout);
  options.num_pretrain = absl::GetFlag(FLAGS_num_pretrain);
  auto task = GenerateBuiltinTask(options);
  if (!task.ok()) return Fail("data", task.status());
  absl::Status st = WriteBuiltinTask(*task, out);
  if (!st.ok()) return Fail("data", st);
  std::printf(
      "wrote %s: sft %zu, sft_heldout %zu, rank %zu, rank_heldout %zu, rl_train %zu, "
      "rl_heldout %zu, pretrain %zu\n",
      out.c_str(), task->sft.size(), task->sft_heldout.size(), task->rank.size(),
      task->rank_heldout.size(), task->rl_train.size(), task->rl_heldout.size(),
      task->pretrain.size());
  return 0;
}

}  // namespace rlhf::tools
