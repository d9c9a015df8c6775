// WeightsMessage buckets (learner.proto) written and read on the gRPC stream without the
// protobuf copies. The bytes on the wire are exactly those protobuf writes for
// WeightsMessage{bucket{offset, data}}, so the wire contract (design.md §4) is unchanged;
// only who builds and parses them is:
//
//   learner  a bucket message is a <= 23-byte prefix slice (tags, offset, lengths) plus one
//            slice that points into the snapshot itself: gRPC hands it to sendmsg, no copy
//            (a protobuf message costs two: into the message's string, then serialised);
//   actor    the bucket's bytes are copied from gRPC's receive slices straight into the
//            snapshot buffer (a parsed message costs a fresh 16 MiB string per bucket,
//            whose page faults cost more than the copy, and a second copy).
//
// Torch-free (the learner client links it). The functions are thread-compatible;
// CopyPipeline is thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <thread>

#include <grpcpp/support/byte_buffer.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "rlhf/v1/learner.pb.h"

namespace rlhf::weights {

// Runs copies on one worker thread of its own, one at a time in the order they were
// added, so that the thread reading buckets off the stream can receive the next one
// while the last is copied (and hashed): on the actor those were one serial thread,
// the weight sync's bottleneck. At most `max_waiting` copies wait behind the running
// one (fewer than 1 counts as 1); Add blocks beyond that, which bounds the gRPC receive
// buffers held. Thread-safe. The destructor waits for every added copy.
class CopyPipeline {
 public:
  explicit CopyPipeline(int max_waiting = 1);
  ~CopyPipeline();
  CopyPipeline(const CopyPipeline&) = delete;
  CopyPipeline& operator=(const CopyPipeline&) = delete;

  void Add(std::function<void()> copy);
  // Returns once every copy added before the call has run.
  void Wait();

 private:
  void Run();
  bool HasRoom() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return waiting_.size() < max_waiting_; }
  bool Idle() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return waiting_.empty() && !busy_; }
  bool HasWorkOrStops() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stop_ || !waiting_.empty();
  }

  const size_t max_waiting_;
  absl::Mutex mu_;
  std::deque<std::function<void()>> waiting_ ABSL_GUARDED_BY(mu_);
  bool busy_ ABSL_GUARDED_BY(mu_) = false;  // the worker is running a copy
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread worker_;  // last: starts once the members above exist
};

// Where a received bucket goes: the snapshot buffer [base, base + total), which must
// receive the bucket starting at `expected_offset` (buckets arrive in order).
struct BucketTarget {
  uint8_t* base = nullptr;
  int64_t total = 0;
  int64_t expected_offset = 0;
  // How the bytes are moved, piece by piece (<= 64 KiB each) in order: memcpy when
  // unset. The receiver copies with WeightsHasher::CopyAndUpdate, which hashes the
  // bytes in the same pass. With a pipeline it runs on the pipeline's thread.
  std::function<void(uint8_t* dst, const uint8_t* src, int64_t size)> copy;
  // Where the copy runs: null = on the caller before it returns; else the bucket is
  // checked on the caller and its copy queued here (after every copy queued before it).
  // The caller must Wait() on the pipeline before reading the target.
  CopyPipeline* pipeline = nullptr;
};

// A serialised WeightsMessage{bucket{offset, data = data[0, size)}} that references
// `data` without copying it; `owner` is held until gRPC has sent the bytes (it must keep
// `data` alive and unchanged). size > 0.
grpc::ByteBuffer BucketMessageBytes(const uint8_t* data, int64_t offset, int64_t size,
                                    std::shared_ptr<const void> owner);

// Parses a serialised WeightsMessage (any valid protobuf encoding: fields in any order,
// unknown fields skipped, the last occurrence of a field winning) that must hold a
// bucket, and copies the bucket's data to target.base + its offset (or queues the copy
// on target.pipeline, holding references to the message's slices until it has run).
// DataLoss (nothing copied or queued) when the message is malformed, holds a header or
// nothing, the bucket is empty, starts anywhere but target.expected_offset or runs past
// target.total. Returns the bucket's size.
absl::StatusOr<int64_t> CopyBucketMessage(const grpc::ByteBuffer& message,
                                          const BucketTarget& target);

// Same for a parsed bucket (streams that already hold protos: fakes, tests). The copy
// always runs on the caller, after waiting for target.pipeline's queued copies.
absl::StatusOr<int64_t> CopyBucket(const rlhf::v1::WeightsBucket& bucket,
                                   const BucketTarget& target);

}  // namespace rlhf::weights
