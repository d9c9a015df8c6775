// `rlhf data --task builtin --out DIR --seed N`: writes the built-in alignment task
// (core/data/builtin_task.h): sft.jsonl, sft_heldout.jsonl, rank.jsonl,
// rank_heldout.jsonl, rl_train.jsonl, rl_heldout.jsonl, pretrain.jsonl.
#pragma once

#include <string>
#include <vector>

namespace rlhf::tools {
int RunDataCommand(const std::vector<std::string>& args);
}  // namespace rlhf::tools
