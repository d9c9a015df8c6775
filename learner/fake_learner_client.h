// FakeLearnerClient: the LearnerClient interface over an in-process LearnerHandler, for
// unit tests of code that talks to a learner (the actor). No gRPC, no sockets.
#pragma once

#include <memory>

#include "learner/learner_client.h"
#include "learner/learner_handler.h"

namespace rlhf::learner {

// In-process client over a LearnerHandler (not owned). WatchWeights is Unimplemented.
// Thread-safe as the handler is.
class FakeLearnerClient final : public LearnerClient {
 public:
  explicit FakeLearnerClient(LearnerHandler* handler) : handler_(handler) {}
  absl::StatusOr<rlhf::v1::RegisterResponse> Register(const rlhf::v1::RegisterRequest& r,
                                                      absl::Time) override {
    return handler_->Register(r);
  }
  absl::StatusOr<rlhf::v1::HeartbeatResponse> Heartbeat(const rlhf::v1::HeartbeatRequest& r,
                                                        absl::Time) override {
    return handler_->Heartbeat(r);
  }
  absl::Status Deregister(const rlhf::v1::DeregisterRequest& r, absl::Time) override {
    return handler_->Deregister(r);
  }
  absl::StatusOr<rlhf::v1::LeasePromptsResponse> LeasePrompts(
      const rlhf::v1::LeasePromptsRequest& r, absl::Time) override {
    return handler_->LeasePrompts(r);
  }
  absl::StatusOr<rlhf::v1::SubmitTrajectoriesResponse> Submit(
      const rlhf::v1::SubmitTrajectoriesRequest& r, absl::Time) override {
    return handler_->Submit(r);
  }
  absl::StatusOr<rlhf::v1::LearnerStats> GetStats(const rlhf::v1::GetStatsRequest& r,
                                                  absl::Time) override {
    return handler_->Stats(r.steps_after());
  }
  absl::StatusOr<std::unique_ptr<WeightsStream>> WatchWeights(
      const rlhf::v1::WatchWeightsRequest&) override {
    return absl::UnimplementedError("FakeLearnerClient has no weights stream");
  }

 private:
  LearnerHandler* const handler_;
};

}  // namespace rlhf::learner
