#include "services/weights/wire.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include <grpcpp/support/slice.h>

#include "absl/strings/str_cat.h"

namespace rlhf::weights {
namespace {

// Protobuf wire format: key = field << 3 | wire type.
constexpr int kVarint = 0;
constexpr int kFixed64 = 1;
constexpr int kLen = 2;
constexpr int kFixed32 = 5;
constexpr uint32_t kMessageHeaderField = 1;  // WeightsMessage.header
constexpr uint32_t kMessageBucketField = 2;  // WeightsMessage.bucket
constexpr uint32_t kBucketOffsetField = 1;   // WeightsBucket.offset
constexpr uint32_t kBucketDataField = 2;     // WeightsBucket.data

int PutVarint(uint64_t v, uint8_t* out) {
  int n = 0;
  while (v >= 0x80) {
    out[n++] = static_cast<uint8_t>(v | 0x80);
    v >>= 7;
  }
  out[n++] = static_cast<uint8_t>(v);
  return n;
}

int VarintSize(uint64_t v) {
  int n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

// The most bytes one call of BucketTarget::copy moves: gRPC's receive slices can be
// MiBs, and a copy function that makes a second pass over what it copied (a checksum of
// the destination) then finds the piece in L1/L2 cache.
constexpr int64_t kCopyPieceBytes = 64 << 10;

void CopyPiece(const BucketTarget& target, uint8_t* dst, const uint8_t* src, int64_t n) {
  if (target.copy) {
    target.copy(dst, src, n);
  } else {
    std::memcpy(dst, src, static_cast<size_t>(n));
  }
}

// Reads a message spread over gRPC slices (as they came off the socket) without
// joining them. A position is (slice, byte within it) plus the absolute offset.
class SliceReader {
 public:
  explicit SliceReader(const grpc::ByteBuffer& buffer) {
    // Dump takes references to the slices; no bytes are copied.
    if (!buffer.Valid() || !buffer.Dump(&slices_).ok()) slices_.clear();
    for (const auto& s : slices_) size_ += static_cast<int64_t>(s.size());
  }

  struct Pos {
    size_t slice = 0;
    size_t byte = 0;
    int64_t abs = 0;
  };
  Pos pos() const { return pos_; }
  void Seek(const Pos& p) { pos_ = p; }
  int64_t position() const { return pos_.abs; }
  int64_t size() const { return size_; }

  bool ReadByte(uint8_t* b) {
    Normalize();
    if (pos_.slice >= slices_.size()) return false;
    *b = slices_[pos_.slice].begin()[pos_.byte];
    ++pos_.byte;
    ++pos_.abs;
    return true;
  }

  bool ReadVarint(uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b;
      if (!ReadByte(&b)) return false;
      *v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return true;
    }
    return false;  // more than 10 bytes
  }

  bool Skip(int64_t n) {
    if (n < 0 || n > size_ - pos_.abs) return false;
    while (n > 0) {
      Normalize();
      const int64_t here = static_cast<int64_t>(slices_[pos_.slice].size() - pos_.byte);
      const int64_t step = std::min(n, here);
      pos_.byte += static_cast<size_t>(step);
      pos_.abs += step;
      n -= step;
    }
    return true;
  }

  // Copies n bytes (the caller checked they exist) to dst, piece by piece.
  void CopyOut(uint8_t* dst, int64_t n, const BucketTarget& target) {
    while (n > 0) {
      Normalize();
      const grpc::Slice& s = slices_[pos_.slice];
      const int64_t step =
          std::min<int64_t>({n, static_cast<int64_t>(s.size() - pos_.byte), kCopyPieceBytes});
      CopyPiece(target, dst, s.begin() + pos_.byte, step);
      dst += step;
      pos_.byte += static_cast<size_t>(step);
      pos_.abs += step;
      n -= step;
    }
  }

  // Skips the value of a field of wire type `type`; false if malformed.
  bool SkipValue(int type) {
    uint64_t v;
    switch (type) {
      case kVarint:
        return ReadVarint(&v);
      case kFixed64:
        return Skip(8);
      case kFixed32:
        return Skip(4);
      case kLen:
        return ReadVarint(&v) && v <= static_cast<uint64_t>(size_) && Skip(static_cast<int64_t>(v));
      default:
        return false;  // groups (3, 4) are not in learner.proto
    }
  }

 private:
  void Normalize() {
    while (pos_.slice < slices_.size() && pos_.byte >= slices_[pos_.slice].size()) {
      ++pos_.slice;
      pos_.byte = 0;
    }
  }

  std::vector<grpc::Slice> slices_;
  int64_t size_ = 0;
  Pos pos_;
};

absl::Status Malformed(const std::string& what) {
  return absl::DataLossError(absl::StrCat("weights stream: malformed bucket message: ", what));
}

absl::Status CheckPlacement(int64_t offset, int64_t size, const BucketTarget& target) {
  if (offset != target.expected_offset || size <= 0 || size > target.total - offset) {
    return absl::DataLossError(absl::StrCat("weights stream: bucket at offset ", offset, " (", size,
                                            " bytes), expected offset ", target.expected_offset,
                                            " within ", target.total, " bytes"));
  }
  return absl::OkStatus();
}

}  // namespace

grpc::ByteBuffer BucketMessageBytes(const uint8_t* data, int64_t offset, int64_t size,
                                    std::shared_ptr<const void> owner) {
  // Protobuf's encoding: an offset of 0 (the proto3 default) is not written.
  uint8_t prefix[32];
  const int64_t offset_field = offset != 0 ? 1 + VarintSize(static_cast<uint64_t>(offset)) : 0;
  const int64_t bucket_len = offset_field + 1 + VarintSize(static_cast<uint64_t>(size)) + size;
  int n = 0;
  prefix[n++] = kMessageBucketField << 3 | kLen;
  n += PutVarint(static_cast<uint64_t>(bucket_len), prefix + n);
  if (offset != 0) {
    prefix[n++] = kBucketOffsetField << 3 | kVarint;
    n += PutVarint(static_cast<uint64_t>(offset), prefix + n);
  }
  prefix[n++] = kBucketDataField << 3 | kLen;
  n += PutVarint(static_cast<uint64_t>(size), prefix + n);
  // The data slice holds a reference to `owner` until gRPC drops the slice.
  auto* hold = new std::shared_ptr<const void>(std::move(owner));
  grpc::Slice slices[2] = {
      grpc::Slice(prefix, static_cast<size_t>(n)),
      grpc::Slice(
          const_cast<uint8_t*>(data), static_cast<size_t>(size),
          [](void* p) { delete static_cast<std::shared_ptr<const void>*>(p); }, hold)};
  return grpc::ByteBuffer(slices, 2);
}

absl::StatusOr<int64_t> CopyBucketMessage(const grpc::ByteBuffer& message,
                                          const BucketTarget& target) {
  SliceReader r(message);
  // One pass over the fields, remembering where the (last) data field lies; the copy
  // comes after, once the offset is known whichever order the fields came in.
  uint32_t kind = 0;  // the last oneof field seen
  bool has_data = false;
  uint64_t offset = 0;
  SliceReader::Pos data_pos;
  int64_t data_size = 0;
  while (r.position() < r.size()) {
    uint64_t key;
    if (!r.ReadVarint(&key)) return Malformed("truncated key");
    const uint32_t field = static_cast<uint32_t>(key >> 3);
    const int type = static_cast<int>(key & 7);
    if (field == kMessageBucketField && type == kLen) {
      kind = field;
      uint64_t len;
      if (!r.ReadVarint(&len) || len > static_cast<uint64_t>(r.size() - r.position())) {
        return Malformed("bucket length");
      }
      const int64_t end = r.position() + static_cast<int64_t>(len);
      while (r.position() < end) {
        uint64_t k;
        if (!r.ReadVarint(&k)) return Malformed("truncated bucket key");
        const uint32_t f = static_cast<uint32_t>(k >> 3);
        const int t = static_cast<int>(k & 7);
        if (f == kBucketOffsetField && t == kVarint) {
          if (!r.ReadVarint(&offset)) return Malformed("offset");
        } else if (f == kBucketDataField && t == kLen) {
          uint64_t n;
          if (!r.ReadVarint(&n) || n > static_cast<uint64_t>(end - r.position())) {
            return Malformed("data length");
          }
          data_pos = r.pos();
          data_size = static_cast<int64_t>(n);
          has_data = true;
          r.Skip(data_size);
        } else if (!r.SkipValue(t)) {
          return Malformed("bucket field");
        }
      }
      if (r.position() != end) return Malformed("bucket runs past its length");
    } else {
      if (field == kMessageHeaderField && type == kLen) kind = field;
      if (!r.SkipValue(type)) return Malformed("field");
    }
  }
  if (kind != kMessageBucketField) {
    return absl::DataLossError(kind == kMessageHeaderField
                                   ? "weights stream: header where a bucket was due"
                                   : "weights stream: message without a bucket");
  }
  const int64_t off = static_cast<int64_t>(offset);
  if (!has_data) data_size = 0;
  if (absl::Status s = CheckPlacement(off, data_size, target); !s.ok()) return s;
  r.Seek(data_pos);
  uint8_t* dst = target.base + off;
  if (target.pipeline == nullptr) {
    r.CopyOut(dst, data_size, target);
  } else {
    // The reader holds references to the message's slices until the copy has run.
    BucketTarget where = target;
    where.pipeline = nullptr;
    target.pipeline->Add(
        [r = std::move(r), dst, data_size, where]() mutable { r.CopyOut(dst, data_size, where); });
  }
  return data_size;
}

absl::StatusOr<int64_t> CopyBucket(const rlhf::v1::WeightsBucket& bucket,
                                   const BucketTarget& target) {
  const int64_t n = static_cast<int64_t>(bucket.data().size());
  if (absl::Status s = CheckPlacement(bucket.offset(), n, target); !s.ok()) return s;
  if (target.pipeline != nullptr) target.pipeline->Wait();  // the pieces stay in order
  uint8_t* dst = target.base + bucket.offset();
  const auto* src = reinterpret_cast<const uint8_t*>(bucket.data().data());
  for (int64_t done = 0; done < n; done += kCopyPieceBytes) {
    CopyPiece(target, dst + done, src + done, std::min(kCopyPieceBytes, n - done));
  }
  return n;
}

CopyPipeline::CopyPipeline(int max_waiting)
    : max_waiting_(static_cast<size_t>(std::max(max_waiting, 1))), worker_([this] { Run(); }) {}

CopyPipeline::~CopyPipeline() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;  // the worker drains what is queued first
  }
  worker_.join();
}

void CopyPipeline::Add(std::function<void()> copy) {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(this, &CopyPipeline::HasRoom));
  waiting_.push_back(std::move(copy));
}

void CopyPipeline::Wait() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(this, &CopyPipeline::Idle));
}

void CopyPipeline::Run() {
  while (true) {
    std::function<void()> copy;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &CopyPipeline::HasWorkOrStops));
      if (waiting_.empty()) return;  // stopping, nothing left
      copy = std::move(waiting_.front());
      waiting_.pop_front();
      busy_ = true;
    }
    copy();
    absl::MutexLock lock(&mu_);
    busy_ = false;
  }
}

}  // namespace rlhf::weights
