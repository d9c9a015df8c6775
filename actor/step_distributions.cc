#include "actor/step_distributions.h"

#include <cmath>
#include <limits>

#include "core/rl/kl.h"

namespace rlhf::actor {

int64_t DistributionEntries(int32_t kl_top_k, int64_t vocab_size) {
  return kl_top_k <= 0 || kl_top_k >= vocab_size ? vocab_size : kl_top_k;
}

void AppendStepDistributions(const std::vector<TopKDistribution>& steps, int64_t vocab_size,
                             rlhf::v1::ReferenceSequence* out) {
  for (const TopKDistribution& step : steps) {
    rlhf::v1::StepDistribution* d = out->add_policy_distributions();
    if (static_cast<int64_t>(step.ids.size()) >= vocab_size) {
      d->mutable_logprobs()->Resize(static_cast<int>(vocab_size),
                                    -std::numeric_limits<float>::infinity());
      for (size_t i = 0; i < step.ids.size(); ++i) d->set_logprobs(step.ids[i], step.logprobs[i]);
      continue;
    }
    std::vector<float> kept;
    for (size_t i = 0; i < step.ids.size(); ++i) {
      if (!(step.logprobs[i] > -std::numeric_limits<float>::infinity())) continue;
      d->add_token_ids(step.ids[i]);
      d->add_logprobs(step.logprobs[i]);
      kept.push_back(step.logprobs[i]);
    }
    d->set_tail_logprob(TopKTailLogProb(kept));
  }
}

}  // namespace rlhf::actor
