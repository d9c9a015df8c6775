// `rlhf export --format hf --checkpoint CKPT --out DIR [--dtype F32|F16|BF16]
//  [--max_shard_mb N] [--tokenizer_dir DIR]`: writes a checkpoint (ours or an HF
// directory) as a HuggingFace model directory (core/model/hf.h): a policy as
// *ForCausalLM / GPT2LMHeadModel, a reward or value model as *ForSequenceClassification.
#pragma once

#include <string>
#include <vector>

namespace rlhf::tools {
int RunExportCommand(const std::vector<std::string>& args);
}  // namespace rlhf::tools
