// LinearForward (core/model/linear.h): the column-split BLAS path for few rows against
// ATen's own product (at::addmm with autograd on, which never takes that path), for both
// weight layouts, with and without bias, at row counts on both sides of the threshold
// and column counts that do not divide into the split's blocks.
#include "core/model/linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace rlhf
