// `rlhf label --policy SFT --prompts FILE --out rank_policy.jsonl`: stage 2's comparison
// data as InstructGPT collected it. Samples --label_samples responses per prompt from the
// policy and ranks them with the built-in task's gold labeler (the stand-in for human
// labellers), writing {"prompt","responses","ranking"} records for `rlhf rm`
// (core/train/policy_labeling.h). Prompts are read from JSONL files with a "prompt" field
// (--prompts=rank.jsonl,sft.jsonl works), at most --max_prompts of them.
#pragma once

#include <string>
#include <vector>

namespace rlhf::tools {
int RunLabelCommand(const std::vector<std::string>& args);
}  // namespace rlhf::tools
