// The raw bucket wire format against protobuf itself: what BucketMessageBytes writes
// must be byte-identical to protobuf's serialisation of the same WeightsMessage, and
// CopyBucketMessage must read any protobuf encoding of one, however gRPC split it into
// slices.
#include "services/weights/wire.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

namespace rlhf::weights {
namespace {

std::string Flat(const grpc::ByteBuffer& b) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(b.Dump(&slices).ok());
  std::string out;
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

// `bytes` as a ByteBuffer cut into slices of `piece` bytes (as a socket might deliver).
grpc::ByteBuffer Split(const std::string& bytes, size_t piece) {
  std::vector<grpc::Slice> slices;
  for (size_t i = 0; i < bytes.size(); i += piece) {
    slices.emplace_back(bytes.data() + i, std::min(piece, bytes.size() - i));
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

std::string Pattern(size_t n, int seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + seed * 7 + i / 251) & 0xff);
  return s;
}

std::string ProtoBucket(int64_t offset, const std::string& data) {
  rlhf::v1::WeightsMessage m;
  m.mutable_bucket()->set_offset(offset);
  m.mutable_bucket()->set_data(data);
  return m.SerializeAsString();
}

TEST(WireTest, BucketBytesAreProtobufsAndReferenceTheData) {
  for (int64_t offset :
       {int64_t{0}, int64_t{1}, int64_t{127}, int64_t{300}, (int64_t{1} << 31) + 5}) {
    for (size_t size : {size_t{1}, size_t{127}, size_t{128}, size_t{70000}}) {
      auto owner = std::make_shared<std::string>(Pattern(size, static_cast<int>(offset % 97)));
      std::weak_ptr<std::string> watch = owner;
      {
        grpc::ByteBuffer b = BucketMessageBytes(reinterpret_cast<const uint8_t*>(owner->data()),
                                                offset, static_cast<int64_t>(size), owner);
        owner.reset();
        EXPECT_FALSE(watch.expired()) << "the message must keep its data alive";
        EXPECT_EQ(Flat(b), ProtoBucket(offset, *watch.lock())) << offset << " " << size;
        rlhf::v1::WeightsMessage parsed;
        ASSERT_TRUE(parsed.ParseFromString(Flat(b)));
        EXPECT_EQ(parsed.bucket().offset(), offset);
        EXPECT_EQ(parsed.bucket().data().size(), size);
      }
      EXPECT_TRUE(watch.expired()) << "released with the message";
    }
  }
}

TEST(WireTest, CopiesProtobufEncodedBucketsWhateverTheSlicing) {
  const std::string data = Pattern(5000, 3);
  const std::string bytes = ProtoBucket(1000, data);
  for (size_t piece : {size_t{1}, size_t{2}, size_t{7}, size_t{4096}, bytes.size()}) {
    std::string dest(7000, 'x');
    std::string seen;
    BucketTarget t;
    t.base = reinterpret_cast<uint8_t*>(dest.data());
    t.total = 6000;
    t.expected_offset = 1000;
    t.copy = [&](uint8_t* to, const uint8_t* from, int64_t n) {
      // Pieces come in order, each bound for its place in the target.
      EXPECT_EQ(reinterpret_cast<char*>(to), dest.data() + 1000 + seen.size());
      seen.append(reinterpret_cast<const char*>(from), static_cast<size_t>(n));
      std::memcpy(to, from, static_cast<size_t>(n));
    };
    auto n = CopyBucketMessage(Split(bytes, piece), t);
    ASSERT_TRUE(n.ok()) << n.status();
    EXPECT_EQ(*n, 5000);
    EXPECT_EQ(dest.substr(1000, 5000), data);
    EXPECT_EQ(dest.substr(0, 1000), std::string(1000, 'x'));
    EXPECT_EQ(dest.substr(6000), std::string(1000, 'x'));
    EXPECT_EQ(seen, data);
  }
}

// A large bucket in one slice is still handed to the copy function in cache-sized pieces.
TEST(WireTest, HandsLargeBucketsOnInPiecesOfAtMost64KiB) {
  const std::string data = Pattern(200000, 9);
  std::string dest(200000, 'x');
  std::vector<int64_t> pieces;
  BucketTarget t;
  t.base = reinterpret_cast<uint8_t*>(dest.data());
  t.total = 200000;
  t.copy = [&](uint8_t* to, const uint8_t* from, int64_t n) {
    pieces.push_back(n);
    std::memcpy(to, from, static_cast<size_t>(n));
  };
  auto n = CopyBucketMessage(Split(ProtoBucket(0, data), 1 << 20), t);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(dest, data);
  EXPECT_EQ(pieces, (std::vector<int64_t>{65536, 65536, 65536, 3392}));
  pieces.clear();
  dest.assign(200000, 'x');
  rlhf::v1::WeightsBucket b;
  b.set_data(data);
  ASSERT_TRUE(CopyBucket(b, t).ok());
  EXPECT_EQ(dest, data);
  EXPECT_EQ(pieces, (std::vector<int64_t>{65536, 65536, 65536, 3392}));
}

TEST(WireTest, ReadsNonCanonicalEncodings) {
  // Hand-written protobuf: WeightsMessage field 9 (unknown varint 300), then bucket
  // {data "zz" (overwritten later), unknown fixed32, data "abc", unknown fixed64,
  // offset 2}, then unknown length-delimited field 15 "hi".
  const std::string bytes = std::string("\x48\xac\x02", 3) +          // 9: varint 300
                            std::string("\x12\x19", 2) +              // 2: bucket, 25 bytes
                            std::string("\x12\x02zz", 4) +            // data "zz"
                            std::string("\x1d\x01\x02\x03\x04", 5) +  // 3: fixed32
                            std::string("\x12\x03", 2) + "abc" +      // data "abc"
                            std::string("\x21\x01\x02\x03\x04\x05\x06\x07\x08", 9) +  // 4: fixed64
                            std::string("\x08\x02", 2) +                              // offset 2
                            std::string("\x7a\x02hi", 4);                             // 15: "hi"
  // protobuf reads it the same way (the reference for what the fields mean).
  rlhf::v1::WeightsMessage ref;
  ASSERT_TRUE(ref.ParseFromString(bytes));
  ASSERT_EQ(ref.bucket().offset(), 2);
  ASSERT_EQ(ref.bucket().data(), "abc");
  std::string dest(6, '.');
  BucketTarget t;
  t.base = reinterpret_cast<uint8_t*>(dest.data());
  t.total = 6;
  t.expected_offset = 2;
  auto n = CopyBucketMessage(Split(bytes, 3), t);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 3);
  EXPECT_EQ(dest, "..abc.");
}

TEST(WireTest, RejectsWhatIsNotTheExpectedBucket) {
  std::string dest(100, '.');
  BucketTarget t;
  t.base = reinterpret_cast<uint8_t*>(dest.data());
  t.total = 100;
  t.expected_offset = 10;
  auto code = [&](const std::string& bytes) {
    return CopyBucketMessage(Split(bytes, 5), t).status().code();
  };
  rlhf::v1::WeightsMessage header;
  header.mutable_header()->set_total_bytes(100);
  EXPECT_EQ(code(header.SerializeAsString()), absl::StatusCode::kDataLoss);
  EXPECT_NE(CopyBucketMessage(Split(header.SerializeAsString(), 5), t)
                .status()
                .message()
                .find("header where a bucket was due"),
            std::string::npos);
  EXPECT_EQ(code(""), absl::StatusCode::kDataLoss);                      // nothing
  EXPECT_EQ(code(ProtoBucket(20, "abc")), absl::StatusCode::kDataLoss);  // wrong offset
  EXPECT_EQ(code(ProtoBucket(10, std::string(91, 'a'))), absl::StatusCode::kDataLoss);  // past end
  EXPECT_EQ(code(ProtoBucket(10, "")), absl::StatusCode::kDataLoss);  // empty bucket
  const std::string good = ProtoBucket(10, "abc");
  EXPECT_EQ(code(good.substr(0, good.size() - 1)), absl::StatusCode::kDataLoss);  // truncated
  EXPECT_EQ(code(std::string("\x12\x05\x08\x0a\x12\x09xyz", 8)),
            absl::StatusCode::kDataLoss);  // data longer than its bucket
  EXPECT_EQ(dest, std::string(100, '.')) << "nothing is copied on error";
  // And the same bucket at the right place goes through.
  auto n = CopyBucketMessage(Split(good, 5), t);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(dest.substr(10, 3), "abc");
}

TEST(WireTest, CopyBucketChecksPlacementLikeTheRawReader) {
  std::string dest(8, '.');
  BucketTarget t;
  t.base = reinterpret_cast<uint8_t*>(dest.data());
  t.total = 8;
  t.expected_offset = 4;
  rlhf::v1::WeightsBucket b;
  b.set_offset(4);
  b.set_data("wxyz");
  auto n = CopyBucket(b, t);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 4);
  EXPECT_EQ(dest, "....wxyz");
  b.set_data("wxyzq");
  EXPECT_EQ(CopyBucket(b, t).status().code(), absl::StatusCode::kDataLoss);
  b.set_offset(3);
  b.set_data("a");
  EXPECT_EQ(CopyBucket(b, t).status().code(), absl::StatusCode::kDataLoss);
}

TEST(CopyPipelineTest, RunsCopiesInOrderOnAnotherThreadAndWaitsForThem) {
  std::vector<int> order;  // written by the worker only, read after Wait()
  std::thread::id worker;
  {
    CopyPipeline pipeline(2);
    for (int i = 0; i < 50; ++i) {
      pipeline.Add([&order, &worker, i] {
        worker = std::this_thread::get_id();
        order.push_back(i);
      });
    }
    pipeline.Wait();
    ASSERT_EQ(order.size(), 50u);
    for (int i = 0; i < 50; ++i) EXPECT_EQ(order[i], i);
    EXPECT_NE(worker, std::this_thread::get_id());
    // The destructor runs what is still queued.
    pipeline.Add([&order] { order.push_back(50); });
  }
  EXPECT_EQ(order.size(), 51u);
}

TEST(CopyPipelineTest, AddBlocksWhileMaxWaitingCopiesWait) {
  CopyPipeline pipeline(1);
  absl::Notification release, running, third_added;
  pipeline.Add([&] {
    running.Notify();
    release.WaitForNotification();
  });
  running.WaitForNotification();  // the first copy runs and holds the worker
  pipeline.Add([] {});            // waits: the one place is now taken
  std::thread adder([&] {
    pipeline.Add([] {});
    third_added.Notify();
  });
  EXPECT_FALSE(third_added.WaitForNotificationWithTimeout(absl::Milliseconds(200)))
      << "a second waiting copy was accepted";
  release.Notify();
  EXPECT_TRUE(third_added.WaitForNotificationWithTimeout(absl::Seconds(30)));
  adder.join();
  pipeline.Wait();
}

// With a pipeline the bucket is checked and sized at once and copied later, from slices
// the pipeline keeps alive after the message itself is gone.
TEST(WireTest, QueuesTheCopyOnThePipelineHoldingTheSlices) {
  const std::string data = Pattern(300000, 5);
  std::string dest(300000, 'x');
  CopyPipeline pipeline;
  absl::Notification release;
  pipeline.Add([&] { release.WaitForNotification(); });  // holds the worker
  BucketTarget t;
  t.base = reinterpret_cast<uint8_t*>(dest.data());
  t.total = 300000;
  t.pipeline = &pipeline;
  absl::StatusOr<int64_t> n;
  {
    grpc::ByteBuffer message = Split(ProtoBucket(0, data), 4096);
    n = CopyBucketMessage(message, t);
  }  // the message (and the test's references to its slices) are gone
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 300000);
  EXPECT_EQ(dest, std::string(300000, 'x')) << "copied before the worker was free";
  release.Notify();
  pipeline.Wait();
  EXPECT_EQ(dest, data);
  // A rejected bucket queues nothing.
  t.expected_offset = 5;
  EXPECT_EQ(CopyBucketMessage(Split(ProtoBucket(0, data), 4096), t).status().code(),
            absl::StatusCode::kDataLoss);
}

// A parsed bucket is copied on the caller, after the copies queued before it, so the
// copy function (the receiver's hash) still sees the snapshot's pieces in order.
TEST(WireTest, CopyBucketWaitsForThePipelineFirst) {
  std::string dest(8, '.');
  std::vector<int64_t> offsets;  // where each piece went, in the order copied
  absl::Mutex mu;
  CopyPipeline pipeline;
  absl::Notification release;
  pipeline.Add([&] { release.WaitForNotification(); });
  BucketTarget t;
  t.base = reinterpret_cast<uint8_t*>(dest.data());
  t.total = 8;
  t.pipeline = &pipeline;
  t.copy = [&](uint8_t* to, const uint8_t* from, int64_t n) {
    absl::MutexLock lock(&mu);
    offsets.push_back(to - reinterpret_cast<uint8_t*>(dest.data()));
    std::memcpy(to, from, static_cast<size_t>(n));
  };
  ASSERT_TRUE(CopyBucketMessage(Split(ProtoBucket(0, "abcd"), 3), t).ok());  // queued
  t.expected_offset = 4;
  rlhf::v1::WeightsBucket b;
  b.set_offset(4);
  b.set_data("wxyz");
  std::thread releaser([&] {
    // Passes whenever the gate opens if CopyBucket waits; the delay only makes one that
    // does not wait copy first for sure.
    absl::SleepFor(absl::Milliseconds(100));
    release.Notify();
  });
  ASSERT_TRUE(CopyBucket(b, t).ok());
  releaser.join();
  EXPECT_EQ(dest, "abcdwxyz");
  absl::MutexLock lock(&mu);
  ASSERT_GE(offsets.size(), 2u);
  EXPECT_EQ(offsets.front(), 0);
  EXPECT_EQ(offsets.back(), 4) << "the parsed bucket overtook the queued one";
  EXPECT_TRUE(std::is_sorted(offsets.begin(), offsets.end()));
}

}  // namespace
}  // namespace rlhf::weights
