// The policy's per-step distributions on the wire (kl.estimator: exact): what the actor
// sends the reference server so that it can compute the seed's KL over the vocabulary.
//
// Each response step's distribution comes from Generate's return_top_k_distributions
// (the sampling distribution, generation.h). When it covers the whole vocabulary
// (k >= vocab size) it is sent as a full row: `logprobs` in token-id order, no ids.
// Otherwise as top-k: the ids and log-probs of the entries with non-zero probability
// (a truncated sampler's removed tokens, log-prob -inf, are left out) plus the tail
// bucket log(1 - Σ p). The reference server's KL from top-k is then a lower bound on the
// full KL (data-processing inequality, core/rl/kl.h), exact when the tail mass is 0.
//
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include "core/model/generation.h"
#include "rlhf/v1/reference.pb.h"

namespace rlhf::actor {

// What Generate should return per step for `kl_top_k` (RegisterResponse.kl_top_k):
// vocab_size (the full row) when kl_top_k <= 0 or >= vocab_size, else kl_top_k.
int64_t DistributionEntries(int32_t kl_top_k, int64_t vocab_size);

// Appends one StepDistribution per element of `steps` to out->policy_distributions.
void AppendStepDistributions(const std::vector<TopKDistribution>& steps, int64_t vocab_size,
                             rlhf::v1::ReferenceSequence* out);

}  // namespace rlhf::actor
