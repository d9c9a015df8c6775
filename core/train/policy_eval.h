// `rlhf eval`'s engine: samples responses from a policy on held-out prompts and reports
// the KL to a reference policy, a reward model's score and a second (held-out) reward
// model's score when given, the response length, and the mean gold score
// (gold_labeler.h) with a 95% interval when options.gold (only the built-in task has a
// gold labeler; user data has none). Comparing two policies on the same prompts (win
// rate, paired gain) is tools/launcher/paired_gain.h's job.
//
// KL: for each sampled response, Σ_t KL(π(·|s_t) || π_ref(·|s_t)) summed over the
// response positions, computed exactly over the vocabulary from full forwards of both
// models at temperature 1 (so it is the sequence-level KL contribution of the sampled
// states, >= 0, with far lower variance than the sampled log-ratio). Reported as the
// mean per sequence and per token.
// RM score: the reward model's scalar at the last real token of [BOS] prompt response
// (EOS included when the response finished); normalised with the checkpoint's
// reward_mean / reward_std when given.
//
// Deterministic given (weights, prompts, options.seed). Not thread-safe on the models.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"

namespace rlhf {

struct PolicyEvalOptions {
  int64_t max_new_tokens = 48;
  double temperature = 1.0;     // sampling temperature (0 = greedy)
  uint64_t seed = 1;
  int64_t batch_size = 64;      // prompts per generation batch
  int64_t samples_per_prompt = 1;
  int64_t max_prompts = -1;     // -1 = all
  double rm_mean = 0, rm_std = 1;  // reward normalisation
  // Called after each generation batch with (samples done, samples in total), on the
  // calling thread; for progress lines of long runs. May be empty.
  std::function<void(int64_t done, int64_t total)> on_progress;
  double rm2_mean = 0, rm2_std = 1;  // the held-out reward model's
  bool gold = true;             // score with the built-in task's gold labeler
};

struct PolicyEvalSample {
  std::string prompt, response;
  bool finished = false;  // ended with EOS
  double gold = 0;        // NaN without options.gold
  double kl = 0;          // NaN without a reference
  double rm = 0;          // NaN without a reward model
  double rm2 = 0;         // NaN without a held-out reward model
  int64_t tokens = 0;     // response tokens (EOS included when finished)
  std::vector<int32_t> response_ids;  // the sampled ids `response` decodes (EOS included)
};

struct Interval {
  double mean = 0, half_width = 0;  // 95%: mean ± 1.96·sd/√n
};

struct PolicyEvalReport {
  int64_t n = 0;
  Interval gold, kl, rm, rm2;       // mean NaN when not computed
  double kl_per_token = 0;
  double mean_response_bytes = 0;
  double mean_response_tokens = 0;
  double finished_fraction = 0;
  std::vector<PolicyEvalSample> samples;
};

// `reference`, `reward_model` and `heldout_reward_model` may be null. The policy must
// have an LM head, the reward models a scalar head.
absl::StatusOr<PolicyEvalReport> EvaluatePolicy(TransformerLM& policy, TransformerLM* reference,
                                                TransformerLM* reward_model,
                                                const Tokenizer& tokenizer,
                                                const std::vector<std::string>& prompts,
                                                const PolicyEvalOptions& options,
                                                TransformerLM* heldout_reward_model = nullptr);

Interval MeanInterval(const std::vector<double>& values);

}  // namespace rlhf
