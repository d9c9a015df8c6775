#include "reference_server/reference_service.h"

#include "services/unary_reactor.h"

namespace rlhf::reference {

grpc::ServerUnaryReactor* ReferenceServiceImpl::Score(
    grpc::CallbackServerContext* context, const rlhf::v1::ReferenceScoreRequest* request,
    rlhf::v1::ReferenceScoreResponse* response) {
  auto* reactor = new services::HandlerReactor<rlhf::v1::ReferenceScoreResponse>(
      context, response, metrics_, "Score");
  if (!reactor->Authorize(auth_)) return reactor;
  // The request message lives until the reactor finishes, as the handler requires.
  handler_->Score(*request, reactor->deadline(), reactor->cancel_flag(),
                  [reactor](absl::StatusOr<rlhf::v1::ReferenceScoreResponse> result) {
                    reactor->Complete(std::move(result));
                  });
  return reactor;
}

}  // namespace rlhf::reference
