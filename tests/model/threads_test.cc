// ParallelFor (core/model/threads.h): every index once, on LibTorch's OpenMP pool when the
// range is big enough, on the caller otherwise.
#include "core/model/threads.h"

#include <algorithm>
#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "absl/synchronization/mutex.h"

namespace rlhf {
namespace {

// Sets LibTorch's intra-op thread count for one test and restores it after.
class ParallelForTest : public ::testing::Test {
 protected:
  void SetUp() override {
    saved_ = at::get_num_threads();
    at::set_num_threads(2);
  }
  void TearDown() override { at::set_num_threads(saved_); }

 private:
  int saved_ = 1;
};

struct Calls {
  absl::Mutex mu;
  std::vector<std::pair<int64_t, int64_t>> chunks ABSL_GUARDED_BY(mu);
  std::set<std::thread::id> threads ABSL_GUARDED_BY(mu);
};

TEST_F(ParallelForTest, VisitsEveryIndexOnceInContiguousChunks) {
  constexpr int64_t kBig = kMinParallelWork;  // one item is a thread's worth of work
  for (auto [begin, end, work] :
       std::vector<std::tuple<int64_t, int64_t, int64_t>>{{0, 1000, kBig},
                                                          {5, 6, kBig},
                                                          {3, 1003, kBig / 100},
                                                          {0, 1000, 1},
                                                          {10, 10, kBig},
                                                          {0, 3, kBig}}) {
    std::vector<std::atomic<int>> visits(static_cast<size_t>(end + 1));
    Calls calls;
    ParallelFor(begin, end, work, [&](int64_t b, int64_t e) {
      {
        absl::MutexLock lock(&calls.mu);
        calls.chunks.push_back({b, e});
      }
      for (int64_t i = b; i < e; ++i) visits[static_cast<size_t>(i)]++;
    });
    for (int64_t i = 0; i <= end; ++i) {
      EXPECT_EQ(visits[static_cast<size_t>(i)].load(), i >= begin && i < end ? 1 : 0)
          << "index " << i << " of [" << begin << ", " << end << ")";
    }
    absl::MutexLock lock(&calls.mu);
    for (const auto& [b, e] : calls.chunks) EXPECT_LT(b, e);  // no empty chunk is handed out
    if (begin == end) {
      EXPECT_TRUE(calls.chunks.empty());
    }
  }
}

TEST_F(ParallelForTest, SplitsABigRangeAcrossLibTorchsThreads) {
  // Debian's LibTorch runs on libgomp, so the pool is there; without it ParallelFor would
  // stay on one thread and this test says so.
  ASSERT_TRUE(ParallelForHasPool()) << "no libgomp in the process";
  Calls calls;
  ParallelFor(0, 64, kMinParallelWork, [&](int64_t b, int64_t e) {
    absl::MutexLock lock(&calls.mu);
    calls.chunks.push_back({b, e});
    calls.threads.insert(std::this_thread::get_id());
  });
  absl::MutexLock lock(&calls.mu);
  EXPECT_EQ(calls.threads.size(), 2u);
  ASSERT_EQ(calls.chunks.size(), 2u);
  std::sort(calls.chunks.begin(), calls.chunks.end());
  EXPECT_EQ(calls.chunks[0], std::make_pair(int64_t{0}, int64_t{32}));
  EXPECT_EQ(calls.chunks[1], std::make_pair(int64_t{32}, int64_t{64}));
}

TEST_F(ParallelForTest, StaysOnTheCallerWhenChunksWouldBeTooSmall) {
  Calls calls;
  // 15 items of 1/8 each: under two threads' worth of work in all.
  ParallelFor(0, 15, kMinParallelWork / 8, [&](int64_t b, int64_t e) {
    absl::MutexLock lock(&calls.mu);
    calls.chunks.push_back({b, e});
    calls.threads.insert(std::this_thread::get_id());
  });
  absl::MutexLock lock(&calls.mu);
  ASSERT_EQ(calls.chunks.size(), 1u);
  EXPECT_EQ(calls.chunks[0], std::make_pair(int64_t{0}, int64_t{15}));
  EXPECT_EQ(*calls.threads.begin(), std::this_thread::get_id());
}

// Inside a region libgomp gives a nested region a team of one: each inner call must still
// cover its whole range (chunks follow the team's actual size, or the caller keeps it).
TEST_F(ParallelForTest, NestedCallsCoverTheirWholeRange) {
  ASSERT_TRUE(ParallelForHasPool());
  std::atomic<int> inner_calls{0}, inner_items{0};
  ParallelFor(0, 2, kMinParallelWork, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      ParallelFor(0, 100, kMinParallelWork, [&](int64_t ib, int64_t ie) {
        inner_calls++;
        inner_items += static_cast<int>(ie - ib);
      });
    }
  });
  EXPECT_EQ(inner_calls.load(), 2);  // one whole-range call per outer item
  EXPECT_EQ(inner_items.load(), 200);
}

}  // namespace
}  // namespace rlhf
