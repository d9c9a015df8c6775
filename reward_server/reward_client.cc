#include "reward_server/reward_client.h"

#include <algorithm>

#include "services/grpc_status.h"

namespace rlhf::reward {

absl::StatusOr<std::unique_ptr<GrpcRewardClient>> GrpcRewardClient::Create(
    const services::ChannelOptions& channel, const services::RetryOptions& retry) {
  auto ch = services::MakeChannel(channel);
  if (!ch.ok()) return ch.status();
  return std::unique_ptr<GrpcRewardClient>(
      new GrpcRewardClient(*std::move(ch), channel.auth_token, retry));
}

absl::StatusOr<rlhf::v1::RewardScoreResponse> GrpcRewardClient::Score(
    const rlhf::v1::RewardScoreRequest& request, absl::Time deadline) {
  rlhf::v1::RewardScoreResponse response;
  absl::Status status = services::CallWithRetry(retry_, deadline, [&](absl::Time d) {
    grpc::ClientContext context;
    services::PrepareContext(&context, d, token_);
    services::CallCanceller::Scope scope(canceller_, &context);
    if (!scope.status().ok()) return scope.status();
    response.Clear();
    return services::FromGrpcStatus(stub_->Score(&context, request, &response));
  });
  if (!status.ok()) return status;
  return response;
}

FakeRewardClient::FakeRewardClient(Fn fn)
    : fn_(fn ? std::move(fn) : [](const rlhf::v1::TokenSequence& s) {
        return static_cast<float>(s.response_size());
      }) {}

absl::StatusOr<rlhf::v1::RewardScoreResponse> FakeRewardClient::Score(
    const rlhf::v1::RewardScoreRequest& request, absl::Time deadline) {
  ++calls_;
  const absl::Time ready = absl::Now() + absl::Nanoseconds(delay_ns_.load());
  if (cancelled_.WaitForNotificationWithDeadline(std::min(ready, deadline))) {
    return absl::CancelledError("fake: cancelled");
  }
  if (absl::Now() > deadline) return absl::DeadlineExceededError("fake: deadline passed");
  rlhf::v1::RewardScoreResponse response;
  auto& component = (*response.mutable_components())["fake"];
  for (const auto& s : request.sequences()) {
    const float r = fn_(s);
    response.add_rewards(r);
    component.add_values(r);
  }
  return response;
}

}  // namespace rlhf::reward
