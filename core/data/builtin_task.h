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
//                         distinct responses per prompt, ranked by GoldScore. They form a
//                         degradation chain: from an ideal (60%) or slightly flawed
//                         answer, each next one adds a flaw (wrong item, misspelled item,
//                         missing/extra item, lower case, no period, filler, garbage, a
//                         repeated item, a repeated sentence, off-topic, cut off mid-way,
//                         or nothing useful at all). Every pair is COMPARABLE: the worse
//                         response has every flaw of the better one and more
//                         (GoldDominates), never one defect traded for another (see
//                         GoldRankingBuilder). Flaws that shorten an answer are about as
//                         common as ones that lengthen it (length must not predict
//                         rank). Some rankings open with a count ladder (the same answer
//                         with 1-4 valid items) or a content ladder (the ideal answer
//                         with 0..N items swapped for wrong ones), and the chain goes on
//                         below the ladder's worst rung. Gold scores within a ranking are
//                         >= rank_min_gold_gap apart (no near-ties). Presented in
//                         shuffled order.
//                         (The RM's best data is rankings of the SFT policy's own samples,
//                         as in InstructGPT: `rlhf label` makes those once SFT exists.)
//   rl_train / rl_heldout {"prompt"} prompts; the two sets are disjoint.
//   pretrain              {"text"} plain factual sentences over the same vocabulary
//                         ("Cherry is a red fruit.").
//
// Prompts are split once, by distinct prompt text, into a train pool and a held-out
// pool; every *_heldout set and rl_heldout draw only from the held-out pool and every
// training set only from the train pool, so held-out evaluation is on unseen prompts.
// The split is a function of the seed: more data for the same held-out set means the
// same seed with larger counts (each output has its own random stream, so the first N
// records do not change), never another seed.
// Prompts are <= 44 bytes; ideal responses <= 40 bytes.
//
// Determinism: the same options give byte-identical output on every platform (own
// PRNG, no std:: distributions). Thread-safe: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/data/gold_labeler.h"
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
  double rank_min_gold_gap = 0.02;  // min gold-score difference within one ranking, [0, 0.1]
  double rank_count_ladder_fraction = 0.3;    // rankings that open with a count ladder
  double rank_content_ladder_fraction = 0.3;  // ... with a content ladder (if no count one)
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

// The labeller's side of a ranking, shared by the generator and by `rlhf label` (which
// ranks responses sampled from a policy, as InstructGPT's labellers ranked SFT samples):
// responses are offered one at a time and kept only when
//   - new, and at least `min_gap` in gold score from every kept one (near-ties would
//     teach a reward model noise), and
//   - with `comparable_only`, comparable with every kept one: one of the two has every
//     flaw of the other (GoldDominates). A pair that trades one defect for another
//     ("Cherry." against "cherry and apple.") is a judgement of the gold score's
//     weights, which no labeller makes consistently and a small reward model learns
//     last; without such pairs the reward model learns each defect's direction.
// Build() ranks the kept ones by gold score, in the order they were offered. Not
// thread-safe.
class GoldRankingBuilder {
 public:
  GoldRankingBuilder(std::string prompt, double min_gap, bool comparable_only = true)
      : prompt_(std::move(prompt)), min_gap_(min_gap), comparable_only_(comparable_only) {}
  // True if `response` was kept.
  bool Offer(const std::string& response);
  int size() const { return static_cast<int>(responses_.size()); }
  // The kept responses with ranking[i] = rank of responses[i] (0 = highest gold score).
  RankedRecord Build() const;

 private:
  std::string prompt_;
  double min_gap_;
  bool comparable_only_;
  std::vector<std::string> responses_;
  std::vector<GoldBreakdown> parts_;
};

// Every distinct prompt text of the task, in a fixed order (before any split).
std::vector<std::string> AllTaskPrompts();

// The ideal response to a task prompt (first N matching items in vocabulary order),
// or "" if the prompt is not a task prompt. GoldScore(prompt, IdealResponse(prompt)) == 1.
std::string IdealResponse(const std::string& prompt);

}  // namespace rlhf
