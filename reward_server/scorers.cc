#include "reward_server/scorers.h"

#include <cmath>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/data/gold_labeler.h"
#include "core/model/checkpoint.h"
#include "core/model/logprobs.h"
#include "core/status_macros.h"

namespace rlhf::reward {

absl::StatusOr<std::unique_ptr<ModelRewardScorer>> ModelRewardScorer::Create(
    std::string name, TransformerLM model, int32_t pad_id, Normalization normalization) {
  if (!model) return absl::InvalidArgumentError("reward model: null");
  if (!model->config().scalar_head) {
    return absl::InvalidArgumentError(
        absl::StrCat("reward model '", name, "': config.scalar_head is false"));
  }
  if (normalization.enabled && !(normalization.std > 0 && std::isfinite(normalization.std) &&
                                 std::isfinite(normalization.mean))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "reward model '", name, "': reward_std must be finite and > 0, got ", normalization.std));
  }
  model->eval();
  return std::unique_ptr<ModelRewardScorer>(
      new ModelRewardScorer(std::move(name), std::move(model), pad_id, normalization));
}

absl::StatusOr<std::unique_ptr<ModelRewardScorer>> ModelRewardScorer::FromCheckpoint(
    std::string name, const std::string& dir, int32_t pad_id, bool normalize) {
  RLHF_ASSIGN_OR_RETURN(LoadedCheckpoint loaded, LoadCheckpoint(dir));
  Normalization n;
  if (normalize) {
    const nlohmann::json& md = loaded.metadata;
    if (!md.is_object() || !md.contains("reward_mean") || !md.contains("reward_std") ||
        !md["reward_mean"].is_number() || !md["reward_std"].is_number()) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir, "/config.json: normalisation requested but metadata has no numeric "
               "reward_mean / reward_std"));
    }
    n.enabled = true;
    n.mean = md["reward_mean"].get<double>();
    n.std = md["reward_std"].get<double>();
  }
  return Create(std::move(name), std::move(loaded.model), pad_id, n);
}

absl::StatusOr<std::vector<float>> ModelRewardScorer::Score(
    const std::vector<const ScoringSequence*>& batch) {
  std::vector<std::vector<int32_t>> prompts, responses;
  prompts.reserve(batch.size());
  responses.reserve(batch.size());
  for (const ScoringSequence* s : batch) {
    prompts.push_back(s->prompt);
    responses.push_back(s->response);
  }
  SequenceBatchOptions options;
  options.pad_id = pad_id_;
  options.max_len = model_->config().max_seq_len;
  RLHF_ASSIGN_OR_RETURN(SequenceBatch packed, MakeSequenceBatch(prompts, responses, options));
  return TorchCall(
      [&]() -> std::vector<float> {
        c10::InferenceMode guard;
        ForwardOutput out = model_->forward(packed.ids, packed.attention_mask, packed.position_ids);
        torch::Tensor scores = ScoreAtLastToken(out.scalar, packed.attention_mask).contiguous();
        if (normalization_.enabled) {
          scores = (scores - normalization_.mean) / normalization_.std;
        }
        const float* p = scores.data_ptr<float>();
        return std::vector<float>(p, p + scores.numel());
      },
      "reward model forward");
}

absl::StatusOr<std::vector<float>> GoldRewardScorer::Score(
    const std::vector<const ScoringSequence*>& batch) {
  std::vector<float> out;
  out.reserve(batch.size());
  for (const ScoringSequence* s : batch) {
    out.push_back(static_cast<float>(
        GoldScore(tokenizer_->Decode(s->prompt), tokenizer_->Decode(s->response))));
  }
  return out;
}

absl::StatusOr<std::vector<ScorerSpec>> ParseScorerSpecs(const std::string& text) {
  std::vector<ScorerSpec> specs;
  int index = 0;
  for (absl::string_view entry : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    const std::string field = absl::StrCat("scorers[", index++, "] '", entry, "'");
    std::vector<std::string> parts = absl::StrSplit(entry, ':');
    ScorerSpec spec;
    std::string weight_text;
    if (parts[0] == "gold") {
      spec.kind = ScorerSpec::Kind::kGold;
      if (parts.size() > 2) return absl::InvalidArgumentError(field + ": expected gold[:weight]");
      if (parts.size() == 2) weight_text = parts[1];
    } else if (parts[0] == "rm") {
      spec.kind = ScorerSpec::Kind::kModel;
      if (parts.size() < 2 || parts.size() > 3 || parts[1].empty()) {
        return absl::InvalidArgumentError(field + ": expected rm:<checkpoint dir>[:weight]");
      }
      spec.checkpoint = parts[1];
      if (parts.size() == 3) weight_text = parts[2];
    } else {
      return absl::InvalidArgumentError(field + ": unknown scorer kind (expected rm or gold)");
    }
    if (!weight_text.empty() &&
        (!absl::SimpleAtod(weight_text, &spec.weight) || !std::isfinite(spec.weight))) {
      return absl::InvalidArgumentError(field + ": weight is not a finite number");
    }
    specs.push_back(spec);
  }
  if (specs.empty()) return absl::InvalidArgumentError("scorers: empty");
  return specs;
}

}  // namespace rlhf::reward
