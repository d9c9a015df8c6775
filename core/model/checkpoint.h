// Checkpoints: a directory with `model.safetensors` (weights) and `config.json`
// ({"format": "rlhf-checkpoint-v1", "model": <ModelConfig JSON>, "metadata": {...}}),
// written and read by our own C++.
//
// Safetensors layout: 8-byte little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value"}}
// then the raw little-endian tensor bytes (offsets relative to the end of the header).
// Supported dtypes: F32, F16, BF16, I64, I32. Every structural problem (header length
// beyond the file, bad JSON, unknown dtype, offsets out of range or overlapping, byte
// count != dtype size x shape, truncated data) is an error naming the tensor or field;
// nothing crashes and nothing is partially loaded.
//
// Writes are atomic: a temporary file in the same directory is written, fsync'ed and
// renamed over the target.
//
// Thread-safety: free functions; concurrent reads are fine, concurrent writes of the same
// path race (last rename wins, never a torn file).
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/model/model.h"
#include "core/tokenizer/text_util.h"  // ReadFileToString
#include "core/util/file_util.h"

namespace rlhf {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

struct SafetensorsContents {
  NamedTensors tensors;                         // in file order of data offsets
  std::map<std::string, std::string> metadata;  // "__metadata__" (string -> string)
};

// Tensors may be of any layout (made contiguous, written from CPU). Names must be
// unique and non-empty, and not "__metadata__".
absl::Status WriteSafetensors(const std::string& path, const NamedTensors& tensors,
                              const std::map<std::string, std::string>& metadata = {});
// In-memory variants (weights over the network use the same format).
absl::StatusOr<std::string> SerializeSafetensors(const NamedTensors& tensors,
                                                 const std::map<std::string, std::string>& metadata = {});
absl::StatusOr<SafetensorsContents> ParseSafetensors(const std::string& bytes);
absl::StatusOr<SafetensorsContents> ReadSafetensors(const std::string& path);

// One tensor's header entry. `begin`/`end` are relative to the start of the data
// section (8 + header length bytes into the file).
struct SafetensorsEntry {
  std::string name;
  std::string dtype_name;  // "F32", "BF16", ...
  torch::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};
struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;  // sorted by data offset; validated
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // absolute file offset of the data section
};
// Validates the header JSON against a data section of `data_size` bytes (every check
// listed above except reading the bytes).
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(const char* json, size_t json_size,
                                                         uint64_t data_size);

// A safetensors file opened for reading one tensor at a time (peak extra memory: the
// tensor being read). Errors name the file. Not thread-safe; movable.
class SafetensorsFile {
 public:
  static absl::StatusOr<SafetensorsFile> Open(const std::string& path);
  SafetensorsFile(SafetensorsFile&& other) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  // Reads one entry of header() into a fresh CPU tensor of its dtype.
  absl::StatusOr<torch::Tensor> Read(const SafetensorsEntry& entry) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  int fd_ = -1;
  SafetensorsHeader header_;
};


// WriteFileAtomically (tmp + fsync + rename) lives in core/util/file_util.h.

struct LoadWeightsOptions {
  // Missing "scalar_head.*" tensors keep the model's initial values (a reward model or
  // value head initialised from an SFT trunk).
  bool allow_missing_scalar_head = false;
  // Extra unembedding tensors ("lm_head.*") in the source are ignored (the SFT trunk
  // had an LM head the reward model does not).
  bool ignore_unexpected_lm_head = false;
};

// Copies `tensors` into the model's parameters by name. Checks every name, shape and
// dtype first and reports all problems in one InvalidArgument ("missing: a, b;
// unexpected: c; shape mismatch: d [4, 8] vs [8, 4]; dtype mismatch: ..."); on error the
// model is unchanged.
absl::Status LoadWeightsInto(TransformerLM& model, const NamedTensors& tensors,
                             const LoadWeightsOptions& options = {});

// The model's parameters (and buffers, if any), by stable name, detached.
NamedTensors ModelTensors(const TransformerLM& model);

// Creates `dir` if needed and writes dir/model.safetensors and dir/config.json.
// extra_metadata (e.g. {"tokenizer": "byte", "reward_mean": 0.1}) lands in
// config.json's "metadata" object; it must be a JSON object (or null).
absl::Status SaveCheckpoint(const std::string& dir, const TransformerLM& model,
                            const nlohmann::json& extra_metadata = nlohmann::json::object());

struct LoadedCheckpoint {
  TransformerLM model{nullptr};
  ModelConfig config;
  nlohmann::json metadata;  // config.json's "metadata" object
};

// Reads dir/config.json, builds the model and loads dir/model.safetensors into it with
// full name/shape/dtype checking. Missing files are NotFound; corrupt ones
// InvalidArgument (the message names the file and the problem).
// The one entry point for every checkpoint a flag or config field names: a HuggingFace
// model directory (config.json with "model_type" and no "format") is imported through
// LoadHfDirectory (core/model/hf.h) and returned the same way.
absl::StatusOr<LoadedCheckpoint> LoadCheckpoint(const std::string& dir);

}  // namespace rlhf
