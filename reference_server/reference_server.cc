#include "reference_server/reference_server.h"

namespace rlhf::reference {

absl::StatusOr<std::unique_ptr<ReferenceServer>> ReferenceServer::Create(
    ReferenceServerOptions options, ReferenceServerDeps deps) {
  std::unique_ptr<ReferenceServer> server(new ReferenceServer());
  server->registry_ = std::move(deps.registry);
  if (server->registry_) {
    server->rpc_metrics_ =
        std::make_unique<services::RpcMetrics>(*server->registry_, "reference_server");
  }
  auto handler = ReferenceHandler::Create(options.handler, std::move(deps.model),
                                          server->registry_.get());
  if (!handler.ok()) return handler.status();
  server->handler_ = *std::move(handler);
  server->service_ = std::make_unique<ReferenceServiceImpl>(
      server->handler_.get(), services::BearerTokenAuth(options.grpc.auth_token),
      server->rpc_metrics_.get());
  if (options.grpc.name == "server") options.grpc.name = "reference-server";
  options.grpc.health_service_names.push_back(rlhf::v1::ReferenceService::service_full_name());
  auto grpc = services::GrpcServer::Create(options.grpc, {server->service_.get()});
  if (!grpc.ok()) return grpc.status();
  server->grpc_ = *std::move(grpc);
  return server;
}

}  // namespace rlhf::reference
