// RL vs SFT without a gold labeler: the part of `rlhf run`'s summary.json and final
// table that compares the two policies' held-out samples (<run_dir>/eval_sft.json and
// eval_rl.json, written by `rlhf eval`) by the reward models.
//
// Fields added to summary.json (absent when a side or a score is missing):
//   sft|rl.rm_score_ci95            [lo, hi] of the mean RM score
//   sft|rl.heldout_rm_score (+ _ci95)   the second, held-out RM (eval.heldout_rm_checkpoint)
//   sft|rl.response_tokens, response_bytes   mean response length
//   rl.rm_gain_over_sft (+ _ci95)   paired by prompt (paired_gain.h)
//   rl.rm_win_rate (+ _ci95)        P(RL sample beats SFT sample on the same prompt)
//   rl.heldout_rm_gain_over_sft, rl.heldout_rm_win_rate (+ _ci95)
//   rl.comparison_prompts           prompts both policies were evaluated on
//   sample_pairs                    [{prompt, sft, rl, sft_rm, rl_rm}] side by side
// and <run_dir>/plot.html (WriteMetricsPlot).
// Thread-compatible; pure apart from reading the two files.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace rlhf::launcher {

void AddPolicyComparison(const std::string& run_dir, int num_examples, nlohmann::json* summary);

// The table rows for those fields ("" when there is nothing to compare), in the
// layout of the launcher's final table.
std::string PolicyComparisonTable(const nlohmann::json& summary);

// The RM win rate over RL steps. At each learner checkpoint the launcher evaluates the
// checkpoint's policy on a few held-out prompts (`rlhf eval`, eval.step_prompts) with the
// same seed as its evaluation of the SFT policy on the same prompts. These fields go into
// metrics.jsonl's record of that step:
//   rm_win_rate          PairedWinRate(SFT samples, step samples) (paired_gain.h)
//   rm_win_rate_ci95     [lo, hi]
//   eval_rm_score        mean RM score of the step's held-out samples
//   eval_prompts         prompts both evaluations scored
// `sft_eval` and `step_eval` are the two `rlhf eval --json_out` documents. nullopt when
// they share fewer than two prompts with RM scores.
std::optional<nlohmann::json> StepWinRateFields(const nlohmann::json& sft_eval,
                                                const nlohmann::json& step_eval);

// metrics.jsonl stays one record per learner step, steps increasing: `fields` (step ->
// fields) are added to the record of their step, or, for a step without a record, as a
// new record {"step": step, ...fields} in step order. Records without a numeric "step"
// keep their place.
std::vector<nlohmann::json> MergeStepFields(std::vector<nlohmann::json> records,
                                            const std::map<int64_t, nlohmann::json>& fields);

// A self-contained HTML page (inline SVG, no scripts) plotting, over RL steps, every
// series of `series` found in the metrics.jsonl records (e.g. reward_mean, kl_mean,
// rm_win_rate), one panel each, with the final RM win rate (summary rl.rm_win_rate) in
// the heading when present. Records without "step" or the series are skipped. A series
// ending in "win_rate" is drawn on [0, 1] with a dashed line at 0.5 and each point's
// "<series>_ci95" interval as a vertical bar.
std::string MetricsPlotHtml(const std::vector<nlohmann::json>& records,
                            const std::vector<std::string>& series,
                            const nlohmann::json& summary);

// Reads <run_dir>/metrics.jsonl and writes <run_dir>/plot.html (reward_mean, kl_mean,
// rm_win_rate, beta); false when there are no RL metrics.
bool WriteMetricsPlot(const std::string& run_dir, const nlohmann::json& summary);

}  // namespace rlhf::launcher
