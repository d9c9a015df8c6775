// rlhf_bench_linear: the thin products of decoding (a few rows times a layer's weight),
// three ways, in GFLOP/s and as a fraction of the sgemm rate measured in the same run:
//   - aten:   at::addmm on the [out, in] weight (what a plain LibTorch program does);
//   - split:  LinearForward on an [in, out] copy of the weight: the output columns split
//             across the pool, one single-threaded OpenBLAS call per chunk (the layout
//             OpenBLAS handles best; decoding used it before the kernel, for the
//             unembedding);
//   - kernel: LinearForward on the [out, in] weight as torch::nn::Linear keeps it:
//             ThinProductKernel (core/model/linear.h), no copy.
// Each product cycles through enough copies of its weight (>= 256 MiB) that every call
// reads W from memory, as a decoding step does. Best of --reps passes.
//
//   build/bin/rlhf_bench_linear [--rows=1,2,4,8,16,32,64] [--shapes=768x3072,...]
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/machine_limits.h"
#include "core/model/linear.h"
#include "core/model/threads.h"

ABSL_FLAG(std::vector<std::string>, rows,
          std::vector<std::string>({"1", "2", "4", "8", "16", "32", "64"}),
          "row counts (sequences decoded at once)");
ABSL_FLAG(std::vector<std::string>, shapes,
          std::vector<std::string>({"768x2304", "768x768", "768x3072", "3072x768", "768x50257"}),
          "weights as INxOUT (default: gpt2-small's qkv, attention out, fc, proj, unembedding)");
ABSL_FLAG(int, threads, 2, "intra-op threads (ConfigureComputeThreads, as the actor)");
ABSL_FLAG(int, reps, 3, "passes over the weight copies per way (the best counts)");

namespace rlhf {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Seconds per product: the best of `reps` passes of `product(i)` over every copy i.
template <typename F>
double BestSecondsPerCall(int copies, int reps, F product) {
  double best = 1e30;
  for (int rep = 0; rep < reps; ++rep) {
    const double t0 = Now();
    for (int i = 0; i < copies; ++i) product(i);
    best = std::min(best, (Now() - t0) / copies);
  }
  return best;
}

int Main() {
  const int threads = ConfigureComputeThreads(absl::GetFlag(FLAGS_threads));
  c10::InferenceMode inference;
  const double sgemm = bench::SgemmGflops();
  std::printf(
      "rlhf_bench_linear: threads=%d, kernel %s, BLAS split %s; sgemm 2048^3 %.1f GFLOP/s\n",
      threads, ThinProductKernelAvailable() ? "on (AVX2+FMA)" : "off (no AVX2/FMA)",
      ThinProductAvailable() ? "on" : "off (not OpenBLAS-OpenMP)", sgemm);
  std::printf("%-10s %5s %9s %9s %9s %8s %8s %8s %9s\n", "in x out", "rows", "aten", "split",
              "kernel", "%sgemm", "k/aten", "k/split", "max|err|");
  for (const std::string& shape : absl::GetFlag(FLAGS_shapes)) {
    const std::vector<std::string> parts = absl::StrSplit(shape, 'x');
    int64_t in = 0, out = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &in) ||
        !absl::SimpleAtoi(parts[1], &out) || in <= 0 || out <= 0) {
      std::fprintf(stderr, "--shapes: expected INxOUT, got '%s'\n", shape.c_str());
      return 2;
    }
    const int copies =
        static_cast<int>(std::max<int64_t>(2, (int64_t{256} << 20) / (in * out * 4)));
    std::vector<at::Tensor> w_out_in, w_in_out;
    for (int i = 0; i < copies; ++i) {
      w_out_in.push_back(at::randn({out, in}));
      w_in_out.push_back(w_out_in.back().t().contiguous());
    }
    for (const std::string& r : absl::GetFlag(FLAGS_rows)) {
      int64_t rows = 0;
      if (!absl::SimpleAtoi(r, &rows) || rows <= 0) {
        std::fprintf(stderr, "--rows: expected a positive count, got '%s'\n", r.c_str());
        return 2;
      }
      const auto x = at::randn({rows, in});
      const auto bias = at::randn({out});
      const int reps = absl::GetFlag(FLAGS_reps);
      const double aten = BestSecondsPerCall(
          copies, reps, [&](int i) { (void)at::addmm(bias, x, w_out_in[i].t()); });
      const double split = BestSecondsPerCall(copies, reps, [&](int i) {
        (void)LinearForward(x, w_in_out[i], bias, WeightLayout::kInOut);
      });
      const double kernel = BestSecondsPerCall(copies, reps, [&](int i) {
        (void)LinearForward(x, w_out_in[i], bias, WeightLayout::kOutIn);
      });
      const double err = (LinearForward(x, w_out_in[0], bias) - at::addmm(bias, x, w_out_in[0].t()))
                             .abs()
                             .max()
                             .item<double>();
      const double gflop = 2.0 * rows * in * out / 1e9;
      std::printf("%-10s %5ld %9.1f %9.1f %9.1f %7.1f%% %8.2f %8.2f %9.1e\n", shape.c_str(),
                  static_cast<long>(rows), gflop / aten, gflop / split, gflop / kernel,
                  100.0 * gflop / kernel / sgemm, aten / kernel, split / kernel, err);
      std::fflush(stdout);
    }
  }
  std::printf(
      "GFLOP/s per way; kernel = LinearForward on [out, in] (ThinProductKernel for 2+ "
      "rows where available, BLAS's sgemv for 1 row); k/aten, k/split: kernel speedups\n");
  return 0;
}

}  // namespace
}  // namespace rlhf

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return rlhf::Main();
}
