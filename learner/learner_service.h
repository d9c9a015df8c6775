// LearnerService gRPC adapter (callback API): translates protos to LearnerHandler calls
// and back, and runs each actor's WatchWeights stream, fed by the WeightPublisher
// (services/weights). No logic lives here beyond the stream plumbing.
//
// Thread-safety: gRPC calls its methods concurrently; the handler and publisher are
// thread-safe. Not owned: handler, publisher, metrics (may be null); they must outlive
// the server that serves this service.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "learner/learner_handler.h"
#include "rlhf/v1/learner.grpc.pb.h"
#include "services/auth.h"
#include "services/metrics.h"
#include "services/weights/transport.h"

namespace rlhf::learner {

// WatchWeights is a raw method (grpc::ByteBuffer messages, same bytes on the wire) so
// that weight buckets are sent from the snapshot without copies.
class LearnerServiceImpl final
    : public rlhf::v1::LearnerService::WithRawCallbackMethod_WatchWeights<
          rlhf::v1::LearnerService::CallbackService> {
 public:
  // register_template: the job-level fields of every RegisterResponse (sampling, model
  // config, transport, heartbeat interval, KL estimator); the handler adds the rest.
  LearnerServiceImpl(LearnerHandler* handler, weights::WeightPublisher* publisher,
                     rlhf::v1::RegisterResponse register_template, std::string auth_token,
                     services::RpcMetrics* metrics)
      : handler_(handler), publisher_(publisher), template_(std::move(register_template)),
        auth_(std::move(auth_token)), metrics_(metrics) {}

  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* ctx,
                                     const rlhf::v1::RegisterRequest* req,
                                     rlhf::v1::RegisterResponse* resp) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* ctx,
                                      const rlhf::v1::HeartbeatRequest* req,
                                      rlhf::v1::HeartbeatResponse* resp) override;
  grpc::ServerUnaryReactor* Deregister(grpc::CallbackServerContext* ctx,
                                       const rlhf::v1::DeregisterRequest* req,
                                       rlhf::v1::DeregisterResponse* resp) override;
  grpc::ServerUnaryReactor* LeasePrompts(grpc::CallbackServerContext* ctx,
                                         const rlhf::v1::LeasePromptsRequest* req,
                                         rlhf::v1::LeasePromptsResponse* resp) override;
  grpc::ServerReadReactor<rlhf::v1::SubmitTrajectoriesRequest>* SubmitTrajectories(
      grpc::CallbackServerContext* ctx, rlhf::v1::SubmitTrajectoriesResponse* resp) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* WatchWeights(grpc::CallbackServerContext* ctx,
                                                           const grpc::ByteBuffer* req) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* ctx,
                                     const rlhf::v1::GetStatsRequest* req,
                                     rlhf::v1::LearnerStats* resp) override;

  // Whether a GetStats poller is still owed the final stats: a GetStats arrived within
  // `window` before `now` and none has been answered with done = true yet. rlhf-learner
  // keeps serving after its last step while this holds (learner/main.cc), so a poller
  // such as `rlhf run` sees the last step; a caller that stopped polling holds nothing up
  // for longer than `window`.
  bool StatsPollerWaiting(absl::Time now, absl::Duration window) const;

 private:
  LearnerHandler* const handler_;
  weights::WeightPublisher* const publisher_;
  const rlhf::v1::RegisterResponse template_;
  const services::BearerTokenAuth auth_;
  services::RpcMetrics* const metrics_;
  // WatchWeights streams by actor: publisher members are keyed per stream
  // ("<actor>#<n>"), so a second stream of one actor is its own member; Deregister
  // removes all of them.
  std::atomic<int64_t> next_stream_{1};
  absl::Mutex streams_mu_;
  std::multimap<std::string, std::string> streams_ ABSL_GUARDED_BY(streams_mu_);
  mutable absl::Mutex stats_mu_;
  absl::Time last_stats_call_ ABSL_GUARDED_BY(stats_mu_) = absl::InfinitePast();
  bool done_stats_sent_ ABSL_GUARDED_BY(stats_mu_) = false;
};

}  // namespace rlhf::learner
