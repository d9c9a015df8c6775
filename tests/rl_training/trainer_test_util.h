// Shared helpers of the learner tests: a tiny model and on-policy trajectories.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "core/model/generation.h"
#include "core/model/logprobs.h"
#include "core/model/model.h"
#include "core/rl_training/trainer.h"
#include "tests/testing/tiny_model.h"

namespace rlhf::testing {

// The shared tiny model (tests/testing/tiny_model.h; TinyModel comes from there too).
inline ModelConfig TinyConfig(bool scalar_head = false) { return TinyModelConfig(scalar_head); }

// Per-token log-probs of responses under `model` (no grad).
inline std::vector<std::vector<float>> LogProbs(TransformerLM& model,
                                                const std::vector<std::vector<int32_t>>& prompts,
                                                const std::vector<std::vector<int32_t>>& responses) {
  torch::NoGradGuard no_grad;
  SequenceBatchOptions o;
  o.pad_id = 258;
  SequenceBatch b = *MakeSequenceBatch(prompts, responses, o);
  ForwardOutput out = model->forward(b.ids, b.attention_mask, b.position_ids);
  return PerSequenceResponseValues(ResponseLogProbs(out.logits, b), b);
}

// Samples `samples` responses for each prompt from `policy`, scores them with a rule
// (fraction of response bytes equal to 'a'), and fills reference log-probs from `ref`.
// Seeds depend only on (round, index): synchronous runs are reproducible.
inline std::vector<Trajectory> SampleBatch(TransformerLM& policy, TransformerLM& ref,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           int samples, int64_t round, int64_t version) {
  std::vector<std::vector<int32_t>> p;
  std::vector<uint64_t> seeds;
  std::vector<int64_t> groups;
  for (size_t i = 0; i < prompts.size(); ++i) {
    for (int s = 0; s < samples; ++s) {
      p.push_back(prompts[i]);
      seeds.push_back(static_cast<uint64_t>(round * 1000003 + p.size()));
      groups.push_back(static_cast<int64_t>(i));
    }
  }
  SamplingOptions so;
  so.max_new_tokens = 6;
  so.stop_tokens = {257};
  GenerationResult g = *Generate(policy, p, seeds, so);
  std::vector<std::vector<float>> ref_lp = LogProbs(ref, p, g.responses);
  std::vector<Trajectory> out;
  for (size_t i = 0; i < p.size(); ++i) {
    Trajectory t;
    t.prompt = p[i];
    t.response = g.responses[i];
    t.behaviour_logprobs = g.logprobs[i];
    t.reference_logprobs = ref_lp[i];
    int hits = 0;
    for (int32_t id : t.response) hits += id == 'a';
    t.reward = t.response.empty() ? 0.f : static_cast<float>(hits) / t.response.size();
    t.policy_version = version;
    t.group_id = groups[i];
    out.push_back(std::move(t));
  }
  return out;
}

inline double MaxAbsDiff(TransformerLM& a, TransformerLM& b) {
  double worst = 0;
  auto pa = a->named_parameters();
  auto pb = b->named_parameters();
  for (const auto& item : pa) {
    worst = std::max(worst, (item.value() - pb[item.key()]).abs().max().item<double>());
  }
  return worst;
}

}  // namespace rlhf::testing
