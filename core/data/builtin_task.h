// The built-in alignment task: a deterministic generator (given a seed) of every data
// set the pipeline needs, labelled by the gold labeler (gold_labeler.h), so the whole
// SFT -> RM -> RL pipeline runs with no downloads.
//
//   sft / sft_heldout     {"prompt","response"} demonstrations, deliberately imperfect:
//                         a `sft_imperfect_fraction` of them has one flaw (an item of the
//                         wrong attribute, the wrong number of items, lower-case start,
//                         no period, a filler prefix, or off-topic items), as human
//                         demonstrations are; the SFT policy imitates the flaws too.
//   rank / rank_heldout   {"prompt","responses","ranking"} with K in [min_k, max_k]
//                         distinct responses per prompt, ranked by GoldScore. The K
//                         responses form a degradation chain: from an ideal (60%) or
//                         slightly flawed answer, each next response adds one flaw (wrong
//                         item, misspelled item, missing/extra item, lower case, no
//                         period, filler,
//                         garbage, a repeated item, a repeated sentence, off-topic, and
//                         finally empty or "I do not know."), so pairs differ by clear
//                         defects; ties keep chain order. Presented in shuffled order.
//   rl_train / rl_heldout {"prompt"} prompts; the two sets are disjoint.
//   pretrain              {"text"} plain factual sentences over the same vocabulary
//                         ("Cherry is a red fruit.").
//
// Prompts are split once, by distinct prompt text, into a train pool and a held-out
// pool; every *_heldout set and rl_heldout draw only from the held-out pool and every
// training set only from the train pool, so held-out evaluation is on unseen prompts.
// Prompts are <= 44 bytes; ideal responses <= 40 bytes.
//
// Determinism: the same options give byte-identical output on every platform (own
// PRNG, no std:: distributions). Thread-safe: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/data/records.h"

namespace rlhf {

struct BuiltinTaskOptions {
  uint64_t seed = 1;
  int num_sft = 2000;           // SFT demonstrations (train pool)
  int num_sft_heldout = 200;    // SFT demonstrations (held-out pool), for held-out loss
  int num_rank = 1000;          // ranked prompts (train pool)
  int num_rank_heldout = 200;   // ranked prompts (held-out pool), for RM accuracy
  int num_rl_train = 512;       // RL prompts (train pool; repeats allowed if the pool is
                                // smaller)
  int num_rl_heldout = 128;     // RL prompts (held-out pool, distinct)
  int num_pretrain = 1000;      // pretraining sentences
  int min_k = 4;                // responses per ranked prompt, uniform in [min_k, max_k]
  int max_k = 9;
  double sft_imperfect_fraction = 0.5;
  double heldout_prompt_fraction = 0.25;  // of the 588 distinct prompts, held out
};

struct BuiltinTask {
  std::vector<SftRecord> sft, sft_heldout;
  std::vector<RankedRecord> rank, rank_heldout;
  std::vector<PromptRecord> rl_train, rl_heldout;
  std::vector<TextRecord> pretrain;
};

// Validates the options (InvalidArgument naming the field) and generates the task.
absl::StatusOr<BuiltinTask> GenerateBuiltinTask(const BuiltinTaskOptions& options);

// Writes the task as JSONL files in `dir` (created if missing): sft.jsonl,
// sft_heldout.jsonl, rank.jsonl, rank_heldout.jsonl, rl_train.jsonl, rl_heldout.jsonl,
// pretrain.jsonl. Each file is written to a temporary name and renamed.
absl::Status WriteBuiltinTask(const BuiltinTask& task, const std::string& dir);

// Every distinct prompt text of the task, in a fixed order (before any split).
std::vector<std::string> AllTaskPrompts();

// The ideal response to a task prompt (first N matching items in vocabulary order),
// or "" if the prompt is not a task prompt. GoldScore(prompt, IdealResponse(prompt)) == 1.
std::string IdealResponse(const std::string& prompt);

}  // namespace rlhf
