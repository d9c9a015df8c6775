#include "reference_server/reference_client.h"

#include <cmath>

#include "services/grpc_status.h"

namespace rlhf::reference {

absl::StatusOr<std::unique_ptr<GrpcReferenceClient>> GrpcReferenceClient::Create(
    const services::ChannelOptions& channel, const services::RetryOptions& retry) {
  auto ch = services::MakeChannel(channel);
  if (!ch.ok()) return ch.status();
  return std::unique_ptr<GrpcReferenceClient>(
      new GrpcReferenceClient(*std::move(ch), channel.auth_token, retry));
}

absl::StatusOr<rlhf::v1::ReferenceScoreResponse> GrpcReferenceClient::Score(
    const rlhf::v1::ReferenceScoreRequest& request, absl::Time deadline) {
  rlhf::v1::ReferenceScoreResponse response;
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

absl::StatusOr<rlhf::v1::ReferenceScoreResponse> FakeReferenceClient::Score(
    const rlhf::v1::ReferenceScoreRequest& request, absl::Time deadline) {
  ++calls_;
  if (cancelled_.load()) return absl::CancelledError("fake: cancelled");
  if (absl::Now() > deadline) return absl::DeadlineExceededError("fake: deadline passed");
  rlhf::v1::ReferenceScoreResponse response;
  for (const auto& seq : request.sequences()) {
    auto* r = response.add_results();
    const bool exact = seq.policy_distributions_size() > 0;
    for (float p : seq.policy_logprobs()) {
      const double d = -offset_;  // policy - ref
      r->add_ref_logprobs(p + offset_);
      if (exact) r->add_exact_kl(std::abs(offset_));
      switch (request.kl_estimator()) {
        case rlhf::v1::KL_ESTIMATOR_EXACT: r->add_kl(std::abs(offset_)); break;
        case rlhf::v1::KL_ESTIMATOR_K2: r->add_kl(static_cast<float>(0.5 * d * d)); break;
        case rlhf::v1::KL_ESTIMATOR_K3: r->add_kl(static_cast<float>(std::expm1(-d) + d)); break;
        default: r->add_kl(static_cast<float>(d)); break;
      }
    }
  }
  return response;
}

}  // namespace rlhf::reference
