#include "services/weights/flat_weights.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status_macros.h"

namespace rlhf::weights {
namespace {

constexpr int64_t kAlign = 64;

absl::StatusOr<rlhf::v1::DType> ToProtoDType(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32: return rlhf::v1::DTYPE_F32;
    case torch::kFloat16: return rlhf::v1::DTYPE_F16;
    case torch::kBFloat16: return rlhf::v1::DTYPE_BF16;
    case torch::kInt64: return rlhf::v1::DTYPE_I64;
    case torch::kInt32: return rlhf::v1::DTYPE_I32;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unsupported weight dtype ", c10::toString(t)));
  }
}

absl::StatusOr<torch::ScalarType> FromProtoDType(rlhf::v1::DType t) {
  switch (t) {
    case rlhf::v1::DTYPE_F32: return torch::kFloat32;
    case rlhf::v1::DTYPE_F16: return torch::kFloat16;
    case rlhf::v1::DTYPE_BF16: return torch::kBFloat16;
    case rlhf::v1::DTYPE_I64: return torch::kInt64;
    case rlhf::v1::DTYPE_I32: return torch::kInt32;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unsupported dtype enum ", t));
  }
}

std::vector<int64_t> ShapeOf(const rlhf::v1::TensorSpec& spec) {
  return {spec.shape().begin(), spec.shape().end()};
}

}  // namespace

namespace {
constexpr uint64_t kFnvPrime = 1099511628211ull;
constexpr uint64_t kFnvBasis = 14695981039346656037ull;

// Whole 64-byte blocks only. The lanes live in locals for the loop: `data` may alias
// `lanes` (uint8_t aliases anything), so updating them through the pointer stores and
// reloads all eight per block (clang: 14 -> 20 GB/s over cache-resident data).
void HashBlocks(uint64_t* lanes, const uint8_t* data, int64_t blocks) {
  uint64_t h[8];
  std::memcpy(h, lanes, sizeof h);
  for (int64_t b = 0; b < blocks; ++b, data += 64) {
    uint64_t w[8];
    std::memcpy(w, data, 64);
    for (int l = 0; l < 8; ++l) h[l] = (h[l] ^ w[l]) * kFnvPrime;
  }
  std::memcpy(lanes, h, sizeof h);
}

// HashBlocks over `src` that also stores each block to `dst`: the words are hashed from
// the registers they were loaded into, so copying and hashing read the bytes once.
void CopyHashBlocks(uint64_t* lanes, uint8_t* dst, const uint8_t* src, int64_t blocks) {
  uint64_t h[8];
  std::memcpy(h, lanes, sizeof h);
  for (int64_t b = 0; b < blocks; ++b, src += 64, dst += 64) {
    uint64_t w[8];
    std::memcpy(w, src, 64);
    std::memcpy(dst, w, 64);
    for (int l = 0; l < 8; ++l) h[l] = (h[l] ^ w[l]) * kFnvPrime;
  }
  std::memcpy(lanes, h, sizeof h);
}
}  // namespace

WeightsHasher::WeightsHasher() {
  for (int l = 0; l < 8; ++l) lanes_[l] = kFnvBasis + static_cast<uint64_t>(l);
}

void WeightsHasher::Update(const uint8_t* data, int64_t size) { Absorb(nullptr, data, size); }

void WeightsHasher::CopyAndUpdate(uint8_t* dst, const uint8_t* src, int64_t size) {
  Absorb(dst, src, size);
}

void WeightsHasher::Absorb(uint8_t* dst, const uint8_t* data, int64_t size) {
  auto copy = [&dst](const uint8_t* from, int64_t n) {
    if (dst == nullptr) return;
    std::memcpy(dst, from, static_cast<size_t>(n));
    dst += n;
  };
  total_ += size;
  if (pending_size_ > 0) {
    const int64_t take = std::min<int64_t>(64 - pending_size_, size);
    copy(data, take);
    std::memcpy(pending_ + pending_size_, data, static_cast<size_t>(take));
    pending_size_ += take;
    data += take;
    size -= take;
    if (pending_size_ < 64) return;
    HashBlocks(lanes_, pending_, 1);
    pending_size_ = 0;
  }
  const int64_t blocks = size / 64;
  if (dst == nullptr) {
    HashBlocks(lanes_, data, blocks);
  } else {
    CopyHashBlocks(lanes_, dst, data, blocks);
    dst += blocks * 64;
  }
  pending_size_ = size - blocks * 64;
  copy(data + blocks * 64, pending_size_);
  std::memcpy(pending_, data + blocks * 64, static_cast<size_t>(pending_size_));
}

uint64_t WeightsHasher::Finish() const {
  uint64_t h = kFnvBasis;
  for (int l = 0; l < 8; ++l) h = (h ^ lanes_[l]) * kFnvPrime;
  for (int64_t i = 0; i < pending_size_; ++i) h = (h ^ pending_[i]) * kFnvPrime;
  return h ^ static_cast<uint64_t>(total_);
}

uint64_t WeightsHash(const uint8_t* data, int64_t size) {
  WeightsHasher h;
  h.Update(data, size);
  return h.Finish();
}

torch::Tensor NewFlatBuffer(int64_t bytes) {
  if (bytes < kHugeBufferBytes) return torch::empty({bytes}, torch::kUInt8);
  // Fresh memory costs one page fault per 4 KiB page on first touch, which on this
  // project's VMs is 5x the copy that fills the buffer. A 2 MiB-aligned mapping marked
  // MADV_HUGEPAGE (transparent huge pages in "madvise" mode, the Debian default) faults
  // once per 2 MiB instead; where THP is off the advice is ignored and nothing changes.
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t len = (static_cast<size_t>(bytes) + kHuge - 1) / kHuge * kHuge;
  const size_t mapped = len + kHuge;  // room to align the start
  void* raw = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return torch::empty({bytes}, torch::kUInt8);
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (start + kHuge - 1) / kHuge * kHuge;
  (void)::madvise(reinterpret_cast<void*>(aligned), len, MADV_HUGEPAGE);
  return torch::from_blob(
      reinterpret_cast<void*>(aligned), {bytes}, [raw, mapped](void*) { ::munmap(raw, mapped); },
      torch::kUInt8);
}

torch::Tensor BufferPool::Get(int64_t bytes) {
  absl::MutexLock lock(&mu_);
  // Unused: the pool's handle is the only reference to the tensor and to its storage
  // (views such as narrow() share the storage, not the tensor).
  auto unused = [](const torch::Tensor& t) {
    return t.use_count() == 1 && t.storage().use_count() == 1;
  };
  for (const auto& t : buffers_) {
    if (t.numel() == bytes && unused(t)) {
      ++reused_;
      return t;
    }
  }
  ++allocated_;
  torch::Tensor fresh = NewFlatBuffer(bytes);
  if (buffers_.size() < max_buffers_) {
    buffers_.push_back(fresh);
  } else {
    for (auto& t : buffers_) {
      if (unused(t)) {  // a buffer of another size nobody uses: replace it
        t = fresh;
        break;
      }
    }
  }
  return fresh;
}

int64_t BufferPool::reused() const {
  absl::MutexLock lock(&mu_);
  return reused_;
}

int64_t BufferPool::allocated() const {
  absl::MutexLock lock(&mu_);
  return allocated_;
}

absl::StatusOr<std::shared_ptr<FlatWeights>> Flatten(const NamedTensors& named,
                                                     int64_t version, BufferPool* pool) {
  auto flat = std::make_shared<FlatWeights>();
  flat->version = version;
  std::unordered_set<std::string> seen;
  int64_t offset = 0;
  for (const auto& [name, t] : named) {
    if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " undefined"));
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate tensor name ", name));
    }
    RLHF_ASSIGN_OR_RETURN(auto dtype, ToProtoDType(t.scalar_type()));
    rlhf::v1::TensorSpec spec;
    spec.set_name(name);
    spec.set_dtype(dtype);
    for (int64_t d : t.sizes()) spec.add_shape(d);
    spec.set_offset(offset);
    spec.set_nbytes(t.numel() * static_cast<int64_t>(t.element_size()));
    offset += (spec.nbytes() + kAlign - 1) / kAlign * kAlign;
    flat->tensors.push_back(std::move(spec));
  }
  return TorchCall(
      [&]() -> std::shared_ptr<FlatWeights> {
        torch::NoGradGuard no_grad;
        flat->buffer = pool != nullptr ? pool->Get(offset) : NewFlatBuffer(offset);
        uint8_t* base = flat->buffer.data_ptr<uint8_t>();
        for (size_t i = 0; i < named.size(); ++i) {
          const auto& spec = flat->tensors[i];
          torch::Tensor src = named[i].second.detach().to(torch::kCPU).contiguous();
          std::memcpy(base + spec.offset(), src.data_ptr(), spec.nbytes());
          // Alignment padding is zeroed so the hash depends on the tensors only.
          const int64_t end = spec.offset() + spec.nbytes();
          const int64_t next = i + 1 < named.size() ? flat->tensors[i + 1].offset() : offset;
          std::memset(base + end, 0, static_cast<size_t>(next - end));
        }
        flat->hash = WeightsHash(base, offset);
        return flat;
      },
      "flattening weights");
}

absl::Status Unflatten(const FlatWeights& weights, const NamedTensors& params) {
  std::unordered_map<std::string, const torch::Tensor*> by_name;
  for (const auto& [name, t] : params) by_name[name] = &t;
  std::vector<std::pair<const rlhf::v1::TensorSpec*, const torch::Tensor*>> plan;
  for (const auto& spec : weights.tensors) {
    auto it = by_name.find(spec.name());
    if (it == by_name.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("weights: tensor ", spec.name(), " not in the model"));
    }
    RLHF_ASSIGN_OR_RETURN(auto dtype, FromProtoDType(spec.dtype()));
    const torch::Tensor& dst = *it->second;
    if (dst.sizes().vec() != ShapeOf(spec) || dst.scalar_type() != dtype) {
      return absl::InvalidArgumentError(absl::StrCat(
          "weights: tensor ", spec.name(), " has shape [", absl::StrJoin(spec.shape(), ","),
          "] in the snapshot but [", absl::StrJoin(dst.sizes().vec(), ","), "] in the model"));
    }
    if (spec.offset() + spec.nbytes() > weights.total_bytes()) {
      return absl::InvalidArgumentError(absl::StrCat("weights: tensor ", spec.name(),
                                                     " lies outside the buffer"));
    }
    plan.emplace_back(&spec, it->second);
  }
  if (plan.size() != params.size()) {
    return absl::InvalidArgumentError(absl::StrCat("weights: snapshot has ", plan.size(),
                                                   " tensors, the model ", params.size()));
  }
  return TorchCall(
      [&] {
        torch::NoGradGuard no_grad;
        torch::Tensor buf = weights.buffer.to(torch::kCPU).contiguous();
        uint8_t* base = buf.data_ptr<uint8_t>();
        for (const auto& [spec, dst] : plan) {
          auto src = torch::from_blob(base + spec->offset(), ShapeOf(*spec),
                                      torch::TensorOptions().dtype(dst->scalar_type()));
          const_cast<torch::Tensor&>(*dst).copy_(src);
        }
      },
      "applying weights");
}

rlhf::v1::WeightsHeader MakeHeader(const FlatWeights& weights, int64_t bucket_bytes) {
  rlhf::v1::WeightsHeader header;
  header.mutable_version()->set_version(weights.version);
  for (const auto& spec : weights.tensors) *header.add_tensors() = spec;
  header.set_total_bytes(weights.total_bytes());
  header.set_bucket_bytes(bucket_bytes);
  header.set_hash(weights.hash);
  return header;
}

absl::StatusOr<std::shared_ptr<FlatWeights>> AllocateFor(
    const rlhf::v1::WeightsHeader& header, BufferPool* pool) {
  if (header.total_bytes() < 0 || header.bucket_bytes() <= 0) {
    return absl::InvalidArgumentError("weights header: total_bytes/bucket_bytes invalid");
  }
  for (const auto& spec : header.tensors()) {
    if (spec.offset() < 0 || spec.nbytes() < 0 ||
        spec.offset() + spec.nbytes() > header.total_bytes()) {
      return absl::InvalidArgumentError(
          absl::StrCat("weights header: tensor ", spec.name(), " outside the buffer"));
    }
  }
  auto flat = std::make_shared<FlatWeights>();
  flat->version = header.version().version();
  flat->tensors.assign(header.tensors().begin(), header.tensors().end());
  RLHF_ASSIGN_OR_RETURN(flat->buffer, TorchCall(
                                          [&] {
                                            return pool != nullptr
                                                       ? pool->Get(header.total_bytes())
                                                       : NewFlatBuffer(header.total_bytes());
                                          },
                                          "allocating weights"));
  return flat;
}

absl::Status VerifyHash(const FlatWeights& weights, const rlhf::v1::WeightsHeader& header) {
  uint64_t h = WeightsHash(weights.data(), weights.total_bytes());
  if (h != header.hash()) {
    return absl::DataLossError(absl::StrCat("weights version ", header.version().version(),
                                            ": hash ", h, " != header hash ", header.hash()));
  }
  return absl::OkStatus();
}

rlhf::v1::WeightsBucket MakeBucket(const FlatWeights& weights, int64_t offset,
                                   int64_t bucket_bytes) {
  rlhf::v1::WeightsBucket bucket;
  int64_t n = std::min(bucket_bytes, weights.total_bytes() - offset);
  bucket.set_offset(offset);
  bucket.set_data(reinterpret_cast<const char*>(weights.data() + offset),
                  static_cast<size_t>(n));
  return bucket;
}

void FillBucket(const FlatWeights& weights, int64_t offset, int64_t bucket_bytes,
                rlhf::v1::WeightsBucket* bucket) {
  const int64_t n = std::min(bucket_bytes, weights.total_bytes() - offset);
  bucket->set_offset(offset);
  bucket->mutable_data()->assign(reinterpret_cast<const char*>(weights.data() + offset),
                                 static_cast<size_t>(n));
}

int MaxMessageBytesFor(int64_t bucket_bytes) {
  return static_cast<int>(std::min<int64_t>(bucket_bytes + (1 << 20), INT32_MAX));
}

}  // namespace rlhf::weights
