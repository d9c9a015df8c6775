// Flat snapshots and both weight transports, in one process: the publisher's control
// deliveries go into per-member queues (standing in for WatchWeights streams) and each
// member receives on its own thread with its own WeightReceiver. The collective
// transport runs real ProcessGroupGloo broadcasts over loopback TCP.
#include <algorithm>
#include <deque>
#include <thread>

#include <gtest/gtest.h>

#include "absl/synchronization/mutex.h"
#include "services/weights/flat_weights.h"
#include "services/weights/transport.h"

namespace rlhf::weights {
namespace {

NamedTensors MakeParams(int64_t seed, int64_t scale = 1) {
  torch::manual_seed(seed);
  return {{"embed.weight", torch::randn({37 * scale, 16})},
          {"block.0.bias", torch::randn({5})},
          {"block.0.w", torch::randn({16, 33})},
          {"step", torch::tensor({seed}, torch::kInt64)}};
}

TEST(FlatWeightsTest, RoundTripIsBitwiseAndHashed) {
  NamedTensors src = MakeParams(1);
  auto flat = Flatten(src, 7);
  ASSERT_TRUE(flat.ok()) << flat.status();
  EXPECT_EQ((*flat)->version, 7);
  EXPECT_EQ((*flat)->tensors.size(), 4u);
  for (const auto& spec : (*flat)->tensors) EXPECT_EQ(spec.offset() % 64, 0) << spec.name();
  EXPECT_EQ((*flat)->hash, WeightsHash((*flat)->data(), (*flat)->total_bytes()));

  NamedTensors dst = MakeParams(2);
  ASSERT_TRUE(Unflatten(**flat, dst).ok());
  for (size_t i = 0; i < src.size(); ++i) {
    EXPECT_TRUE(torch::equal(src[i].second, dst[i].second)) << src[i].first;
  }
  auto again = Flatten(dst, 7);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->hash, (*flat)->hash);
  // A single flipped bit changes the hash.
  (*again)->buffer[3] = (*again)->buffer[3].item<uint8_t>() ^ 1;
  EXPECT_NE(WeightsHash((*again)->data(), (*again)->total_bytes()), (*flat)->hash);
}

// Values from an independent Python implementation of the documented definition
// (eight FNV-1a lanes over 64-byte blocks, folded, then tail bytes, then ^ size).
TEST(FlatWeightsTest, HashMatchesReferenceAndIsPiecewiseConsistent) {
  std::vector<uint8_t> data(200);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 7 % 256);
  EXPECT_EQ(WeightsHash(data.data(), 200), 12601817499109669629ull);
  EXPECT_EQ(WeightsHash(data.data(), 0), 15081977736083581741ull);
  const uint8_t abc[] = {'a', 'b', 'c'};
  EXPECT_EQ(WeightsHash(abc, 3), 7075012207935838816ull);
  // Any split into consecutive pieces (inside blocks, across several) gives the same hash.
  for (int64_t piece : {1, 3, 63, 64, 65, 130}) {
    WeightsHasher h;
    for (int64_t off = 0; off < 200; off += piece) {
      h.Update(data.data() + off, std::min<int64_t>(piece, 200 - off));
    }
    EXPECT_EQ(h.Finish(), 12601817499109669629ull) << "piece " << piece;
  }
}

// The receiver's fused pass: the same hash as above (the Python reference's value), and
// every byte copied, whatever the pieces and however they mix with plain Updates.
TEST(FlatWeightsTest, CopyAndUpdateCopiesExactlyAndHashesLikeUpdate) {
  std::vector<uint8_t> data(200);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 7 % 256);
  for (int64_t piece : {1, 3, 63, 64, 65, 130, 200}) {
    std::vector<uint8_t> dest(202, 0xEE);  // one guard byte at each end
    WeightsHasher h;
    for (int64_t off = 0; off < 200; off += piece) {
      h.CopyAndUpdate(dest.data() + 1 + off, data.data() + off,
                      std::min<int64_t>(piece, 200 - off));
    }
    EXPECT_EQ(h.Finish(), 12601817499109669629ull) << "piece " << piece;
    EXPECT_TRUE(std::equal(data.begin(), data.end(), dest.begin() + 1)) << "piece " << piece;
    EXPECT_EQ(dest.front(), 0xEE);
    EXPECT_EQ(dest.back(), 0xEE);
  }
  WeightsHasher mixed;
  std::vector<uint8_t> dest(200, 0);
  mixed.Update(data.data(), 10);
  mixed.CopyAndUpdate(dest.data() + 10, data.data() + 10, 100);
  mixed.Update(data.data() + 110, 50);
  mixed.CopyAndUpdate(dest.data() + 160, data.data() + 160, 40);
  EXPECT_EQ(mixed.Finish(), 12601817499109669629ull);
  EXPECT_TRUE(std::equal(data.begin() + 10, data.begin() + 110, dest.begin() + 10));
  EXPECT_TRUE(std::equal(data.begin() + 160, data.end(), dest.begin() + 160));
}

TEST(FlatWeightsTest, BufferPoolReusesOnlyUnreferencedBuffers) {
  BufferPool pool(2);
  torch::Tensor a = pool.Get(1000);
  void* a_ptr = a.data_ptr();
  torch::Tensor view = a.narrow(0, 10, 10);
  a.reset();
  torch::Tensor b = pool.Get(1000);  // a's storage is still viewed: not reused
  EXPECT_NE(b.data_ptr(), a_ptr);
  view.reset();
  b.reset();
  torch::Tensor c = pool.Get(1000);
  EXPECT_EQ(c.data_ptr(), a_ptr);
  EXPECT_EQ(pool.reused(), 1);
  torch::Tensor d = pool.Get(1000);  // c is held: the other pooled buffer
  EXPECT_NE(d.data_ptr(), c.data_ptr());
  EXPECT_EQ(pool.reused(), 2);
  EXPECT_EQ(pool.allocated(), 2);
  (void)pool.Get(500);  // other size, both pooled ones in use: allocates
  EXPECT_EQ(pool.allocated(), 3);
}

TEST(FlatWeightsTest, FlattenIntoARecycledDirtyBufferHashesTheSame) {
  BufferPool pool(1);
  auto reference = Flatten(MakeParams(1), 3);
  ASSERT_TRUE(reference.ok());
  {
    torch::Tensor dirty = pool.Get((*reference)->total_bytes());
    dirty.fill_(0xAB);  // padding bytes must not leak into the snapshot
  }
  auto pooled = Flatten(MakeParams(1), 3, &pool);
  ASSERT_TRUE(pooled.ok());
  EXPECT_EQ(pool.reused(), 1);
  EXPECT_EQ((*pooled)->hash, (*reference)->hash);
  EXPECT_TRUE(torch::equal((*pooled)->buffer, (*reference)->buffer));
}

TEST(FlatWeightsTest, UnflattenChecksEverythingBeforeCopying) {
  auto flat = Flatten(MakeParams(1), 0);
  ASSERT_TRUE(flat.ok());
  NamedTensors dst = MakeParams(2);
  dst[2].second = torch::zeros({16, 34});  // wrong shape for block.0.w
  torch::Tensor before = dst[0].second.clone();
  absl::Status s = Unflatten(**flat, dst);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("block.0.w"), std::string::npos) << s;
  EXPECT_TRUE(torch::equal(before, dst[0].second)) << "partially applied";

  NamedTensors renamed = MakeParams(2);
  renamed[1].first = "block.0.beta";
  s = Unflatten(**flat, renamed);
  EXPECT_NE(s.message().find("block.0.bias"), std::string::npos) << s;
}

TEST(FlatWeightsTest, RejectsDuplicateNames) {
  NamedTensors p = MakeParams(1);
  p.push_back(p[0]);
  EXPECT_EQ(Flatten(p, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

// One actor's control stream.
struct Member {
  absl::Mutex mu;
  std::deque<std::pair<rlhf::v1::WeightsHeader, std::shared_ptr<const FlatWeights>>> q
      ABSL_GUARDED_BY(mu);
  DeliverFn Deliver() {
    return [this](const rlhf::v1::WeightsHeader& h, std::shared_ptr<const FlatWeights> d) {
      absl::MutexLock l(&mu);
      q.emplace_back(h, std::move(d));
    };
  }
  bool Pop(rlhf::v1::WeightsHeader* h, std::shared_ptr<const FlatWeights>* d,
           absl::Duration timeout = absl::Seconds(30)) {
    absl::MutexLock l(&mu);
    auto nonempty = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu) { return !q.empty(); };
    if (!mu.AwaitWithTimeout(absl::Condition(&nonempty), timeout)) return false;
    *h = q.front().first;
    *d = q.front().second;
    q.pop_front();
    return true;
  }
};

// Receives one version as an actor would; buckets come from the queued snapshot.
absl::StatusOr<std::shared_ptr<FlatWeights>> ReceiveOne(Member& m, WeightReceiver& r,
                                                        int* buckets = nullptr) {
  rlhf::v1::WeightsHeader h;
  std::shared_ptr<const FlatWeights> data;
  if (!m.Pop(&h, &data)) return absl::DeadlineExceededError("no header");
  int64_t offset = 0;
  return r.Receive(h, [&](const BucketTarget& t) -> absl::StatusOr<int64_t> {
    if (!data) return absl::InternalError("no data on a collective header");
    auto b = MakeBucket(*data, offset, h.bucket_bytes());
    offset += static_cast<int64_t>(b.data().size());
    if (buckets) ++*buckets;
    return CopyBucket(b, t);
  });
}

TEST(GrpcTransportTest, ChunksIntoBucketsAndLateJoinerGetsLatest) {
  WeightTransportOptions opts;
  opts.bucket_bytes = 1000;
  auto pub = MakeWeightPublisher(opts);
  ASSERT_TRUE(pub.ok());
  Member a, b;
  (*pub)->AddMember("a", a.Deliver());
  auto v1 = Flatten(MakeParams(1), 1);
  ASSERT_TRUE(v1.ok());
  (*pub)->Publish(*v1);
  auto recv = MakeWeightReceiver(opts);
  ASSERT_TRUE(recv.ok());
  int buckets = 0;
  auto got = ReceiveOne(a, **recv, &buckets);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ((*got)->hash, (*v1)->hash);
  EXPECT_TRUE(torch::equal((*got)->buffer, (*v1)->buffer));
  EXPECT_EQ(buckets, ((*v1)->total_bytes() + 999) / 1000);

  (*pub)->AddMember("b", b.Deliver());  // joins after v1: gets v1 immediately
  auto recv_b = MakeWeightReceiver(opts);
  auto got_b = ReceiveOne(b, **recv_b);
  ASSERT_TRUE(got_b.ok());
  EXPECT_EQ((*got_b)->version, 1);
  EXPECT_EQ((*got_b)->hash, (*v1)->hash);
}

// The receiver recycles its buffer between versions: a version the caller still holds
// is never overwritten, and one it dropped is refilled exactly (odd bucket size, so
// buckets straddle tensors and hash blocks).
TEST(GrpcTransportTest, RecycledReceiveBuffersNeverClobberAHeldVersion) {
  auto recv = MakeGrpcWeightReceiver({});
  auto receive = [&](const FlatWeights& w) {
    auto header = MakeHeader(w, 777);
    int64_t off = 0;
    rlhf::v1::WeightsBucket b;
    return recv->Receive(header, [&](const BucketTarget& t) {
      FillBucket(w, off, 777, &b);  // one message reused
      off += static_cast<int64_t>(b.data().size());
      return CopyBucket(b, t);
    });
  };
  auto v1 = Flatten(MakeParams(1), 1);
  auto v2 = Flatten(MakeParams(2), 2);
  auto v3 = Flatten(MakeParams(3), 3);
  ASSERT_TRUE(v1.ok() && v2.ok() && v3.ok());
  auto got1 = receive(**v1);
  ASSERT_TRUE(got1.ok()) << got1.status();
  const void* first_buffer = (*got1)->data();
  auto got2 = receive(**v2);  // got1 held: must land elsewhere
  ASSERT_TRUE(got2.ok()) << got2.status();
  EXPECT_NE((*got2)->data(), first_buffer);
  EXPECT_TRUE(torch::equal((*got1)->buffer, (*v1)->buffer)) << "held version overwritten";
  EXPECT_TRUE(torch::equal((*got2)->buffer, (*v2)->buffer));
  got1->reset();  // dropped: its buffer is reused for v3
  auto got3 = receive(**v3);
  ASSERT_TRUE(got3.ok()) << got3.status();
  EXPECT_EQ((*got3)->data(), first_buffer);
  EXPECT_EQ((*got3)->hash, (*v3)->hash);
  EXPECT_TRUE(torch::equal((*got3)->buffer, (*v3)->buffer));
  EXPECT_TRUE(torch::equal((*got2)->buffer, (*v2)->buffer));
}

TEST(GrpcTransportTest, CorruptOrMisorderedBucketsAreDataLoss) {
  auto v1 = Flatten(MakeParams(1), 1);
  ASSERT_TRUE(v1.ok());
  auto header = MakeHeader(**v1, 512);
  auto recv = MakeGrpcWeightReceiver({});
  int64_t off = 0;
  auto flipped = recv->Receive(header, [&](const BucketTarget& t) {
    auto b = MakeBucket(**v1, off, 512);
    off += static_cast<int64_t>(b.data().size());
    if (b.offset() == 0) (*b.mutable_data())[0] ^= 1;
    return CopyBucket(b, t);
  });
  EXPECT_EQ(flipped.status().code(), absl::StatusCode::kDataLoss);
  auto skipped = recv->Receive(
      header, [&](const BucketTarget& t) { return CopyBucket(MakeBucket(**v1, 512, 512), t); });
  EXPECT_EQ(skipped.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(skipped.status().message().find("expected offset 0"), std::string::npos);
}

TEST(CollectiveTransportTest, BroadcastsIdenticalWeightsAndReformsOnJoin) {
  WeightTransportOptions opts;
  opts.transport = rlhf::v1::WEIGHT_TRANSPORT_COLLECTIVE;
  opts.bucket_bytes = 4096;  // several buckets per version
  opts.timeout_s = 20;
  auto pub = MakeWeightPublisher(opts);
  ASSERT_TRUE(pub.ok()) << pub.status();
  EXPECT_NE((*pub)->rendezvous_address().find("127.0.0.1:"), std::string::npos);

  Member m[3];
  std::unique_ptr<WeightReceiver> r[3];
  for (auto& x : r) x = *MakeWeightReceiver(opts);
  (*pub)->AddMember("actor-0", m[0].Deliver());
  (*pub)->AddMember("actor-1", m[1].Deliver());
  auto v1 = Flatten(MakeParams(1, 40), 1);
  ASSERT_TRUE(v1.ok());
  (*pub)->Publish(*v1);

  absl::StatusOr<std::shared_ptr<FlatWeights>> got[3];
  {
    std::thread t0([&] { got[0] = ReceiveOne(m[0], *r[0]); });
    std::thread t1([&] { got[1] = ReceiveOne(m[1], *r[1]); });
    t0.join();
    t1.join();
  }
  ASSERT_TRUE((*pub)->WaitSynced(1, absl::Seconds(30)).ok());
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(got[i].ok()) << got[i].status();
    EXPECT_EQ((*got[i])->hash, (*v1)->hash);
    EXPECT_TRUE(torch::equal((*got[i])->buffer, (*v1)->buffer));
  }
  const int64_t gen1 = (*pub)->stats().generation;

  // A third member joins: the group is re-formed (new generation) and v2 reaches all.
  (*pub)->AddMember("actor-2", m[2].Deliver());
  auto v2 = Flatten(MakeParams(2, 40), 2);
  ASSERT_TRUE(v2.ok());
  (*pub)->Publish(*v2);
  {
    std::vector<std::thread> ts;
    // A round for v1 may re-form the group before v2 is published: each member keeps
    // receiving until it holds v2.
    for (int i = 0; i < 3; ++i) {
      ts.emplace_back([&, i] {
        do {
          got[i] = ReceiveOne(m[i], *r[i]);
        } while (got[i].ok() && (*got[i])->version < 2);
      });
    }
    for (auto& t : ts) t.join();
  }
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(got[i].ok()) << got[i].status();
    EXPECT_EQ((*got[i])->version, 2);
    EXPECT_EQ((*got[i])->hash, (*v2)->hash) << i;
    EXPECT_TRUE(torch::equal((*got[i])->buffer, (*v2)->buffer));
  }
  ASSERT_TRUE((*pub)->WaitSynced(2, absl::Seconds(30)).ok());
  EXPECT_GT((*pub)->stats().generation, gen1);
  (*pub)->Shutdown();
}

TEST(CollectiveTransportTest, MissingPeerTimesOutNamingIt) {
  WeightTransportOptions opts;
  opts.transport = rlhf::v1::WEIGHT_TRANSPORT_COLLECTIVE;
  opts.timeout_s = 1;
  auto pub = MakeWeightPublisher(opts);
  ASSERT_TRUE(pub.ok()) << pub.status();
  Member ghost;  // its header is never acted on
  (*pub)->AddMember("ghost-actor", ghost.Deliver());
  auto v1 = Flatten(MakeParams(1), 1);
  (*pub)->Publish(*v1);
  absl::Status s = (*pub)->WaitSynced(1, absl::Seconds(2));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(s.message().find("ghost-actor (rank 1) did not join"), std::string::npos) << s;
  EXPECT_GE((*pub)->stats().failures, 1);
  // Once the silent peer is removed the version goes through (to nobody) and nothing hangs.
  (*pub)->RemoveMember("ghost-actor");
  EXPECT_TRUE((*pub)->WaitSynced(1, absl::Seconds(10)).ok());
  (*pub)->Shutdown();
}

}  // namespace
}  // namespace rlhf::weights
