// Clients of LearnerService, used by actors (and tests/tools). The interface is what
// the actor loop codes against; GrpcLearnerClient talks to a real learner;
// learner/fake_learner_client.h calls a LearnerHandler in-process.
//
// Every unary call takes a deadline; the gRPC client retries UNAVAILABLE with backoff
// until then (services::CallWithRetry). That is safe for all of them: Submit is
// idempotent per lease, and a duplicated Register only leaves an extra actor that
// expires. Thread-safe: one client may be shared by the actor's threads.
// On UNAVAILABLE the gRPC client rebuilds its channel (at most once a second), so a
// restarted learner on the same address is reached at once rather than after the old
// channel's reconnect backoff.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "rlhf/v1/learner.grpc.pb.h"
#include "services/channel.h"
#include "services/weights/wire.h"

namespace rlhf::learner {

// A WatchWeights stream. Next() blocks for the next message; the stream's final status
// (never OK unless the learner closed it cleanly) once it ends. Cancel() from any thread.
class WeightsStream {
 public:
  virtual ~WeightsStream() = default;
  virtual absl::StatusOr<rlhf::v1::WeightsMessage> Next() = 0;
  // Reads the next message, which must be a bucket, and copies its bytes into `target`
  // or queues the copy on target.pipeline (weights::NextBucketFn); returns the bucket's
  // size. This default parses Next(); the
  // gRPC stream copies from gRPC's receive buffers without parsing a message.
  virtual absl::StatusOr<int64_t> NextBucket(const weights::BucketTarget& target);
  virtual void Cancel() = 0;
};

class LearnerClient {
 public:
  virtual ~LearnerClient() = default;
  virtual absl::StatusOr<rlhf::v1::RegisterResponse> Register(
      const rlhf::v1::RegisterRequest& request, absl::Time deadline) = 0;
  virtual absl::StatusOr<rlhf::v1::HeartbeatResponse> Heartbeat(
      const rlhf::v1::HeartbeatRequest& request, absl::Time deadline) = 0;
  virtual absl::Status Deregister(const rlhf::v1::DeregisterRequest& request,
                                  absl::Time deadline) = 0;
  virtual absl::StatusOr<rlhf::v1::LeasePromptsResponse> LeasePrompts(
      const rlhf::v1::LeasePromptsRequest& request, absl::Time deadline) = 0;
  virtual absl::StatusOr<rlhf::v1::SubmitTrajectoriesResponse> Submit(
      const rlhf::v1::SubmitTrajectoriesRequest& request, absl::Time deadline) = 0;
  virtual absl::StatusOr<rlhf::v1::LearnerStats> GetStats(const rlhf::v1::GetStatsRequest& request,
                                                          absl::Time deadline) = 0;
  virtual absl::StatusOr<std::unique_ptr<WeightsStream>> WatchWeights(
      const rlhf::v1::WatchWeightsRequest& request) = 0;
};

class GrpcLearnerClient final : public LearnerClient {
 public:
  // channel.max_message_bytes must fit one weight bucket (weights::MaxMessageBytesFor).
  static absl::StatusOr<std::unique_ptr<GrpcLearnerClient>> Create(
      const services::ChannelOptions& channel, const services::RetryOptions& retry = {});

  absl::StatusOr<rlhf::v1::RegisterResponse> Register(const rlhf::v1::RegisterRequest& request,
                                                      absl::Time deadline) override;
  absl::StatusOr<rlhf::v1::HeartbeatResponse> Heartbeat(const rlhf::v1::HeartbeatRequest& request,
                                                        absl::Time deadline) override;
  absl::Status Deregister(const rlhf::v1::DeregisterRequest& request,
                          absl::Time deadline) override;
  absl::StatusOr<rlhf::v1::LeasePromptsResponse> LeasePrompts(
      const rlhf::v1::LeasePromptsRequest& request, absl::Time deadline) override;
  absl::StatusOr<rlhf::v1::SubmitTrajectoriesResponse> Submit(
      const rlhf::v1::SubmitTrajectoriesRequest& request, absl::Time deadline) override;
  absl::StatusOr<rlhf::v1::LearnerStats> GetStats(const rlhf::v1::GetStatsRequest& request,
                                                  absl::Time deadline) override;
  absl::StatusOr<std::unique_ptr<WeightsStream>> WatchWeights(
      const rlhf::v1::WatchWeightsRequest& request) override;

 private:
  GrpcLearnerClient(services::ChannelOptions options, std::shared_ptr<grpc::Channel> channel,
                    services::RetryOptions retry)
      : options_(std::move(options)),
        retry_(retry),
        channel_(channel),
        stub_(rlhf::v1::LearnerService::NewStub(channel)) {}
  std::shared_ptr<rlhf::v1::LearnerService::Stub> stub();
  void MaybeReconnect(const absl::Status& status);

  const services::ChannelOptions options_;
  const services::RetryOptions retry_;
  absl::Mutex mu_;
  std::shared_ptr<grpc::Channel> channel_ ABSL_GUARDED_BY(mu_);  // stub_'s (WatchWeights)
  std::shared_ptr<rlhf::v1::LearnerService::Stub> stub_ ABSL_GUARDED_BY(mu_);
  absl::Time last_reconnect_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace rlhf::learner
