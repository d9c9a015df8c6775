// HandlerReactor: the ServerUnaryReactor every callback-API adapter of the project uses
// to bridge a gRPC call to an asynchronous handler (done-callback style):
//
//   grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* ctx, const Req* req,
//                                   Resp* resp) override {
//     auto* reactor = new HandlerReactor<Resp>(ctx, resp, metrics_, "Score");
//     if (!reactor->Authorize(auth_)) return reactor;        // UNAUTHENTICATED
//     handler_->Score(*req, reactor->deadline(), reactor->cancel_flag(),
//                     [reactor](absl::StatusOr<Resp> r) { reactor->Complete(std::move(r)); });
//     return reactor;
//   }
//
// OnCancel (client cancelled, deadline passed, server shutting down) sets the cancel
// flag so queued work is dropped; Complete() is still called exactly once and finishes
// the call. The reactor deletes itself in OnDone. Metrics record method, code and
// latency for every call.
#pragma once

#include <chrono>
#include <string>
#include <utility>

#include <grpcpp/server_context.h>
#include <grpcpp/support/server_callback.h>

#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "services/auth.h"
#include "services/batcher.h"
#include "services/grpc_status.h"
#include "services/metrics.h"

namespace rlhf::services {

template <typename Response>
class HandlerReactor final : public grpc::ServerUnaryReactor {
 public:
  // metrics may be null.
  HandlerReactor(grpc::CallbackServerContext* context, Response* response, RpcMetrics* metrics,
                 std::string method)
      : context_(context), response_(response), metrics_(metrics), method_(std::move(method)),
        start_(absl::Now()), cancel_(NewCancelFlag()) {}

  // Checks the bearer token; on failure finishes the call with UNAUTHENTICATED.
  bool Authorize(const BearerTokenAuth& auth) {
    absl::Status s = auth.Check(*context_);
    if (s.ok()) return true;
    Complete(s);
    return false;
  }

  absl::Time deadline() const {
    const auto d = context_->deadline();
    if (d == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
    return absl::FromChrono(d);
  }
  CancelFlag cancel_flag() const { return cancel_; }

  // Finishes the call with `result`. Call exactly once, from any thread.
  void Complete(absl::StatusOr<Response> result) {
    absl::Status status = result.status();
    if (result.ok()) *response_ = *std::move(result);
    if (metrics_ != nullptr) metrics_->Record(method_, status.code(), absl::Now() - start_);
    Finish(ToGrpcStatus(status));
  }

  void OnCancel() override { cancel_->store(true); }
  void OnDone() override { delete this; }

 private:
  grpc::CallbackServerContext* const context_;
  Response* const response_;
  RpcMetrics* const metrics_;
  const std::string method_;
  const absl::Time start_;
  const CancelFlag cancel_;
};

}  // namespace rlhf::services
