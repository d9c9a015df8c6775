// Reward scorers: what the reward server can serve, behind one interface.
//
//   ModelRewardScorer  a learned reward model (TransformerLM with scalar_head): the score
//                      of a sequence is the scalar head at the last real token of
//                      prompt+response, optionally normalised (r - mean) / std with the
//                      reward_mean / reward_std saved in the checkpoint's metadata.
//   GoldRewardScorer   the built-in task's gold labeler (core/data/gold_labeler.h) on the
//                      decoded prompt and response text: a rule scorer.
//   Rule scorers on the decoded response text (no C++ needed to use them, docs/data.md):
//     LengthRewardScorer      -max(0, |bytes - target| - tolerance) / target
//     RegexRewardScorer       RE2 search: required 1/0, forbidden -1/0
//     ExactMatchRewardScorer  1 if the response equals the prompt's reference answer
//                             (surrounding whitespace trimmed, optionally ignoring case),
//                             else 0. The references come from prompt JSONL records
//                             {"prompt", "reference"}; a sequence is matched to its record
//                             by its prompt token ids (the prompt exactly as the learner
//                             leased it, [BOS] + Encode(prompt)), so nothing beyond the
//                             tokens has to travel with a request. A prompt with no
//                             reference scores 0 and is counted (missing()).
//   RemoteRewardScorer  any server speaking rlhf.v1.RewardService (the extension point
//                       for reward functions in other languages: examples/): forwards
//                       the batch and returns its rewards.
// The handler combines several scorers as a weighted sum.
//
// Thread-safety: Score() is called from one batcher worker thread at a time; the
// scorers are otherwise immutable.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/model/compute_dtype.h"
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
  // checkpoint has none). load: compute dtype and sequence length (core/model/compute_dtype.h).
  static absl::StatusOr<std::unique_ptr<ModelRewardScorer>> FromCheckpoint(
      std::string name, const std::string& dir, int32_t pad_id, bool normalize,
      const ModelLoadOptions& load = {});

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

class LengthRewardScorer final : public RewardScorer {
 public:
  // target >= 1 bytes, tolerance >= 0 (InvalidArgument otherwise).
  static absl::StatusOr<std::unique_ptr<LengthRewardScorer>> Create(
      std::shared_ptr<const Tokenizer> tokenizer, int64_t target, int64_t tolerance,
      std::string name = "length");
  std::string name() const override { return name_; }
  absl::StatusOr<std::vector<float>> Score(
      const std::vector<const ScoringSequence*>& batch) override;

 private:
  LengthRewardScorer(std::shared_ptr<const Tokenizer> t, int64_t target, int64_t tolerance,
                     std::string name)
      : name_(std::move(name)), tokenizer_(std::move(t)), target_(target), tolerance_(tolerance) {}
  std::string name_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  int64_t target_, tolerance_;
};

class RegexRewardScorer final : public RewardScorer {
 public:
  // InvalidArgument for a pattern RE2 rejects (its error in the message).
  static absl::StatusOr<std::unique_ptr<RegexRewardScorer>> Create(
      std::shared_ptr<const Tokenizer> tokenizer, const std::string& pattern, bool forbidden,
      std::string name = "regex");
  ~RegexRewardScorer() override;
  std::string name() const override { return name_; }
  absl::StatusOr<std::vector<float>> Score(
      const std::vector<const ScoringSequence*>& batch) override;

 private:
  struct Impl;
  RegexRewardScorer(std::shared_ptr<const Tokenizer> t, std::unique_ptr<Impl> impl,
                    bool forbidden, std::string name);
  std::string name_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  std::unique_ptr<Impl> impl_;
  bool forbidden_;
};

class ExactMatchRewardScorer final : public RewardScorer {
 public:
  // Reads {"prompt", "reference"} records from `prompt_files` (records without a
  // reference are ignored); prompts are encoded as the learner encodes them. The same
  // prompt with two different references is InvalidArgument; no reference at all is
  // InvalidArgument.
  static absl::StatusOr<std::unique_ptr<ExactMatchRewardScorer>> FromPromptFiles(
      std::shared_ptr<const Tokenizer> tokenizer, const std::vector<std::string>& prompt_files,
      bool ignore_case, std::string name = "exact_match");
  std::string name() const override { return name_; }
  absl::StatusOr<std::vector<float>> Score(
      const std::vector<const ScoringSequence*>& batch) override;
  int64_t references() const { return static_cast<int64_t>(references_.size()); }
  int64_t missing() const { return missing_; }

 private:
  ExactMatchRewardScorer(std::shared_ptr<const Tokenizer> t, bool ignore_case, std::string name)
      : name_(std::move(name)), tokenizer_(std::move(t)), ignore_case_(ignore_case) {}
  std::string name_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  bool ignore_case_;
  std::map<std::vector<int32_t>, std::string> references_;  // prompt ids -> normalised
  int64_t missing_ = 0;  // only touched by Score (one batcher thread)
};

class RewardClient;
class RemoteRewardScorer final : public RewardScorer {
 public:
  RemoteRewardScorer(std::unique_ptr<RewardClient> client, absl::Duration timeout,
                     std::string name = "remote");
  ~RemoteRewardScorer() override;
  // Connects to `address` (host:port, plaintext; loopback or a trusted network).
  static absl::StatusOr<std::unique_ptr<RemoteRewardScorer>> Connect(
      const std::string& address, absl::Duration timeout, std::string name = "remote");
  std::string name() const override { return name_; }
  // UNAVAILABLE / DEADLINE_EXCEEDED from the remote server fail the batch; a response
  // with the wrong number of rewards or a non-finite reward is Internal.
  absl::StatusOr<std::vector<float>> Score(
      const std::vector<const ScoringSequence*>& batch) override;

 private:
  std::string name_;
  std::unique_ptr<RewardClient> client_;
  absl::Duration timeout_;
};

// One scorer of the reward server: a --scorers entry or a --scorers_json element.
struct ScorerSpec {
  enum class Kind { kModel, kGold, kLength, kRegex, kExactMatch, kRemote };
  Kind kind = Kind::kModel;
  std::string name;        // "" = the type's name
  std::string checkpoint;  // kModel
  double weight = 1.0;
  int64_t target_length = 0, length_tolerance = 0;  // kLength
  std::string pattern;                              // kRegex
  bool forbidden = false;
  std::vector<std::string> references;  // kExactMatch: prompt JSONL files
  bool ignore_case = false;
  std::string address;     // kRemote
  int64_t timeout_ms = 10000;
};
// --scorers: comma-separated "rm:/path/to/ckpt[:weight]" or "gold[:weight]";
// InvalidArgument naming the entry for bad syntax or weights.
absl::StatusOr<std::vector<ScorerSpec>> ParseScorerSpecs(const std::string& text);
// --scorers_json: a JSON array of rlhf.v1.ScorerConfig objects with proto field names
// ([{"type": "regex", "pattern": "\\d+", "weight": 0.5}, ...]); InvalidArgument naming
// "scorers[i].field" for a wrong type, unknown key or missing value.
absl::StatusOr<std::vector<ScorerSpec>> ParseScorerSpecsJson(const std::string& text);
// Builds a non-model scorer (every kind but kModel).
absl::StatusOr<std::unique_ptr<RewardScorer>> MakeRuleScorer(
    const ScorerSpec& spec, std::shared_ptr<const Tokenizer> tokenizer);

}  // namespace rlhf::reward
