// `rlhf rm --init SFT_CKPT --data rank.jsonl [--heldout rank_heldout.jsonl] --out DIR
// [--steps N --batch_size PROMPTS --lr X --resume]`: reward-model training
// (core/train/reward_trainer.h). Without --init the trunk is a fresh --preset model.
// Accepts ranked and {"prompt","chosen","rejected"} records.
#pragma once

#include <string>
#include <vector>

namespace rlhf::tools {
int RunRmCommand(const std::vector<std::string>& args);
}  // namespace rlhf::tools
