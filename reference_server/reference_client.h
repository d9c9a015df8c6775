// Clients of ReferenceService. Actors code against ReferenceClient; tests use the fake.
//
//   services::ChannelOptions channel;  channel.target = "127.0.0.1:50052";
//   RLHF_ASSIGN_OR_RETURN(auto client, GrpcReferenceClient::Create(channel));
//   RLHF_ASSIGN_OR_RETURN(auto response, client->Score(request, absl::Now() + absl::Seconds(5)));
//
// Score is idempotent, so the gRPC client retries UNAVAILABLE with backoff
// (services::CallWithRetry) until the deadline. Thread-safe: one client may be shared.
#pragma once

#include <atomic>
#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "rlhf/v1/reference.grpc.pb.h"
#include "services/channel.h"

namespace rlhf::reference {

class ReferenceClient {
 public:
  virtual ~ReferenceClient() = default;
  virtual absl::StatusOr<rlhf::v1::ReferenceScoreResponse> Score(
      const rlhf::v1::ReferenceScoreRequest& request, absl::Time deadline) = 0;
  // Ends every in-flight Score with CANCELLED and makes later ones fail at once: for a
  // process that must stop now. Irreversible. Thread-safe.
  virtual void CancelInFlight() = 0;
};

class GrpcReferenceClient final : public ReferenceClient {
 public:
  static absl::StatusOr<std::unique_ptr<GrpcReferenceClient>> Create(
      const services::ChannelOptions& channel, const services::RetryOptions& retry = {});
  absl::StatusOr<rlhf::v1::ReferenceScoreResponse> Score(
      const rlhf::v1::ReferenceScoreRequest& request, absl::Time deadline) override;
  void CancelInFlight() override { canceller_.CancelAll(); }

 private:
  GrpcReferenceClient(std::shared_ptr<grpc::Channel> channel, std::string token,
                      services::RetryOptions retry)
      : stub_(rlhf::v1::ReferenceService::NewStub(channel)), token_(std::move(token)),
        retry_(retry) {}
  std::unique_ptr<rlhf::v1::ReferenceService::Stub> stub_;
  const std::string token_;
  const services::RetryOptions retry_;
  services::CallCanceller canceller_;
};

// In-process fake: ref_logprobs = policy_logprobs + offset (so d_t = -offset for every
// token), kl = the k1/k2/k3 estimator of that d (same formulas as core/rl/kl.h, computed
// in plain C++ here so the fake needs no LibTorch). When distributions are sent,
// exact_kl = |offset| per token (a stand-in: the real value needs the reference model),
// and kl too for KL_ESTIMATOR_EXACT; else exact_kl is empty. Counts calls; after
// CancelInFlight every call is CANCELLED.
class FakeReferenceClient final : public ReferenceClient {
 public:
  explicit FakeReferenceClient(float offset = 0.0f) : offset_(offset) {}
  absl::StatusOr<rlhf::v1::ReferenceScoreResponse> Score(
      const rlhf::v1::ReferenceScoreRequest& request, absl::Time deadline) override;
  void CancelInFlight() override { cancelled_.store(true); }
  int calls() const { return calls_.load(); }

 private:
  const float offset_;
  std::atomic<int> calls_{0};
  std::atomic<bool> cancelled_{false};
};

}  // namespace rlhf::reference
