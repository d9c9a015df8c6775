// Reward scorers: what the reward server can serve, behind one interface.
//
//   ModelRewardScorer  a learned reward model (TransformerLM with scalar_head): the score
//                      of a sequence is the scalar head at the last real token of
//                      prompt+response, optionally normalised (r - mean) / std with the
//                      reward_mean / reward_std saved in the checkpoint's metadata.
//   GoldRewardScorer   the built-in task's gold labeler (core/data/gold_labeler.h) on the
//                      decoded prompt and response text: a rule scorer.
// The handler combines several scorers as a weighted sum.
//
// Thread-safety: Score() is called from one batcher worker thread at a time; the
// scorers are otherwise immutable.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"

namespace rlhf::reward {

struct ScoringSequence {
  std::vector<int32_t> prompt;
  std::vector<int32_t> response;
  int64_t length() const { return static_cast<int64_t>(prompt.size() + response.size()); }
};

class RewardScorer {
 public:
  virtual ~RewardScorer() = default;
  // Name in RewardScoreResponse.components ("rm", "gold", ...).
  virtual std::string name() const = 0;
  // One score per sequence, in order. Sequences were validated by the handler.
  virtual absl::StatusOr<std::vector<float>> Score(
      const std::vector<const ScoringSequence*>& batch) = 0;
};

struct Normalization {
  bool enabled = false;
  double mean = 0.0;
  double std = 1.0;  // > 0
};

class ModelRewardScorer final : public RewardScorer {
 public:
  // model must have scalar_head; it is switched to eval mode. pad_id pads batches.
  static absl::StatusOr<std::unique_ptr<ModelRewardScorer>> Create(
      std::string name, TransformerLM model, int32_t pad_id, Normalization normalization);
  // Loads a checkpoint directory (core/model/checkpoint.h). normalize: apply
  // (r - reward_mean) / reward_std from config.json metadata (FailedPrecondition if the
  // checkpoint has none).
  static absl::StatusOr<std::unique_ptr<ModelRewardScorer>> FromCheckpoint(
      std::string name, const std::string& dir, int32_t pad_id, bool normalize);

  std::string name() const override { return name_; }
  absl::StatusOr<std::vector<float>> Score(
      const std::vector<const ScoringSequence*>& batch) override;
  const ModelConfig& config() const { return model_->config(); }
  const Normalization& normalization() const { return normalization_; }

 private:
  ModelRewardScorer(std::string name, TransformerLM model, int32_t pad_id, Normalization n)
      : name_(std::move(name)), model_(std::move(model)), pad_id_(pad_id), normalization_(n) {}
  std::string name_;
  TransformerLM model_;
  int32_t pad_id_;
  Normalization normalization_;
};

class GoldRewardScorer final : public RewardScorer {
 public:
  explicit GoldRewardScorer(std::shared_ptr<const Tokenizer> tokenizer, std::string name = "gold")
      : name_(std::move(name)), tokenizer_(std::move(tokenizer)) {}
  std::string name() const override { return name_; }
  absl::StatusOr<std::vector<float>> Score(
      const std::vector<const ScoringSequence*>& batch) override;

 private:
  std::string name_;
  std::shared_ptr<const Tokenizer> tokenizer_;
};

// One entry of --scorers: "rm:/path/to/ckpt[:weight]" or "gold[:weight]".
struct ScorerSpec {
  enum class Kind { kModel, kGold };
  Kind kind = Kind::kModel;
  std::string checkpoint;  // kModel
  double weight = 1.0;
};
// Comma-separated list; InvalidArgument naming the entry for bad syntax or weights.
absl::StatusOr<std::vector<ScorerSpec>> ParseScorerSpecs(const std::string& text);

}  // namespace rlhf::reward
