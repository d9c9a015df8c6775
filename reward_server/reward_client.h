// Clients of RewardService. Actors code against RewardClient; tests use the fake.
//
//   services::ChannelOptions channel;  channel.target = "127.0.0.1:50051";
//   RLHF_ASSIGN_OR_RETURN(auto client, GrpcRewardClient::Create(channel));
//   RLHF_ASSIGN_OR_RETURN(auto response, client->Score(request, absl::Now() + absl::Seconds(5)));
//
// Score is idempotent, so the gRPC client retries UNAVAILABLE with backoff
// (services::CallWithRetry) until the deadline. Thread-safe: one client may be shared.
#pragma once

#include <atomic>
#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "rlhf/v1/reward.grpc.pb.h"
#include "services/channel.h"

namespace rlhf::reward {

class RewardClient {
 public:
  virtual ~RewardClient() = default;
  virtual absl::StatusOr<rlhf::v1::RewardScoreResponse> Score(
      const rlhf::v1::RewardScoreRequest& request, absl::Time deadline) = 0;
  // Ends every in-flight Score with CANCELLED and makes later ones fail at once: for a
  // process that must stop now. Irreversible. Thread-safe.
  virtual void CancelInFlight() = 0;
};

class GrpcRewardClient final : public RewardClient {
 public:
  static absl::StatusOr<std::unique_ptr<GrpcRewardClient>> Create(
      const services::ChannelOptions& channel, const services::RetryOptions& retry = {});
  absl::StatusOr<rlhf::v1::RewardScoreResponse> Score(const rlhf::v1::RewardScoreRequest& request,
                                                      absl::Time deadline) override;
  void CancelInFlight() override { canceller_.CancelAll(); }

 private:
  GrpcRewardClient(std::shared_ptr<grpc::Channel> channel, std::string token,
                   services::RetryOptions retry)
      : stub_(rlhf::v1::RewardService::NewStub(channel)), token_(std::move(token)),
        retry_(retry) {}
  std::unique_ptr<rlhf::v1::RewardService::Stub> stub_;
  const std::string token_;
  const services::RetryOptions retry_;
  services::CallCanceller canceller_;
};

// In-process fake: rewards[i] = fn(sequences[i]) (default: the response length), with
// a "fake" component. Validates nothing; counts calls. set_delay makes each call take
// that long (a slow scorer), ended early by the deadline (DEADLINE_EXCEEDED) or
// CancelInFlight (CANCELLED). Thread-safe.
class FakeRewardClient final : public RewardClient {
 public:
  using Fn = std::function<float(const rlhf::v1::TokenSequence&)>;
  explicit FakeRewardClient(Fn fn = nullptr);
  absl::StatusOr<rlhf::v1::RewardScoreResponse> Score(const rlhf::v1::RewardScoreRequest& request,
                                                      absl::Time deadline) override;
  void CancelInFlight() override { cancelled_.Notify(); }
  void set_delay(absl::Duration delay) { delay_ns_.store(absl::ToInt64Nanoseconds(delay)); }
  int calls() const { return calls_.load(); }

 private:
  Fn fn_;
  std::atomic<int> calls_{0};
  std::atomic<int64_t> delay_ns_{0};
  absl::Notification cancelled_;
};

}  // namespace rlhf::reward
