#include "services/batcher.h"

#include <atomic>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

namespace rlhf::services {
namespace {

// Items are "sequences" of a given length; the fake model returns length * 10 + first
// value so that results identify their item.
struct Seq {
  int64_t length;
  int id;
};
using Batcher = DynamicBatcher<Seq, int>;

struct Result {
  absl::Notification done;
  absl::StatusOr<std::vector<int>> value;
};

Batcher::DoneFn Into(Result* r) {
  return [r](absl::StatusOr<std::vector<int>> v) {
    r->value = std::move(v);
    r->done.Notify();
  };
}

absl::Time Far() { return absl::Now() + absl::Seconds(30); }

// A fake model whose first call blocks until released, recording each forward's items.
class FakeModel {
 public:
  Batcher::BatchFn Fn() {
    return [this](const std::vector<const Seq*>& items) -> absl::StatusOr<std::vector<int>> {
      {
        absl::MutexLock lock(&mu_);
        std::vector<int> ids;
        for (const Seq* s : items) ids.push_back(s->id);
        forwards_.push_back(ids);
        ++entered_;
      }
      if (block_first_ && !released_.HasBeenNotified()) released_.WaitForNotification();
      if (fail_) return absl::InternalError("model exploded");
      std::vector<int> out;
      for (const Seq* s : items) out.push_back(s->id * 10);
      return out;
    };
  }
  void WaitEntered(int n) {
    std::pair<FakeModel*, int> arg(this, n);
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](std::pair<FakeModel*, int>* a) ABSL_NO_THREAD_SAFETY_ANALYSIS {
          return a->first->entered_ >= a->second;
        },
        &arg));
  }
  std::vector<std::vector<int>> forwards() {
    absl::MutexLock lock(&mu_);
    return forwards_;
  }
  bool block_first_ = false;
  bool fail_ = false;
  absl::Notification released_;

 private:
  absl::Mutex mu_;
  std::vector<std::vector<int>> forwards_ ABSL_GUARDED_BY(mu_);
  int entered_ ABSL_GUARDED_BY(mu_) = 0;
};

Batcher::LengthFn Length() {
  return [](const Seq& s) { return s.length; };
}

TEST(DynamicBatcherTest, SingleRequestResultsInItemOrder) {
  FakeModel model;
  Batcher batcher(BatcherOptions{}, Length(), model.Fn());
  Result r;
  ASSERT_TRUE(batcher.Submit({{3, 1}, {9, 2}, {5, 3}}, Far(), nullptr, Into(&r)).ok());
  r.done.WaitForNotification();
  ASSERT_TRUE(r.value.ok());
  EXPECT_EQ(*r.value, (std::vector<int>{10, 20, 30}));
  // One forward, sorted longest first.
  ASSERT_EQ(model.forwards().size(), 1u);
  EXPECT_EQ(model.forwards()[0], (std::vector<int>{2, 3, 1}));
}

TEST(DynamicBatcherTest, CoalescesQueuedRequestsIntoOneForward) {
  FakeModel model;
  model.block_first_ = true;
  BatcherOptions options;
  options.max_wait = absl::ZeroDuration();
  Batcher batcher(options, Length(), model.Fn());
  Result first;
  ASSERT_TRUE(batcher.Submit({{4, 1}}, Far(), nullptr, Into(&first)).ok());
  model.WaitEntered(1);  // worker is busy: the next requests queue up together
  std::vector<Result> rest(5);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(batcher.Submit({{i + 1, 100 + i}}, Far(), nullptr, Into(&rest[i])).ok());
  }
  model.released_.Notify();
  for (int i = 0; i < 5; ++i) {
    rest[i].done.WaitForNotification();
    ASSERT_TRUE(rest[i].value.ok());
    EXPECT_EQ(*rest[i].value, std::vector<int>{(100 + i) * 10});
  }
  const auto forwards = model.forwards();
  ASSERT_EQ(forwards.size(), 2u);
  EXPECT_EQ(forwards[1], (std::vector<int>{104, 103, 102, 101, 100}));
}

TEST(DynamicBatcherTest, TokenBudgetAndSequenceCapSplitForwards) {
  FakeModel model;
  BatcherOptions options;
  options.max_batch_tokens = 20;  // padded tokens per forward
  options.max_batch_sequences = 3;
  Batcher batcher(options, Length(), model.Fn());
  Result r;
  // Lengths 10,10,5,5,5,5 sorted: [10,10] (3*10 > 20), then [5,5,5] (cap 3), then [5].
  ASSERT_TRUE(
      batcher.Submit({{5, 1}, {10, 2}, {5, 3}, {10, 4}, {5, 5}, {5, 6}}, Far(), nullptr, Into(&r))
          .ok());
  r.done.WaitForNotification();
  ASSERT_TRUE(r.value.ok());
  EXPECT_EQ(*r.value, (std::vector<int>{10, 20, 30, 40, 50, 60}));
  const auto forwards = model.forwards();
  ASSERT_EQ(forwards.size(), 3u);
  EXPECT_EQ(forwards[0], (std::vector<int>{2, 4}));
  EXPECT_EQ(forwards[1], (std::vector<int>{1, 3, 5}));
  EXPECT_EQ(forwards[2], (std::vector<int>{6}));
}

TEST(DynamicBatcherTest, BatchingDisabledRunsOneSequencePerForward) {
  FakeModel model;
  BatcherOptions options;
  options.max_batch_sequences = 1;
  options.max_wait = absl::ZeroDuration();
  Batcher batcher(options, Length(), model.Fn());
  Result r;
  ASSERT_TRUE(batcher.Submit({{2, 1}, {3, 2}}, Far(), nullptr, Into(&r)).ok());
  r.done.WaitForNotification();
  EXPECT_EQ(*r.value, (std::vector<int>{10, 20}));
  EXPECT_EQ(model.forwards().size(), 2u);
}

TEST(DynamicBatcherTest, FullQueueIsResourceExhausted) {
  FakeModel model;
  model.block_first_ = true;
  BatcherOptions options;
  options.max_queue_sequences = 3;
  options.max_wait = absl::ZeroDuration();
  Batcher batcher(options, Length(), model.Fn());
  Result busy, a, b;
  ASSERT_TRUE(batcher.Submit({{1, 1}}, Far(), nullptr, Into(&busy)).ok());
  model.WaitEntered(1);
  ASSERT_TRUE(batcher.Submit({{1, 2}, {1, 3}}, Far(), nullptr, Into(&a)).ok());
  const absl::Status full = batcher.Submit({{1, 4}, {1, 5}}, Far(), nullptr, Into(&b));
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(batcher.queued_sequences(), 2);
  model.released_.Notify();
  a.done.WaitForNotification();
  EXPECT_TRUE(a.value.ok());
  EXPECT_FALSE(b.done.HasBeenNotified());  // rejected requests never get a callback
}

TEST(DynamicBatcherTest, CancelledAndExpiredRequestsLeaveTheBatch) {
  FakeModel model;
  model.block_first_ = true;
  BatcherOptions options;
  options.max_wait = absl::ZeroDuration();
  Batcher batcher(options, Length(), model.Fn());
  Result busy, cancelled, expired, kept;
  ASSERT_TRUE(batcher.Submit({{1, 1}}, Far(), nullptr, Into(&busy)).ok());
  model.WaitEntered(1);
  CancelFlag flag = NewCancelFlag();
  ASSERT_TRUE(batcher.Submit({{1, 2}}, Far(), flag, Into(&cancelled)).ok());
  ASSERT_TRUE(batcher.Submit({{1, 3}}, absl::Now(), nullptr, Into(&expired)).ok());
  ASSERT_TRUE(batcher.Submit({{1, 4}}, Far(), nullptr, Into(&kept)).ok());
  flag->store(true);
  model.released_.Notify();
  cancelled.done.WaitForNotification();
  expired.done.WaitForNotification();
  kept.done.WaitForNotification();
  EXPECT_EQ(cancelled.value.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(expired.value.status().code(), absl::StatusCode::kDeadlineExceeded);
  ASSERT_TRUE(kept.value.ok());
  const auto forwards = model.forwards();
  ASSERT_EQ(forwards.size(), 2u);
  EXPECT_EQ(forwards[1], std::vector<int>{4});  // only the live request was computed
}

TEST(DynamicBatcherTest, ModelErrorReachesEveryRequestOfTheForward) {
  FakeModel model;
  model.fail_ = true;
  Batcher batcher(BatcherOptions{}, Length(), model.Fn());
  Result r;
  ASSERT_TRUE(batcher.Submit({{1, 1}, {2, 2}}, Far(), nullptr, Into(&r)).ok());
  r.done.WaitForNotification();
  EXPECT_EQ(r.value.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(r.value.status().message(), "model exploded");
}

TEST(DynamicBatcherTest, ManyConcurrentClientsLoseNothingAndHooksSeeEveryForward) {
  FakeModel model;
  std::atomic<int64_t> forwarded{0};
  std::atomic<int64_t> max_depth{0};
  BatcherHooks hooks;
  hooks.on_forward = [&](const BatchStats& s) {
    forwarded += s.sequences;
    EXPECT_GE(s.padded_tokens, s.real_tokens);
    EXPECT_GE(s.padding_waste(), 0.0);
  };
  hooks.on_queue_depth = [&](int64_t d) {
    int64_t m = max_depth.load();
    while (d > m && !max_depth.compare_exchange_weak(m, d)) {
    }
  };
  BatcherOptions options;
  options.max_wait = absl::Milliseconds(1);
  Batcher batcher(options, Length(), model.Fn(), hooks);
  constexpr int kThreads = 16, kPerThread = 20;
  std::atomic<int> correct{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const int id = t * 1000 + i;
        Result r;
        ASSERT_TRUE(batcher.Submit({{1 + (id % 7), id}, {2, id + 500}}, Far(), nullptr, Into(&r))
                        .ok());
        r.done.WaitForNotification();
        if (r.value.ok() && *r.value == std::vector<int>{id * 10, (id + 500) * 10}) ++correct;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(correct.load(), kThreads * kPerThread);
  EXPECT_EQ(forwarded.load(), 2 * kThreads * kPerThread);
  EXPECT_GT(max_depth.load(), 0);
}

TEST(DynamicBatcherTest, ShutdownDrainsQueueThenRefuses) {
  FakeModel model;
  model.block_first_ = true;
  BatcherOptions options;
  options.max_wait = absl::ZeroDuration();
  Batcher batcher(options, Length(), model.Fn());
  Result busy, queued;
  ASSERT_TRUE(batcher.Submit({{1, 1}}, Far(), nullptr, Into(&busy)).ok());
  model.WaitEntered(1);
  ASSERT_TRUE(batcher.Submit({{1, 2}}, Far(), nullptr, Into(&queued)).ok());
  std::thread stopper([&] { batcher.Shutdown(); });
  model.released_.Notify();
  stopper.join();
  EXPECT_TRUE(queued.done.HasBeenNotified());
  EXPECT_TRUE(queued.value.ok());
  Result late;
  EXPECT_EQ(batcher.Submit({{1, 3}}, Far(), nullptr, Into(&late)).code(),
            absl::StatusCode::kUnavailable);
}

TEST(DynamicBatcherTest, OptionsAreValidated) {
  BatcherOptions options;
  EXPECT_TRUE(ValidateBatcherOptions(options).ok());
  options.max_batch_sequences = 0;
  EXPECT_NE(ValidateBatcherOptions(options).message().find("max_batch_sequences"),
            std::string::npos);
}

}  // namespace
}  // namespace rlhf::services
