// `rlhf sft --data sft.jsonl [--heldout sft_heldout.jsonl] --out DIR [--init CKPT |
// --preset tiny] [--steps N --batch_size B --lr X --train_on_prompt --resume]`:
// supervised fine-tuning (core/train/sft_trainer.h). Prints a progress line every
// --log_every steps and the final held-out loss.
#pragma once

#include <string>
#include <vector>

namespace rlhf::tools {
int RunSftCommand(const std::vector<std::string>& args);
}  // namespace rlhf::tools
