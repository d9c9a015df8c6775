// gRPC adapter of ReferenceService (callback API): translates protos and statuses only;
// the logic is in ReferenceHandler. Checks the bearer token on every call.
#pragma once

#include "reference_server/reference_handler.h"
#include "rlhf/v1/reference.grpc.pb.h"
#include "services/auth.h"
#include "services/metrics.h"

namespace rlhf::reference {

class ReferenceServiceImpl final : public rlhf::v1::ReferenceService::CallbackService {
 public:
  // handler and metrics (nullable) are not owned and must outlive the service.
  ReferenceServiceImpl(ReferenceHandler* handler, services::BearerTokenAuth auth,
                       services::RpcMetrics* metrics)
      : handler_(handler), auth_(std::move(auth)), metrics_(metrics) {}

  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* context,
                                  const rlhf::v1::ReferenceScoreRequest* request,
                                  rlhf::v1::ReferenceScoreResponse* response) override;

 private:
  ReferenceHandler* const handler_;
  const services::BearerTokenAuth auth_;
  services::RpcMetrics* const metrics_;
};

}  // namespace rlhf::reference
