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

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace rlhf::launcher {

void AddPolicyComparison(const std::string& run_dir, int num_examples, nlohmann::json* summary);

// The table rows for those fields ("" when there is nothing to compare), in the
// layout of the launcher's final table.
std::string PolicyComparisonTable(const nlohmann::json& summary);

// A self-contained HTML page (inline SVG, no scripts) plotting, over RL steps, every
// series of `series` found in the metrics.jsonl records (e.g. reward_mean, kl_mean,
// beta), one panel each, with the final RM win rate (summary rl.rm_win_rate) in the
// heading when present. Records without "step" or the series are skipped.
std::string MetricsPlotHtml(const std::vector<nlohmann::json>& records,
                            const std::vector<std::string>& series,
                            const nlohmann::json& summary);

// Reads <run_dir>/metrics.jsonl and writes <run_dir>/plot.html (reward_mean, kl_mean,
// beta); false when there are no RL metrics.
bool WriteMetricsPlot(const std::string& run_dir, const nlohmann::json& summary);

}  // namespace rlhf::launcher
