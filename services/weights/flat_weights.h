// Flat, versioned weight snapshots: every named tensor of a model copied into one
// contiguous byte buffer (64-byte aligned offsets), described by TensorSpecs. Both weight
// transports move this buffer in large buckets, so a version costs one control exchange
// plus ceil(total_bytes / bucket_bytes) data messages, never one call per tensor.
//
// Thread-safety: a FlatWeights is immutable once built and is shared read-only
// (std::shared_ptr<const FlatWeights>) between the publisher and any number of streams.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "rlhf/v1/learner.pb.h"

namespace rlhf::weights {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

struct FlatWeights {
  int64_t version = 0;
  std::vector<rlhf::v1::TensorSpec> tensors;  // in flattening order
  torch::Tensor buffer;  // 1-D kUInt8, contiguous, on CPU (or the collective's device)
  uint64_t hash = 0;     // WeightsHash(buffer)

  int64_t total_bytes() const { return buffer.defined() ? buffer.numel() : 0; }
  const uint8_t* data() const { return buffer.data_ptr<uint8_t>(); }
};

// 64-bit FNV-1a over 8-byte little-endian words then the tail bytes. Not cryptographic:
// it proves bitwise identity of two copies, which is what the tests need.
uint64_t WeightsHash(const uint8_t* data, int64_t size);

// Copies `named` (any device, contiguous or not) into a new flat CPU snapshot. Errors
// (InvalidArgument) on duplicate names, undefined tensors or unsupported dtypes.
absl::StatusOr<std::shared_ptr<FlatWeights>> Flatten(const NamedTensors& named,
                                                     int64_t version);

// Copies the snapshot into `params` (matched by name; each must exist with the same
// shape and dtype; any device). All-or-nothing: everything is checked before any copy.
absl::Status Unflatten(const FlatWeights& weights, const NamedTensors& params);

// The header describing `weights` (everything but the transport's group fields).
rlhf::v1::WeightsHeader MakeHeader(const FlatWeights& weights, int64_t bucket_bytes);

// An empty flat buffer laid out as `header` describes (for a receiver to fill).
absl::StatusOr<std::shared_ptr<FlatWeights>> AllocateFor(
    const rlhf::v1::WeightsHeader& header);

// Checks the received buffer against header.hash; DataLoss on mismatch.
absl::Status VerifyHash(const FlatWeights& weights, const rlhf::v1::WeightsHeader& header);

// Bucket [offset, offset + min(bucket_bytes, total - offset)) as a message (one copy).
rlhf::v1::WeightsBucket MakeBucket(const FlatWeights& weights, int64_t offset,
                                   int64_t bucket_bytes);

// gRPC message size limit that fits one bucket plus framing.
int MaxMessageBytesFor(int64_t bucket_bytes);

}  // namespace rlhf::weights
