// The syntax of a device option ("cpu", "cuda", "cuda:N"), LibTorch-free so that the job
// config loader (services/config) and core/model/device.h (which also probes CUDA) accept
// exactly the same strings.
//
// Thread-safety: pure functions.
#pragma once

#include "absl/strings/string_view.h"

namespace rlhf {

// True for "cpu", "cuda" and "cuda:N" (N: 1 to 3 decimal digits). Case-sensitive, as
// LibTorch's own device strings are.
bool IsDeviceName(absl::string_view name);

// The N of "cuda:N"; -1 for "cuda" (the current device) and for anything that is not a
// CUDA device name.
int CudaIndexOf(absl::string_view name);

}  // namespace rlhf
