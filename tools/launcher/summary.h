// The job's results: summary.json (what each stage produced) and the comparison table
// `rlhf run` prints at the end. Pure functions of the run directory's stage outputs
// (sft.json, rm.json, label.json, eval_sft.json, eval_rl.json) and the summary object,
// so tests/launcher/summary_test.cc can check the table against a golden text.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace rlhf::launcher {

// Adds the stage results found in `run_dir` to `summary`: sft.train, rm.train,
// rm.heldout_pair_accuracy, rm.policy_rankings, {sft,rl}.eval (without its samples),
// {sft,rl}.samples (one per prompt for the first 5 prompts; eval samples each prompt
// `samples_per_prompt` times in a row), gold_score (+ ci95), rm_score, kl_to_sft,
// eval_samples, and rl.gold_gain_over_sft (+ ci95, prompts) paired by prompt. Missing or
// unparsable files add nothing.
void AddStageResults(const std::string& run_dir, int samples_per_prompt, nlohmann::json* summary);

// The comparison table (SFT vs RL: gold score and interval, RM score, KL, the paired
// gain, up to `num_examples` sample responses, RM accuracy, wall times). Missing values
// print as "-".
// gold = false (user data) leaves out the gold labeler's rows and gold-scored samples.
std::string FormatSummaryTable(const nlohmann::json& summary, int num_examples, bool gold = true);

}  // namespace rlhf::launcher
