#include "reward_server/reward_service.h"

#include "services/unary_reactor.h"

namespace rlhf::reward {

grpc::ServerUnaryReactor* RewardServiceImpl::Score(grpc::CallbackServerContext* context,
                                                   const rlhf::v1::RewardScoreRequest* request,
                                                   rlhf::v1::RewardScoreResponse* response) {
  auto* reactor = new services::HandlerReactor<rlhf::v1::RewardScoreResponse>(
      context, response, metrics_, "Score");
  if (!reactor->Authorize(auth_)) return reactor;
  handler_->Score(*request, reactor->deadline(), reactor->cancel_flag(),
                  [reactor](absl::StatusOr<rlhf::v1::RewardScoreResponse> result) {
                    reactor->Complete(std::move(result));
                  });
  return reactor;
}

}  // namespace rlhf::reward
