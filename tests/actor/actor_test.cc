// The actor loop in-process, from fakes: a real LearnerHandler (fake clock) behind
// FakeLearnerClient, fake reward and reference clients, and a fake WatchWeights stream
// fed by the test, which also plays the learner's training thread (WaitForBatch ->
// OnTrained -> publish the next version). Backoffs are milliseconds, so every test runs
// in well under a second of actor time; every wait is a condition with a deadline.
#include "actor/actor.h"

#include <atomic>
#include <deque>
#include <functional>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/synchronization/mutex.h"
#include "core/model/checkpoint.h"
#include "core/model/logprobs.h"
#include "learner/fake_learner_client.h"
#include "learner/learner_handler.h"
#include "reference_server/reference_client.h"
#include "reward_server/reward_client.h"
#include "services/weights/flat_weights.h"
#include "tests/testing/tiny_model.h"

namespace rlhf::actor {
namespace {

using rlhf::v1::SubmitTrajectoriesRequest;
using rlhf::v1::WeightsMessage;

constexpr absl::Duration kDeadline = absl::Seconds(60);  // generous: a loaded CI machine

// Polls `cond` until it holds or kDeadline passes (short waits on a condition, not a
// fixed sleep).
bool WaitFor(const std::function<bool()>& cond) {
  const absl::Time give_up = absl::Now() + kDeadline;
  while (!cond()) {
    if (absl::Now() > give_up) return false;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return true;
}

// One WatchWeights stream: messages queued by WeightsFeed, Next() blocks for them.
class FakeWeightsStream final : public learner::WeightsStream {
 public:
  absl::StatusOr<WeightsMessage> Next() override {
    absl::MutexLock l(&mu_);
    auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return cancelled_ || !queue_.empty(); };
    mu_.Await(absl::Condition(&ready));
    if (cancelled_) return absl::CancelledError("stream cancelled");
    WeightsMessage m = std::move(queue_.front());
    queue_.pop_front();
    return m;
  }
  void Cancel() override {
    absl::MutexLock l(&mu_);
    cancelled_ = true;
  }
  void Push(std::vector<WeightsMessage> messages) {
    absl::MutexLock l(&mu_);
    for (auto& m : messages) queue_.push_back(std::move(m));
  }
  bool cancelled() const {
    absl::MutexLock l(&mu_);
    return cancelled_;
  }

 private:
  mutable absl::Mutex mu_;
  std::deque<WeightsMessage> queue_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

// The learner's weight publisher, in-process: version v is a tiny model seeded with
// 1000 + v, sent as a gRPC-transport header + buckets to every open stream (and to a
// stream that opens later, as the real publisher does).
class WeightsFeed {
 public:
  void Publish(int64_t version) {
    TransformerLM model = testing::TinyModel(1000 + static_cast<uint64_t>(version));
    auto flat = weights::Flatten(ModelTensors(model), version);
    ASSERT_TRUE(flat.ok()) << flat.status();
    absl::MutexLock l(&mu_);
    models_.insert_or_assign(version, model);
    latest_ = *flat;
    for (auto& s : streams_) s->Push(Messages(*latest_));
  }
  std::shared_ptr<FakeWeightsStream> Open(int64_t have_version) {
    auto s = std::make_shared<FakeWeightsStream>();
    absl::MutexLock l(&mu_);
    ++opened_;
    if (latest_ && latest_->version > have_version) s->Push(Messages(*latest_));
    streams_.push_back(s);
    return s;
  }
  TransformerLM model(int64_t version) {
    absl::MutexLock l(&mu_);
    return models_.at(version);
  }
  int opened() const {
    absl::MutexLock l(&mu_);
    return opened_;
  }

 private:
  static std::vector<WeightsMessage> Messages(const weights::FlatWeights& w) {
    constexpr int64_t kBucket = 4096;  // several buckets per version
    std::vector<WeightsMessage> out(1);
    *out[0].mutable_header() = weights::MakeHeader(w, kBucket);
    out[0].mutable_header()->set_transport(rlhf::v1::WEIGHT_TRANSPORT_GRPC);
    for (int64_t off = 0; off < w.total_bytes(); off += kBucket) {
      out.emplace_back();
      *out.back().mutable_bucket() = weights::MakeBucket(w, off, kBucket);
    }
    return out;
  }

  mutable absl::Mutex mu_;
  std::shared_ptr<weights::FlatWeights> latest_ ABSL_GUARDED_BY(mu_);
  std::map<int64_t, TransformerLM> models_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<FakeWeightsStream>> streams_ ABSL_GUARDED_BY(mu_);
  int opened_ ABSL_GUARDED_BY(mu_) = 0;
};

// FakeLearnerClient plus what the LearnerService adds to Register (model config,
// sampling, transport), the fake weights stream, and a record of every call.
class TestLearnerClient final : public learner::LearnerClient {
 public:
  TestLearnerClient(learner::LearnerHandler* handler, WeightsFeed* feed)
      : fake_(handler), feed_(feed) {}

  absl::StatusOr<rlhf::v1::RegisterResponse> Register(const rlhf::v1::RegisterRequest& r,
                                                      absl::Time d) override {
    auto resp = fake_.Register(r, d);
    if (resp.ok()) {
      resp->set_heartbeat_interval_ms(5);
      resp->set_transport(rlhf::v1::WEIGHT_TRANSPORT_GRPC);
      resp->set_model_config_json(ModelConfigToJson(testing::TinyModelConfig()));
      resp->mutable_sampling()->set_temperature(1.0f);
      resp->mutable_sampling()->set_top_p(1.0f);
      resp->mutable_sampling()->set_max_new_tokens(4);
    }
    return resp;
  }
  absl::StatusOr<rlhf::v1::HeartbeatResponse> Heartbeat(const rlhf::v1::HeartbeatRequest& r,
                                                        absl::Time d) override {
    ++heartbeats_;
    return fake_.Heartbeat(r, d);
  }
  absl::Status Deregister(const rlhf::v1::DeregisterRequest& r, absl::Time d) override {
    ++deregisters_;
    return fake_.Deregister(r, d);
  }
  absl::StatusOr<rlhf::v1::LeasePromptsResponse> LeasePrompts(
      const rlhf::v1::LeasePromptsRequest& r, absl::Time d) override {
    ++leases_;
    return fake_.LeasePrompts(r, d);
  }
  absl::StatusOr<rlhf::v1::SubmitTrajectoriesResponse> Submit(const SubmitTrajectoriesRequest& r,
                                                              absl::Time d) override {
    auto resp = fake_.Submit(r, d);
    absl::MutexLock l(&mu_);
    submissions_.push_back({r, resp.status()});
    return resp;
  }
  absl::StatusOr<rlhf::v1::LearnerStats> GetStats(const rlhf::v1::GetStatsRequest& r,
                                                  absl::Time d) override {
    return fake_.GetStats(r, d);
  }
  absl::StatusOr<std::unique_ptr<learner::WeightsStream>> WatchWeights(
      const rlhf::v1::WatchWeightsRequest& r) override {
    // The actor owns the stream it gets; the feed keeps a shared handle to push into.
    struct Handle final : learner::WeightsStream {
      std::shared_ptr<FakeWeightsStream> s;
      absl::StatusOr<WeightsMessage> Next() override { return s->Next(); }
      void Cancel() override { s->Cancel(); }
    };
    auto h = std::make_unique<Handle>();
    h->s = feed_->Open(r.have_version().version());
    return std::unique_ptr<learner::WeightsStream>(std::move(h));
  }

  struct Submission {
    SubmitTrajectoriesRequest request;
    absl::Status status;
  };
  std::vector<Submission> submissions() const {
    absl::MutexLock l(&mu_);
    return submissions_;
  }
  int heartbeats() const { return heartbeats_.load(); }
  int leases() const { return leases_.load(); }
  int deregisters() const { return deregisters_.load(); }

 private:
  learner::FakeLearnerClient fake_;
  WeightsFeed* const feed_;
  std::atomic<int> heartbeats_{0}, leases_{0}, deregisters_{0};
  mutable absl::Mutex mu_;
  std::vector<Submission> submissions_ ABSL_GUARDED_BY(mu_);
};

// The fake reward client, with a switch that makes Score fail (a crashed scorer).
class SwitchableRewardClient final : public reward::RewardClient {
 public:
  explicit SwitchableRewardClient(reward::FakeRewardClient::Fn fn) : fake_(std::move(fn)) {}
  absl::StatusOr<rlhf::v1::RewardScoreResponse> Score(const rlhf::v1::RewardScoreRequest& r,
                                                      absl::Time d) override {
    if (fail_.load()) {
      ++failures_;
      return absl::UnavailableError("reward server down");
    }
    return fake_.Score(r, d);
  }
  void CancelInFlight() override { fake_.CancelInFlight(); }
  void set_delay(absl::Duration delay) { fake_.set_delay(delay); }
  void set_fail(bool fail) { fail_.store(fail); }
  int failures() const { return failures_.load(); }
  int calls() const { return fake_.calls(); }

 private:
  reward::FakeRewardClient fake_;
  std::atomic<bool> fail_{false};
  std::atomic<int> failures_{0};
};

class ActorTest : public ::testing::Test {
 protected:
  // Reward: a finite function of the response unless `nan_reward` (then the learner
  // rejects the submission with INVALID_ARGUMENT).
  void Start(int64_t total_steps = 1000, bool nan_reward = false) {
    learner::LearnerHandlerOptions o;
    o.prompts_per_step = 2;
    o.samples_per_prompt = 2;
    o.prompts_per_lease = 1;
    o.max_staleness = 1;
    o.total_steps = total_steps;
    o.lease_timeout = absl::Seconds(10);  // of the fake clock: leases expire only on demand
    o.retry_after = absl::Milliseconds(5);
    o.vocab_size = 259;
    o.max_seq_len = 32;
    auto h = learner::LearnerHandler::Create(o, {{10, 11, 12}, {20, 21}, {30}, {40, 41}},
                                             /*store=*/nullptr, [this] { return Now(); });
    ASSERT_TRUE(h.ok()) << h.status();
    handler_ = std::move(*h);
    ASSERT_TRUE(handler_->Restore(0, 0).ok());
    learner_ = std::make_unique<TestLearnerClient>(handler_.get(), &feed_);
    reward_ =
        std::make_unique<SwitchableRewardClient>([nan_reward](const rlhf::v1::TokenSequence& s) {
          return nan_reward ? std::numeric_limits<float>::quiet_NaN()
                            : static_cast<float>(s.response_size());
        });
    reference_ = std::make_unique<reference::FakeReferenceClient>(-0.25f);

    ActorOptions a;
    a.name = "test-actor";
    a.call_timeout = absl::Seconds(5);
    a.score_timeout = score_timeout_;
    a.drain_timeout = absl::Milliseconds(100);
    a.generation_batch = generation_batch_;
    ActorBackoffs& b = a.backoffs;
    b.register_retry = b.unregistered_poll = b.watch_retry = b.stream_reopen =
        absl::Milliseconds(2);
    b.no_weights_poll = b.lease_retry = b.min_lease_wait = b.submit_retry = absl::Milliseconds(2);
    b.heartbeat = absl::Milliseconds(5);
    actor_ = std::make_unique<Actor>(a, learner_.get(), reward_.get(), reference_.get(),
                                     /*registry=*/nullptr);
    run_ = std::async(std::launch::async, [this] { return actor_->Run(); });
  }

  // The learner's training thread: each full batch becomes a new version, published.
  void StartTraining() {
    trainer_ = std::thread([this] {
      while (!stop_training_.load() && !handler_->done()) {
        auto batch = handler_->WaitForBatch(absl::Milliseconds(10));
        if (!batch) continue;
        const int64_t version = handler_->version() + 1;
        ASSERT_TRUE(handler_->OnTrained(*batch, version, {}).ok());
        feed_.Publish(version);
      }
    });
  }

  // Stops the actor (if still running) and the training thread; Run()'s status.
  absl::Status Finish() {
    actor_->Stop();
    const bool ended = run_.wait_for(std::chrono::seconds(60)) == std::future_status::ready;
    stop_training_.store(true);
    if (trainer_.joinable()) trainer_.join();
    EXPECT_TRUE(ended) << "Run() did not return after Stop()";
    return ended ? run_.get() : absl::DeadlineExceededError("Run() hung");
  }

  void TearDown() override {
    if (run_.valid()) (void)Finish();
    stop_training_.store(true);
    if (trainer_.joinable()) trainer_.join();
  }

  absl::Time Now() {
    absl::MutexLock l(&clock_mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock l(&clock_mu_);
    now_ += d;
  }

  absl::Duration score_timeout_ = absl::Seconds(5);
  int generation_batch_ = 0;
  absl::Mutex clock_mu_;
  absl::Time now_ ABSL_GUARDED_BY(clock_mu_) = absl::FromUnixSeconds(1'000'000);
  WeightsFeed feed_;
  std::unique_ptr<learner::LearnerHandler> handler_;
  std::unique_ptr<TestLearnerClient> learner_;
  std::unique_ptr<SwitchableRewardClient> reward_;
  std::unique_ptr<reference::FakeReferenceClient> reference_;
  std::unique_ptr<Actor> actor_;
  std::future<absl::Status> run_;
  std::thread trainer_;
  std::atomic<bool> stop_training_{false};
};

TEST_F(ActorTest, GeneratesNothingBeforeWeightsArrive) {
  Start();
  // Registered, weights stream open, and alive for many heartbeats: still no lease.
  ASSERT_TRUE(WaitFor([&] { return feed_.opened() >= 1 && learner_->heartbeats() >= 10; }));
  EXPECT_EQ(learner_->leases(), 0);
  EXPECT_EQ(reward_->calls(), 0);
  EXPECT_EQ(actor_->stats().batches, 0);
  EXPECT_EQ(actor_->stats().held_version, -1);
  EXPECT_EQ(handler_->Stats().prompts_leased(), 0);

  feed_.Publish(0);
  ASSERT_TRUE(WaitFor([&] { return handler_->Stats().trajectories_accepted() >= 4; }));
  EXPECT_EQ(actor_->stats().held_version, 0);
  EXPECT_EQ(actor_->stats().weight_updates, 1);
  EXPECT_TRUE(Finish().ok());
}

TEST_F(ActorTest, EachBatchIsSampledByOneVersionAndSaysWhich) {
  Start();
  StartTraining();
  feed_.Publish(0);
  ASSERT_TRUE(WaitFor([&] { return handler_->version() >= 3; }));
  ASSERT_TRUE(Finish().ok());

  std::set<int64_t> versions;
  int checked = 0;
  for (const auto& sub : learner_->submissions()) {
    if (sub.request.trajectories_size() == 0) continue;
    std::set<int64_t> in_batch;
    for (const auto& t : sub.request.trajectories()) in_batch.insert(t.version().version());
    ASSERT_EQ(in_batch.size(), 1u) << "lease " << sub.request.lease_id() << " mixes versions";
    const int64_t v = *in_batch.begin();
    versions.insert(v);
    // The behaviour log-probs are those of the model of the version the batch names.
    TransformerLM model = feed_.model(v);
    torch::NoGradGuard no_grad;
    std::vector<std::vector<int32_t>> prompts, responses;
    for (const auto& t : sub.request.trajectories()) {
      prompts.emplace_back(t.tokens().prompt().begin(), t.tokens().prompt().end());
      responses.emplace_back(t.tokens().response().begin(), t.tokens().response().end());
    }
    SequenceBatchOptions so;
    so.pad_id = 258;
    auto sb = MakeSequenceBatch(prompts, responses, so);
    ASSERT_TRUE(sb.ok()) << sb.status();
    const ForwardOutput out = model->forward(sb->ids, sb->attention_mask, sb->position_ids);
    const auto logp = PerSequenceResponseValues(ResponseLogProbs(out.logits, *sb, 1.0), *sb);
    for (int i = 0; i < sub.request.trajectories_size(); ++i) {
      const auto& got = sub.request.trajectories(i).behaviour_logprobs();
      ASSERT_EQ(got.size(), static_cast<int>(logp[i].size()));
      for (int j = 0; j < got.size(); ++j) EXPECT_NEAR(got[j], logp[i][j], 1e-4);
    }
    ++checked;
  }
  EXPECT_GE(checked, 6);
  EXPECT_GE(versions.size(), 2u) << "the actor never picked up a newer version";
}

TEST_F(ActorTest, ReRegistersWhenTheLearnerForgetsIt) {
  Start();
  StartTraining();  // keeps the learner's buffer from filling up
  feed_.Publish(0);
  ASSERT_TRUE(WaitFor([&] { return handler_->ActorIds().size() == 1; }));
  const std::string first = handler_->ActorIds()[0];
  // The learner expires the actor (silent past lease_timeout on its clock): its next
  // call gets NOT_FOUND and it must register again, then keep working.
  Advance(absl::Seconds(11));
  handler_->ExpireSilentActors();
  ASSERT_FALSE(handler_->IsActor(first));
  ASSERT_TRUE(WaitFor([&] { return actor_->stats().registrations >= 2; }));
  ASSERT_TRUE(WaitFor([&] {
    const auto ids = handler_->ActorIds();
    return ids.size() == 1 && ids[0] != first;
  }));
  const int64_t accepted = handler_->Stats().trajectories_accepted();
  ASSERT_TRUE(WaitFor([&] { return handler_->Stats().trajectories_accepted() >= accepted + 4; }));
  // The weights loop reopens its stream after a backoff, independently of the rollouts
  // above: wait for it rather than read the count once.
  EXPECT_TRUE(WaitFor([&] { return feed_.opened() >= 2; }))
      << "the weights stream was not reopened under the new id (opened " << feed_.opened()
      << ")";
  EXPECT_TRUE(Finish().ok());
}

TEST_F(ActorTest, ScoringFailureReleasesTheLease) {
  Start();
  reward_->set_fail(true);
  feed_.Publish(0);
  // The fake clock never moves, so only a release (an empty submission) can expire a
  // lease and re-issue its prompts.
  ASSERT_TRUE(WaitFor([&] { return handler_->Stats().prompts_reissued() >= 2; }));
  EXPECT_GE(reward_->failures(), 2);
  EXPECT_EQ(handler_->Stats().trajectories_accepted(), 0);
  bool released = false;
  for (const auto& sub : learner_->submissions()) {
    released |= sub.request.trajectories_size() == 0 && sub.status.ok();
  }
  EXPECT_TRUE(released);
  // Once the scorer is back, the re-issued prompts are trained on.
  reward_->set_fail(false);
  ASSERT_TRUE(WaitFor([&] { return handler_->Stats().trajectories_accepted() >= 4; }));
  EXPECT_TRUE(Finish().ok());
}

TEST_F(ActorTest, InvalidArgumentOnSubmitReleasesTheLease) {
  Start(/*total_steps=*/1000, /*nan_reward=*/true);
  feed_.Publish(0);
  ASSERT_TRUE(WaitFor([&] {
    const auto s = handler_->Stats();
    return s.trajectories_rejected() >= 1 && s.prompts_reissued() >= 1;
  }));
  bool rejected = false, then_released = false;
  for (const auto& sub : learner_->submissions()) {
    if (sub.status.code() == absl::StatusCode::kInvalidArgument) rejected = true;
    if (rejected && sub.request.trajectories_size() == 0 && sub.status.ok()) then_released = true;
  }
  EXPECT_TRUE(rejected);
  EXPECT_TRUE(then_released);
  EXPECT_EQ(handler_->Stats().trajectories_accepted(), 0);
  EXPECT_TRUE(Finish().ok());
}

TEST_F(ActorTest, StopDrainsThenDeregisters) {
  Start();
  feed_.Publish(0);
  ASSERT_TRUE(WaitFor([&] { return handler_->Stats().leases_completed() >= 2; }));
  ASSERT_TRUE(Finish().ok());
  const auto s = handler_->Stats();
  // Every lease the actor took came back with its trajectories: none was left to be
  // expired by the Deregister (which re-issues outstanding prompts).
  EXPECT_EQ(s.prompts_outstanding(), 0);
  EXPECT_EQ(s.prompts_reissued(), 0);
  EXPECT_EQ(s.leases_expired(), 0);
  EXPECT_EQ(s.leases_issued(), s.leases_completed());
  EXPECT_EQ(learner_->deregisters(), 1);
  EXPECT_TRUE(handler_->ActorIds().empty());
  EXPECT_EQ(actor_->stats().trajectories_submitted, s.trajectories_accepted());
}

// SIGTERM while a scorer hangs: the drain waits drain_timeout (100 ms here) for the batch
// in hand, then cancels the scoring calls, releases the lease (its prompts are re-issued)
// and deregisters, instead of outliving the launcher's grace period until the score
// deadline (10 minutes here: Finish() allows 60 s, so without the cancel this fails).
TEST_F(ActorTest, StopDuringAHungScoringCallReleasesTheLeaseAndExits) {
  score_timeout_ = absl::Minutes(10);
  Start();
  reward_->set_delay(absl::Hours(1));
  feed_.Publish(0);
  ASSERT_TRUE(WaitFor([&] { return reward_->calls() >= 1; }));
  EXPECT_TRUE(Finish().ok());
  bool released = false;
  for (const auto& sub : learner_->submissions()) {
    released |= sub.request.trajectories_size() == 0 && sub.status.ok();
  }
  EXPECT_TRUE(released);
  const auto s = handler_->Stats();
  EXPECT_EQ(s.trajectories_accepted(), 0);
  EXPECT_EQ(s.prompts_outstanding(), 0);
  EXPECT_GE(s.prompts_reissued(), 1);
  EXPECT_EQ(learner_->deregisters(), 1);
}

// actors.generation_batch: a lease of 1 prompt x 2 samples with generation_batch 1
// decodes one row at a time (continuous batching) and its trajectories are accepted; the
// default (0) never takes that path.
TEST_F(ActorTest, GenerationBatchSelectsContinuousBatching) {
  generation_batch_ = 1;
  Start();
  feed_.Publish(0);
  ASSERT_TRUE(WaitFor([&] { return handler_->Stats().trajectories_accepted() >= 4; }));
  EXPECT_TRUE(Finish().ok());
  EXPECT_GE(actor_->stats().continuous_batches, 2);
  EXPECT_EQ(actor_->stats().continuous_batches, actor_->stats().batches);
  for (const auto& sub : learner_->submissions()) {
    for (const auto& t : sub.request.trajectories()) {
      EXPECT_EQ(t.behaviour_logprobs_size(), t.tokens().response_size());
    }
  }
}

TEST_F(ActorTest, DefaultGenerationIsStatic) {
  Start();
  feed_.Publish(0);
  ASSERT_TRUE(WaitFor([&] { return handler_->Stats().trajectories_accepted() >= 4; }));
  EXPECT_TRUE(Finish().ok());
  EXPECT_GE(actor_->stats().batches, 2);
  EXPECT_EQ(actor_->stats().continuous_batches, 0);
}

TEST_F(ActorTest, DoneEndsRun) {
  Start(/*total_steps=*/2);
  StartTraining();
  feed_.Publish(0);
  // No Stop(): the learner's WAIT_DONE / heartbeat `done` must end Run() by itself.
  ASSERT_EQ(run_.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  EXPECT_TRUE(run_.get().ok());
  EXPECT_TRUE(handler_->done());
  EXPECT_EQ(handler_->Stats().step(), 2);
  EXPECT_EQ(learner_->deregisters(), 1);
  EXPECT_TRUE(handler_->ActorIds().empty());
  stop_training_.store(true);
  trainer_.join();
}

}  // namespace
}  // namespace rlhf::actor
