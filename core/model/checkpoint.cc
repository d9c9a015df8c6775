#include "core/model/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/model/hf.h"
#include "core/status_macros.h"

namespace rlhf {
namespace {

// The safetensors spec caps the header at 100 MB; anything larger is corruption.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

struct DtypeInfo {
  const char* name;
  torch::ScalarType type;
  size_t bytes;
};
constexpr DtypeInfo kDtypes[] = {
    {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2}, {"BF16", torch::kBFloat16, 2},
    {"I64", torch::kInt64, 8},   {"I32", torch::kInt32, 4},   {"F64", torch::kFloat64, 8},
};

const DtypeInfo* DtypeByName(const std::string& name) {
  for (const auto& d : kDtypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}
const DtypeInfo* DtypeByType(torch::ScalarType t) {
  for (const auto& d : kDtypes) {
    if (t == d.type) return &d;
  }
  return nullptr;
}

bool LittleEndianHost() {
  const uint16_t one = 1;
  uint8_t first;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

std::string ShapeString(c10::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return absl::NotFoundError(absl::StrCat(path, ": not found"));
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InternalError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::InternalError(absl::StrCat(path, ": read error"));
  return ss.str();
}

}  // namespace

absl::StatusOr<std::string> SerializeSafetensors(const NamedTensors& tensors,
                                                 const std::map<std::string, std::string>& metadata) {
  if (!LittleEndianHost()) return absl::UnimplementedError("safetensors: big-endian host");
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> seen;
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name.empty() || name == "__metadata__") {
      return absl::InvalidArgumentError(absl::StrCat("safetensors: invalid tensor name \"", name, "\""));
    }
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat("safetensors: duplicate tensor name \"", name, "\""));
    }
    if (!tensor.defined()) {
      return absl::InvalidArgumentError(absl::StrCat("safetensors: tensor \"", name, "\" is undefined"));
    }
    const DtypeInfo* dt = DtypeByType(tensor.scalar_type());
    if (dt == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("safetensors: tensor \"", name,
                                                     "\" has unsupported dtype ",
                                                     c10::toString(tensor.scalar_type())));
    }
    auto t = tensor.detach().to(torch::kCPU).contiguous();
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * dt->bytes;
    header[name] = {{"dtype", dt->name},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    data.push_back(std::move(t));
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // align the data section to 8 bytes
  std::string out;
  out.reserve(8 + json.size() + offset);
  const uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += json;
  for (const auto& t : data) {
    out.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  }
  return out;
}

absl::Status WriteSafetensors(const std::string& path, const NamedTensors& tensors,
                              const std::map<std::string, std::string>& metadata) {
  RLHF_ASSIGN_OR_RETURN(std::string bytes, SerializeSafetensors(tensors, metadata));
  return WriteFileAtomically(path, bytes);
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(const char* json, size_t json_size,
                                                         uint64_t data_size) {
  auto bad = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors: ", parts...));
  };
  const nlohmann::json header =
      nlohmann::json::parse(json, json + json_size, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) return bad("header is not valid JSON");
  if (!header.is_object()) return bad("header is not a JSON object");

  SafetensorsHeader out;
  std::vector<SafetensorsEntry>& entries = out.entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) return bad("__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) return bad("__metadata__.", m.key(), " is not a string");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) return bad("tensor \"", name, "\": entry is not an object");
    for (auto f = v.begin(); f != v.end(); ++f) {
      if (f.key() != "dtype" && f.key() != "shape" && f.key() != "data_offsets") {
        return bad("tensor \"", name, "\": unknown field \"", f.key(), "\"");
      }
    }
    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) return bad("tensor \"", name, "\": missing dtype");
    SafetensorsEntry e;
    e.name = name;
    const DtypeInfo* dtype = DtypeByName(dt->get<std::string>());
    if (dtype == nullptr) return bad("tensor \"", name, "\": unsupported dtype ", dt->dump());
    e.dtype_name = dtype->name;
    e.dtype = dtype->type;
    auto shape = v.find("shape");
    if (shape == v.end() || !shape->is_array()) return bad("tensor \"", name, "\": missing shape");
    uint64_t numel = 1;
    for (const auto& d : *shape) {
      if (!d.is_number_unsigned()) return bad("tensor \"", name, "\": shape ", shape->dump(), " is not a list of non-negative integers");
      const uint64_t dim = d.get<uint64_t>();
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / 16 / dim)) {
        return bad("tensor \"", name, "\": shape ", shape->dump(), " overflows");
      }
      numel *= dim;
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    auto offs = v.find("data_offsets");
    if (offs == v.end() || !offs->is_array() || offs->size() != 2 || !(*offs)[0].is_number_unsigned() ||
        !(*offs)[1].is_number_unsigned()) {
      return bad("tensor \"", name, "\": data_offsets must be [begin, end]");
    }
    e.begin = (*offs)[0].get<uint64_t>();
    e.end = (*offs)[1].get<uint64_t>();
    if (e.begin > e.end) return bad("tensor \"", name, "\": data_offsets begin ", e.begin, " > end ", e.end);
    if (e.end > data_size) {
      return bad("tensor \"", name, "\": data_offsets end ", e.end, " beyond the data section (",
                 data_size, " bytes): file truncated?");
    }
    if (e.end - e.begin != numel * dtype->bytes) {
      return bad("tensor \"", name, "\": ", e.end - e.begin, " bytes but dtype ", dtype->name,
                 " x shape ", shape->dump(), " needs ", numel * dtype->bytes);
    }
    entries.push_back(std::move(e));
  }
  std::sort(entries.begin(), entries.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 1; i < entries.size(); ++i) {
    if (entries[i].begin < entries[i - 1].end) {
      return bad("tensors \"", entries[i - 1].name, "\" and \"", entries[i].name,
                 "\" have overlapping data_offsets");
    }
  }
  return out;
}

namespace {
// Reads the 8-byte length prefix; checks it against the limit and the total size.
absl::StatusOr<uint64_t> HeaderLength(const unsigned char* first8, uint64_t total_size) {
  auto bad = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors: ", parts...));
  };
  if (!LittleEndianHost()) return absl::UnimplementedError("safetensors: big-endian host");
  if (total_size < 8) return bad("file has ", total_size, " bytes, fewer than the 8-byte header length");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(first8[i]) << (8 * i);
  if (n > kMaxHeaderBytes) return bad("header length ", n, " exceeds the 100 MB limit");
  if (n > total_size - 8) {
    return bad("header length ", n, " goes beyond the end of the file (", total_size, " bytes)");
  }
  return n;
}
}  // namespace

absl::StatusOr<SafetensorsContents> ParseSafetensors(const std::string& bytes) {
  RLHF_ASSIGN_OR_RETURN(
      const uint64_t n,
      HeaderLength(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()));
  const uint64_t data_size = bytes.size() - 8 - n;
  RLHF_ASSIGN_OR_RETURN(SafetensorsHeader header,
                        ParseSafetensorsHeader(bytes.data() + 8, n, data_size));
  const char* data = bytes.data() + 8 + n;
  SafetensorsContents out;
  out.metadata = std::move(header.metadata);
  for (const SafetensorsEntry& e : header.entries) {
    auto t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype));
    if (e.end > e.begin) std::memcpy(t.data_ptr(), data + e.begin, e.end - e.begin);
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;
  f.fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd_ < 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": not found"));
    return absl::InternalError(absl::StrCat(path, ": open: ", std::strerror(errno)));
  }
  auto with_path = [&](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  };
  const off_t size = ::lseek(f.fd_, 0, SEEK_END);
  if (size < 0) return absl::InternalError(absl::StrCat(path, ": lseek: ", std::strerror(errno)));
  unsigned char first8[8] = {0};
  const ssize_t got = size >= 8 ? ::pread(f.fd_, first8, 8, 0) : 0;
  if (size >= 8 && got != 8) return absl::InternalError(absl::StrCat(path, ": short read"));
  auto n = HeaderLength(first8, static_cast<uint64_t>(size));
  if (!n.ok()) return with_path(n.status());
  std::string json(*n, '\0');
  if (*n > 0 && ::pread(f.fd_, json.data(), *n, 8) != static_cast<ssize_t>(*n)) {
    return absl::InternalError(absl::StrCat(path, ": short read of the header"));
  }
  auto header = ParseSafetensorsHeader(json.data(), json.size(), static_cast<uint64_t>(size) - 8 - *n);
  if (!header.ok()) return with_path(header.status());
  f.header_ = std::move(*header);
  f.header_.data_start = 8 + *n;
  return f;
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(other.fd_), header_(std::move(other.header_)) {
  other.fd_ = -1;
}

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(other.path_);
    fd_ = other.fd_;
    header_ = std::move(other.header_);
    other.fd_ = -1;
  }
  return *this;
}

SafetensorsFile::~SafetensorsFile() {
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<torch::Tensor> SafetensorsFile::Read(const SafetensorsEntry& e) const {
  auto t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype));
  char* dst = static_cast<char*>(t.data_ptr());
  uint64_t done = 0;
  const uint64_t total = e.end - e.begin;
  while (done < total) {
    const ssize_t n = ::pread(fd_, dst + done, total - done,
                              static_cast<off_t>(header_.data_start + e.begin + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::DataLossError(absl::StrCat(path_, ": tensor \"", e.name, "\": read failed at byte ",
                                              done, " of ", total, n < 0 ? ": " : " (end of file)",
                                              n < 0 ? std::strerror(errno) : ""));
    }
    done += static_cast<uint64_t>(n);
  }
  return t;
}

absl::StatusOr<SafetensorsContents> ReadSafetensors(const std::string& path) {
  RLHF_ASSIGN_OR_RETURN(std::string bytes, ReadWholeFile(path));
  auto parsed = ParseSafetensors(bytes);
  if (!parsed.ok()) {
    return absl::Status(parsed.status().code(), absl::StrCat(path, ": ", parsed.status().message()));
  }
  return parsed;
}

NamedTensors ModelTensors(const TransformerLM& model) {
  NamedTensors out;
  for (const auto& item : model->named_parameters(/*recurse=*/true)) {
    out.emplace_back(item.key(), item.value().detach());
  }
  for (const auto& item : model->named_buffers(/*recurse=*/true)) {
    out.emplace_back(item.key(), item.value().detach());
  }
  return out;
}

absl::Status LoadWeightsInto(TransformerLM& model, const NamedTensors& tensors,
                             const LoadWeightsOptions& options) {
  auto params = model->named_parameters(/*recurse=*/true);
  for (const auto& item : model->named_buffers(/*recurse=*/true)) params.insert(item.key(), item.value());
  auto starts_with = [](const std::string& s, const char* prefix) {
    return s.rfind(prefix, 0) == 0;
  };
  std::vector<std::string> missing, unexpected, shape_bad, dtype_bad, duplicate;
  std::set<std::string> provided;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;
  for (const auto& [name, t] : tensors) {
    if (!provided.insert(name).second) {
      duplicate.push_back(name);
      continue;
    }
    const torch::Tensor* p = params.find(name);
    if (p == nullptr) {
      if (!(options.ignore_unexpected_lm_head && starts_with(name, "lm_head."))) unexpected.push_back(name);
      continue;
    }
    if (!t.defined() || t.sizes() != p->sizes()) {
      shape_bad.push_back(absl::StrCat(name, " ", t.defined() ? ShapeString(t.sizes()) : "undefined",
                                       " vs model ", ShapeString(p->sizes())));
      continue;
    }
    if (t.scalar_type() != p->scalar_type()) {
      dtype_bad.push_back(absl::StrCat(name, " ", c10::toString(t.scalar_type()), " vs model ",
                                       c10::toString(p->scalar_type())));
      continue;
    }
    copies.emplace_back(*p, t);
  }
  for (const auto& item : params) {
    if (provided.count(item.key()) == 0 &&
        !(options.allow_missing_scalar_head && starts_with(item.key(), "scalar_head."))) {
      missing.push_back(item.key());
    }
  }
  std::vector<std::string> problems;
  if (!missing.empty()) problems.push_back(absl::StrCat("missing: ", absl::StrJoin(missing, ", ")));
  if (!unexpected.empty()) problems.push_back(absl::StrCat("unexpected: ", absl::StrJoin(unexpected, ", ")));
  if (!shape_bad.empty()) problems.push_back(absl::StrCat("shape mismatch: ", absl::StrJoin(shape_bad, "; ")));
  if (!dtype_bad.empty()) problems.push_back(absl::StrCat("dtype mismatch: ", absl::StrJoin(dtype_bad, "; ")));
  if (!duplicate.empty()) problems.push_back(absl::StrCat("duplicate: ", absl::StrJoin(duplicate, ", ")));
  if (!problems.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("loading weights: ", absl::StrJoin(problems, "; ")));
  }
  return TorchCall(
      [&] {
        torch::NoGradGuard no_grad;
        for (auto& [dst, src] : copies) dst.copy_(src);
      },
      "loading weights");
}

absl::Status SaveCheckpoint(const std::string& dir, const TransformerLM& model,
                            const nlohmann::json& extra_metadata) {
  if (!extra_metadata.is_null() && !extra_metadata.is_object()) {
    return absl::InvalidArgumentError("SaveCheckpoint: extra_metadata must be a JSON object");
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": create_directories: ", ec.message()));
  const auto weights_path = (std::filesystem::path(dir) / "model.safetensors").string();
  RLHF_RETURN_IF_ERROR(WriteSafetensors(weights_path, ModelTensors(model), {{"format", "pt"}}));
  nlohmann::json config = {
      {"format", "rlhf-checkpoint-v1"},
      {"model", nlohmann::json::parse(ModelConfigToJson(model->config()))},
      {"metadata", extra_metadata.is_null() ? nlohmann::json::object() : extra_metadata}};
  // config.json last: a directory with a config.json has complete weights.
  return WriteFileAtomically((std::filesystem::path(dir) / "config.json").string(),
                             config.dump(2) + "\n");
}

absl::StatusOr<LoadedCheckpoint> LoadCheckpoint(const std::string& dir) {
  const auto config_path = (std::filesystem::path(dir) / "config.json").string();
  const auto weights_path = (std::filesystem::path(dir) / "model.safetensors").string();
  RLHF_ASSIGN_OR_RETURN(std::string config_text, ReadWholeFile(config_path));
  const nlohmann::json config = nlohmann::json::parse(config_text, nullptr, false);
  auto bad = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": ", parts...));
  };
  if (config.is_discarded() || !config.is_object()) return bad("not a JSON object");
  if (IsHfConfigJson(config)) return LoadHfDirectory(dir);
  if (config.value("format", "") != "rlhf-checkpoint-v1") {
    return bad("format must be \"rlhf-checkpoint-v1\"");
  }
  if (!config.contains("model")) return bad("missing \"model\"");
  auto model_config = ModelConfigFromJson(config["model"].dump());
  if (!model_config.ok()) return bad(model_config.status().message());
  LoadedCheckpoint out;
  out.config = *model_config;
  out.metadata = config.value("metadata", nlohmann::json::object());
  RLHF_ASSIGN_OR_RETURN(out.model, TorchCall([&] { return TransformerLM(out.config); }, "building model"));
  RLHF_ASSIGN_OR_RETURN(SafetensorsContents weights, ReadSafetensors(weights_path));
  if (auto s = LoadWeightsInto(out.model, weights.tensors); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(weights_path, ": ", s.message()));
  }
  return out;
}

}  // namespace rlhf
