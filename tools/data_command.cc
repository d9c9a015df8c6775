#include "tools/data_command.h"

#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "core/data/builtin_task.h"
#include "tools/common_flags.h"

ABSL_FLAG(std::string, task, "builtin", "data: which task to generate (only \"builtin\")");
ABSL_FLAG(int32_t, num_sft, 2000, "data: SFT demonstrations");
ABSL_FLAG(int32_t, num_sft_heldout, 200, "data: held-out SFT demonstrations");
ABSL_FLAG(int32_t, num_rank, 1000, "data: ranked prompts (K in [4, 9] responses each)");
ABSL_FLAG(int32_t, num_rank_heldout, 200, "data: held-out ranked prompts");
ABSL_FLAG(int32_t, num_rl_train, 512, "data: RL training prompts");
ABSL_FLAG(int32_t, num_rl_heldout, 128, "data: held-out RL prompts (distinct)");
ABSL_FLAG(int32_t, num_pretrain, 1000, "data: pretraining sentences");

namespace rlhf::tools {

int RunDataCommand(const std::vector<std::string>& args) {
  if (!args.empty()) return Fail("data", absl::InvalidArgumentError("unexpected argument " + args[0]));
  if (absl::GetFlag(FLAGS_task) != "builtin") {
    return Fail("data", absl::InvalidArgumentError("--task: only \"builtin\" is supported, got \"" +
                                                   absl::GetFlag(FLAGS_task) + "\""));
  }
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) return Fail("data", absl::InvalidArgumentError("--out is required"));
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
