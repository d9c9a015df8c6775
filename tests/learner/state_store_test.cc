// The learner's durable state (learner/state_store.h) on a real file system: records
// come back in order with their seqs, a torn or corrupted tail is cut (and never hides
// a later record), a snapshot empties the log and replay skips what it includes even
// when the log was not truncated (a crash between the two), concurrent callers share
// fdatasyncs (group commit), and a failed sync breaks the store for good. Then the
// handler over it: a "crash" (a new handler over the same files, no final snapshot)
// restores exactly the state the acknowledged calls left, in both durability modes.
#include "learner/state_store.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "learner/learner_handler.h"
#include "tests/testing/temp_dir.h"

namespace rlhf::learner {
namespace {

using ::testing::HasSubstr;

rlhf::v1::LearnerLogRecord ReleaseRecord(const std::string& lease_id) {
  rlhf::v1::LearnerLogRecord r;
  r.mutable_release()->set_lease_id(lease_id);
  return r;
}

std::vector<std::string> ReleasedIds(const std::vector<rlhf::v1::LearnerLogRecord>& records) {
  std::vector<std::string> ids;
  for (const auto& r : records) ids.push_back(r.release().lease_id());
  return ids;
}

class StateStoreTest : public ::testing::Test {
 protected:
  std::string dir_ = rlhf::testing::MakeTempDir("state_store");
  std::string path_ = dir_ + "/state.pb";
};

TEST_F(StateStoreTest, RecordsComeBackInOrderWithIncreasingSeqs) {
  {
    FileStateStore store(path_);
    for (int i = 1; i <= 3; ++i) {
      auto seq = store.Append(ReleaseRecord(absl::StrCat("L", i)));
      ASSERT_TRUE(seq.ok()) << seq.status();
      EXPECT_EQ(*seq, i);
      ASSERT_TRUE(store.Sync(*seq).ok());
    }
    EXPECT_EQ(store.last_seq(), 3);
  }
  FileStateStore reopened(path_);
  auto records = reopened.ReadLog();
  ASSERT_TRUE(records.ok()) << records.status();
  EXPECT_EQ(ReleasedIds(*records), (std::vector<std::string>{"L1", "L2", "L3"}));
  EXPECT_EQ((*records)[2].seq(), 3);
  // Seqs continue after the ones on disk.
  EXPECT_EQ(*reopened.Append(ReleaseRecord("L4")), 4);
}

TEST_F(StateStoreTest, ATornOrCorruptTailIsCutAndTheNextRecordFollowsTheLastWholeOne) {
  {
    FileStateStore store(path_);
    ASSERT_TRUE(store.Append(ReleaseRecord("L1")).ok());
    ASSERT_TRUE(store.Append(ReleaseRecord("L2")).ok());
  }
  const std::string log = path_ + ".log";
  const auto whole = std::filesystem::file_size(log);
  // A crash in the middle of a third record: its header and half its body.
  {
    std::ofstream out(log, std::ios::binary | std::ios::app);
    out.write("\x20\x00\x00\x00\x11\x22\x33\x44\x03\x00\x00", 11);
  }
  FileStateStore store(path_);
  auto records = store.ReadLog();
  ASSERT_TRUE(records.ok());
  EXPECT_EQ(ReleasedIds(*records), (std::vector<std::string>{"L1", "L2"}));
  ASSERT_TRUE(store.Append(ReleaseRecord("L3")).ok());
  EXPECT_GT(std::filesystem::file_size(log), whole);
  FileStateStore again(path_);
  auto after = again.ReadLog();
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(ReleasedIds(*after), (std::vector<std::string>{"L1", "L2", "L3"}));

  // A flipped byte inside the second record: it and everything after it are not trusted.
  {
    std::fstream f(log, std::ios::binary | std::ios::in | std::ios::out);
    const auto first = 16 + ReleaseRecord("L1").ByteSizeLong();
    f.seekp(static_cast<std::streamoff>(first + 18));
    f.put('\x7f');
  }
  FileStateStore corrupt(path_);
  auto cut = corrupt.ReadLog();
  ASSERT_TRUE(cut.ok());
  EXPECT_EQ(ReleasedIds(*cut), (std::vector<std::string>{"L1"}));
}

TEST_F(StateStoreTest, ASnapshotEmptiesTheLogAndRecordsItIncludes) {
  FileStateStore store(path_);
  ASSERT_TRUE(store.Append(ReleaseRecord("L1")).ok());
  ASSERT_TRUE(store.Append(ReleaseRecord("L2")).ok());
  rlhf::v1::LearnerState state;
  state.set_run_id("r");
  state.set_log_seq(store.last_seq());
  ASSERT_TRUE(store.Write(state).ok());
  EXPECT_EQ(store.log_bytes(), 0);
  EXPECT_EQ(std::filesystem::file_size(path_ + ".log"), 0u);
  EXPECT_TRUE(store.Sync(2).ok());  // covered by the snapshot
  EXPECT_EQ(*store.Append(ReleaseRecord("L3")), 3);
  FileStateStore reopened(path_);
  auto snap = reopened.Read();
  ASSERT_TRUE(snap.ok() && snap->has_value());
  EXPECT_EQ((*snap)->log_seq(), 2);
  auto records = reopened.ReadLog();
  ASSERT_TRUE(records.ok());
  ASSERT_EQ(records->size(), 1u);
  EXPECT_EQ((*records)[0].seq(), 3);
}

// Group commit: while one fdatasync is in progress, other callers append; when it ends,
// one more sync covers all of them (not one each).
TEST_F(StateStoreTest, ConcurrentCallersShareOneSync) {
  absl::Notification first_sync_entered, release_first_sync;
  std::atomic<int> calls{0};
  FileStateStoreOptions options;
  options.path = path_;
  options.sync_fn = [&](int fd) {
    if (calls.fetch_add(1) == 0) {
      first_sync_entered.Notify();
      release_first_sync.WaitForNotification();
    }
    return ::fdatasync(fd);
  };
  FileStateStore store(options);
  auto first = store.Append(ReleaseRecord("L0"));
  ASSERT_TRUE(first.ok());
  std::thread leader([&] { EXPECT_TRUE(store.Sync(*first).ok()); });
  first_sync_entered.WaitForNotification();
  constexpr int kWaiters = 8;
  std::vector<std::thread> waiters;
  for (int i = 0; i < kWaiters; ++i) {
    auto seq = store.Append(ReleaseRecord(absl::StrCat("L", i + 1)));
    ASSERT_TRUE(seq.ok());
    waiters.emplace_back([&store, s = *seq] { EXPECT_TRUE(store.Sync(s).ok()); });
  }
  release_first_sync.Notify();
  leader.join();
  for (auto& t : waiters) t.join();
  EXPECT_EQ(store.syncs(), 2) << "nine records, two fdatasyncs";
}

TEST_F(StateStoreTest, AFailedSyncBreaksTheStoreUntilARestart) {
  FileStateStoreOptions options;
  options.path = path_;
  options.sync_fn = [](int) {
    errno = EIO;
    return -1;
  };
  FileStateStore store(options);
  auto seq = store.Append(ReleaseRecord("L1"));
  ASSERT_TRUE(seq.ok());
  absl::Status s = store.Sync(*seq);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("fdatasync"));
  EXPECT_THAT(s.message(), HasSubstr("Input/output error"));
  EXPECT_FALSE(store.health().ok());
  EXPECT_FALSE(store.Append(ReleaseRecord("L2")).ok());
  EXPECT_FALSE(store.Write(rlhf::v1::LearnerState()).ok());
}

TEST_F(StateStoreTest, AnUnwritableDirectoryIsRetriableAndSaysWhy) {
  FileStateStore store("/proc/rlhf-no-such-dir/state.pb");
  auto seq = store.Append(ReleaseRecord("L1"));
  ASSERT_FALSE(seq.ok());
  EXPECT_EQ(seq.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(seq.status().message(), HasSubstr("/proc/rlhf-no-such-dir/state.pb.log"));
}

// --- The handler over the files ---------------------------------------------------

rlhf::v1::SubmitTrajectoriesRequest Submission(const std::string& actor,
                                               const rlhf::v1::LeasePromptsResponse& lease,
                                               int samples, int64_t version) {
  rlhf::v1::SubmitTrajectoriesRequest r;
  r.set_actor_id(actor);
  r.set_lease_id(lease.lease_id());
  for (const auto& p : lease.prompts()) {
    for (int s = 0; s < samples; ++s) {
      auto* t = r.add_trajectories();
      t->set_prompt_id(p.prompt_id());
      *t->mutable_tokens()->mutable_prompt() = p.tokens();
      t->mutable_tokens()->add_response(7 + s);
      t->add_behaviour_logprobs(-1.0f);
      t->add_ref_logprobs(-1.5f);
      t->add_kl(0.5f);
      t->set_reward(static_cast<float>(s));
      t->mutable_version()->set_version(version);
    }
  }
  return r;
}

// Everything Stats() reports except the live connection count, as text.
std::string Comparable(rlhf::v1::LearnerStats s) {
  s.clear_actors_connected();
  return s.ShortDebugString();
}

class HandlerRecoveryTest : public ::testing::TestWithParam<bool> {};

// A run of every logged operation, then a "crash" (the handler is dropped without a
// snapshot) and a restart over the same files: the restored handler reports the same
// counters, hands out the next prompts where the first stopped, recognises the
// acknowledged lease as a duplicate and trains the same groups in the same order.
TEST_P(HandlerRecoveryTest, ARestartRestoresWhatTheAcknowledgedCallsLeft) {
  const std::string dir = rlhf::testing::MakeTempDir("handler_recovery");
  LearnerHandlerOptions options;
  options.prompts_per_step = 3;
  options.samples_per_prompt = 2;
  options.prompts_per_lease = 2;
  options.max_staleness = 1;
  options.vocab_size = 50;
  options.max_seq_len = 16;
  options.log_records = GetParam();
  const std::vector<std::vector<int32_t>> prompts = {{1, 2}, {3}, {4, 5, 6}, {7}, {8, 9}};
  FileStateStore store(dir + "/state.pb");
  auto h = LearnerHandler::Create(options, prompts, &store);
  ASSERT_TRUE(h.ok());
  ASSERT_TRUE((*h)->Restore(0, 0).ok());
  rlhf::v1::RegisterRequest reg;
  reg.set_actor_name("a");
  const std::string a = (*h)->Register(reg)->actor_id();
  reg.set_actor_name("b");
  const std::string b = (*h)->Register(reg)->actor_id();
  auto lease = [&](const std::string& actor) {
    rlhf::v1::LeasePromptsRequest r;
    r.set_actor_id(actor);
    r.mutable_held_version()->set_version(0);
    auto resp = (*h)->LeasePrompts(r);
    EXPECT_TRUE(resp.ok()) << resp.status();
    return *resp;
  };
  auto l1 = lease(a);
  auto l2 = lease(b);
  ASSERT_TRUE((*h)->Submit(Submission(a, l1, 2, 0)).ok());
  rlhf::v1::SubmitTrajectoriesRequest release;
  release.set_actor_id(b);
  release.set_lease_id(l2.lease_id());
  ASSERT_TRUE((*h)->Submit(release).ok());  // l2's prompts go to the re-issue queue
  auto l3 = lease(b);                       // takes them back
  ASSERT_TRUE((*h)->Submit(Submission(b, l3, 2, 0)).ok());
  auto l4 = lease(a);  // outstanding at the crash
  const std::string before = Comparable((*h)->Stats());
  h->reset();  // crash: no snapshot after the hot-path calls

  FileStateStore reopened(dir + "/state.pb");
  auto restored = LearnerHandler::Create(options, prompts, &reopened);
  ASSERT_TRUE(restored.ok());
  ASSERT_TRUE((*restored)->Restore(0, 0).ok());
  EXPECT_EQ(Comparable((*restored)->Stats()), before);
  EXPECT_TRUE((*restored)->IsActor(a));
  EXPECT_TRUE((*restored)->IsActor(b));
  EXPECT_TRUE((*restored)->Submit(Submission(a, l1, 2, 0))->duplicate());
  // l4 is still a's to submit.
  auto acked = (*restored)->Submit(Submission(a, l4, 2, 0));
  ASSERT_TRUE(acked.ok()) << acked.status();
  EXPECT_EQ(acked->accepted(), 2 * l4.prompts_size());
  auto batch = (*restored)->WaitForBatch(absl::ZeroDuration());
  ASSERT_TRUE(batch.has_value());
  ASSERT_EQ(batch->groups.size(), 3u);
  EXPECT_EQ(batch->groups[0].lease_id(), l1.lease_id());
  EXPECT_EQ(batch->groups[1].lease_id(), l1.lease_id());
  EXPECT_EQ(batch->groups[2].lease_id(), l3.lease_id());
  // New leases and prompts continue where the first handler stopped.
  rlhf::v1::LeasePromptsRequest r;
  r.set_actor_id(b);
  r.mutable_held_version()->set_version(0);
  auto next = (*restored)->LeasePrompts(r);
  ASSERT_TRUE(next.ok());
  if (!next->lease_id().empty()) {
    EXPECT_NE(next->lease_id(), l4.lease_id());
    EXPECT_GT(next->prompts(0).prompt_id(), l4.prompts(l4.prompts_size() - 1).prompt_id());
  }
}

INSTANTIATE_TEST_SUITE_P(BothDurabilityModes, HandlerRecoveryTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Log" : "SnapshotPerCall"; });

// A failed sync: the call is not acknowledged, and nothing after it is either (also
// not a "duplicate" of the unacknowledged submission).
TEST(HandlerDurabilityTest, NothingIsAcknowledgedAfterAFailedSync) {
  const std::string dir = rlhf::testing::MakeTempDir("handler_sync_fail");
  std::atomic<bool> fail{false};
  FileStateStoreOptions store_options;
  store_options.path = dir + "/state.pb";
  store_options.sync_fn = [&](int fd) {
    if (fail) {
      errno = EIO;
      return -1;
    }
    return ::fdatasync(fd);
  };
  FileStateStore store(store_options);
  LearnerHandlerOptions options;
  options.prompts_per_step = 4;
  options.samples_per_prompt = 1;
  options.prompts_per_lease = 1;
  options.vocab_size = 50;
  auto h = LearnerHandler::Create(options, {{1}, {2}}, &store);
  ASSERT_TRUE(h.ok());
  ASSERT_TRUE((*h)->Restore(0, 0).ok());
  rlhf::v1::RegisterRequest reg;
  reg.set_actor_name("a");
  const std::string a = (*h)->Register(reg)->actor_id();
  rlhf::v1::LeasePromptsRequest lr;
  lr.set_actor_id(a);
  auto l = (*h)->LeasePrompts(lr);
  ASSERT_TRUE(l.ok());
  fail = true;
  auto sub = (*h)->Submit(Submission(a, *l, 1, 0));
  ASSERT_FALSE(sub.ok());
  EXPECT_EQ(sub.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(sub.status().message(), HasSubstr("fdatasync"));
  auto again = (*h)->Submit(Submission(a, *l, 1, 0));
  EXPECT_FALSE(again.ok()) << "acknowledged as a duplicate of a submission never made durable";
  EXPECT_FALSE((*h)->Register(reg).ok());
}

}  // namespace
}  // namespace rlhf::learner
