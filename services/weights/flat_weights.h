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
#include "absl/synchronization/mutex.h"
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

// Eight interleaved 64-bit FNV-1a lanes over the 64-byte blocks (lane i takes the i-th
// little-endian word of each block), folded together with FNV-1a, then the tail bytes
// and the size. Eight lanes run ~2x faster than one multiply chain. Not cryptographic:
// it proves bitwise identity of two copies, which is what the tests need.
uint64_t WeightsHash(const uint8_t* data, int64_t size);

// WeightsHash computed piecewise, as the bytes arrive: Update() with consecutive pieces
// of any sizes gives the same Finish() as one WeightsHash call over their concatenation.
class WeightsHasher {
 public:
  WeightsHasher();
  void Update(const uint8_t* data, int64_t size);
  // Copies src[0, size) to dst (which must not overlap it) and hashes the bytes as
  // Update(src, size) does, reading them once.
  void CopyAndUpdate(uint8_t* dst, const uint8_t* src, int64_t size);
  uint64_t Finish() const;

 private:
  void Absorb(uint8_t* dst, const uint8_t* data, int64_t size);  // dst null: hash only

  uint64_t lanes_[8];
  uint8_t pending_[64];  // an incomplete block carried between Update calls
  int64_t pending_size_ = 0;
  int64_t total_ = 0;
};

// A 1-D kUInt8 CPU tensor of `bytes`, contents unspecified. From kHugeBufferBytes up it
// is its own 2 MiB-aligned mapping advised to use transparent huge pages (first touch
// faults once per 2 MiB, not per 4 KiB page); smaller ones come from torch::empty.
constexpr int64_t kHugeBufferBytes = int64_t{4} << 20;
torch::Tensor NewFlatBuffer(int64_t bytes);

// Recycles flat buffers between versions. Fresh memory is expensive: the first write to
// each page faults, and on this project's VMs that runs at ~0.2 GB/s against ~8 GB/s for
// copying into memory already touched, so a buffer whose snapshot nobody holds any more
// is handed out again instead of allocating a new one. Thread-safe.
class BufferPool {
 public:
  explicit BufferPool(size_t max_buffers = 2) : max_buffers_(max_buffers) {}
  // A 1-D kUInt8 CPU tensor of `bytes`; contents unspecified. Reuses a pooled buffer of
  // that size that no tensor outside the pool refers to, else allocates (and pools the
  // new buffer when there is room or an unused one to evict).
  torch::Tensor Get(int64_t bytes);
  int64_t reused() const;     // Get calls answered from the pool
  int64_t allocated() const;  // Get calls that allocated

 private:
  const size_t max_buffers_;
  mutable absl::Mutex mu_;
  std::vector<torch::Tensor> buffers_ ABSL_GUARDED_BY(mu_);
  int64_t reused_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t allocated_ ABSL_GUARDED_BY(mu_) = 0;
};

// Copies `named` (any device, contiguous or not) into a new flat CPU snapshot, into a
// recycled buffer when `pool` is given. Errors (InvalidArgument) on duplicate names,
// undefined tensors or unsupported dtypes. bf16/f16 tensors travel as such (half the
// bytes of f32): a bf16 policy is sent in bf16.
absl::StatusOr<std::shared_ptr<FlatWeights>> Flatten(const NamedTensors& named,
                                                     int64_t version,
                                                     BufferPool* pool = nullptr);

// Copies the snapshot into `params` (matched by name; each must exist with the same
// shape and dtype; any device). All-or-nothing: everything is checked before any copy.
absl::Status Unflatten(const FlatWeights& weights, const NamedTensors& params);

// The header describing `weights` (everything but the transport's group fields).
rlhf::v1::WeightsHeader MakeHeader(const FlatWeights& weights, int64_t bucket_bytes);

// An empty flat buffer laid out as `header` describes (for a receiver to fill), from
// `pool` when given.
absl::StatusOr<std::shared_ptr<FlatWeights>> AllocateFor(
    const rlhf::v1::WeightsHeader& header, BufferPool* pool = nullptr);

// Checks the received buffer against header.hash; DataLoss on mismatch.
absl::Status VerifyHash(const FlatWeights& weights, const rlhf::v1::WeightsHeader& header);

// Bucket [offset, offset + min(bucket_bytes, total - offset)) as a message (one copy).
rlhf::v1::WeightsBucket MakeBucket(const FlatWeights& weights, int64_t offset,
                                   int64_t bucket_bytes);

// Same, into `bucket` (reusing its data string's capacity: no allocation per bucket when
// the caller keeps one message for the whole stream).
void FillBucket(const FlatWeights& weights, int64_t offset, int64_t bucket_bytes,
                rlhf::v1::WeightsBucket* bucket);

// gRPC message size limit that fits one bucket plus framing.
int MaxMessageBytesFor(int64_t bucket_bytes);

}  // namespace rlhf::weights
