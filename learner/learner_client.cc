#include "learner/learner_client.h"

#include "core/status_macros.h"
#include "services/grpc_status.h"

namespace rlhf::learner {
namespace {

// Reads raw messages (the server side writes them raw too, learner_service.cc): headers
// are parsed as protos, buckets copied from gRPC's slices straight into the snapshot.
class GrpcWeightsStream final : public WeightsStream {
 public:
  GrpcWeightsStream(std::shared_ptr<grpc::Channel> channel,
                    const rlhf::v1::WatchWeightsRequest& req, const std::string& token)
      : channel_(std::move(channel)) {
    services::PrepareContext(&ctx_, absl::InfiniteFuture(), token);
    // What the generated stub's WatchWeights does, with grpc::ByteBuffer as the message
    // type (the generated code names the method by the same path).
    static const char kMethod[] = "/rlhf.v1.LearnerService/WatchWeights";
    reader_.reset(grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(
        channel_.get(),
        grpc::internal::RpcMethod(kMethod, grpc::internal::RpcMethod::SERVER_STREAMING, channel_),
        &ctx_, req));
  }
  absl::StatusOr<rlhf::v1::WeightsMessage> Next() override {
    RLHF_RETURN_IF_ERROR(Read());
    rlhf::v1::WeightsMessage msg;
    grpc::Status s = grpc::SerializationTraits<rlhf::v1::WeightsMessage>::Deserialize(&buf_, &msg);
    if (!s.ok()) return absl::DataLossError("weights stream: cannot parse a WeightsMessage");
    return msg;
  }
  absl::StatusOr<int64_t> NextBucket(const weights::BucketTarget& target) override {
    RLHF_RETURN_IF_ERROR(Read());
    absl::StatusOr<int64_t> n = weights::CopyBucketMessage(buf_, target);
    buf_.Clear();  // hands gRPC's receive slices back now
    return n;
  }
  void Cancel() override { ctx_.TryCancel(); }

 private:
  absl::Status Read() {
    if (reader_->Read(&buf_)) return absl::OkStatus();
    absl::Status s = services::FromGrpcStatus(reader_->Finish());
    if (s.ok()) return absl::UnavailableError("weights stream closed by the learner");
    return s;
  }

  std::shared_ptr<grpc::Channel> channel_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader_;
  grpc::ByteBuffer buf_;
};

}  // namespace

absl::StatusOr<int64_t> WeightsStream::NextBucket(const weights::BucketTarget& target) {
  RLHF_ASSIGN_OR_RETURN(rlhf::v1::WeightsMessage m, Next());
  if (!m.has_bucket()) return absl::DataLossError("weights stream: header where a bucket was due");
  return weights::CopyBucket(m.bucket(), target);
}

absl::StatusOr<std::unique_ptr<GrpcLearnerClient>> GrpcLearnerClient::Create(
    const services::ChannelOptions& channel, const services::RetryOptions& retry) {
  RLHF_ASSIGN_OR_RETURN(auto ch, services::MakeChannel(channel));
  return std::unique_ptr<GrpcLearnerClient>(new GrpcLearnerClient(channel, ch, retry));
}

std::shared_ptr<rlhf::v1::LearnerService::Stub> GrpcLearnerClient::stub() {
  absl::MutexLock l(&mu_);
  return stub_;
}

void GrpcLearnerClient::MaybeReconnect(const absl::Status& status) {
  if (status.code() != absl::StatusCode::kUnavailable) return;
  absl::MutexLock l(&mu_);
  if (absl::Now() - last_reconnect_ < absl::Seconds(1)) return;
  auto ch = services::MakeChannel(options_);
  if (!ch.ok()) return;
  channel_ = *ch;
  stub_ = rlhf::v1::LearnerService::NewStub(*ch);
  last_reconnect_ = absl::Now();
}

#define RLHF_LEARNER_UNARY(Method, Req, Resp)                                          \
  absl::StatusOr<Resp> result;                                                         \
  absl::Status s = services::CallWithRetry(retry_, deadline, [&](absl::Time d) {       \
    grpc::ClientContext ctx;                                                           \
    services::PrepareContext(&ctx, d, options_.auth_token);                            \
    Resp resp;                                                                         \
    absl::Status st = services::FromGrpcStatus(stub()->Method(&ctx, Req, &resp));      \
    if (st.ok()) result = std::move(resp);                                             \
    MaybeReconnect(st);                                                                \
    return st;                                                                         \
  });                                                                                  \
  if (!s.ok()) return s;                                                               \
  return result;

absl::StatusOr<rlhf::v1::RegisterResponse> GrpcLearnerClient::Register(
    const rlhf::v1::RegisterRequest& request, absl::Time deadline) {
  RLHF_LEARNER_UNARY(Register, request, rlhf::v1::RegisterResponse)
}

absl::StatusOr<rlhf::v1::HeartbeatResponse> GrpcLearnerClient::Heartbeat(
    const rlhf::v1::HeartbeatRequest& request, absl::Time deadline) {
  RLHF_LEARNER_UNARY(Heartbeat, request, rlhf::v1::HeartbeatResponse)
}

absl::Status GrpcLearnerClient::Deregister(const rlhf::v1::DeregisterRequest& request,
                                           absl::Time deadline) {
  auto r = [&]() -> absl::StatusOr<rlhf::v1::DeregisterResponse> {
    RLHF_LEARNER_UNARY(Deregister, request, rlhf::v1::DeregisterResponse)
  }();
  return r.status();
}

absl::StatusOr<rlhf::v1::LeasePromptsResponse> GrpcLearnerClient::LeasePrompts(
    const rlhf::v1::LeasePromptsRequest& request,
    absl::Time deadline){RLHF_LEARNER_UNARY(LeasePrompts, request, rlhf::v1::LeasePromptsResponse)}

absl::StatusOr<rlhf::v1::LearnerStats> GrpcLearnerClient::GetStats(
    const rlhf::v1::GetStatsRequest& request,
    absl::Time deadline){RLHF_LEARNER_UNARY(GetStats, request, rlhf::v1::LearnerStats)}

absl::StatusOr<rlhf::v1::SubmitTrajectoriesResponse> GrpcLearnerClient::Submit(
    const rlhf::v1::SubmitTrajectoriesRequest& request, absl::Time deadline) {
  absl::StatusOr<rlhf::v1::SubmitTrajectoriesResponse> result;
  absl::Status s = services::CallWithRetry(retry_, deadline, [&](absl::Time d) {
    grpc::ClientContext ctx;
    services::PrepareContext(&ctx, d, options_.auth_token);
    rlhf::v1::SubmitTrajectoriesResponse resp;
    auto stub_now = stub();
    auto writer = stub_now->SubmitTrajectories(&ctx, &resp);
    writer->Write(request);  // a failed write shows up in Finish()
    writer->WritesDone();
    absl::Status st = services::FromGrpcStatus(writer->Finish());
    if (st.ok()) result = std::move(resp);
    MaybeReconnect(st);
    return st;
  });
  if (!s.ok()) return s;
  return result;
}

absl::StatusOr<std::unique_ptr<WeightsStream>> GrpcLearnerClient::WatchWeights(
    const rlhf::v1::WatchWeightsRequest& request) {
  std::shared_ptr<grpc::Channel> channel;
  {
    absl::MutexLock l(&mu_);
    channel = channel_;
  }
  return std::unique_ptr<WeightsStream>(
      new GrpcWeightsStream(std::move(channel), request, options_.auth_token));
}

}  // namespace rlhf::learner
