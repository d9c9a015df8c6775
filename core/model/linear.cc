#include "core/model/linear.h"

#include <dlfcn.h>

#include <cstring>
#include <limits>

#include <ATen/ATen.h>

#include "core/model/threads.h"

namespace rlhf {
namespace {

// Fortran BLAS entry points (LP64: 32-bit ints), as OpenBLAS and the reference BLAS
// export them.
using SgemmFn = void (*)(const char* transa, const char* transb, const int* m, const int* n,
                         const int* k, const float* alpha, const float* a, const int* lda,
                         const float* b, const int* ldb, const float* beta, float* c,
                         const int* ldc);
using SgemvFn = void (*)(const char* trans, const int* m, const int* n, const float* alpha,
                         const float* a, const int* lda, const float* x, const int* incx,
                         const float* beta, float* y, const int* incy);

struct Blas {
  SgemmFn sgemm = nullptr;
  SgemvFn sgemv = nullptr;
};

// The BLAS LibTorch loaded (libblas.so.3 is one of its dependencies, so its symbols are
// in the global scope), when it is OpenBLAS's OpenMP build: that one runs single-threaded
// inside a parallel region. Any other (the pthread build would start its own threads from
// each chunk) is left to ATen. Looked up once.
const Blas& LoadedBlas() {
  static const Blas blas = [] {
    Blas b;
    if (!BlasSharesOpenMpPool()) return b;
    b.sgemm = reinterpret_cast<SgemmFn>(::dlsym(RTLD_DEFAULT, "sgemm_"));
    b.sgemv = reinterpret_cast<SgemvFn>(::dlsym(RTLD_DEFAULT, "sgemv_"));
    if (b.sgemm == nullptr || b.sgemv == nullptr) b = Blas{};
    return b;
  }();
  return blas;
}

// Columns are handed out in blocks of this many, so a chunk boundary never splits
// OpenBLAS's register blocking of the output.
constexpr int64_t kColumnBlock = 16;

bool FitsBlasInt(int64_t v) { return v <= std::numeric_limits<int>::max(); }

// y [M, N] = x [M, K] times w, every tensor contiguous fp32 on the CPU; BLAS is
// column-major, so it computes y^T = op(w) x^T. Called inside ParallelFor, where
// OpenBLAS runs single-threaded (it checks omp_in_parallel).
void ThinProduct(const float* x, int64_t M, int64_t K, const float* w, WeightLayout layout,
                 int64_t N, const float* bias, float* y) {
  const Blas& blas = LoadedBlas();
  const int64_t blocks = (N + kColumnBlock - 1) / kColumnBlock;
  ParallelFor(0, blocks, /*work_per_item=*/kColumnBlock * M * K, [&](int64_t b0, int64_t b1) {
    const int64_t n0 = b0 * kColumnBlock, n1 = std::min(N, b1 * kColumnBlock);
    const int nc = static_cast<int>(n1 - n0), m = static_cast<int>(M), k = static_cast<int>(K),
              ldy = static_cast<int>(N), one_i = 1;
    const float one = 1.0f;
    const float beta = bias != nullptr ? 1.0f : 0.0f;
    if (bias != nullptr) {
      for (int64_t r = 0; r < M; ++r) std::memcpy(y + r * N + n0, bias + n0, nc * sizeof(float));
    }
    if (layout == WeightLayout::kOutIn) {  // w [N, K]: rows n0..n1 are a K x nc block
      const float* a = w + n0 * K;
      if (M == 1) {
        blas.sgemv("T", &k, &nc, &one, a, &k, x, &one_i, &beta, y + n0, &one_i);
      } else {
        blas.sgemm("T", "N", &nc, &m, &k, &one, a, &k, x, &k, &beta, y + n0, &ldy);
      }
    } else {  // w [K, N]: columns n0..n1 are an nc x K block with leading dimension N
      const float* a = w + n0;
      if (M == 1) {
        blas.sgemv("N", &nc, &k, &one, a, &ldy, x, &one_i, &beta, y + n0, &one_i);
      } else {
        blas.sgemm("N", "N", &nc, &m, &k, &one, a, &ldy, x, &k, &beta, y + n0, &ldy);
      }
    }
  });
}

}  // namespace

bool ThinProductAvailable() { return LoadedBlas().sgemm != nullptr; }

torch::Tensor LinearForward(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                            WeightLayout layout) {
  const auto x2 = x.reshape({-1, x.size(-1)});
  const int64_t M = x2.size(0), K = x2.size(1);
  const int64_t N = layout == WeightLayout::kOutIn ? w.size(0) : w.size(1);
  auto sizes = x.sizes().vec();
  sizes.back() = N;
  const bool thin = M >= 1 && M <= kThinProductMaxRows && ThinProductAvailable() &&
                    !at::GradMode::is_enabled() && x2.is_cpu() && w.is_cpu() &&
                    x2.scalar_type() == torch::kFloat32 && w.scalar_type() == torch::kFloat32 &&
                    w.is_contiguous() &&
                    (!b.defined() || (b.is_cpu() && b.scalar_type() == torch::kFloat32)) &&
                    FitsBlasInt(N) && FitsBlasInt(K) && FitsBlasInt(M);
  if (thin) {
    const auto xc = x2.contiguous();
    const auto bc = b.defined() ? b.contiguous() : torch::Tensor();
    auto y = at::empty({M, N}, x2.options());
    ThinProduct(xc.data_ptr<float>(), M, K, w.data_ptr<float>(), layout, N,
                bc.defined() ? bc.data_ptr<float>() : nullptr, y.data_ptr<float>());
    return y.view(sizes);
  }
  // The weight as [out, in] and as [in, out]: views, no copy.
  const torch::Tensor w_out_in = layout == WeightLayout::kOutIn ? w : w.t();
  const torch::Tensor w_in_out = w_out_in.t();
  torch::Tensor y;
  if (M == 1 && x2.is_cpu() && x2.scalar_type() == torch::kFloat32) {
    // One row: GEMV streams W once at memory bandwidth, where OpenBLAS's GEMM with M = 1
    // packs W first and runs 3-6x slower (768x3072: 94 us vs 608 us; the 50257x768
    // unembedding: 6.1 ms vs 17.9 ms; docs/benchmarks.md).
    const auto row = x2.select(0, 0);
    y = (b.defined() ? at::addmv(b, w_out_in, row) : at::mv(w_out_in, row)).unsqueeze(0);
  } else {
    y = b.defined() ? at::addmm(b, x2, w_in_out) : at::mm(x2, w_in_out);
  }
  return y.view(sizes);
}

}  // namespace rlhf
