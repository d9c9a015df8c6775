#include "core/model/device.h"

#include "absl/strings/str_cat.h"
#include "core/model/torch_compat.h"
#include "core/status_macros.h"
#include "core/util/device_name.h"

namespace rlhf {

absl::StatusOr<torch::Device> ParseDevice(absl::string_view name) {
  if (name == "cpu") return torch::Device(torch::kCPU);
  if (!IsDeviceName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("device must be cpu, cuda or cuda:N, got \"", name, "\""));
  }
  const int index = CudaIndexOf(name);  // -1 = "cuda", the current device
  // Checked here, at start-up, rather than at the first .to(kCUDA): LibTorch's own error
  // then would come from the middle of loading a model.
  if (!compat::CudaAvailable()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cuda requested (device \"", name, "\") but this LibTorch has no CUDA or sees no GPU ",
        "(LibTorch ", compat::TorchVersion(),
        "; build against a CUDA LibTorch: RLHF_TORCH=python scripts/build.sh, docs/gpu.md)"));
  }
  const int64_t count = compat::CudaDeviceCount();
  if (index >= count) {
    return absl::OutOfRangeError(absl::StrCat("device \"", name, "\": this machine has ", count,
                                              " CUDA device(s), indices 0..", count - 1));
  }
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
}

torch::Device ModelDevice(const TransformerLM& model) {
  for (const auto& p : model->parameters()) return p.device();
  return torch::kCPU;
}

absl::Status MoveModelToDevice(TransformerLM& model, const torch::Device& device) {
  if (!model) return absl::InvalidArgumentError("MoveModelToDevice: null model");
  if (ModelDevice(model) == device) return absl::OkStatus();
  const std::string context = absl::StrCat("moving the model to ", device.str());
  return TorchCall([&] { model->to(device); }, context.c_str());
}

SequenceBatch SequenceBatchToDevice(const SequenceBatch& batch, const torch::Device& device) {
  SequenceBatch out = batch;
  if (batch.ids.defined() && batch.ids.device() == device) return out;
  auto move = [&](torch::Tensor& t) {
    if (t.defined()) t = t.to(device);
  };
  move(out.ids);
  move(out.attention_mask);
  move(out.response_mask);
  move(out.position_ids);
  return out;
}

}  // namespace rlhf
