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
// Torch-free (the learner client links it). Thread-compatible: plain functions.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include <grpcpp/support/byte_buffer.h>

#include "absl/status/statusor.h"
#include "rlhf/v1/learner.pb.h"

namespace rlhf::weights {

// Where a received bucket goes: the snapshot buffer [base, base + total), which must
// receive the bucket starting at `expected_offset` (buckets arrive in order).
struct BucketTarget {
  uint8_t* base = nullptr;
  int64_t total = 0;
  int64_t expected_offset = 0;
  // Optional: runs on each piece (<= 64 KiB) right after it is copied, in order, while
  // the piece is still in cache (the receiver hashes the snapshot this way).
  std::function<void(const uint8_t* data, int64_t size)> on_copied;
};

// A serialised WeightsMessage{bucket{offset, data = data[0, size)}} that references
// `data` without copying it; `owner` is held until gRPC has sent the bytes (it must keep
// `data` alive and unchanged). size > 0.
grpc::ByteBuffer BucketMessageBytes(const uint8_t* data, int64_t offset, int64_t size,
                                    std::shared_ptr<const void> owner);

// Parses a serialised WeightsMessage (any valid protobuf encoding: fields in any order,
// unknown fields skipped, the last occurrence of a field winning) that must hold a
// bucket, and copies the bucket's data to target.base + its offset. DataLoss (nothing
// copied) when the message is malformed, holds a header or nothing, the bucket is
// empty, starts anywhere but target.expected_offset or runs past target.total.
// Returns the bucket's size.
absl::StatusOr<int64_t> CopyBucketMessage(const grpc::ByteBuffer& message,
                                          const BucketTarget& target);

// Same for a parsed bucket (streams that already hold protos: fakes, tests).
absl::StatusOr<int64_t> CopyBucket(const rlhf::v1::WeightsBucket& bucket,
                                   const BucketTarget& target);

}  // namespace rlhf::weights
