// Every LibTorch 1.13-vs-2.x difference this project's code hits, in one place (issue 20).
// The tree builds against Debian's LibTorch 1.13 (CPU) and against the LibTorch inside a
// PyTorch 2.x installation (CUDA; scripts/build.sh with RLHF_TORCH=python). Code outside
// this header does not test TORCH_VERSION_* itself.
//
//   autocast      1.13 has per-device-family setters (set_cpu_enabled / set_enabled for
//                 CUDA, set_autocast_cpu_dtype / set_autocast_gpu_dtype); 2.4 replaced
//                 them with set_autocast_enabled(DeviceType, bool) and
//                 set_autocast_dtype(DeviceType, dtype) and deprecated the old ones
//                 (a warning, which -Werror makes an error). AutocastGuard hides both.
//   optimizer     torch::optim::Optimizer::state() is keyed by the parameter's
//                 TensorImpl* printed as a string in 1.13 and by the void* itself in 2.x:
//                 OptimizerStateKey(param) builds whichever key the linked LibTorch uses.
//   c10d          ProcessGroupGloo/NCCL derive from c10d::ProcessGroup in 1.13 and from
//                 c10d::Backend in 2.x: RLHF_C10D_BACKEND_IS_PROCESS_GROUP.
//   CUDA          torch::cuda::is_available() / device_count() exist in both (they answer
//                 false / 0 on a CPU-only build); CudaAvailable() is the one caller.
//
// Thread-safety: autocast state is thread-local in LibTorch; an AutocastGuard affects the
// constructing thread only and must be destroyed on it. The rest are pure functions.
#pragma once

#include <sstream>
#include <string>
#include <type_traits>
#include <utility>

#include <ATen/autocast_mode.h>
#include <torch/cuda.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>
#include <torch/version.h>

#define RLHF_TORCH_VERSION_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||               \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

// 2.0 split c10d::Backend (what ProcessGroupGloo / ProcessGroupNCCL are) from
// c10d::ProcessGroup (a dispatcher over backends).
#define RLHF_C10D_BACKEND_IS_PROCESS_GROUP (!RLHF_TORCH_VERSION_AT_LEAST(2, 0))

namespace rlhf::compat {

// "1.13.0" style version of the LibTorch headers compiled against.
inline std::string TorchVersion() {
  std::ostringstream s;
  s << TORCH_VERSION_MAJOR << "." << TORCH_VERSION_MINOR << "." << TORCH_VERSION_PATCH;
  return s.str();
}

// Waits for the work queued on a CUDA device (timing; no-op on the CPU, whose ops are
// synchronous).
inline void Synchronize(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.has_index() ? device.index() : -1);
}

// True when this LibTorch was built with CUDA and a CUDA device is visible.
inline bool CudaAvailable() { return torch::cuda::is_available(); }
inline int64_t CudaDeviceCount() { return static_cast<int64_t>(torch::cuda::device_count()); }

// The key torch::optim::Optimizer::state() uses for parameter `p`.
using OptimizerStateMap = std::decay_t<decltype(std::declval<torch::optim::Optimizer&>().state())>;
using OptimizerStateKeyType = typename OptimizerStateMap::key_type;
namespace internal {
// A template so that only the branch of the linked LibTorch's key type is instantiated.
template <typename Key>
Key OptimizerStateKeyAs(const torch::Tensor& p) {
  if constexpr (std::is_same_v<Key, std::string>) {
    // LibTorch 1.13 keys by c10::guts::to_string(TensorImpl*), i.e. operator<< of the
    // pointer (c10/util/string_utils.h is gone in 2.x, so spell it out).
    std::ostringstream s;
    s << static_cast<const void*>(p.unsafeGetTensorImpl());
    return s.str();
  } else {
    return static_cast<Key>(static_cast<void*>(p.unsafeGetTensorImpl()));
  }
}
}  // namespace internal

inline OptimizerStateKeyType OptimizerStateKey(const torch::Tensor& p) {
  return internal::OptimizerStateKeyAs<OptimizerStateKeyType>(p);
}

namespace internal {
inline bool AutocastEnabled(c10::DeviceType type) {
#if RLHF_TORCH_VERSION_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(type);
#else
  return type == c10::DeviceType::CPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
#endif
}
inline void SetAutocastEnabled(c10::DeviceType type, bool enabled) {
#if RLHF_TORCH_VERSION_AT_LEAST(2, 4)
  at::autocast::set_autocast_enabled(type, enabled);
#else
  if (type == c10::DeviceType::CPU) {
    at::autocast::set_cpu_enabled(enabled);
  } else {
    at::autocast::set_enabled(enabled);
  }
#endif
}
inline at::ScalarType AutocastDtype(c10::DeviceType type) {
#if RLHF_TORCH_VERSION_AT_LEAST(2, 4)
  return at::autocast::get_autocast_dtype(type);
#else
  return type == c10::DeviceType::CPU ? at::autocast::get_autocast_cpu_dtype()
                                      : at::autocast::get_autocast_gpu_dtype();
#endif
}
inline void SetAutocastDtype(c10::DeviceType type, at::ScalarType dtype) {
#if RLHF_TORCH_VERSION_AT_LEAST(2, 4)
  at::autocast::set_autocast_dtype(type, dtype);
#else
  if (type == c10::DeviceType::CPU) {
    at::autocast::set_autocast_cpu_dtype(dtype);
  } else {
    at::autocast::set_autocast_gpu_dtype(dtype);
  }
#endif
}
}  // namespace internal

// The dtype a matmul of `dtype` operands on `device` runs in under the calling thread's
// autocast state: the autocast dtype while autocast is on for that device type and the
// operands are fp32, else `dtype`. For code that must repeat a product later (a custom
// backward) in the dtype the forward used.
inline at::ScalarType AutocastMatmulType(const torch::Device& device, at::ScalarType dtype) {
  const c10::DeviceType type =
      device.type() == c10::DeviceType::CUDA ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
  if (dtype != at::kFloat || !internal::AutocastEnabled(type)) return dtype;
  return internal::AutocastDtype(type);
}

// RAII mixed precision for the ops run on `device` while it lives (torch.autocast in
// Python): matmuls and linears run in `dtype` (bf16 or fp16) on low-precision copies of
// fp32 weights; reductions, norms and softmax stay fp32 where LibTorch's autocast lists
// say so. Gradients flow back into the fp32 parameters, so master weights and optimizer
// state stay fp32. `enabled` false, or dtype fp32, makes it a no-op. Restores the
// previous state (enabled flag and dtype) on destruction and, when the outermost guard
// exits, frees the cast-weight cache (as torch.autocast's __exit__ does).
class AutocastGuard {
 public:
  AutocastGuard(const torch::Device& device, at::ScalarType dtype, bool enabled = true)
      : type_(device.type() == c10::DeviceType::CUDA ? c10::DeviceType::CUDA
                                                     : c10::DeviceType::CPU),
        active_(enabled && dtype != at::kFloat) {
    if (!active_) return;
    prev_enabled_ = internal::AutocastEnabled(type_);
    prev_dtype_ = internal::AutocastDtype(type_);
    internal::SetAutocastEnabled(type_, true);
    internal::SetAutocastDtype(type_, dtype);
    at::autocast::increment_nesting();
  }
  ~AutocastGuard() {
    if (!active_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    internal::SetAutocastEnabled(type_, prev_enabled_);
    internal::SetAutocastDtype(type_, prev_dtype_);
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType type_;
  bool active_;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kFloat;
};

}  // namespace rlhf::compat
