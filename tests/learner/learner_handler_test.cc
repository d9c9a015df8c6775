// LearnerHandler logic with a fake clock and an in-memory state store: leases and
// their expiry, idempotent submission, validation, staleness dropping, the accounting
// invariant, and restart from persisted state.
#include "learner/learner_handler.h"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

namespace rlhf::learner {
namespace {

using rlhf::v1::LeasePromptsResponse;

// A snapshot and a log in memory. `fail` makes every write fail (a full disk);
// `sync_fail` makes syncs fail (a failed fdatasync).
class MemoryStore : public StateStore {
 public:
  absl::Status Write(const rlhf::v1::LearnerState& state) override {
    if (!fail.ok()) return fail;
    state_ = state;
    log_.clear();
    ++writes;
    return absl::OkStatus();
  }
  absl::StatusOr<std::optional<rlhf::v1::LearnerState>> Read() override { return state_; }
  absl::StatusOr<std::vector<rlhf::v1::LearnerLogRecord>> ReadLog() override { return log_; }
  absl::StatusOr<int64_t> Append(const rlhf::v1::LearnerLogRecord& record) override {
    if (!fail.ok()) return fail;
    log_.push_back(record);
    log_.back().set_seq(++seq_);
    return seq_;
  }
  absl::Status Sync(int64_t) override { return sync_fail; }
  int64_t last_seq() const override { return seq_; }
  int64_t log_bytes() const override { return static_cast<int64_t>(log_.size()); }

  std::optional<rlhf::v1::LearnerState> state_;
  std::vector<rlhf::v1::LearnerLogRecord> log_;
  int64_t seq_ = 0;
  int writes = 0;
  absl::Status fail;       // returned by Write and Append when not OK (a full disk)
  absl::Status sync_fail;  // returned by Sync when not OK
};

class HandlerTest : public ::testing::Test {
 protected:
  void Make(int max_staleness, int64_t total_steps = 100) {
    options_.prompts_per_step = 2;
    options_.samples_per_prompt = 2;
    options_.prompts_per_lease = 1;
    options_.max_staleness = max_staleness;
    options_.total_steps = total_steps;
    options_.lease_timeout = absl::Seconds(10);
    options_.vocab_size = 50;
    options_.max_seq_len = 16;
    auto h = LearnerHandler::Create(options_, {{1, 2}, {3}, {4, 5, 6}}, &store_,
                                    [this] { return now_; });
    ASSERT_TRUE(h.ok()) << h.status();
    handler_ = std::move(*h);
    ASSERT_TRUE(handler_->Restore(0, 0).ok());
  }
  std::string Register(const std::string& name) {
    rlhf::v1::RegisterRequest r;
    r.set_actor_name(name);
    return handler_->Register(r)->actor_id();
  }
  LeasePromptsResponse Lease(const std::string& actor, int64_t held = -1) {
    rlhf::v1::LeasePromptsRequest r;
    r.set_actor_id(actor);
    r.mutable_held_version()->set_version(held < 0 ? handler_->version() : held);
    auto resp = handler_->LeasePrompts(r);
    EXPECT_TRUE(resp.ok()) << resp.status();
    return *resp;
  }
  // A well-formed submission of `lease` sampled with `version`.
  rlhf::v1::SubmitTrajectoriesRequest Good(const std::string& actor,
                                           const LeasePromptsResponse& lease, int64_t version) {
    rlhf::v1::SubmitTrajectoriesRequest r;
    r.set_actor_id(actor);
    r.set_lease_id(lease.lease_id());
    for (const auto& p : lease.prompts()) {
      for (int s = 0; s < options_.samples_per_prompt; ++s) {
        auto* t = r.add_trajectories();
        t->set_prompt_id(p.prompt_id());
        *t->mutable_tokens()->mutable_prompt() = p.tokens();
        t->mutable_tokens()->add_response(7);
        t->mutable_tokens()->add_response(8 + s);
        t->add_behaviour_logprobs(-1.0f);
        t->add_behaviour_logprobs(-2.0f);
        t->add_ref_logprobs(-1.5f);
        t->add_ref_logprobs(-2.5f);
        t->add_kl(0.5f);
        t->add_kl(0.5f);
        t->set_reward(1.0f);
        t->mutable_version()->set_version(version);
      }
    }
    return r;
  }
  void ExpectInvariant() {
    auto s = handler_->Stats();
    EXPECT_EQ(s.prompts_leased(), s.prompts_trained() + s.prompts_reissued() +
                                      s.prompts_outstanding() + s.prompts_buffered())
        << s.DebugString();
  }
  void TrainOne() {
    auto batch = handler_->WaitForBatch(absl::ZeroDuration());
    ASSERT_TRUE(batch.has_value());
    ASSERT_TRUE(handler_->OnTrained(*batch, handler_->version() + 1, {{"loss", 0.5}}).ok());
  }

  LearnerHandlerOptions options_;
  MemoryStore store_;
  absl::Time now_ = absl::FromUnixSeconds(1000);
  std::unique_ptr<LearnerHandler> handler_;
};

TEST_F(HandlerTest, LeasesCycleThePromptSetAndRespectCapacity) {
  Make(/*max_staleness=*/0);
  std::string a = Register("a");
  auto l1 = Lease(a);
  auto l2 = Lease(a);
  ASSERT_EQ(l1.prompts_size(), 1);
  EXPECT_EQ(l1.prompts(0).source_index(), 0);
  EXPECT_EQ(std::vector<int32_t>(l2.prompts(0).tokens().begin(), l2.prompts(0).tokens().end()),
            std::vector<int32_t>({3}));
  EXPECT_NE(l1.prompts(0).prompt_id(), l2.prompts(0).prompt_id());
  // Synchronous: one step's worth (2 prompts) in flight at most.
  EXPECT_EQ(Lease(a).wait(), LeasePromptsResponse::WAIT_BATCH_FULL);
  EXPECT_EQ(handler_->Stats().prompts_outstanding(), 2);
  ExpectInvariant();
}

TEST_F(HandlerTest, UnknownActorMustReRegister) {
  Make(1);
  rlhf::v1::HeartbeatRequest hb;
  hb.set_actor_id("nobody");
  EXPECT_EQ(handler_->Heartbeat(hb).status().code(), absl::StatusCode::kNotFound);
  rlhf::v1::LeasePromptsRequest lr;
  lr.set_actor_id("nobody");
  EXPECT_EQ(handler_->LeasePrompts(lr).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(HandlerTest, SilentActorsLeasesExpireAndAreReissued) {
  Make(1);
  std::string a = Register("a");
  std::string b = Register("b");
  auto la = Lease(a);
  now_ += absl::Seconds(6);
  rlhf::v1::HeartbeatRequest hb;
  hb.set_actor_id(b);
  ASSERT_TRUE(handler_->Heartbeat(hb).ok());
  EXPECT_EQ(handler_->ExpireSilentActors(), 0);  // a silent for 6 s < 10 s
  now_ += absl::Seconds(6);
  ASSERT_TRUE(handler_->Heartbeat(hb).ok());
  EXPECT_EQ(handler_->ExpireSilentActors(), 1);  // a silent for 12 s
  auto s = handler_->Stats();
  EXPECT_EQ(s.leases_expired(), 1);
  EXPECT_EQ(s.prompts_reissued(), 1);
  EXPECT_EQ(s.actors_connected(), 1);
  // The expired prompt is the next one handed out, under a new prompt id.
  auto lb = Lease(b);
  EXPECT_EQ(lb.prompts(0).source_index(), la.prompts(0).source_index());
  EXPECT_NE(lb.prompts(0).prompt_id(), la.prompts(0).prompt_id());
  // A late submission of the expired lease is refused and trains nothing.
  auto late = handler_->Submit(Good(a, la, 0));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(late.status().message().find("expired"), std::string::npos);
  EXPECT_EQ(handler_->Stats().prompts_buffered(), 0);
  ExpectInvariant();
}

TEST_F(HandlerTest, SubmissionIsIdempotentPerLease) {
  Make(1);
  std::string a = Register("a");
  auto l = Lease(a);
  auto first = handler_->Submit(Good(a, l, 0));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->accepted(), 2);
  auto again = handler_->Submit(Good(a, l, 0));
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->duplicate());
  EXPECT_EQ(again->accepted(), 0);
  auto s = handler_->Stats();
  EXPECT_EQ(s.trajectories_accepted(), 2);
  EXPECT_EQ(s.prompts_buffered(), 1);
  EXPECT_EQ(s.duplicate_submissions(), 1);
  ExpectInvariant();
}

TEST_F(HandlerTest, MalformedSubmissionsAreRejectedNamingTheField) {
  Make(1);
  std::string a = Register("a");
  auto l = Lease(a);
  struct Case {
    std::function<void(rlhf::v1::SubmitTrajectoriesRequest&)> mutate;
    std::string expect;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<Case> cases = {
      {[](auto& r) { r.mutable_trajectories(1)->add_behaviour_logprobs(-1); },
       "trajectories[1].behaviour_logprobs: 3 values for 2 response tokens"},
      {[](auto& r) { r.mutable_trajectories(0)->mutable_ref_logprobs()->RemoveLast(); },
       "trajectories[0].ref_logprobs: 1 values for 2 response tokens"},
      {[&](auto& r) { r.mutable_trajectories(0)->set_behaviour_logprobs(1, nan); },
       "trajectories[0].behaviour_logprobs[1]: non-finite"},
      {[](auto& r) { r.mutable_trajectories(1)->set_kl(0, INFINITY); },
       "trajectories[1].kl[0]: non-finite"},
      {[&](auto& r) { r.mutable_trajectories(0)->set_reward(nan); },
       "trajectories[0].reward: non-finite"},
      {[](auto& r) { r.mutable_trajectories(0)->mutable_tokens()->set_response(0, 50); },
       "trajectories[0].tokens.response[0]: token id 50 outside [0, 50)"},
      {[](auto& r) { r.set_lease_id("no-such-lease"); }, "lease_id: unknown lease"},
      {[](auto& r) { r.mutable_trajectories()->RemoveLast(); }, "has 1 trajectories, expected 2"},
      {[](auto& r) { r.mutable_trajectories(0)->set_prompt_id(999); },
       "trajectories[0].prompt_id: 999 is not in lease"},
      {[](auto& r) { r.mutable_trajectories(0)->mutable_version()->set_version(5); },
       "trajectories[0].version: 5 is not in [0, 0]"},
  };
  for (const auto& c : cases) {
    auto r = Good(a, l, 0);
    c.mutate(r);
    auto resp = handler_->Submit(r);
    EXPECT_EQ(resp.status().code(), absl::StatusCode::kInvalidArgument) << c.expect;
    EXPECT_NE(resp.status().message().find(c.expect), std::string::npos)
        << resp.status() << " vs " << c.expect;
  }
  auto s = handler_->Stats();
  EXPECT_EQ(s.trajectories_accepted(), 0);
  EXPECT_EQ(s.prompts_buffered(), 0);
  EXPECT_EQ(s.prompts_outstanding(), 1);  // the lease is untouched
  EXPECT_GT(s.trajectories_rejected(), 0);
  // After all that, the correct submission of the same lease still goes through.
  EXPECT_EQ(handler_->Submit(Good(a, l, 0))->accepted(), 2);
  ExpectInvariant();
}

TEST_F(HandlerTest, StaleGroupsAreDroppedAndReissued) {
  Make(/*max_staleness=*/1);
  std::string a = Register("a");
  auto old_lease = Lease(a);  // sampled with version 0, submitted at version 2
  auto l1 = Lease(a);
  auto l2 = Lease(a);
  ASSERT_TRUE(handler_->Submit(Good(a, l1, 0)).ok());
  ASSERT_TRUE(handler_->Submit(Good(a, l2, 0)).ok());
  TrainOne();  // version 1
  auto l3 = Lease(a);
  auto l4 = Lease(a);
  ASSERT_TRUE(handler_->Submit(Good(a, l3, 1)).ok());
  ASSERT_TRUE(handler_->Submit(Good(a, l4, 1)).ok());
  TrainOne();  // version 2
  auto resp = handler_->Submit(Good(a, old_lease, 0));
  ASSERT_TRUE(resp.ok());
  EXPECT_EQ(resp->accepted(), 0);
  EXPECT_EQ(resp->dropped_stale(), 2);
  auto s = handler_->Stats();
  EXPECT_EQ(s.trajectories_dropped_stale(), 2);
  EXPECT_EQ(s.prompts_reissued(), 1);
  EXPECT_EQ(s.prompts_trained(), 4);
  // Actors whose weights are too old get no work.
  EXPECT_EQ(Lease(a, /*held=*/0).wait(), LeasePromptsResponse::WAIT_STALE_WEIGHTS);
  EXPECT_EQ(Lease(a, /*held=*/1).prompts_size(), 1);
  ExpectInvariant();
}

TEST_F(HandlerTest, SynchronousModeTrainsOnlyCurrentVersionAndPausesLeasesWhileTraining) {
  Make(/*max_staleness=*/0);
  std::string a = Register("a");
  auto l1 = Lease(a);
  auto l2 = Lease(a);
  ASSERT_TRUE(handler_->Submit(Good(a, l1, 0)).ok());
  EXPECT_FALSE(handler_->WaitForBatch(absl::ZeroDuration()).has_value());  // 1 of 2
  ASSERT_TRUE(handler_->Submit(Good(a, l2, 0)).ok());
  auto batch = handler_->WaitForBatch(absl::ZeroDuration());
  ASSERT_TRUE(batch.has_value());
  EXPECT_EQ(batch->step, 1);
  EXPECT_EQ(batch->groups.size(), 2u);
  // While step 1 trains, version-0 work would be stale on arrival: nothing is leased.
  EXPECT_EQ(Lease(a, 0).wait(), LeasePromptsResponse::WAIT_STALE_WEIGHTS);
  ASSERT_TRUE(handler_->OnTrained(*batch, 1, {}).ok());
  EXPECT_EQ(Lease(a, 1).prompts_size(), 1);
  ExpectInvariant();
}

TEST_F(HandlerTest, DoneAfterTotalSteps) {
  Make(1, /*total_steps=*/1);
  std::string a = Register("a");
  auto l1 = Lease(a);
  auto l2 = Lease(a);
  ASSERT_TRUE(handler_->Submit(Good(a, l1, 0)).ok());
  ASSERT_TRUE(handler_->Submit(Good(a, l2, 0)).ok());
  TrainOne();
  EXPECT_TRUE(handler_->done());
  EXPECT_EQ(Lease(a).wait(), LeasePromptsResponse::WAIT_DONE);
  EXPECT_FALSE(handler_->WaitForBatch(absl::ZeroDuration()).has_value());
}

TEST_F(HandlerTest, RestartKeepsAckedTrajectoriesLeasesAndRetrainsUncheckpointedSteps) {
  Make(1);
  std::string a = Register("a");
  auto l1 = Lease(a);
  auto l2 = Lease(a);
  ASSERT_TRUE(handler_->Submit(Good(a, l1, 0)).ok());
  ASSERT_TRUE(handler_->Submit(Good(a, l2, 0)).ok());
  TrainOne();  // step 1, not checkpointed
  auto l3 = Lease(a);
  auto l4 = Lease(a);
  ASSERT_TRUE(handler_->Submit(Good(a, l3, 1)).ok());  // acked: must survive
  const auto before = handler_->Stats();
  EXPECT_EQ(before.prompts_trained(), 2);

  // "Crash": a new handler over the same store, trainer restored at step 0 / version 0.
  auto h = LearnerHandler::Create(options_, {{1, 2}, {3}, {4, 5, 6}}, &store_,
                                  [this] { return now_; });
  ASSERT_TRUE(h.ok());
  handler_ = std::move(*h);
  ASSERT_TRUE(handler_->Restore(0, 0).ok());
  auto s = handler_->Stats();
  EXPECT_EQ(s.step(), 0);
  EXPECT_EQ(s.prompts_trained(), 0);
  // Step 1's two groups are back in the buffer, l3's acked group is kept (sampled by
  // a version the restart rolled back; the trainer's importance weights handle it), and
  // l4 is still outstanding.
  EXPECT_EQ(s.prompts_buffered(), 3);
  EXPECT_EQ(s.prompts_outstanding(), 1);
  EXPECT_EQ(handler_->Submit(Good(a, l3, 1))->duplicate(), true);
  auto batch = handler_->WaitForBatch(absl::ZeroDuration());
  ASSERT_TRUE(batch.has_value());
  EXPECT_EQ(batch->step, 1);
  EXPECT_EQ(batch->groups[0].lease_id(), l1.lease_id());  // same data, same order
  EXPECT_EQ(batch->groups[1].lease_id(), l2.lease_id());
  ASSERT_TRUE(handler_->OnTrained(*batch, 1, {}).ok());
  ASSERT_TRUE(handler_->OnCheckpointed(1).ok());
  EXPECT_EQ(store_.state_->trained_batches_size(), 0);
  ExpectInvariant();
}

TEST_F(HandlerTest, EmptySubmissionReleasesTheLease) {
  Make(1);
  std::string a = Register("a");
  auto l = Lease(a);
  rlhf::v1::SubmitTrajectoriesRequest release;
  release.set_actor_id(a);
  release.set_lease_id(l.lease_id());
  ASSERT_TRUE(handler_->Submit(release).ok());
  EXPECT_EQ(handler_->Stats().prompts_reissued(), 1);
  EXPECT_EQ(Lease(a).prompts(0).source_index(), l.prompts(0).source_index());
  ExpectInvariant();
}

// Issue 23 item 1: what the trainer assumes is checked at the door. Each of these was
// accepted before (positive log-probs stalled the learner forever; ±3e38 rewards turned
// the weights into NaN).
TEST_F(HandlerTest, ValuesTheTrainerCannotUseAreRefusedAtTheDoor) {
  Make(1);
  std::string a = Register("a");
  auto l = Lease(a);
  struct Case {
    std::function<void(rlhf::v1::SubmitTrajectoriesRequest&)> mutate;
    std::string expect;
  };
  std::vector<Case> cases = {
      {[](auto& r) { r.mutable_trajectories(0)->set_behaviour_logprobs(1, 1e30f); },
       "trajectories[0].behaviour_logprobs[1]: 1e+30 is not a log-prob (must be <= 0)"},
      {[](auto& r) { r.mutable_trajectories(1)->set_ref_logprobs(0, 0.5f); },
       "trajectories[1].ref_logprobs[0]: 0.5 is not a log-prob"},
      {[](auto& r) { r.mutable_trajectories(0)->set_reward(3e38f); },
       "trajectories[0].reward: 3e+38 outside [-1e+06, 1e+06]"},
      {[](auto& r) { r.mutable_trajectories(1)->set_reward(-3e38f); },
       "trajectories[1].reward: -3e+38 outside"},
      {[](auto& r) { r.mutable_trajectories(0)->set_kl(1, 1e30f); },
       "trajectories[0].kl[1]: 1e+30 outside [-1e+06, 1e+06]"},
      {[](auto& r) { r.mutable_trajectories(0)->set_behaviour_logprobs(0, -1e30f); },
       "trajectories[0].behaviour_logprobs[0]: -1e+30 is below the floor -1e+06"},
      {[](auto& r) { r.mutable_trajectories(0)->mutable_version()->set_version(-3); },
       "trajectories[0].version: -3 is not in [0, 0]"},
  };
  for (const auto& c : cases) {
    auto r = Good(a, l, 0);
    c.mutate(r);
    auto resp = handler_->Submit(r);
    EXPECT_EQ(resp.status().code(), absl::StatusCode::kInvalidArgument) << c.expect;
    EXPECT_NE(resp.status().message().find(c.expect), std::string::npos)
        << resp.status() << " vs " << c.expect;
  }
  auto s = handler_->Stats();
  EXPECT_EQ(s.prompts_buffered(), 0);
  EXPECT_EQ(s.prompts_outstanding(), 1);
  EXPECT_EQ(handler_->Submit(Good(a, l, 0))->accepted(), 2);
  ExpectInvariant();
}

// Issue 23 item 1: a batch the trainer refuses is dropped and counted, its prompts
// re-issued (sampled again), never handed back as it was.
TEST_F(HandlerTest, ABatchTheTrainerRefusesIsDroppedAndItsPromptsReissued) {
  Make(1);
  std::string a = Register("a");
  auto l1 = Lease(a);
  auto l2 = Lease(a);
  ASSERT_TRUE(handler_->Submit(Good(a, l1, 0)).ok());
  ASSERT_TRUE(handler_->Submit(Good(a, l2, 0)).ok());
  auto batch = handler_->WaitForBatch(absl::ZeroDuration());
  ASSERT_TRUE(batch.has_value());
  ASSERT_TRUE(handler_->OnTrainRejected(*batch, absl::InvalidArgumentError("bad")).ok());
  EXPECT_FALSE(handler_->WaitForBatch(absl::ZeroDuration()).has_value());
  auto s = handler_->Stats();
  EXPECT_EQ(s.batches_dropped(), 1);
  EXPECT_EQ(s.prompts_buffered(), 0);
  EXPECT_EQ(s.prompts_reissued(), 2);
  EXPECT_EQ(s.step(), 0);
  EXPECT_EQ(store_.state_->trained_batches_size(), 0);  // not retrained after a restart
  // The prompts come back under new ids and train normally.
  auto l3 = Lease(a);
  EXPECT_EQ(l3.prompts(0).source_index(), l1.prompts(0).source_index());
  ExpectInvariant();
}

// Issue 23 item 2: only the actor a lease was issued to may submit or release it.
TEST_F(HandlerTest, LeasesAreOwnedByTheirActor) {
  Make(1);
  std::string a = Register("a");
  std::string b = Register("b");
  auto l = Lease(a);
  auto foreign = handler_->Submit(Good(b, l, 0));
  EXPECT_EQ(foreign.status().code(), absl::StatusCode::kPermissionDenied) << foreign.status();
  EXPECT_NE(foreign.status().message().find("actor_id"), std::string::npos);
  auto ghost = handler_->Submit(Good("never-registered", l, 0));
  EXPECT_EQ(ghost.status().code(), absl::StatusCode::kPermissionDenied) << ghost.status();
  rlhf::v1::SubmitTrajectoriesRequest release;
  release.set_actor_id(b);
  release.set_lease_id(l.lease_id());
  EXPECT_EQ(handler_->Submit(release).status().code(), absl::StatusCode::kPermissionDenied);
  auto s = handler_->Stats();
  EXPECT_EQ(s.prompts_outstanding(), 1);
  EXPECT_EQ(s.prompts_reissued(), 0);
  EXPECT_EQ(s.trajectories_accepted(), 0);
  // A duplicate of a completed lease is acknowledged only to its owner.
  ASSERT_EQ(handler_->Submit(Good(a, l, 0))->accepted(), 2);
  EXPECT_EQ(handler_->Submit(Good(b, l, 0)).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(handler_->Submit(Good(a, l, 0))->duplicate());
  ExpectInvariant();
}

// Issue 23 item 4: a failed persist changes nothing and is retriable, with the reason.
TEST_F(HandlerTest, AFailedPersistChangesNothingAndIsRetriable) {
  Make(1);
  std::string a = Register("a");
  auto l = Lease(a);
  const auto before = handler_->Stats();
  store_.fail = absl::InternalError("write /ckpt/state.tmp: No space left on device");
  auto retriable = [](const absl::Status& s) {
    return s.code() == absl::StatusCode::kUnavailable ||
           s.code() == absl::StatusCode::kResourceExhausted;
  };
  auto sub = handler_->Submit(Good(a, l, 0));
  EXPECT_TRUE(retriable(sub.status())) << sub.status();
  EXPECT_NE(sub.status().message().find("No space left on device"), std::string::npos);
  auto lease = handler_->LeasePrompts([&] {
    rlhf::v1::LeasePromptsRequest r;
    r.set_actor_id(a);
    r.mutable_held_version()->set_version(0);
    return r;
  }());
  EXPECT_TRUE(retriable(lease.status())) << lease.status();
  rlhf::v1::RegisterRequest reg;
  reg.set_actor_name("c");
  EXPECT_TRUE(retriable(handler_->Register(reg).status()));
  auto s = handler_->Stats();
  EXPECT_EQ(s.prompts_leased(), before.prompts_leased());
  EXPECT_EQ(s.prompts_outstanding(), 1);
  EXPECT_EQ(s.prompts_buffered(), 0);
  EXPECT_EQ(s.trajectories_accepted(), 0);
  EXPECT_EQ(s.actors_connected(), 1);
  // The disk has room again: the retried submission is accepted, not a "duplicate".
  store_.fail = absl::OkStatus();
  auto retry = handler_->Submit(Good(a, l, 0));
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_FALSE(retry->duplicate());
  EXPECT_EQ(retry->accepted(), 2);
  ExpectInvariant();
  // What was acknowledged is on the store: a restarted handler has the group buffered.
  auto h =
      LearnerHandler::Create(options_, {{1, 2}, {3}, {4, 5, 6}}, &store_, [this] { return now_; });
  ASSERT_TRUE(h.ok());
  ASSERT_TRUE((*h)->Restore(0, 0).ok());
  EXPECT_EQ((*h)->Stats().prompts_buffered(), 1);
  EXPECT_EQ((*h)->Stats().trajectories_accepted(), 2);
}

TEST(FileStateStoreTest, AnUnwritableDirectoryIsRetriableAndSaysWhy) {
  FileStateStore store("/proc/rlhf-no-such-dir/state.pb");
  absl::Status s = store.Write(rlhf::v1::LearnerState());
  EXPECT_TRUE(s.code() == absl::StatusCode::kUnavailable ||
              s.code() == absl::StatusCode::kResourceExhausted) << s;
  EXPECT_NE(s.message().find("state.pb.tmp"), std::string::npos) << s;
}

// Issue 23 item 5: no silent reset of the accounting next to existing checkpoints.
TEST_F(HandlerTest, AMissingOrEmptyStateNextToATrainedCheckpointIsRefused) {
  Make(1);
  for (bool empty_file : {false, true}) {
    MemoryStore store;
    if (empty_file) store.state_ = rlhf::v1::LearnerState();  // a 0-byte file parses so
    auto h = LearnerHandler::Create(options_, {{1, 2}, {3}}, &store, [this] { return now_; });
    ASSERT_TRUE(h.ok());
    absl::Status s = (*h)->Restore(/*trainer_step=*/5, /*policy_version=*/5);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_NE(s.message().find("step 5"), std::string::npos) << s;
    // Allowed explicitly: restores, and says what was lost through the counters' step.
    LearnerHandlerOptions o = options_;
    o.allow_state_reset = true;
    auto h2 = LearnerHandler::Create(o, {{1, 2}, {3}}, &store, [this] { return now_; });
    ASSERT_TRUE(h2.ok());
    ASSERT_TRUE((*h2)->Restore(5, 5).ok());
    EXPECT_EQ((*h2)->Stats().step(), 5);
  }
  // A fresh job (trainer at step 0) with no state is simply new.
  MemoryStore fresh;
  auto h = LearnerHandler::Create(options_, {{1, 2}}, &fresh, [this] { return now_; });
  EXPECT_TRUE((*h)->Restore(0, 0).ok());
}

TEST_F(HandlerTest, DistinctPromptsTrainedSurvivesARestart) {
  Make(1);
  std::string a = Register("a");
  auto l1 = Lease(a);  // source 0
  auto l2 = Lease(a);  // source 1
  ASSERT_TRUE(handler_->Submit(Good(a, l1, 0)).ok());
  ASSERT_TRUE(handler_->Submit(Good(a, l2, 0)).ok());
  TrainOne();
  ASSERT_TRUE(handler_->OnCheckpointed(1).ok());
  EXPECT_EQ(handler_->Stats().distinct_prompts_trained(), 2);
  auto h = LearnerHandler::Create(options_, {{1, 2}, {3}, {4, 5, 6}}, &store_,
                                  [this] { return now_; });
  ASSERT_TRUE(h.ok());
  handler_ = std::move(*h);
  ASSERT_TRUE(handler_->Restore(1, 1).ok());
  auto l3 = Lease(a);  // source 2
  auto l4 = Lease(a);  // source 0 again
  ASSERT_TRUE(handler_->Submit(Good(a, l3, 1)).ok());
  ASSERT_TRUE(handler_->Submit(Good(a, l4, 1)).ok());
  TrainOne();
  EXPECT_EQ(handler_->Stats().distinct_prompts_trained(), 3);  // {0, 1, 2}
  ExpectInvariant();
}

// `rlhf run` records every step from GetStats however many finish between two polls:
// the handler keeps the last step_records_kept records, persisted with its state, and
// drops at a restore those of steps the restored trainer trains again.
TEST_F(HandlerTest, StepRecordsAreBoundedPersistedAndCutBackAtARestore) {
  options_.step_records_kept = 2;
  Make(1);
  std::string a = Register("a");
  for (int step = 1; step <= 3; ++step) {
    now_ += absl::Seconds(1);
    auto l1 = Lease(a);
    auto l2 = Lease(a);
    ASSERT_TRUE(handler_->Submit(Good(a, l1, handler_->version())).ok());
    ASSERT_TRUE(handler_->Submit(Good(a, l2, handler_->version())).ok());
    TrainOne();
    if (step == 2) {
      ASSERT_TRUE(handler_->OnCheckpointed(2).ok());
    }
  }
  auto s = handler_->Stats();
  ASSERT_EQ(s.recent_steps_size(), 2) << s.DebugString();  // step 1 fell out
  const rlhf::v1::StepRecord& two = s.recent_steps(0);
  EXPECT_EQ(two.step(), 2);
  EXPECT_EQ(two.policy_version(), 2);
  EXPECT_EQ(two.trajectories_trained(), 8);  // 2 steps x 2 prompts x 2 samples
  EXPECT_EQ(two.trajectories_accepted(), 8);
  EXPECT_EQ(two.actors_connected(), 1);
  EXPECT_DOUBLE_EQ(two.time_unix_s(), 1002);
  ASSERT_EQ(two.stats().count("loss"), 1u);
  EXPECT_DOUBLE_EQ(two.stats().at("loss"), 0.5);
  EXPECT_EQ(s.recent_steps(1).step(), 3);
  EXPECT_EQ(s.recent_steps(1).trajectories_trained(), 12);
  // A poller that has seen step 2 gets step 3 only; one that has seen 3, nothing.
  ASSERT_EQ(handler_->Stats(2).recent_steps_size(), 1);
  EXPECT_EQ(handler_->Stats(2).recent_steps(0).step(), 3);
  EXPECT_EQ(handler_->Stats(3).recent_steps_size(), 0);

  // "Crash" after step 3; the trainer comes back from its step-2 checkpoint.
  auto h =
      LearnerHandler::Create(options_, {{1, 2}, {3}, {4, 5, 6}}, &store_, [this] { return now_; });
  ASSERT_TRUE(h.ok());
  handler_ = std::move(*h);
  ASSERT_TRUE(handler_->Restore(2, 2).ok());
  s = handler_->Stats();
  ASSERT_EQ(s.recent_steps_size(), 1) << s.DebugString();
  EXPECT_EQ(s.recent_steps(0).step(), 2);
  EXPECT_EQ(s.recent_steps(0).trajectories_trained(), 8);
}

// Issue 23 item 7: every string is bounded, and echoes in errors are too.
TEST_F(HandlerTest, StringsAreBoundedAndErrorsEchoThemBounded) {
  Make(1);
  rlhf::v1::RegisterRequest reg;
  reg.set_actor_name(std::string(16 << 20, 'x'));
  auto r = handler_->Register(reg);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("actor_name"), std::string::npos);
  EXPECT_LT(r.status().message().size(), 300u);
  EXPECT_EQ(handler_->Stats().actors_connected(), 0);
  const std::string huge(1 << 20, 'y');
  rlhf::v1::HeartbeatRequest hb;
  hb.set_actor_id(huge);
  auto h = handler_->Heartbeat(hb);
  EXPECT_EQ(h.status().code(), absl::StatusCode::kNotFound);
  EXPECT_LT(h.status().message().size(), 300u);
  std::string a = Register("a");
  auto l = Lease(a);
  auto sub = Good(a, l, 0);
  sub.set_lease_id(huge);
  auto s = handler_->Submit(sub);
  EXPECT_FALSE(s.ok());
  EXPECT_LT(s.status().message().size(), 300u) << s.status().message().substr(0, 300);
  // More trajectories than any lease can hold are refused before they are looked at.
  auto many = Good(a, l, 0);
  for (int i = 0; i < 10000; ++i) *many.add_trajectories() = many.trajectories(0);
  auto m = handler_->Submit(many);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("trajectories: 10002"), std::string::npos) << m.status();
}

}  // namespace
}  // namespace rlhf::learner
