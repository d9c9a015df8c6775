#include "core/model/compute_dtype.h"

#include <filesystem>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/model/device.h"
#include "core/model/hf.h"
#include "core/status_macros.h"

namespace rlhf {

absl::StatusOr<torch::ScalarType> ParseComputeDtype(absl::string_view name) {
  const std::string n = absl::AsciiStrToLower(name);
  if (n == "fp32" || n == "float32") return torch::kFloat32;
  if (n == "bf16" || n == "bfloat16") return torch::kBFloat16;
  if (n == "fp16" || n == "float16") return torch::kFloat16;
  return absl::InvalidArgumentError(
      absl::StrCat("compute_dtype must be fp32, bf16 or fp16, got \"", name, "\""));
}

std::string ComputeDtypeName(torch::ScalarType dtype) {
  if (dtype == torch::kBFloat16) return "bf16";
  if (dtype == torch::kFloat16) return "fp16";
  if (dtype == torch::kFloat32) return "fp32";
  return c10::toString(dtype);
}

absl::Status CheckComputeDtype(torch::ScalarType dtype, const torch::Device& device) {
  if (dtype != torch::kFloat32 && dtype != torch::kBFloat16 && dtype != torch::kFloat16) {
    return absl::InvalidArgumentError(
        absl::StrCat("compute_dtype ", c10::toString(dtype), " is not one of fp32, bf16, fp16"));
  }
  if (dtype == torch::kFloat32) return absl::OkStatus();
  // Probe the kernels a forward pass needs rather than hard-coding which LibTorch build
  // has which: a missing one would otherwise surface mid-request.
  auto probe = TorchCall(
      [&] {
        torch::NoGradGuard no_grad;
        const auto a = at::ones({2, 2}, at::TensorOptions().dtype(dtype).device(device));
        (void)at::addmm(a, a, a);
        (void)at::softmax(a, -1);
        (void)at::layer_norm(a, {2}, a[0], a[1], 1e-5);
      },
      "probe");
  if (!probe.ok()) {
    std::string why(probe.message());
    if (const size_t nl = why.find('\n'); nl != std::string::npos) why.resize(nl);
    return absl::InvalidArgumentError(absl::StrCat(
        "compute_dtype ", ComputeDtypeName(dtype), " is not supported on ", device.str(),
        " by this LibTorch build (", why, "); use bf16 or fp32"));
  }
  return absl::OkStatus();
}

absl::Status CastToComputeDtype(TransformerLM& model, torch::ScalarType dtype) {
  if (!model) return absl::InvalidArgumentError("CastToComputeDtype: null model");
  torch::Device device = torch::kCPU;
  for (const auto& p : model->parameters()) {
    device = p.device();
    break;
  }
  RLHF_RETURN_IF_ERROR(CheckComputeDtype(dtype, device));
  return TorchCall([&] { model->to(dtype); }, "casting the model");
}

absl::StatusOr<LoadedCheckpoint> LoadModel(const std::string& dir, const ModelLoadOptions& options) {
  RLHF_RETURN_IF_ERROR(CheckComputeDtype(options.compute_dtype, options.device));
  // An HF directory takes the sequence length (sliding-window check); ours carries its own
  // max_seq_len, which the serving code checks requests against.
  absl::StatusOr<LoadedCheckpoint> loaded = absl::UnknownError("unset");
  auto text = ReadFileToString((std::filesystem::path(dir) / "config.json").string());
  const nlohmann::json config =
      text.ok() ? nlohmann::json::parse(*text, nullptr, false) : nlohmann::json();
  if (IsHfConfigJson(config)) {
    HfLoadOptions hf;
    hf.max_seq_len = options.max_seq_len;
    loaded = LoadHfDirectory(dir, hf);
  } else {
    loaded = LoadCheckpoint(dir);
  }
  if (!loaded.ok()) return loaded.status();
  // Move first, then cast: the cast runs on the device's kernels and the host never holds
  // a second (cast) copy of a large model.
  RLHF_RETURN_IF_ERROR(MoveModelToDevice(loaded->model, options.device));
  RLHF_RETURN_IF_ERROR(CastToComputeDtype(loaded->model, options.compute_dtype));
  return loaded;
}

}  // namespace rlhf
