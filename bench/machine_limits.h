// The machine's limits that the benchmarks report their results against, measured in the
// same run (bench/ only): the fp32 GEMM rate and the read bandwidth.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

#include <ATen/ATen.h>
#include <torch/types.h>

#include "core/model/torch_compat.h"

namespace rlhf::bench {

// GFLOP/s of one n x n x n fp32 product on `device` (n = 2048 on the CPU, 8192 on a GPU,
// which needs a larger product to saturate), the best of 8: on a shared machine the peak
// is the rate the hardware can give.
inline double SgemmGflops(torch::Device device = torch::kCPU) {
  const int64_t n = device.is_cuda() ? 8192 : 2048;
  auto a = torch::randn({n, n}).to(device);
  auto b = torch::randn({n, n}).to(device);
  auto out = torch::empty({n, n}, a.options());
  double best = 1e9;
  for (int i = 0; i < 8; ++i) {
    compat::Synchronize(device);
    const auto t0 = std::chrono::steady_clock::now();
    at::mm_out(out, a, b);
    compat::Synchronize(device);
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return 2.0 * n * n * n / best / 1e9;
}

// Read bandwidth in bytes/s: the best of 6 sums over 256 MiB, far larger than the caches.
inline double ReadBandwidthBytesPerSecond(torch::Device device = torch::kCPU) {
  auto a = torch::ones({int64_t{64} << 20}).to(device);
  double best = 1e9;
  for (int i = 0; i < 6; ++i) {
    compat::Synchronize(device);
    const auto t0 = std::chrono::steady_clock::now();
    auto s = a.sum();
    (void)s.item<float>();
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return a.numel() * 4.0 / best;
}

}  // namespace rlhf::bench
