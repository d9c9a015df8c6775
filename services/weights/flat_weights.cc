#include "services/weights/flat_weights.h"

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

uint64_t WeightsHash(const uint8_t* data, int64_t size) {
  constexpr uint64_t kPrime = 1099511628211ull;
  uint64_t h = 14695981039346656037ull;
  int64_t i = 0;
  for (; i + 8 <= size; i += 8) {
    uint64_t w;
    std::memcpy(&w, data + i, 8);
    h = (h ^ w) * kPrime;
  }
  for (; i < size; ++i) h = (h ^ data[i]) * kPrime;
  return h ^ static_cast<uint64_t>(size);
}

absl::StatusOr<std::shared_ptr<FlatWeights>> Flatten(const NamedTensors& named,
                                                     int64_t version) {
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
        flat->buffer = torch::zeros({offset}, torch::kUInt8);
        uint8_t* base = flat->buffer.data_ptr<uint8_t>();
        for (size_t i = 0; i < named.size(); ++i) {
          const auto& spec = flat->tensors[i];
          torch::Tensor src = named[i].second.detach().to(torch::kCPU).contiguous();
          std::memcpy(base + spec.offset(), src.data_ptr(), spec.nbytes());
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
    const rlhf::v1::WeightsHeader& header) {
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
  RLHF_ASSIGN_OR_RETURN(flat->buffer, TorchCall([&] {
    return torch::empty({header.total_bytes()}, torch::kUInt8);
  }, "allocating weights"));
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

int MaxMessageBytesFor(int64_t bucket_bytes) {
  return static_cast<int>(std::min<int64_t>(bucket_bytes + (1 << 20), INT32_MAX));
}

}  // namespace rlhf::weights
