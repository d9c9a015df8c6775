// ReferenceHandler: the reference server's logic, no gRPC. For each sequence it returns
// the frozen SFT model's log-probs of the response tokens (core/model/logprobs.h, the
// one definition shared with the learner), the per-token KL of the policy against it with
// the requested estimator (core/rl/kl.h: k1 = d, k2 = d²/2, k3 = exp(-d) - 1 + d,
// d = policy_logprob - ref_logprob), and, when the request carries the policy's per-step
// distributions, the exact KL over the vocabulary (ExactKlFull / ExactKlTopK). With
// kl_estimator EXACT (the RL path's `kl.estimator: exact`) distributions are required
// and `kl` holds the exact values too.
//
// Validation (INVALID_ARGUMENT naming field and index; nothing queued): 1..max
// sequences; per sequence: non-empty prompt and response, length <= max_seq_len, ids in
// [0, vocab); policy_logprobs one per response token, finite, <= 0; distributions absent
// or one per response token, each either full (vocab_size log-probs) or top-k (ids in
// range and distinct, logprobs finite or -inf, tail_logprob <= 0 and not NaN).
//
// Thread-safety: Score() is thread-safe; done runs on the batcher thread or inline.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include <prometheus/registry.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/model/model.h"
#include "core/rl/kl.h"
#include "rlhf/v1/reference.pb.h"
#include "services/batcher.h"
#include "services/metrics.h"

namespace rlhf::reference {

struct ReferenceHandlerOptions {
  // The served model's tokenizer's pad_id() (main.cc takes it from the checkpoint); padded
  // positions are masked, so any in-vocabulary id gives the same numbers.
  int32_t pad_id = 0;
  int max_sequences_per_request = services::kDefaultMaxSequencesPerRequest;
  int64_t max_seq_len = 0;            // 0 = the model's max_seq_len
  // Caps one forward's float32 logits ([padded tokens, vocab]) at this many MiB by
  // lowering batcher.max_batch_tokens (never below one max_seq_len sequence).
  int64_t max_logits_mb = services::kDefaultMaxLogitsMb;
  services::BatcherOptions batcher;
};

// Batched and one-at-a-time scoring of the same sequence agree up to floating-point
// reassociation: BLAS picks its blocking by the batch's shape, so sums run in another
// order (no value is ever mixed across rows: padding is masked to exact zeros). Measured
// against a float64 forward (tests/reference_server): max |Δ log-prob| of 16 mixed-length
// sequences up to 96 tokens on the small preset is ~3e-6 batched and one at a time alike
// (weights scaled to trained-model logit sizes); this bound leaves margin for deeper models.
inline constexpr double kBatchingLogprobTolerance = 1e-4;

// The batcher's token budget that respects options.max_logits_mb for `vocab_size`.
int64_t EffectiveMaxBatchTokens(const ReferenceHandlerOptions& options, int64_t vocab_size,
                                int64_t max_seq_len);

// One sequence as queued on the batcher (a copy of the request's data).
struct ReferenceItem {
  std::vector<int32_t> prompt;
  std::vector<int32_t> response;
  std::vector<float> policy_logprobs;
  KlEstimator estimator = KlEstimator::kK1;
  const rlhf::v1::ReferenceSequence* source = nullptr;  // distributions (request outlives it)
  int64_t length() const { return static_cast<int64_t>(prompt.size() + response.size()); }
};

struct ReferenceItemResult {
  std::vector<float> ref_logprobs;
  std::vector<float> kl;
  std::vector<float> exact_kl;
};

class ReferenceHandler {
 public:
  using Done = std::function<void(absl::StatusOr<rlhf::v1::ReferenceScoreResponse>)>;

  // model: the frozen reference (needs lm_head); switched to eval. registry nullable.
  static absl::StatusOr<std::unique_ptr<ReferenceHandler>> Create(
      const ReferenceHandlerOptions& options, TransformerLM model,
      prometheus::Registry* registry);
  ~ReferenceHandler() { Shutdown(); }

  absl::Status Validate(const rlhf::v1::ReferenceScoreRequest& request) const;
  // done is called exactly once. `request` must stay alive until done runs (the gRPC
  // adapter's request message does).
  void Score(const rlhf::v1::ReferenceScoreRequest& request, absl::Time deadline,
             services::CancelFlag cancelled, Done done);
  absl::StatusOr<rlhf::v1::ReferenceScoreResponse> ScoreBlocking(
      const rlhf::v1::ReferenceScoreRequest& request, absl::Time deadline);
  void Shutdown();

  const ModelConfig& config() const { return model_->config(); }
  int64_t max_seq_len() const { return max_seq_len_; }

 private:
  using Batcher = services::DynamicBatcher<ReferenceItem, ReferenceItemResult>;
  ReferenceHandler(ReferenceHandlerOptions options, TransformerLM model,
                   prometheus::Registry* registry);
  absl::StatusOr<std::vector<ReferenceItemResult>> RunBatch(
      const std::vector<const ReferenceItem*>& batch);

  const ReferenceHandlerOptions options_;
  TransformerLM model_;
  int64_t max_seq_len_;
  std::unique_ptr<services::BatchMetrics> metrics_;
  std::unique_ptr<Batcher> batcher_;
};

// KlEstimator proto enum -> core enum (UNSPECIFIED = k1); InvalidArgument otherwise.
absl::StatusOr<KlEstimator> FromProto(rlhf::v1::KlEstimator estimator);

}  // namespace rlhf::reference
