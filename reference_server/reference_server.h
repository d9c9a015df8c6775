// ReferenceServer: the rlhf-reference-server process minus flags — handler + gRPC
// adapter + GrpcServer (health, reflection, TLS, token) wired together.
//
//   RLHF_ASSIGN_OR_RETURN(auto server, ReferenceServer::Create(options, std::move(deps)));
//   RLHF_RETURN_IF_ERROR(server->Start());   // server->port() is bound now
//   server->Shutdown(absl::Now() + absl::Seconds(10));
//
// Thread-safety: as GrpcServer. Shutdown stops accepting, lets in-flight calls finish
// until the deadline, then stops the batcher.
#pragma once

#include <memory>

#include <prometheus/registry.h>

#include "absl/status/statusor.h"
#include "core/model/model.h"
#include "reference_server/reference_handler.h"
#include "reference_server/reference_service.h"
#include "services/metrics.h"
#include "services/server.h"

namespace rlhf::reference {

struct ReferenceServerOptions {
  services::GrpcServerOptions grpc;  // host/port/TLS/token/limits
  ReferenceHandlerOptions handler;   // validation limits and batching
};

struct ReferenceServerDeps {
  TransformerLM model{nullptr};                    // the frozen SFT model (lm_head)
  std::shared_ptr<prometheus::Registry> registry;  // null: no metrics
};

class ReferenceServer {
 public:
  static absl::StatusOr<std::unique_ptr<ReferenceServer>> Create(ReferenceServerOptions options,
                                                                 ReferenceServerDeps deps);
  ~ReferenceServer() { Shutdown(absl::Now()); }

  absl::Status Start() { return grpc_->Start(); }
  void Shutdown(absl::Time deadline) {
    if (grpc_) grpc_->Shutdown(deadline);
    if (handler_) handler_->Shutdown();
  }
  int port() const { return grpc_->port(); }
  services::GrpcServer& grpc_server() { return *grpc_; }
  ReferenceHandler& handler() { return *handler_; }

 private:
  ReferenceServer() = default;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<services::RpcMetrics> rpc_metrics_;
  std::unique_ptr<ReferenceHandler> handler_;
  std::unique_ptr<ReferenceServiceImpl> service_;
  std::unique_ptr<services::GrpcServer> grpc_;
};

}  // namespace rlhf::reference
