// RewardServer: the rlhf-reward-server process minus flags — handler + gRPC adapter +
// GrpcServer (health, reflection, TLS, token) wired together.
//
//   RLHF_ASSIGN_OR_RETURN(auto server, RewardServer::Create(options, std::move(deps)));
//   RLHF_RETURN_IF_ERROR(server->Start());   // server->port() is bound now
//   ...
//   server->Shutdown(absl::Now() + absl::Seconds(10));
//
// Thread-safety: as GrpcServer. Shutdown stops accepting, lets in-flight calls finish
// until the deadline (queued batches still run), then stops the batcher.
#pragma once

#include <memory>
#include <vector>

#include <prometheus/registry.h>

#include "absl/status/statusor.h"
#include "reward_server/reward_handler.h"
#include "reward_server/reward_service.h"
#include "services/metrics.h"
#include "services/server.h"

namespace rlhf::reward {

struct RewardServerOptions {
  services::GrpcServerOptions grpc;  // host/port/TLS/token/limits
  RewardHandlerOptions handler;      // validation limits and batching
};

struct RewardServerDeps {
  std::vector<WeightedScorer> scorers;               // at least one
  std::shared_ptr<prometheus::Registry> registry;    // null: no metrics
};

class RewardServer {
 public:
  // InvalidArgument when handler.vocab_size / max_seq_len exceed a model scorer's.
  static absl::StatusOr<std::unique_ptr<RewardServer>> Create(RewardServerOptions options,
                                                              RewardServerDeps deps);
  ~RewardServer() { Shutdown(absl::Now()); }

  absl::Status Start() { return grpc_->Start(); }
  void Shutdown(absl::Time deadline) {
    if (grpc_) grpc_->Shutdown(deadline);
    if (handler_) handler_->Shutdown();
  }
  int port() const { return grpc_->port(); }
  services::GrpcServer& grpc_server() { return *grpc_; }
  RewardHandler& handler() { return *handler_; }

 private:
  RewardServer() = default;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<services::RpcMetrics> rpc_metrics_;
  std::unique_ptr<RewardHandler> handler_;
  std::unique_ptr<RewardServiceImpl> service_;
  std::unique_ptr<services::GrpcServer> grpc_;
};

}  // namespace rlhf::reward
