// RewardHandler: the reward server's logic, no gRPC. Validates a RewardScoreRequest,
// queues its sequences on a DynamicBatcher, runs every scorer on each batched forward
// and answers rewards[i] = Σ_k weight_k · score_k(sequences[i]) plus the per-scorer
// components.
//
// Validation (INVALID_ARGUMENT naming field and index, nothing queued): 1..max
// sequences, non-empty prompt and response, prompt+response <= max_seq_len, token ids in
// [0, vocab_size). A full queue is RESOURCE_EXHAUSTED; a cancelled or expired request
// leaves the batch (CANCELLED / DEADLINE_EXCEEDED).
//
// Thread-safety: Score() is thread-safe; done runs on the batcher thread (or inline on
// rejection). Shutdown() finishes queued work and then rejects new requests.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include <prometheus/registry.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "reward_server/scorers.h"
#include "rlhf/v1/reward.pb.h"
#include "services/batcher.h"
#include "services/metrics.h"

namespace rlhf::reward {

struct WeightedScorer {
  std::unique_ptr<RewardScorer> scorer;
  double weight = 1.0;
};

struct RewardHandlerOptions {
  int64_t vocab_size = 259;          // token ids must be < this
  int64_t max_seq_len = 256;         // prompt + response tokens
  int max_sequences_per_request = services::kDefaultMaxSequencesPerRequest;
  services::BatcherOptions batcher;
};

class RewardHandler {
 public:
  using Done = std::function<void(absl::StatusOr<rlhf::v1::RewardScoreResponse>)>;

  // registry may be null (no metrics). Scorer names must be distinct.
  static absl::StatusOr<std::unique_ptr<RewardHandler>> Create(
      const RewardHandlerOptions& options, std::vector<WeightedScorer> scorers,
      prometheus::Registry* registry);
  ~RewardHandler() { Shutdown(); }

  absl::Status Validate(const rlhf::v1::RewardScoreRequest& request) const;
  // done is called exactly once.
  void Score(const rlhf::v1::RewardScoreRequest& request, absl::Time deadline,
             services::CancelFlag cancelled, Done done);
  // Blocking convenience (tests, benchmarks, in-process use).
  absl::StatusOr<rlhf::v1::RewardScoreResponse> ScoreBlocking(
      const rlhf::v1::RewardScoreRequest& request, absl::Time deadline);
  void Shutdown();

  const RewardHandlerOptions& options() const { return options_; }

 private:
  using Batcher = services::DynamicBatcher<ScoringSequence, std::vector<float>>;
  RewardHandler(RewardHandlerOptions options, std::vector<WeightedScorer> scorers,
                prometheus::Registry* registry);
  absl::StatusOr<std::vector<std::vector<float>>> RunBatch(
      const std::vector<const ScoringSequence*>& batch);

  const RewardHandlerOptions options_;
  std::vector<WeightedScorer> scorers_;
  std::unique_ptr<services::BatchMetrics> metrics_;
  std::unique_ptr<Batcher> batcher_;
};

}  // namespace rlhf::reward
