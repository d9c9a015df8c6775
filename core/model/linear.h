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
// On a CPU with AVX2 and FMA, an [out, in] weight (kOutIn, torch::nn::Linear's layout)
// times 2 or more rows skips BLAS altogether: OpenBLAS copies the weight into its panel
// layout on every call, which for a few rows is a large share of the work.
// ThinProductKernel reads W's rows where they are: each thread takes a range of output
// columns, three at a time, and multiplies them by tiles of up to 4 rows of x as dot
// products (12 accumulators of 8 lanes, summed at the end), so W streams from memory
// once and needs no copy. At 2-16 rows it ran 1.0-2.4x the BLAS split on the best
// layout, at 32 rows 1.0-1.3x (rlhf_bench_linear; docs/benchmarks.md, "Thin products
// without BLAS"). One row stays with sgemv_, which streams W at memory bandwidth.
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

// True when the CPU has AVX2 and FMA, so thin products with an [out, in] weight run
// ThinProductKernel instead of BLAS.
bool ThinProductKernelAvailable();

// True when LinearForward, with autograd off, multiplies `rows` rows by a contiguous
// fp32 CPU weight stored [out, in] through ThinProductKernel: 2 to kThinProductMaxRows
// rows (1 too when there is no OpenBLAS-OpenMP sgemv_ to take it) on an AVX2+FMA CPU.
bool ThinProductKernelTakes(int64_t rows);

// a [..., M, K] times b [..., K, P] -> [..., M, P] (contiguous), for tensors with the same
// batch dims (no broadcasting), with autograd: the backward is two such products. On the
// CPU in fp32, with OpenBLAS's OpenMP build loaded, each thread of LibTorch's pool
// multiplies its own range of the batch's matrices with single-threaded sgemm_ calls,
// reading transposed views where they are. aten::bmm (what at::matmul runs) loops over
// the matrices with one BLAS call each, forking the pool for every small product: the
// tiny model's attention (128 products of 128x128x32 per call) ran at ~18 GFLOP/s there,
// and bmm was 29% of its training step (docs/benchmarks.md). Anything else is at::matmul.
torch::Tensor BatchedMatmul(const torch::Tensor& a, const torch::Tensor& b);

// y [M, N] = x [M, K] times w [N, K]^T (+ bias [N] when non-null), split across the
// calling thread and LibTorch's pool; every pointer is to contiguous fp32. Any M >= 0
// works (M = 0 writes nothing); it is meant for M <= kThinProductMaxRows. Requires
// ThinProductKernelAvailable().
// Exposed for its tests and benchmark.
void ThinProductKernel(const float* x, int64_t M, int64_t K, const float* w, int64_t N,
                       const float* bias, float* y);

}  // namespace rlhf
