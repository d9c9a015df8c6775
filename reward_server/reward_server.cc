#include "reward_server/reward_server.h"

#include "absl/strings/str_cat.h"

namespace rlhf::reward {

absl::StatusOr<std::unique_ptr<RewardServer>> RewardServer::Create(RewardServerOptions options,
                                                                   RewardServerDeps deps) {
  for (size_t i = 0; i < deps.scorers.size(); ++i) {
    const auto* model = dynamic_cast<const ModelRewardScorer*>(deps.scorers[i].scorer.get());
    if (model == nullptr) continue;
    if (options.handler.vocab_size > model->config().vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "vocab_size ", options.handler.vocab_size, " > reward model '", model->name(),
          "' vocab size ", model->config().vocab_size));
    }
    if (options.handler.max_seq_len > model->config().max_seq_len) {
      return absl::InvalidArgumentError(absl::StrCat(
          "max_seq_len ", options.handler.max_seq_len, " > reward model '", model->name(),
          "' max_seq_len ", model->config().max_seq_len));
    }
  }
  std::unique_ptr<RewardServer> server(new RewardServer());
  server->registry_ = std::move(deps.registry);
  if (server->registry_) {
    server->rpc_metrics_ = std::make_unique<services::RpcMetrics>(*server->registry_,
                                                                  "reward_server");
  }
  auto handler = RewardHandler::Create(options.handler, std::move(deps.scorers),
                                       server->registry_.get());
  if (!handler.ok()) return handler.status();
  server->handler_ = *std::move(handler);
  server->service_ = std::make_unique<RewardServiceImpl>(
      server->handler_.get(), services::BearerTokenAuth(options.grpc.auth_token),
      server->rpc_metrics_.get());
  if (options.grpc.name == "server") options.grpc.name = "reward-server";
  options.grpc.health_service_names.push_back(rlhf::v1::RewardService::service_full_name());
  auto grpc = services::GrpcServer::Create(options.grpc, {server->service_.get()});
  if (!grpc.ok()) return grpc.status();
  server->grpc_ = *std::move(grpc);
  return server;
}

}  // namespace rlhf::reward
