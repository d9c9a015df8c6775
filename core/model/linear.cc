#include "core/model/linear.h"

#include <dlfcn.h>
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

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

// ThinProductKernel's pieces are compiled for AVX2 + FMA whatever the build's -march,
// and run only after ThinProductKernelAvailable() checked the CPU.
#define RLHF_TARGET_AVX2 __attribute__((target("avx2,fma")))

RLHF_TARGET_AVX2 inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// A tile is up to 4 rows of x times up to 3 rows of W: 12 accumulators, each holding 8
// lanes of one dot product, plus 3 weight vectors and 1 row vector: the 16 AVX
// registers. Named variables, not arrays: GCC kept arrays of accumulators on the stack
// and stored all twelve every iteration (half the speed).
constexpr int64_t kTileRows = 4;
constexpr int64_t kTileColumns = 3;

#define RLHF_DOT_ROW(r)                                                    \
  do {                                                                     \
    if constexpr (R > r) {                                                 \
      const __m256 xv = _mm256_loadu_ps(x + r * K + k);                    \
      acc##r##0 = _mm256_fmadd_ps(xv, w0, acc##r##0);                      \
      if constexpr (C > 1) acc##r##1 = _mm256_fmadd_ps(xv, w1, acc##r##1); \
      if constexpr (C > 2) acc##r##2 = _mm256_fmadd_ps(xv, w2, acc##r##2); \
    }                                                                      \
  } while (0)
// Lanes summed, then the K % 8 tail, then the bias.
#define RLHF_DOT_OUT(r, c)                                                       \
  do {                                                                           \
    if constexpr (R > r && C > c) {                                              \
      float v = HorizontalSum(acc##r##c);                                        \
      for (int64_t t = vector_end; t < K; ++t) v += x[r * K + t] * w[c * K + t]; \
      y[r * ldy + c] = bias != nullptr ? v + bias[c] : v;                        \
    }                                                                            \
  } while (0)

// y [R, C] (leading dimension ldy) = x [R, K] times w [C, K]^T (+ bias [C]).
template <int R, int C>
RLHF_TARGET_AVX2 void DotTile(const float* x, int64_t K, const float* w, const float* bias,
                              float* y, int64_t ldy) {
  static_assert(R >= 1 && R <= kTileRows && C >= 1 && C <= kTileColumns, "tile shape");
  __m256 acc00 = _mm256_setzero_ps(), acc01 = acc00, acc02 = acc00, acc10 = acc00, acc11 = acc00,
         acc12 = acc00, acc20 = acc00, acc21 = acc00, acc22 = acc00, acc30 = acc00, acc31 = acc00,
         acc32 = acc00;
  const int64_t vector_end = K - K % 8;
  for (int64_t k = 0; k < vector_end; k += 8) {
    const __m256 w0 = _mm256_loadu_ps(w + k);
    __m256 w1 = w0, w2 = w0;
    if constexpr (C > 1) w1 = _mm256_loadu_ps(w + K + k);
    if constexpr (C > 2) w2 = _mm256_loadu_ps(w + 2 * K + k);
    RLHF_DOT_ROW(0);
    RLHF_DOT_ROW(1);
    RLHF_DOT_ROW(2);
    RLHF_DOT_ROW(3);
  }
  RLHF_DOT_OUT(0, 0);
  RLHF_DOT_OUT(0, 1);
  RLHF_DOT_OUT(0, 2);
  RLHF_DOT_OUT(1, 0);
  RLHF_DOT_OUT(1, 1);
  RLHF_DOT_OUT(1, 2);
  RLHF_DOT_OUT(2, 0);
  RLHF_DOT_OUT(2, 1);
  RLHF_DOT_OUT(2, 2);
  RLHF_DOT_OUT(3, 0);
  RLHF_DOT_OUT(3, 1);
  RLHF_DOT_OUT(3, 2);
}
#undef RLHF_DOT_ROW
#undef RLHF_DOT_OUT

template <int R>
RLHF_TARGET_AVX2 void DotTileOfWidth(const float* x, int64_t K, const float* w, const float* bias,
                                     int64_t cols, float* y, int64_t ldy) {
  switch (cols) {
    case 3:
      DotTile<R, 3>(x, K, w, bias, y, ldy);
      break;
    case 2:
      DotTile<R, 2>(x, K, w, bias, y, ldy);
      break;
    default:
      DotTile<R, 1>(x, K, w, bias, y, ldy);
      break;
  }
}

// All M rows of x times `cols` (<= 3) rows of W, in ceil(M / 4) row tiles of as equal a
// height as possible (a tile of 3-4 rows keeps 9-12 dot products in flight, enough to
// cover the FMA latency; 6 rows run as 3 + 3, not 4 + 2). The W rows stay in L1 while
// every tile passes over them.
RLHF_TARGET_AVX2 void DotColumns(const float* x, int64_t M, int64_t K, const float* w,
                                 const float* bias, int64_t cols, float* y, int64_t ldy) {
  const int64_t tiles = (M + kTileRows - 1) / kTileRows, base = M / tiles, taller = M % tiles;
  int64_t r = 0;
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t height = base + (t < taller ? 1 : 0);
    const float* xr = x + r * K;
    float* yr = y + r * ldy;
    switch (height) {
      case 4:
        DotTileOfWidth<4>(xr, K, w, bias, cols, yr, ldy);
        break;
      case 3:
        DotTileOfWidth<3>(xr, K, w, bias, cols, yr, ldy);
        break;
      case 2:
        DotTileOfWidth<2>(xr, K, w, bias, cols, yr, ldy);
        break;
      default:
        DotTileOfWidth<1>(xr, K, w, bias, cols, yr, ldy);
        break;
    }
    r += height;
  }
}
#undef RLHF_TARGET_AVX2

// How one operand's matrices are laid out for a column-major sgemm_ that computes
// C^T = B^T A^T (the row-major product C = A B): a row-major matrix with unit column
// stride is its own transpose to BLAS ('N'); a transposed view (unit row stride) is 'T'.
struct BlasOperand {
  char op = 'N';
  int ld = 0;
};

// The operand's layout if sgemm_ can read it in place. The stride of a dim of size 1 is
// never used, and PyTorch leaves it arbitrary even in a contiguous tensor (a [4, 8, 1]
// with strides [8, 1, 3] is contiguous): it is read as the packed one, so every
// contiguous tensor qualifies.
std::optional<BlasOperand> AsBlasOperand(const torch::Tensor& t) {
  const int64_t rows = t.size(-2), cols = t.size(-1);
  const int64_t col_stride = cols == 1 ? 1 : t.stride(-1);
  const int64_t row_stride = rows == 1 ? std::max<int64_t>(1, cols) : t.stride(-2);
  if (col_stride == 1 && row_stride >= std::max<int64_t>(1, cols) && FitsBlasInt(row_stride)) {
    return BlasOperand{'N', static_cast<int>(row_stride)};
  }
  if (row_stride == 1 && col_stride >= std::max<int64_t>(1, rows) && FitsBlasInt(col_stride)) {
    return BlasOperand{'T', static_cast<int>(col_stride)};
  }
  return std::nullopt;
}

// The element offset of each matrix of `t` (batch dims flattened in row-major order).
std::vector<int64_t> MatrixOffsets(const torch::Tensor& t, int64_t count) {
  std::vector<int64_t> offsets(static_cast<size_t>(count));
  const int64_t batch_dims = t.dim() - 2;
  for (int64_t i = 0; i < count; ++i) {
    int64_t rest = i, offset = 0;
    for (int64_t d = batch_dims - 1; d >= 0; --d) {
      offset += (rest % t.size(d)) * t.stride(d);
      rest /= t.size(d);
    }
    offsets[static_cast<size_t>(i)] = offset;
  }
  return offsets;
}

bool BatchedMatmulInPool(const torch::Tensor& a, const torch::Tensor& b) {
  return LoadedBlas().sgemm != nullptr && ParallelForHasPool() && a.is_cpu() && b.is_cpu() &&
         a.scalar_type() == torch::kFloat32 && b.scalar_type() == torch::kFloat32 && a.dim() >= 3 &&
         a.dim() == b.dim() &&
         a.sizes().slice(0, a.dim() - 2).equals(b.sizes().slice(0, b.dim() - 2)) &&
         a.size(-1) == b.size(-2) && a.numel() > 0 && b.numel() > 0 && FitsBlasInt(a.size(-2)) &&
         FitsBlasInt(a.size(-1)) && FitsBlasInt(b.size(-1));
}

// The product without autograd; BatchedMatmulInPool(a, b) holds.
torch::Tensor BatchedProduct(torch::Tensor a, torch::Tensor b) {
  std::optional<BlasOperand> la = AsBlasOperand(a), lb = AsBlasOperand(b);
  if (!la) {
    a = a.contiguous();
    la = AsBlasOperand(a);  // set: every contiguous tensor qualifies
  }
  if (!lb) {
    b = b.contiguous();
    lb = AsBlasOperand(b);
  }
  const int64_t M = a.size(-2), K = a.size(-1), P = b.size(-1);
  auto sizes = a.sizes().vec();
  sizes.back() = P;
  auto c = at::empty(sizes, a.options());
  const int64_t count = c.numel() / (M * P);
  const std::vector<int64_t> a_offsets = MatrixOffsets(a, count),
                             b_offsets = MatrixOffsets(b, count);
  const float* a_data = a.data_ptr<float>();
  const float* b_data = b.data_ptr<float>();
  float* c_data = c.data_ptr<float>();
  const Blas& blas = LoadedBlas();
  // Inside ParallelFor's region OpenBLAS runs single-threaded (omp_in_parallel).
  ParallelFor(0, count, /*work_per_item=*/M * K * P, [&](int64_t i0, int64_t i1) {
    const int m = static_cast<int>(P), n = static_cast<int>(M), k = static_cast<int>(K);
    const float one = 1.0f, zero = 0.0f;
    for (int64_t i = i0; i < i1; ++i) {
      blas.sgemm(&lb->op, &la->op, &m, &n, &k, &one, b_data + b_offsets[static_cast<size_t>(i)],
                 &lb->ld, a_data + a_offsets[static_cast<size_t>(i)], &la->ld, &zero,
                 c_data + i * M * P, &m);
    }
  });
  return c;
}

class BatchedMatmulFunction : public torch::autograd::Function<BatchedMatmulFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& a,
                               const torch::Tensor& b) {
    ctx->save_for_backward({a, b});
    return BatchedProduct(a, b);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& a = saved[0];
    const torch::Tensor& b = saved[1];
    const torch::Tensor& g = grads[0];
    torch::Tensor da, db;
    if (ctx->needs_input_grad(0)) da = BatchedProduct(g, b.transpose(-1, -2));
    if (ctx->needs_input_grad(1)) db = BatchedProduct(a.transpose(-1, -2), g);
    return {da, db};
  }
};

}  // namespace

torch::Tensor BatchedMatmul(const torch::Tensor& a, const torch::Tensor& b) {
  if (!BatchedMatmulInPool(a, b)) return at::matmul(a, b);
  if (at::GradMode::is_enabled() && (a.requires_grad() || b.requires_grad())) {
    return BatchedMatmulFunction::apply(a, b);
  }
  return BatchedProduct(a, b);
}

bool ThinProductAvailable() { return LoadedBlas().sgemm != nullptr; }

bool ThinProductKernelAvailable() {
  static const bool available = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return available;
}

bool ThinProductKernelTakes(int64_t rows) {
  // One row is BLAS's sgemv where it is there: GEMV streams W at memory bandwidth
  // already, and the kernel's tiles of one row were no faster (docs/benchmarks.md).
  return rows >= 1 && rows <= kThinProductMaxRows && ThinProductKernelAvailable() &&
         (rows >= 2 || !ThinProductAvailable());
}

void ThinProductKernel(const float* x, int64_t M, int64_t K, const float* w, int64_t N,
                       const float* bias, float* y) {
  if (M <= 0 || N <= 0) return;  // nothing to write (and no row tiles to size)
  const int64_t column_tiles = (N + kTileColumns - 1) / kTileColumns;
  // Each thread takes a contiguous range of W's rows, so W streams from memory once.
  ParallelFor(0, column_tiles, /*work_per_item=*/kTileColumns * M * K, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n0 = t * kTileColumns;
      DotColumns(x, M, K, w + n0 * K, bias != nullptr ? bias + n0 : nullptr,
                 std::min(kTileColumns, N - n0), y + n0, N);
    }
  });
}

torch::Tensor LinearForward(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                            WeightLayout layout) {
  const auto x2 = x.reshape({-1, x.size(-1)});
  const int64_t M = x2.size(0), K = x2.size(1);
  const int64_t N = layout == WeightLayout::kOutIn ? w.size(0) : w.size(1);
  auto sizes = x.sizes().vec();
  sizes.back() = N;
  const bool kernel = layout == WeightLayout::kOutIn && ThinProductKernelTakes(M);
  const bool thin = M >= 1 && M <= kThinProductMaxRows && (kernel || ThinProductAvailable()) &&
                    !at::GradMode::is_enabled() && x2.is_cpu() && w.is_cpu() &&
                    x2.scalar_type() == torch::kFloat32 && w.scalar_type() == torch::kFloat32 &&
                    w.is_contiguous() &&
                    (!b.defined() || (b.is_cpu() && b.scalar_type() == torch::kFloat32)) &&
                    FitsBlasInt(N) && FitsBlasInt(K) && FitsBlasInt(M);
  if (thin) {
    const auto xc = x2.contiguous();
    const auto bc = b.defined() ? b.contiguous() : torch::Tensor();
    auto y = at::empty({M, N}, x2.options());
    if (kernel) {
      ThinProductKernel(xc.data_ptr<float>(), M, K, w.data_ptr<float>(), N,
                        bc.defined() ? bc.data_ptr<float>() : nullptr, y.data_ptr<float>());
      return y.view(sizes);
    }
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
