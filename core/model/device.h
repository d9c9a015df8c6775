// The device a process runs its models on (issue 20): "cpu" (the default, what CI runs),
// "cuda" (the current CUDA device) or "cuda:N". One option per process (the job config's
// model.device, each binary's --device); the process moves its models there once after
// loading, moves each batch of ids and masks to the model's device, and copies back only
// what leaves the process (token ids, log-probs, scores) with .to(kCPU) at that boundary.
//
// Thread-safety: pure functions; MoveModelToDevice mutates the model (no concurrent use).
#pragma once

#include <string>

#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/model/logprobs.h"
#include "core/model/model.h"

namespace rlhf {

// The binaries' --device default (the job config's default is the same, set in
// services/config/config.cc, which is LibTorch-free).
inline constexpr const char kDefaultDevice[] = "cpu";

// "cpu" | "cuda" | "cuda:N" (N a decimal index; syntax: core/util/device_name.h, which
// the config loader shares) -> torch::Device. InvalidArgument for any
// other string ("device must be cpu, cuda or cuda:N, got \"gpu\""), FailedPrecondition for
// "cuda" on a LibTorch without CUDA or without a visible GPU ("cuda requested but this
// LibTorch has no CUDA ..."), and OutOfRange for an index >= the number of GPUs.
absl::StatusOr<torch::Device> ParseDevice(absl::string_view name);

// The device of the model's parameters (kCPU for a model without parameters).
torch::Device ModelDevice(const TransformerLM& model);

// Moves every parameter and buffer of `model` to `device` (no-op when already there).
absl::Status MoveModelToDevice(TransformerLM& model, const torch::Device& device);

// The batch's tensors on `device` (lengths unchanged). No copy when already there.
SequenceBatch SequenceBatchToDevice(const SequenceBatch& batch, const torch::Device& device);

}  // namespace rlhf
