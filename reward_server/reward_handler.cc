#include "reward_server/reward_handler.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "services/validation.h"

namespace rlhf::reward {

absl::StatusOr<std::unique_ptr<RewardHandler>> RewardHandler::Create(
    const RewardHandlerOptions& options, std::vector<WeightedScorer> scorers,
    prometheus::Registry* registry) {
  if (scorers.empty()) return absl::InvalidArgumentError("scorers: at least one is needed");
  std::set<std::string> names;
  for (size_t i = 0; i < scorers.size(); ++i) {
    if (scorers[i].scorer == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("scorers[", i, "]: null"));
    }
    if (!names.insert(scorers[i].scorer->name()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("scorers[", i, "]: duplicate name '", scorers[i].scorer->name(), "'"));
    }
  }
  if (options.vocab_size < 1) return absl::InvalidArgumentError("vocab_size: must be >= 1");
  if (options.max_seq_len < 2) return absl::InvalidArgumentError("max_seq_len: must be >= 2");
  if (options.max_sequences_per_request < 1) {
    return absl::InvalidArgumentError("max_sequences_per_request: must be >= 1");
  }
  if (auto s = services::ValidateBatcherOptions(options.batcher); !s.ok()) return s;
  return std::unique_ptr<RewardHandler>(new RewardHandler(options, std::move(scorers), registry));
}

RewardHandler::RewardHandler(RewardHandlerOptions options, std::vector<WeightedScorer> scorers,
                             prometheus::Registry* registry)
    : options_(std::move(options)), scorers_(std::move(scorers)) {
  services::BatcherHooks hooks;
  if (registry != nullptr) {
    metrics_ = std::make_unique<services::BatchMetrics>(*registry, "reward_server");
    std::string names;
    for (const auto& s : scorers_) {
      absl::StrAppend(&names, names.empty() ? "" : "+", s.weight, "*", s.scorer->name());
    }
    metrics_->SetModelInfo({{"scorers", names},
                            {"vocab_size", absl::StrCat(options_.vocab_size)},
                            {"max_seq_len", absl::StrCat(options_.max_seq_len)}});
    hooks = metrics_->Hooks();
  }
  batcher_ = std::make_unique<Batcher>(
      options_.batcher, [](const ScoringSequence& s) { return s.length(); },
      [this](const std::vector<const ScoringSequence*>& batch) { return RunBatch(batch); },
      std::move(hooks));
}

absl::Status RewardHandler::Validate(const rlhf::v1::RewardScoreRequest& request) const {
  if (auto s = services::ValidateCount(request.sequences_size(), "sequences",
                                       options_.max_sequences_per_request);
      !s.ok()) {
    return s;
  }
  services::SequenceLimits limits;
  limits.vocab_size = options_.vocab_size;
  limits.max_length = options_.max_seq_len;
  for (int i = 0; i < request.sequences_size(); ++i) {
    if (auto s = services::ValidateTokenSequence(request.sequences(i),
                                                 absl::StrCat("sequences[", i, "]"), limits);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<float>>> RewardHandler::RunBatch(
    const std::vector<const ScoringSequence*>& batch) {
  std::vector<std::vector<float>> out(batch.size(), std::vector<float>(scorers_.size()));
  for (size_t k = 0; k < scorers_.size(); ++k) {
    absl::StatusOr<std::vector<float>> scores = scorers_[k].scorer->Score(batch);
    if (!scores.ok()) return scores.status();
    if (scores->size() != batch.size()) {
      return absl::InternalError(absl::StrCat("scorer '", scorers_[k].scorer->name(),
                                              "' returned ", scores->size(), " scores for ",
                                              batch.size(), " sequences"));
    }
    for (size_t i = 0; i < batch.size(); ++i) out[i][k] = (*scores)[i];
  }
  return out;
}

void RewardHandler::Score(const rlhf::v1::RewardScoreRequest& request, absl::Time deadline,
                          services::CancelFlag cancelled, Done done) {
  if (absl::Status s = Validate(request); !s.ok()) {
    done(s);
    return;
  }
  std::vector<ScoringSequence> items(request.sequences_size());
  for (int i = 0; i < request.sequences_size(); ++i) {
    const auto& seq = request.sequences(i);
    items[i].prompt.assign(seq.prompt().begin(), seq.prompt().end());
    items[i].response.assign(seq.response().begin(), seq.response().end());
  }
  auto callback = [this, done](absl::StatusOr<std::vector<std::vector<float>>> results) {
    if (!results.ok()) {
      done(results.status());
      return;
    }
    rlhf::v1::RewardScoreResponse response;
    std::vector<rlhf::v1::ScorerValues*> components;
    for (const auto& s : scorers_) {
      components.push_back(&(*response.mutable_components())[s.scorer->name()]);
    }
    for (const std::vector<float>& values : *results) {
      double reward = 0;
      for (size_t k = 0; k < scorers_.size(); ++k) {
        reward += scorers_[k].weight * values[k];
        components[k]->add_values(values[k]);
      }
      response.add_rewards(static_cast<float>(reward));
    }
    done(std::move(response));
  };
  absl::Status queued =
      batcher_->Submit(std::move(items), deadline, std::move(cancelled), std::move(callback));
  if (!queued.ok()) done(queued);
}

absl::StatusOr<rlhf::v1::RewardScoreResponse> RewardHandler::ScoreBlocking(
    const rlhf::v1::RewardScoreRequest& request, absl::Time deadline) {
  absl::Notification notification;
  absl::StatusOr<rlhf::v1::RewardScoreResponse> result;
  Score(request, deadline, nullptr, [&](absl::StatusOr<rlhf::v1::RewardScoreResponse> r) {
    result = std::move(r);
    notification.Notify();
  });
  notification.WaitForNotification();
  return result;
}

void RewardHandler::Shutdown() {
  if (batcher_) batcher_->Shutdown();
}

}  // namespace rlhf::reward
