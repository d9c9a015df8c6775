#include "learner/learner_service.h"

#include <algorithm>
#include <deque>
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/bounded_echo.h"
#include "services/grpc_status.h"
#include "services/unary_reactor.h"
#include "services/weights/wire.h"

namespace rlhf::learner {
namespace {

using services::HandlerReactor;

// Submissions: each message is handled (validated, persisted) as it arrives; the first
// error finishes the call with that status.
class SubmitReactor final : public grpc::ServerReadReactor<rlhf::v1::SubmitTrajectoriesRequest> {
 public:
  SubmitReactor(grpc::CallbackServerContext* ctx, LearnerHandler* handler,
                const services::BearerTokenAuth& auth, rlhf::v1::SubmitTrajectoriesResponse* resp,
                services::RpcMetrics* metrics)
      : handler_(handler), resp_(resp), metrics_(metrics), start_(absl::Now()) {
    if (absl::Status s = auth.Check(*ctx); !s.ok()) {
      Done(s);
      return;
    }
    StartRead(&req_);
  }
  void OnReadDone(bool ok) override {
    if (!ok) {
      Done(absl::OkStatus());
      return;
    }
    auto r = handler_->Submit(req_);
    if (!r.ok()) {
      Done(r.status());
      return;
    }
    resp_->set_accepted(resp_->accepted() + r->accepted());
    resp_->set_dropped_stale(resp_->dropped_stale() + r->dropped_stale());
    resp_->set_duplicate(resp_->duplicate() || r->duplicate());
    StartRead(&req_);
  }
  void OnDone() override { delete this; }

 private:
  void Done(const absl::Status& s) {
    if (metrics_) metrics_->Record("SubmitTrajectories", s.code(), absl::Now() - start_);
    Finish(services::ToGrpcStatus(s));
  }
  LearnerHandler* const handler_;
  rlhf::v1::SubmitTrajectoriesResponse* const resp_;
  services::RpcMetrics* const metrics_;
  const absl::Time start_;
  rlhf::v1::SubmitTrajectoriesRequest req_;
};

// One actor's weight stream: headers (and, for the grpc transport, the buckets after
// each header) written one message at a time from a queue the publisher feeds. Raw
// messages: a bucket's bytes go from the snapshot to the socket without a copy
// (services/weights/wire.h); the bytes on the wire are WeightsMessage's.
class WeightsReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  // Outlives the reactor: the publisher's DeliverFn holds it, and finds the reactor gone.
  struct Link {
    absl::Mutex mu;
    WeightsReactor* reactor ABSL_GUARDED_BY(mu) = nullptr;
  };

  // stream_key: unique per stream (two streams of one actor are two members, and
  // closing one never unsubscribes the other). on_done runs once the stream is gone.
  WeightsReactor(weights::WeightPublisher* publisher, std::string stream_key,
                 std::function<void()> on_done)
      : publisher_(publisher), actor_id_(std::move(stream_key)), on_done_(std::move(on_done)),
        link_(std::make_shared<Link>()) {
    {
      absl::MutexLock l(&link_->mu);
      link_->reactor = this;
    }
    std::shared_ptr<Link> link = link_;
    publisher_->AddMember(actor_id_, [link](const rlhf::v1::WeightsHeader& h,
                                            std::shared_ptr<const weights::FlatWeights> d) {
      absl::MutexLock l(&link->mu);
      if (link->reactor) link->reactor->Enqueue(h, std::move(d));
    });
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock l(&mu_);
    writing_ = false;
    if (!ok) {
      FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "weights stream broken"));
      return;
    }
    WriteNextLocked();
  }
  void OnCancel() override {
    absl::MutexLock l(&mu_);
    FinishLocked(grpc::Status::CANCELLED);
  }
  void OnDone() override {
    publisher_->RemoveMember(actor_id_);
    {
      absl::MutexLock l(&link_->mu);
      link_->reactor = nullptr;
    }
    if (on_done_) on_done_();
    delete this;
  }

 private:
  struct Item {
    rlhf::v1::WeightsHeader header;
    std::shared_ptr<const weights::FlatWeights> data;
    bool header_sent = false;
    int64_t offset = 0;
  };

  void Enqueue(const rlhf::v1::WeightsHeader& h, std::shared_ptr<const weights::FlatWeights> d) {
    absl::MutexLock l(&mu_);
    if (finished_) return;
    // gRPC transport: a newer version replaces one not yet started.
    if (d && !queue_.empty() && queue_.back().data && !queue_.back().header_sent &&
        !(queue_.size() == 1 && writing_)) {
      queue_.pop_back();
    }
    queue_.push_back(Item{h, std::move(d)});
    if (!writing_) WriteNextLocked();
  }

  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || writing_) return;
    while (!queue_.empty()) {
      Item& item = queue_.front();
      if (!item.header_sent) {
        rlhf::v1::WeightsMessage msg;
        *msg.mutable_header() = item.header;
        bool own = false;
        buf_.Clear();  // Serialize requires an empty buffer
        grpc::Status s =
            grpc::SerializationTraits<rlhf::v1::WeightsMessage>::Serialize(msg, &buf_, &own);
        if (!s.ok()) {
          FinishLocked(s);
          return;
        }
        item.header_sent = true;
        writing_ = true;
        StartWrite(&buf_);
        return;
      }
      if (item.data && item.offset < item.data->total_bytes()) {
        // The message points into the snapshot, which the slice keeps alive (and out of
        // the learner's buffer pool) until gRPC has sent it.
        const int64_t n =
            std::min(item.header.bucket_bytes(), item.data->total_bytes() - item.offset);
        buf_ =
            weights::BucketMessageBytes(item.data->data() + item.offset, item.offset, n, item.data);
        item.offset += n;
        writing_ = true;
        StartWrite(&buf_);
        return;
      }
      queue_.pop_front();
    }
  }

  void FinishLocked(const grpc::Status& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    Finish(s);
  }

  weights::WeightPublisher* const publisher_;
  const std::string actor_id_;  // the stream key
  const std::function<void()> on_done_;
  std::shared_ptr<Link> link_;
  absl::Mutex mu_;
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  grpc::ByteBuffer buf_ ABSL_GUARDED_BY(mu_);  // the message being written
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

grpc::ServerUnaryReactor* LearnerServiceImpl::Register(grpc::CallbackServerContext* ctx,
                                                       const rlhf::v1::RegisterRequest* req,
                                                       rlhf::v1::RegisterResponse* resp) {
  auto* reactor = new HandlerReactor<rlhf::v1::RegisterResponse>(ctx, resp, metrics_, "Register");
  if (!reactor->Authorize(auth_)) return reactor;
  auto r = handler_->Register(*req);
  if (r.ok()) {
    rlhf::v1::RegisterResponse full = template_;
    full.MergeFrom(*r);
    r = std::move(full);
  }
  reactor->Complete(std::move(r));
  return reactor;
}

grpc::ServerUnaryReactor* LearnerServiceImpl::Heartbeat(grpc::CallbackServerContext* ctx,
                                                        const rlhf::v1::HeartbeatRequest* req,
                                                        rlhf::v1::HeartbeatResponse* resp) {
  auto* reactor = new HandlerReactor<rlhf::v1::HeartbeatResponse>(ctx, resp, metrics_, "Heartbeat");
  if (!reactor->Authorize(auth_)) return reactor;
  reactor->Complete(handler_->Heartbeat(*req));
  return reactor;
}

grpc::ServerUnaryReactor* LearnerServiceImpl::Deregister(grpc::CallbackServerContext* ctx,
                                                         const rlhf::v1::DeregisterRequest* req,
                                                         rlhf::v1::DeregisterResponse* resp) {
  auto* reactor =
      new HandlerReactor<rlhf::v1::DeregisterResponse>(ctx, resp, metrics_, "Deregister");
  if (!reactor->Authorize(auth_)) return reactor;
  absl::Status s = handler_->Deregister(*req);
  if (s.ok()) {
    std::vector<std::string> keys;
    {
      absl::MutexLock l(&streams_mu_);
      auto range = streams_.equal_range(req->actor_id());
      for (auto it = range.first; it != range.second; ++it) keys.push_back(it->second);
    }
    for (const auto& k : keys) publisher_->RemoveMember(k);
  }
  reactor->Complete(s.ok() ? absl::StatusOr<rlhf::v1::DeregisterResponse>(
                                 rlhf::v1::DeregisterResponse())
                           : absl::StatusOr<rlhf::v1::DeregisterResponse>(s));
  return reactor;
}

grpc::ServerUnaryReactor* LearnerServiceImpl::LeasePrompts(
    grpc::CallbackServerContext* ctx, const rlhf::v1::LeasePromptsRequest* req,
    rlhf::v1::LeasePromptsResponse* resp) {
  auto* reactor =
      new HandlerReactor<rlhf::v1::LeasePromptsResponse>(ctx, resp, metrics_, "LeasePrompts");
  if (!reactor->Authorize(auth_)) return reactor;
  reactor->Complete(handler_->LeasePrompts(*req));
  return reactor;
}

grpc::ServerReadReactor<rlhf::v1::SubmitTrajectoriesRequest>*
LearnerServiceImpl::SubmitTrajectories(grpc::CallbackServerContext* ctx,
                                       rlhf::v1::SubmitTrajectoriesResponse* resp) {
  return new SubmitReactor(ctx, handler_, auth_, resp, metrics_);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* LearnerServiceImpl::WatchWeights(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* raw_req) {
  absl::Status s = auth_.Check(*ctx);
  rlhf::v1::WatchWeightsRequest parsed;
  const rlhf::v1::WatchWeightsRequest* req = &parsed;
  if (s.ok()) {
    grpc::ByteBuffer copy(*raw_req);  // Deserialize consumes its buffer; this shares the slices
    grpc::Status ps =
        grpc::SerializationTraits<rlhf::v1::WatchWeightsRequest>::Deserialize(&copy, &parsed);
    if (!ps.ok()) s = absl::InvalidArgumentError("WatchWeightsRequest: cannot parse");
  }
  if (s.ok() && !handler_->IsActor(req->actor_id())) {
    s = absl::NotFoundError(
        absl::StrCat("actor_id: unknown actor ", BoundedEcho(req->actor_id()), " (re-register)"));
  }
  if (!s.ok()) {
    class Failed final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
     public:
      explicit Failed(const absl::Status& s) { Finish(services::ToGrpcStatus(s)); }
      void OnDone() override { delete this; }
    };
    return new Failed(s);
  }
  const std::string actor = req->actor_id();
  const std::string key = absl::StrCat(actor, "#", next_stream_.fetch_add(1));
  {
    absl::MutexLock l(&streams_mu_);
    streams_.emplace(actor, key);
  }
  return new WeightsReactor(publisher_, key, [this, actor, key] {
    absl::MutexLock l(&streams_mu_);
    auto range = streams_.equal_range(actor);
    for (auto it = range.first; it != range.second; ++it) {
      if (it->second == key) {
        streams_.erase(it);
        break;
      }
    }
  });
}

grpc::ServerUnaryReactor* LearnerServiceImpl::GetStats(grpc::CallbackServerContext* ctx,
                                                       const rlhf::v1::GetStatsRequest* req,
                                                       rlhf::v1::LearnerStats* resp) {
  auto* reactor = new HandlerReactor<rlhf::v1::LearnerStats>(ctx, resp, metrics_, "GetStats");
  if (!reactor->Authorize(auth_)) return reactor;
  rlhf::v1::LearnerStats stats = handler_->Stats(req->steps_after());
  auto ps = publisher_->stats();
  stats.set_weight_syncs(ps.syncs);
  {
    absl::MutexLock l(&stats_mu_);
    last_stats_call_ = absl::Now();
    if (stats.done()) done_stats_sent_ = true;
  }
  reactor->Complete(std::move(stats));
  return reactor;
}

bool LearnerServiceImpl::StatsPollerWaiting(absl::Time now, absl::Duration window) const {
  absl::MutexLock l(&stats_mu_);
  return !done_stats_sent_ && now - last_stats_call_ <= window;
}

}  // namespace rlhf::learner
