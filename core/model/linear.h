// The product of the model's linear layers, y = x W^T (+ b), and of the unembedding.
//
// Decoding multiplies a few rows (one per sequence in the batch) by every weight matrix.
// OpenBLAS threads such thin products poorly: with 2 threads on rlhf's 2-core VM, a
// [8, 768] x [768, 3072] product ran at 24 GFLOP/s through at::addmm, and at 49 GFLOP/s
// when each thread multiplied the rows by its own half of W's output columns with a
// single-threaded BLAS call (at 4 rows 13 -> 31, at 32 rows 78 -> 85; docs/benchmarks.md).
// So on the CPU in fp32 with autograd off and at most kThinProductMaxRows rows,
// LinearForward splits the output columns across LibTorch's pool (ParallelFor, threads.h)
// and calls the process's BLAS (sgemm_ / sgemv_, looked up at run time like libgomp)
// once per chunk; that BLAS must be OpenBLAS's OpenMP build, which runs single-threaded
// inside the pool's parallel region (BlasSharesOpenMpPool). Every other case (more rows,
// autograd on, other dtypes or devices, another BLAS) is one ATen call, as before. Each
// output element is the same dot product either way; only the order of its sum may
// differ, within float rounding.
//
// Thread-safety: stateless; safe from any thread.
#pragma once

#include <cstdint>

#include <torch/types.h>

namespace rlhf {

// How a weight matrix is stored. kOutIn is torch::nn::Linear's [out, in] (y = x W^T);
// kInOut is its transpose [in, out] (y = x W), as the unembedding's cached copy is kept.
enum class WeightLayout { kOutIn, kInOut };

// Row counts up to which the column split is used.
constexpr int64_t kThinProductMaxRows = 64;

// y [..., out] = x [..., in] times `w` (+ `b` [out] when defined), over the last dim.
torch::Tensor LinearForward(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                            WeightLayout layout = WeightLayout::kOutIn);

// True when the process's BLAS is OpenBLAS's OpenMP build and the thin path can call its
// sgemm_ and sgemv_.
bool ThinProductAvailable();

}  // namespace rlhf
