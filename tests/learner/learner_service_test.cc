// The LearnerService over a real gRPC server on a loopback port: weight streams are
// publisher members per stream, not per actor id (issue 23 item 3); a GetStats poller
// is owed the done reply (issue 21: `rlhf run` records the last step from GetStats).
#include "learner/learner_service.h"

#include <cstring>
#include <set>

#include <grpcpp/client_context.h>
#include <gtest/gtest.h>
#include <torch/types.h>

#include "learner/learner_client.h"
#include "services/channel.h"
#include "services/server.h"
#include "services/weights/flat_weights.h"

namespace rlhf::learner {
namespace {

// The real gRPC publisher, recording its member set so the test can wait for the
// server to have processed a closed stream (no sleeps, no races).
class RecordingPublisher : public weights::WeightPublisher {
 public:
  explicit RecordingPublisher(std::unique_ptr<weights::WeightPublisher> inner)
      : inner_(std::move(inner)) {}
  void AddMember(const std::string& id, weights::DeliverFn deliver) override {
    {
      absl::MutexLock l(&mu_);
      members_.insert(id);
    }
    inner_->AddMember(id, std::move(deliver));
  }
  void RemoveMember(const std::string& id) override {
    inner_->RemoveMember(id);
    absl::MutexLock l(&mu_);
    members_.erase(id);
    ++removed_;
  }
  void Publish(std::shared_ptr<const weights::FlatWeights> w) override { inner_->Publish(w); }
  absl::Status WaitSynced(int64_t v, absl::Duration t) override { return inner_->WaitSynced(v, t); }
  weights::PublisherStats stats() const override { return inner_->stats(); }
  std::string rendezvous_address() const override { return ""; }
  void Shutdown() override { inner_->Shutdown(); }

  bool WaitRemoved(int n, absl::Duration timeout) {
    absl::MutexLock l(&mu_);
    auto done = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return removed_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
  }
  size_t members() {
    absl::MutexLock l(&mu_);
    return members_.size();
  }

 private:
  std::unique_ptr<weights::WeightPublisher> inner_;
  absl::Mutex mu_;
  std::set<std::string> members_ ABSL_GUARDED_BY(mu_);
  int removed_ ABSL_GUARDED_BY(mu_) = 0;
};

std::shared_ptr<weights::FlatWeights> Weights(int64_t version) {
  weights::NamedTensors t = {{"w", torch::full({8}, static_cast<float>(version))}};
  auto flat = weights::Flatten(t, version);
  EXPECT_TRUE(flat.ok()) << flat.status();
  return *flat;
}

// Reads messages until a header of `version` arrives (true) or the stream ends.
bool ReadUntilVersion(grpc::ClientReaderInterface<rlhf::v1::WeightsMessage>* reader,
                      int64_t version) {
  rlhf::v1::WeightsMessage m;
  while (reader->Read(&m)) {
    if (m.has_header() && m.header().version().version() == version) return true;
  }
  return false;
}

TEST(LearnerServiceTest, ClosingAnOlderWeightStreamKeepsTheNewerSubscribed) {
  LearnerHandlerOptions ho;
  ho.vocab_size = 50;
  auto handler = LearnerHandler::Create(ho, {{1, 2}}, nullptr);
  ASSERT_TRUE(handler.ok());
  auto inner = weights::MakeWeightPublisher(weights::WeightTransportOptions{});
  ASSERT_TRUE(inner.ok());
  RecordingPublisher publisher(std::move(*inner));
  publisher.Publish(Weights(0));
  LearnerServiceImpl service(handler->get(), &publisher, rlhf::v1::RegisterResponse(), "",
                             nullptr);
  services::GrpcServerOptions so;
  auto server = services::GrpcServer::Create(so, {&service});
  ASSERT_TRUE(server.ok());
  ASSERT_TRUE((*server)->Start().ok());
  services::ChannelOptions co;
  co.target = (*server)->address();
  auto channel = services::MakeChannel(co);
  ASSERT_TRUE(channel.ok());
  auto stub = rlhf::v1::LearnerService::NewStub(*channel);

  rlhf::v1::RegisterRequest reg;
  reg.set_actor_name("a");
  rlhf::v1::RegisterResponse regr;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->Register(&ctx, reg, &regr).ok());
  }
  rlhf::v1::WatchWeightsRequest watch;
  watch.set_actor_id(regr.actor_id());
  grpc::ClientContext old_ctx, new_ctx;
  old_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  new_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto old_stream = stub->WatchWeights(&old_ctx, watch);
  ASSERT_TRUE(ReadUntilVersion(old_stream.get(), 0));
  auto new_stream = stub->WatchWeights(&new_ctx, watch);  // e.g. the actor's resync
  ASSERT_TRUE(ReadUntilVersion(new_stream.get(), 0));
  EXPECT_EQ(publisher.members(), 2u);

  old_ctx.TryCancel();
  rlhf::v1::WeightsMessage m;
  while (old_stream->Read(&m)) {
  }
  (void)old_stream->Finish();
  ASSERT_TRUE(publisher.WaitRemoved(1, absl::Seconds(20)));  // the server saw it close
  EXPECT_EQ(publisher.members(), 1u);

  publisher.Publish(Weights(1));
  EXPECT_TRUE(ReadUntilVersion(new_stream.get(), 1)) << "the newer stream was unsubscribed";

  // Deregister drops every stream of the actor from the publisher.
  rlhf::v1::DeregisterRequest dereg;
  dereg.set_actor_id(regr.actor_id());
  rlhf::v1::DeregisterResponse deregr;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->Deregister(&ctx, dereg, &deregr).ok());
  }
  EXPECT_EQ(publisher.members(), 0u);
  new_ctx.TryCancel();
  while (new_stream->Read(&m)) {
  }
  (void)new_stream->Finish();
  (*server)->Shutdown(absl::Now() + absl::Seconds(2));
}

// The grpc transport end to end on the real stream: the learner writes buckets as raw
// slices of the snapshot and the client copies them straight into its buffer; both must
// be exactly the protobuf messages of the wire contract. Odd bucket size: buckets
// straddle tensors and hash blocks, the last one is short.
TEST(LearnerServiceTest, RawBucketsArriveBitwiseAndParseAsProtobuf) {
  LearnerHandlerOptions ho;
  ho.vocab_size = 50;
  auto handler = LearnerHandler::Create(ho, {{1, 2}}, nullptr);
  ASSERT_TRUE(handler.ok());
  weights::WeightTransportOptions wo;
  wo.bucket_bytes = 1000;
  auto publisher = weights::MakeWeightPublisher(wo);
  ASSERT_TRUE(publisher.ok());
  torch::manual_seed(5);
  weights::NamedTensors t = {{"a", torch::randn({1234})}, {"b", torch::randn({7, 301})}};
  auto flat = weights::Flatten(t, 3);
  ASSERT_TRUE(flat.ok());
  (*publisher)->Publish(*flat);
  LearnerServiceImpl service(handler->get(), publisher->get(), rlhf::v1::RegisterResponse(), "",
                             nullptr);
  auto server = services::GrpcServer::Create(services::GrpcServerOptions{}, {&service});
  ASSERT_TRUE(server.ok());
  ASSERT_TRUE((*server)->Start().ok());
  services::ChannelOptions co;
  co.target = (*server)->address();
  auto client = GrpcLearnerClient::Create(co);
  ASSERT_TRUE(client.ok());
  rlhf::v1::RegisterRequest reg;
  reg.set_actor_name("a");
  auto regr = (*client)->Register(reg, absl::Now() + absl::Seconds(30));
  ASSERT_TRUE(regr.ok()) << regr.status();
  rlhf::v1::WatchWeightsRequest watch;
  watch.set_actor_id(regr->actor_id());

  // The actor's way: raw stream + the grpc receiver.
  auto stream = (*client)->WatchWeights(watch);
  ASSERT_TRUE(stream.ok());
  auto header = (*stream)->Next();
  ASSERT_TRUE(header.ok()) << header.status();
  ASSERT_TRUE(header->has_header());
  auto receiver = weights::MakeWeightReceiver(wo);
  ASSERT_TRUE(receiver.ok());
  int buckets = 0;
  auto got = (*receiver)->Receive(header->header(), [&](const weights::BucketTarget& target) {
    ++buckets;
    return (*stream)->NextBucket(target);
  });
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ((*got)->version, 3);
  EXPECT_EQ((*got)->hash, (*flat)->hash);
  EXPECT_TRUE(torch::equal((*got)->buffer, (*flat)->buffer));
  EXPECT_EQ(buckets, ((*flat)->total_bytes() + 999) / 1000);
  (*stream)->Cancel();

  // A plain protobuf client reads the same stream as WeightsMessages.
  auto channel = services::MakeChannel(co);
  ASSERT_TRUE(channel.ok());
  auto stub = rlhf::v1::LearnerService::NewStub(*channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto reader = stub->WatchWeights(&ctx, watch);
  rlhf::v1::WeightsMessage m;
  ASSERT_TRUE(reader->Read(&m));
  ASSERT_TRUE(m.has_header());
  EXPECT_EQ(m.header().hash(), (*flat)->hash);
  std::string bytes;
  while (static_cast<int64_t>(bytes.size()) < (*flat)->total_bytes() && reader->Read(&m)) {
    ASSERT_TRUE(m.has_bucket());
    EXPECT_EQ(m.bucket().offset(), static_cast<int64_t>(bytes.size()));
    EXPECT_LE(m.bucket().data().size(), 1000u);
    bytes += m.bucket().data();
  }
  ASSERT_EQ(static_cast<int64_t>(bytes.size()), (*flat)->total_bytes());
  EXPECT_EQ(std::memcmp(bytes.data(), (*flat)->data(), bytes.size()), 0);
  ctx.TryCancel();
  while (reader->Read(&m)) {
  }
  (void)reader->Finish();
  (*server)->Shutdown(absl::Now() + absl::Seconds(2));
}

// rlhf-learner's exit waits for StatsPollerWaiting: true only while a GetStats caller
// polled within the window and has not yet been answered with done = true.
TEST(LearnerServiceTest, AStatsPollerWaitsForTheDoneReply) {
  LearnerHandlerOptions ho;
  ho.vocab_size = 50;
  ho.prompts_per_step = 1;
  ho.samples_per_prompt = 1;
  ho.prompts_per_lease = 1;
  ho.total_steps = 1;
  auto handler = LearnerHandler::Create(ho, {{1, 2}}, nullptr);
  ASSERT_TRUE(handler.ok());
  ASSERT_TRUE((*handler)->Restore(0, 0).ok());
  auto publisher = weights::MakeWeightPublisher(weights::WeightTransportOptions{});
  ASSERT_TRUE(publisher.ok());
  LearnerServiceImpl service(handler->get(), publisher->get(), rlhf::v1::RegisterResponse(), "",
                             nullptr);
  services::GrpcServerOptions so;
  auto server = services::GrpcServer::Create(so, {&service});
  ASSERT_TRUE(server.ok());
  ASSERT_TRUE((*server)->Start().ok());
  services::ChannelOptions co;
  co.target = (*server)->address();
  auto channel = services::MakeChannel(co);
  ASSERT_TRUE(channel.ok());
  auto stub = rlhf::v1::LearnerService::NewStub(*channel);
  auto get_stats = [&] {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    rlhf::v1::LearnerStats stats;
    EXPECT_TRUE(stub->GetStats(&ctx, rlhf::v1::GetStatsRequest(), &stats).ok());
    return stats;
  };
  // Far longer than any scheduling delay between the reply and the checks below, so
  // nothing here depends on timing.
  const absl::Duration window = absl::Hours(1);

  EXPECT_FALSE(service.StatsPollerWaiting(absl::Now(), window));  // nobody polled
  EXPECT_FALSE(get_stats().done());
  const absl::Time polled = absl::Now();
  EXPECT_TRUE(service.StatsPollerWaiting(polled, window));
  // A caller that stopped polling holds nothing up once the window has passed.
  EXPECT_FALSE(service.StatsPollerWaiting(polled + absl::Hours(2), window));

  // One step (total_steps = 1): the run is done, but the poller has not seen it yet.
  rlhf::v1::RegisterRequest reg;
  reg.set_actor_name("a");
  auto actor = (*handler)->Register(reg);
  ASSERT_TRUE(actor.ok());
  rlhf::v1::LeasePromptsRequest lr;
  lr.set_actor_id(actor->actor_id());
  auto lease = (*handler)->LeasePrompts(lr);
  ASSERT_TRUE(lease.ok());
  ASSERT_EQ(lease->prompts_size(), 1);
  rlhf::v1::SubmitTrajectoriesRequest sr;
  sr.set_actor_id(actor->actor_id());
  sr.set_lease_id(lease->lease_id());
  auto* t = sr.add_trajectories();
  t->set_prompt_id(lease->prompts(0).prompt_id());
  *t->mutable_tokens()->mutable_prompt() = lease->prompts(0).tokens();
  t->mutable_tokens()->add_response(7);
  t->add_behaviour_logprobs(-1.0f);
  t->add_ref_logprobs(-1.5f);
  t->add_kl(0.5f);
  t->set_reward(1.0f);
  ASSERT_TRUE((*handler)->Submit(sr).ok());
  auto batch = (*handler)->WaitForBatch(absl::ZeroDuration());
  ASSERT_TRUE(batch.has_value());
  ASSERT_TRUE((*handler)->OnTrained(*batch, 1, {}).ok());
  ASSERT_TRUE((*handler)->done());
  EXPECT_TRUE(service.StatsPollerWaiting(polled, window));

  EXPECT_TRUE(get_stats().done());
  EXPECT_FALSE(service.StatsPollerWaiting(absl::Now(), window));  // it has seen the end
  (*server)->Shutdown(absl::Now() + absl::Seconds(2));
  (*publisher)->Shutdown();
}

}  // namespace
}  // namespace rlhf::learner
