// gRPC adapter of RewardService (callback API): translates protos and statuses only;
// the logic is in RewardHandler. Checks the bearer token on every call.
#pragma once

#include "reward_server/reward_handler.h"
#include "rlhf/v1/reward.grpc.pb.h"
#include "services/auth.h"
#include "services/metrics.h"

namespace rlhf::reward {

class RewardServiceImpl final : public rlhf::v1::RewardService::CallbackService {
 public:
  // handler and metrics (nullable) are not owned and must outlive the service.
  RewardServiceImpl(RewardHandler* handler, services::BearerTokenAuth auth,
                    services::RpcMetrics* metrics)
      : handler_(handler), auth_(std::move(auth)), metrics_(metrics) {}

  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* context,
                                  const rlhf::v1::RewardScoreRequest* request,
                                  rlhf::v1::RewardScoreResponse* response) override;

 private:
  RewardHandler* const handler_;
  const services::BearerTokenAuth auth_;
  services::RpcMetrics* const metrics_;
};

}  // namespace rlhf::reward
