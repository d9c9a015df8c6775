#include "core/train/policy_labeling.h"

#include "absl/strings/str_cat.h"
#include "core/data/builtin_task.h"
#include "core/status_macros.h"
#include "core/train/policy_eval.h"

namespace rlhf {

absl::StatusOr<std::vector<RankedRecord>> RankPolicySamples(
    TransformerLM& policy, const Tokenizer& tokenizer, const std::vector<std::string>& prompts,
    const PolicyLabelOptions& options, PolicyLabelStats* stats) {
  if (options.samples_per_prompt < 2 || options.samples_per_prompt > 16) {
    return absl::InvalidArgumentError(absl::StrCat(
        "samples_per_prompt must be in [2, 16], got ", options.samples_per_prompt));
  }
  if (!(options.temperature > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be > 0 (greedy draws are all alike), got ",
                     options.temperature));
  }
  if (!(options.min_gold_gap >= 0 && options.min_gold_gap <= 0.1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_gold_gap must be in [0, 0.1], got ", options.min_gold_gap));
  }
  if (prompts.empty()) return absl::InvalidArgumentError("no prompts to label");
  PolicyEvalOptions sampling;
  sampling.samples_per_prompt = options.samples_per_prompt;
  sampling.temperature = options.temperature;
  sampling.max_new_tokens = options.max_new_tokens;
  sampling.seed = options.seed;
  sampling.batch_size = options.batch_size;
  sampling.on_progress = options.on_progress;
  // EvaluatePolicy samples each prompt samples_per_prompt times, consecutively.
  RLHF_ASSIGN_OR_RETURN(PolicyEvalReport report,
                        EvaluatePolicy(policy, nullptr, nullptr, tokenizer, prompts, sampling));
  std::vector<RankedRecord> records;
  PolicyLabelStats s;
  s.prompts = static_cast<int64_t>(prompts.size());
  s.samples = report.n;
  s.mean_gold = report.gold.mean;
  const size_t k = static_cast<size_t>(options.samples_per_prompt);
  for (size_t start = 0; start + k <= report.samples.size(); start += k) {
    GoldRankingBuilder ranking(report.samples[start].prompt, options.min_gold_gap,
                               options.comparable_only);
    for (size_t i = start; i < start + k; ++i) ranking.Offer(report.samples[i].response);
    if (ranking.size() < 2) continue;
    s.kept += ranking.size();
    records.push_back(ranking.Build());
  }
  s.records = static_cast<int64_t>(records.size());
  if (stats != nullptr) *stats = s;
  return records;
}

}  // namespace rlhf
