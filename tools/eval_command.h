// `rlhf eval --policy CKPT [--reference CKPT] [--rm CKPT] --prompts FILE`: samples one
// response per held-out prompt and reports the mean gold score with a 95% interval, the
// KL to the reference (core/train/policy_eval.h) and the RM score; prints a few samples;
// --json_out writes everything (samples included) as JSON.
#pragma once

#include <string>
#include <vector>

namespace rlhf::tools {
int RunEvalCommand(const std::vector<std::string>& args);
}  // namespace rlhf::tools
