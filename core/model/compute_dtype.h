// Compute dtype of a loaded model, and the one place a loaded model is cast to it.
//
// Checkpoints store F32, F16 or BF16 (ours are F32; HF files are often BF16) and load as
// fp32. A process that only runs the model forward (reference server, reward server,
// `rlhf eval` / `label`) may instead run it in the on-disk precision: LoadModel casts the
// parameters once after loading. fp32 is the default (on CPU: exact parity with our
// training, no precision loss); bf16 halves the memory and runs on LibTorch 1.13's CPU
// kernels; fp16 does not (no Half matmul/softmax/layer_norm on CPU), which
// CheckComputeDtype reports up front instead of failing at the first forward.
//
// In a non-fp32 model the norm statistics and the attention softmax still run in fp32 and
// the logits and scalar-head outputs come back as fp32 (HF's convention; see model.h).
//
// Thread-safety: free functions without shared state; CastToComputeDtype mutates the
// model (no concurrent forward).
#pragma once

#include <cstdint>
#include <string>

#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/model/checkpoint.h"
#include "core/model/model.h"

namespace rlhf {

// The binaries' --compute_dtype default (the job config's default is the same, set in
// services/config/config.cc, which is LibTorch-free).
inline constexpr const char kDefaultComputeDtype[] = "fp32";

// "fp32" | "bf16" | "fp16" (also "float32", "bfloat16", "float16") -> the torch dtype.
// InvalidArgument naming the value otherwise.
absl::StatusOr<torch::ScalarType> ParseComputeDtype(absl::string_view name);
// kFloat32 -> "fp32", kBFloat16 -> "bf16", kFloat16 -> "fp16".
std::string ComputeDtypeName(torch::ScalarType dtype);

// OK when the model's kernels (matmul, softmax, layer norm) exist for `dtype` on
// `device`; otherwise InvalidArgument naming the dtype, the device and the alternative
// (e.g. fp16 on CPU with LibTorch 1.13).
absl::Status CheckComputeDtype(torch::ScalarType dtype, const torch::Device& device = torch::kCPU);

// Casts every parameter and buffer of `model` to `dtype` (a no-op for the dtype it
// already has), after CheckComputeDtype on the model's device.
absl::Status CastToComputeDtype(TransformerLM& model, torch::ScalarType dtype);

struct ModelLoadOptions {
  // Dtype the loaded model computes in. Default fp32.
  torch::ScalarType compute_dtype = torch::kFloat32;
  // The longest sequence (prompt + response, tokens) the caller will run; 0 = not known.
  // An HF sliding-window model whose window is shorter is an error (core/model/hf.h).
  int64_t max_seq_len = 0;
  // Device the loaded model is moved to (core/model/device.h, ParseDevice). Default CPU.
  // The dtype is checked against this device (fp16 is refused on CPU, fine on CUDA).
  torch::Device device = torch::kCPU;
};

// LoadCheckpoint (ours or an HF directory), moved to options.device, then
// CastToComputeDtype. Errors as LoadCheckpoint's, or CheckComputeDtype's on options.device
// (checked before any weight is read).
absl::StatusOr<LoadedCheckpoint> LoadModel(const std::string& dir, const ModelLoadOptions& options = {});

}  // namespace rlhf
