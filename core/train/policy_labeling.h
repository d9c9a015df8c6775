// Stage 2's comparison data the way InstructGPT collected it: for each prompt, sample K
// responses from the SFT policy and have the labeller rank them. Here the labeller is
// the built-in task's gold labeler (core/data/gold_labeler.h), so this only makes sense
// for the built-in task's prompts.
//
// Why it matters: a reward model trained only on synthetic rankings is accurate on the
// synthetic flaws but not in the neighbourhood of the SFT policy, which is exactly where
// RL queries it; there RL finds its blind spots (on the built-in task: answering two
// items to every prompt). Rankings of the policy's own samples cover those.
//
// Deterministic given (weights, prompts, options.seed). Not thread-safe on the model.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/data/records.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"

namespace rlhf {

struct PolicyLabelOptions {
  int64_t samples_per_prompt = 8;  // responses sampled per prompt (K before filtering)
  double temperature = 1.0;        // sampling temperature (> 0: K distinct draws)
  int64_t max_new_tokens = 48;
  double min_gold_gap = 0.02;      // responses closer than this in gold score: one kept
  bool comparable_only = false;    // true: keep only responses comparable with every
                                   // kept one (GoldRankingBuilder), as the built-in
                                   // task's synthetic rankings do. Off by default: RL
                                   // needs the RM's weighting of the trade-offs the
                                   // policy makes (with it on, the quickstart's RL gain
                                   // fell from +0.040 to +0.023, not significant)
  uint64_t seed = 1;
  int64_t batch_size = 64;         // sequences per generation batch
  // Progress of the sampling: (samples done, samples in total) after each batch.
  std::function<void(int64_t done, int64_t total)> on_progress;
};

struct PolicyLabelStats {
  int64_t prompts = 0;          // prompts sampled
  int64_t records = 0;          // ranked records written (>= 2 responses kept)
  int64_t samples = 0;          // responses sampled
  int64_t kept = 0;             // responses kept in records
  double mean_gold = 0;         // of all samples: the policy's gold score
};

// One ranked record per prompt that kept at least two responses, in prompt order.
// Errors: InvalidArgument for options out of range or an empty prompt list.
absl::StatusOr<std::vector<RankedRecord>> RankPolicySamples(
    TransformerLM& policy, const Tokenizer& tokenizer, const std::vector<std::string>& prompts,
    const PolicyLabelOptions& options, PolicyLabelStats* stats);

}  // namespace rlhf
