// LinearForward (core/model/linear.h): the thin paths for few rows (the column-split
// BLAS calls and ThinProductKernel) against ATen's own product (at::addmm with autograd
// on, which never takes either), for both weight layouts, with and without bias, at row
// counts on both sides of the threshold and shapes that do not divide into the split's
// blocks or the kernel's tiles; the kernel also against hand-computed values.
#include "core/model/linear.h"

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/function.h>

#include "core/model/threads.h"

namespace rlhf {
namespace {

class LinearForwardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    saved_ = at::get_num_threads();
    at::set_num_threads(2);  // big products split across two threads
  }
  void TearDown() override { at::set_num_threads(saved_); }

 private:
  int saved_ = 1;
};

// x [rows, in] times an [out, in] weight (+ bias), computed by ATen alone.
torch::Tensor Reference(const torch::Tensor& x, const torch::Tensor& w_out_in,
                        const torch::Tensor& b) {
  at::AutoGradMode grad(true);
  return (b.defined() ? at::addmm(b, x, w_out_in.t()) : at::mm(x, w_out_in.t())).detach();
}

TEST_F(LinearForwardTest, TheProcessBlasIsFound) {
  // Our binaries load OpenBLAS as libblas.so.3; without it the split path never runs.
  EXPECT_TRUE(ThinProductAvailable());
}

TEST_F(LinearForwardTest, MatchesAtenForEveryRowCountLayoutAndBias) {
  torch::manual_seed(7);
  for (int64_t rows : {int64_t{1}, int64_t{2}, int64_t{7}, int64_t{32}, kThinProductMaxRows,
                       kThinProductMaxRows + 1}) {
    for (auto [in, out] : {std::pair<int64_t, int64_t>{768, 3072}, {300, 1003}, {64, 17}}) {
      const auto x = torch::randn({rows, in});
      const auto w = torch::randn({out, in});
      const auto b = torch::randn({out});
      const auto w_in_out = w.t().contiguous();
      for (bool with_bias : {false, true}) {
        const torch::Tensor bias = with_bias ? b : torch::Tensor();
        const auto expected = Reference(x, w, bias);
        at::NoGradGuard no_grad;
        const auto out_in = LinearForward(x, w, bias, WeightLayout::kOutIn);
        const auto in_out = LinearForward(x, w_in_out, bias, WeightLayout::kInOut);
        SCOPED_TRACE(testing::Message()
                     << "rows " << rows << " in " << in << " out " << out << " bias " << with_bias);
        ASSERT_EQ(out_in.sizes(), expected.sizes());
        ASSERT_EQ(in_out.sizes(), expected.sizes());
        EXPECT_TRUE(at::allclose(out_in, expected, 1e-4, 1e-4))
            << (out_in - expected).abs().max().item<float>();
        EXPECT_TRUE(at::allclose(in_out, expected, 1e-4, 1e-4))
            << (in_out - expected).abs().max().item<float>();
      }
    }
  }
}

// The CPU's flags as the kernel reads them, from /proc/cpuinfo (not from the compiler's
// builtins the code under test uses).
bool CpuInfoHasAvx2AndFma() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    bool avx2 = false, fma = false;
    for (std::string w; words >> w;) {
      avx2 = avx2 || w == "avx2";
      fma = fma || w == "fma";
    }
    return avx2 && fma;
  }
  return false;
}

TEST_F(LinearForwardTest, KernelIsUsedWhereTheCpuHasIt) {
  EXPECT_EQ(ThinProductKernelAvailable(), CpuInfoHasAvx2AndFma());
  // Which row counts LinearForward hands it: 2-64, and 1 only without OpenBLAS's sgemv_.
  EXPECT_FALSE(ThinProductKernelTakes(0));
  EXPECT_EQ(ThinProductKernelTakes(1), CpuInfoHasAvx2AndFma() && !ThinProductAvailable());
  EXPECT_EQ(ThinProductKernelTakes(2), CpuInfoHasAvx2AndFma());
  EXPECT_EQ(ThinProductKernelTakes(kThinProductMaxRows), CpuInfoHasAvx2AndFma());
  EXPECT_FALSE(ThinProductKernelTakes(kThinProductMaxRows + 1));
}

TEST_F(LinearForwardTest, KernelMatchesAtenForEveryTileShapeAndBias) {
  if (!ThinProductKernelAvailable()) GTEST_SKIP() << "this CPU lacks AVX2 or FMA";
  torch::manual_seed(9);
  // Rows: every height of the kernel's row tiles (1-4) and their balanced splits, up to
  // the thin threshold and past it. Columns: every width of the last column tile (1-3).
  // in: multiples of 8, a tail after the vector loop, and shorter than one vector.
  for (int64_t rows :
       {int64_t{1}, int64_t{2}, int64_t{3}, int64_t{4}, int64_t{5}, int64_t{6}, int64_t{9},
        int64_t{13}, int64_t{32}, kThinProductMaxRows, kThinProductMaxRows + 1}) {
    for (auto [in, out] :
         {std::pair<int64_t, int64_t>{768, 3072}, {300, 1003}, {77, 1001}, {5, 7}}) {
      const auto x = torch::randn({rows, in});
      const auto w = torch::randn({out, in});
      const auto b = torch::randn({out});
      for (bool with_bias : {false, true}) {
        const torch::Tensor bias = with_bias ? b : torch::Tensor();
        const auto expected = Reference(x, w, bias);
        auto direct = torch::full({rows, out}, std::nanf(""));
        ThinProductKernel(x.data_ptr<float>(), rows, in, w.data_ptr<float>(), out,
                          with_bias ? b.data_ptr<float>() : nullptr, direct.data_ptr<float>());
        at::NoGradGuard no_grad;
        const auto through_linear = LinearForward(x, w, bias);
        SCOPED_TRACE(testing::Message()
                     << "rows " << rows << " in " << in << " out " << out << " bias " << with_bias);
        ASSERT_EQ(through_linear.sizes(), expected.sizes());
        EXPECT_TRUE(at::allclose(direct, expected, 1e-4, 1e-4))
            << (direct - expected).abs().max().item<float>();  // NaN: an output never written
        EXPECT_TRUE(at::allclose(through_linear, expected, 1e-4, 1e-4))
            << (through_linear - expected).abs().max().item<float>();
      }
    }
  }
}

TEST_F(LinearForwardTest, KernelOfHandComputedValues) {
  if (!ThinProductKernelAvailable()) GTEST_SKIP() << "this CPU lacks AVX2 or FMA";
  // x = [[1, 2, ..., 10], [-1, -1, ..., -1]] (in = 10: one vector of 8 and a tail of 2);
  // W [out 4, in 10] with W[n][k] = n + 1 when k == n, and 1 when k == 9; bias[n] = 100 n.
  // y[0][n] = (n + 1)(n + 1) + 10 + 100 n; y[1][n] = -(n + 1) - 1 + 100 n.
  auto x = torch::empty({2, 10});
  auto w = torch::zeros({4, 10});
  auto bias = torch::empty({4});
  for (int64_t k = 0; k < 10; ++k) {
    x[0][k] = static_cast<float>(k + 1);
    x[1][k] = -1.0f;
  }
  for (int64_t n = 0; n < 4; ++n) {
    w[n][n] = static_cast<float>(n + 1);
    w[n][9] = 1.0f;
    bias[n] = 100.0f * static_cast<float>(n);
  }
  auto y = torch::full({2, 4}, std::nanf(""));
  ThinProductKernel(x.data_ptr<float>(), 2, 10, w.data_ptr<float>(), 4, bias.data_ptr<float>(),
                    y.data_ptr<float>());
  for (int64_t n = 0; n < 4; ++n) {
    const float f = static_cast<float>(n + 1);
    EXPECT_FLOAT_EQ(y[0][n].item<float>(), f * f + 10.0f + 100.0f * n) << n;
    EXPECT_FLOAT_EQ(y[1][n].item<float>(), -f - 1.0f + 100.0f * n) << n;
  }
  // No rows: nothing written.
  auto untouched = torch::full({1, 4}, 7.0f);
  ThinProductKernel(x.data_ptr<float>(), 0, 10, w.data_ptr<float>(), 4, nullptr,
                    untouched.data_ptr<float>());
  EXPECT_TRUE(at::equal(untouched, torch::full({1, 4}, 7.0f)));
}

TEST_F(LinearForwardTest, KeepsLeadingDimsAndReadsNonContiguousInput) {
  torch::manual_seed(8);
  const auto x = torch::randn({3, 4, 96}).transpose(0, 1);  // [4, 3, 96], not contiguous
  const auto w = torch::randn({40, 96});
  const auto b = torch::randn({40});
  const auto expected = Reference(x.reshape({-1, 96}), w, b).view({4, 3, 40});
  at::NoGradGuard no_grad;
  const auto y = LinearForward(x, w, b);
  ASSERT_EQ(y.sizes(), expected.sizes());
  EXPECT_TRUE(at::allclose(y, expected, 1e-5, 1e-5));
}

TEST_F(LinearForwardTest, AutogradStillFlowsThroughTheAtenPath) {
  const auto x = torch::randn({2, 8}, torch::requires_grad());
  const auto w = torch::randn({5, 8}, torch::requires_grad());
  const auto y = LinearForward(x, w, {});
  ASSERT_TRUE(y.requires_grad());
  y.sum().backward();
  // d(sum y)/dx = column sums of W for every row.
  EXPECT_TRUE(at::allclose(x.grad(), w.detach().sum(0).expand({2, 8})));
}

// BatchedMatmul against ATen's matmul (autograd's bmm), values and gradients, in the
// layouts attention hands it: heads split out of [B, T, H, D] (not contiguous), keys as a
// transposed view, and an operand sgemm_ cannot read in place (every other column).
TEST_F(LinearForwardTest, BatchedMatmulMatchesAtenInAttentionsLayouts) {
  torch::manual_seed(11);
  struct Case {
    torch::Tensor a, b;
  };
  auto heads = [](int64_t B, int64_t T, int64_t H, int64_t D) {
    return torch::randn({B, T, H, D}).transpose(1, 2);  // [B, H, T, D]
  };
  std::vector<Case> cases = {
      {heads(3, 7, 2, 5), heads(3, 9, 2, 5).transpose(-1, -2)},  // q k^T: [3,2,7,5] x [3,2,5,9]
      {torch::randn({3, 2, 7, 9}), heads(3, 9, 2, 5)},           // p v
      {torch::randn({4, 6, 16}).slice(2, 0, 16, 2), torch::randn({4, 8, 3})},  // column stride 2
      {torch::randn({5, 1, 4}), torch::randn({5, 4, 1})},                      // 1-row, 1-column
      {torch::randn({2, 3, 1}), torch::randn({2, 1, 6})},                      // K = 1
      // Contiguous to PyTorch, with an arbitrary stride on the size-1 dim.
      {torch::randn({32}).as_strided({4, 8, 1}, {8, 1, 3}), torch::randn({4, 1, 5})},
      {torch::randn({4, 3, 2}), torch::randn({8}).as_strided({4, 2, 1}, {2, 1, 5})},
      {torch::randn({6, 128, 32}), torch::randn({6, 128, 32}).transpose(1, 2)},  // the tiny model's
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto a = cases[i].a.detach().requires_grad_(true);
    const auto b = cases[i].b.detach().requires_grad_(true);
    const auto a_ref = cases[i].a.detach().requires_grad_(true);
    const auto b_ref = cases[i].b.detach().requires_grad_(true);
    const auto y = BatchedMatmul(a, b);
    const auto y_ref = at::matmul(a_ref, b_ref);
    ASSERT_EQ(y.sizes(), y_ref.sizes()) << "case " << i;
    EXPECT_TRUE(at::allclose(y, y_ref, 1e-5, 1e-5)) << "case " << i;
    const auto w = torch::randn(y_ref.sizes());
    (y * w).sum().backward();
    (y_ref * w).sum().backward();
    EXPECT_TRUE(at::allclose(a.grad(), a_ref.grad(), 1e-5, 1e-5)) << "case " << i;
    EXPECT_TRUE(at::allclose(b.grad(), b_ref.grad(), 1e-5, 1e-5)) << "case " << i;
    at::NoGradGuard no_grad;
    EXPECT_TRUE(at::allclose(BatchedMatmul(cases[i].a, cases[i].b), y_ref, 1e-5, 1e-5))
        << "case " << i;
  }
}

TEST_F(LinearForwardTest, BatchedMatmulOfHandComputedValues) {
  // [[1, 2], [3, 4]] x [[5, 6], [7, 8]] = [[19, 22], [43, 50]]; the second matrix of the
  // batch is the first's transpose times the identity.
  const auto a = torch::tensor({1.f, 2.f, 3.f, 4.f, 1.f, 3.f, 2.f, 4.f}).view({2, 2, 2});
  const auto b = torch::tensor({5.f, 6.f, 7.f, 8.f, 1.f, 0.f, 0.f, 1.f}).view({2, 2, 2});
  const auto expected = torch::tensor({19.f, 22.f, 43.f, 50.f, 1.f, 3.f, 2.f, 4.f}).view({2, 2, 2});
  EXPECT_TRUE(at::equal(BatchedMatmul(a, b), expected));
  // The same through transposed views of stored transposes.
  const auto at_ = a.transpose(1, 2).contiguous().transpose(1, 2);
  const auto bt = b.transpose(1, 2).contiguous().transpose(1, 2);
  EXPECT_TRUE(at::equal(BatchedMatmul(at_, bt), expected));
}

// With OpenBLAS's OpenMP build and LibTorch's pool, training's products take the pooled
// path (its own autograd node); elsewhere they are ATen's.
TEST_F(LinearForwardTest, BatchedMatmulTakesThePoolWhereThereIsOne) {
  const auto a = torch::randn({4, 8, 16}, torch::requires_grad());
  const auto b = torch::randn({4, 16, 8});
  const auto y = BatchedMatmul(a, b);
  ASSERT_TRUE(y.grad_fn() != nullptr);
  const std::string node = y.grad_fn()->name();
  if (ThinProductAvailable() && ParallelForHasPool()) {
    EXPECT_NE(node.find("BatchedMatmulFunction"), std::string::npos) << node;
  } else {
    EXPECT_EQ(node.find("BatchedMatmulFunction"), std::string::npos) << node;
  }
  // Other dtypes go to ATen.
  const auto d =
      BatchedMatmul(a.detach().to(torch::kFloat64).requires_grad_(true), b.to(torch::kFloat64));
  EXPECT_EQ(std::string(d.grad_fn()->name()).find("BatchedMatmulFunction"), std::string::npos);
}

}  // namespace
}  // namespace rlhf
