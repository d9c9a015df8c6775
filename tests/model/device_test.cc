// The device option (core/model/device.h, core/util/device_name.h) and the autocast guard
// of the compatibility header (core/model/torch_compat.h). On this project's CI LibTorch
// is CPU-only, so "cuda" must be refused up front with a message that says why; on a CUDA
// build the same test checks that it is accepted instead.
#include "core/model/device.h"

#include <string>

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/optim/adamw.h>

#include "core/model/compute_dtype.h"
#include "core/model/torch_compat.h"
#include "core/util/device_name.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tiny_model.h"

namespace rlhf {
namespace {

using ::rlhf::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

TEST(DeviceName, SyntaxOnly) {
  for (const char* ok : {"cpu", "cuda", "cuda:0", "cuda:7", "cuda:123"}) {
    EXPECT_TRUE(IsDeviceName(ok)) << ok;
  }
  for (const char* bad : {"", "gpu", "CPU", "cuda:", "cuda:-1", "cuda:+1", "cuda: 1", "cuda:1x",
                          "cuda:1234", "cpu:0", "mps", " cuda"}) {
    EXPECT_FALSE(IsDeviceName(bad)) << "'" << bad << "'";
  }
  EXPECT_EQ(CudaIndexOf("cuda:3"), 3);
  EXPECT_EQ(CudaIndexOf("cuda"), -1);
  EXPECT_EQ(CudaIndexOf("cpu"), -1);
}

TEST(ParseDevice, CpuAndBadStrings) {
  auto cpu = ParseDevice("cpu");
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_TRUE(cpu->is_cpu());
  EXPECT_THAT(ParseDevice("gpu").status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("device must be cpu, cuda or cuda:N, got \"gpu\"")));
  EXPECT_THAT(ParseDevice("cuda:x").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"cuda:x\"")));
}

TEST(ParseDevice, CudaIsRefusedWithTheReasonOrAccepted) {
  if (!compat::CudaAvailable()) {
    for (const char* name : {"cuda", "cuda:0", "cuda:1"}) {
      EXPECT_THAT(ParseDevice(name).status(),
                  StatusIs(absl::StatusCode::kFailedPrecondition,
                           AllOf(HasSubstr("cuda requested"), HasSubstr("has no CUDA"),
                                 HasSubstr(compat::TorchVersion()), HasSubstr("docs/gpu.md"))))
          << name;
    }
    return;
  }
  auto cuda = ParseDevice("cuda:0");
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  EXPECT_TRUE(cuda->is_cuda());
  EXPECT_EQ(cuda->index(), 0);
  const std::string past = "cuda:" + std::to_string(compat::CudaDeviceCount());
  EXPECT_THAT(ParseDevice(past).status(), StatusIs(absl::StatusCode::kOutOfRange, HasSubstr(past)));
}

TEST(Device, ModelAndBatchMoves) {
  TransformerLM model = testing::TinyModel(1);
  EXPECT_TRUE(ModelDevice(model).is_cpu());
  ASSERT_TRUE(MoveModelToDevice(model, torch::kCPU).ok());
  EXPECT_TRUE(ModelDevice(model).is_cpu());
  SequenceBatchOptions o;
  auto batch = MakeSequenceBatch({{1, 2, 3}, {4}}, {{5}, {6, 7}}, o);
  ASSERT_TRUE(batch.ok());
  const SequenceBatch moved = SequenceBatchToDevice(*batch, torch::kCPU);
  EXPECT_TRUE(at::equal(moved.ids, batch->ids));
  EXPECT_TRUE(at::equal(moved.response_mask, batch->response_mask));
  EXPECT_EQ(moved.prompt_lengths, batch->prompt_lengths);
  EXPECT_EQ(moved.response_lengths, batch->response_lengths);
  TransformerLM null_model{nullptr};
  EXPECT_THAT(MoveModelToDevice(null_model, torch::kCPU),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("null")));
}

TEST(AutocastGuard, Bf16MatmulsInsideAndStateRestoredAfter) {
  const at::Tensor a = at::randn({4, 8});
  const at::Tensor b = at::randn({8, 3});
  EXPECT_FALSE(compat::internal::AutocastEnabled(c10::DeviceType::CPU));
  const at::ScalarType dtype_before = compat::internal::AutocastDtype(c10::DeviceType::CPU);
  at::Tensor inside, nested;
  {
    compat::AutocastGuard guard(torch::kCPU, at::kBFloat16);
    EXPECT_TRUE(compat::internal::AutocastEnabled(c10::DeviceType::CPU));
    inside = at::mm(a, b);
    {
      compat::AutocastGuard off(torch::kCPU, at::kFloat);  // fp32: a no-op
      nested = at::mm(a, b);
    }
    EXPECT_TRUE(compat::internal::AutocastEnabled(c10::DeviceType::CPU));
  }
  EXPECT_EQ(inside.scalar_type(), at::kBFloat16);
  EXPECT_EQ(nested.scalar_type(), at::kBFloat16);
  // The same product with the inputs rounded to bf16 by hand (fp32 accumulation is at
  // least as exact as LibTorch's bf16 kernel, so allow one bf16 rounding of the result).
  const at::Tensor ref =
      at::mm(a.to(at::kBFloat16).to(at::kFloat), b.to(at::kBFloat16).to(at::kFloat));
  EXPECT_TRUE(at::allclose(inside.to(at::kFloat), ref, /*rtol=*/1.0 / 128, /*atol=*/1e-2));
  EXPECT_FALSE(compat::internal::AutocastEnabled(c10::DeviceType::CPU));
  EXPECT_EQ(compat::internal::AutocastDtype(c10::DeviceType::CPU), dtype_before);
  EXPECT_EQ(at::mm(a, b).scalar_type(), at::kFloat);
}

TEST(TorchCompat, OptimizerStateKeyIsTheOneLibTorchUses) {
  // After one AdamW step LibTorch has stored the parameter's state under its own key;
  // our key must find it (the trainers' checkpoint export/import rely on it).
  at::Tensor w = at::ones({3}).requires_grad_(true);
  torch::optim::AdamW opt({w}, torch::optim::AdamWOptions(0.1));
  (w * w).sum().backward();
  opt.step();
  EXPECT_EQ(opt.state().size(), 1u);
  EXPECT_EQ(opt.state().count(compat::OptimizerStateKey(w)), 1u);
  at::Tensor other = at::ones({3});
  EXPECT_EQ(opt.state().count(compat::OptimizerStateKey(other)), 0u);
}

TEST(LoadModelDevice, Fp16IsCheckedOnTheTargetDevice) {
  ModelLoadOptions o;
  o.compute_dtype = torch::kFloat16;
  o.device = torch::kCPU;
  // LibTorch 1.13 has no fp16 CPU kernels: refused before reading anything.
  auto loaded = LoadModel("/nonexistent-dir", o);
  if (!CheckComputeDtype(torch::kFloat16, torch::kCPU).ok()) {
    EXPECT_THAT(loaded.status(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cpu")));
  } else {
    EXPECT_FALSE(loaded.ok());  // then the missing directory is the error
  }
}

}  // namespace
}  // namespace rlhf
