// The evaluation's headline statistic: how much the RL policy's gold score beats the SFT
// policy's on the same held-out prompts, with a 95% interval that accounts for the
// pairing. Prompts differ a lot in difficulty, so comparing two independent intervals
// overstates the uncertainty of the difference; averaging each policy's samples per
// prompt and taking the per-prompt differences removes the prompt-to-prompt variance.
// Pure functions; thread-safe.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace rlhf::launcher {

struct PairedGain {
  double mean = 0;        // mean over prompts of (mean after - mean before)
  double half_width = 0;  // 95%: 1.96 * sd / sqrt(prompts)
  int prompts = 0;        // prompts sampled by both policies
};

// `before` and `after` are (prompt, score) samples, any number per prompt. Prompts seen
// by only one side are ignored. Errors: InvalidArgument when fewer than two prompts are
// shared.
absl::StatusOr<PairedGain> PairedPromptGain(
    const std::vector<std::pair<std::string, double>>& before,
    const std::vector<std::pair<std::string, double>>& after);

// Win rate of `after` over `before` on the same prompts: per prompt, the fraction of
// (after sample, before sample) pairs where after scores higher (ties count one half);
// then the mean over shared prompts with a 95% interval 1.96 * sd / sqrt(prompts) of the
// per-prompt fractions. Errors: InvalidArgument when fewer than two prompts are shared.
struct WinRate {
  double rate = 0;
  double half_width = 0;
  int prompts = 0;
};
absl::StatusOr<WinRate> PairedWinRate(const std::vector<std::pair<std::string, double>>& before,
                                      const std::vector<std::pair<std::string, double>>& after);

}  // namespace rlhf::launcher
