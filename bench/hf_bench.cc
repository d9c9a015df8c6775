// rlhf_bench_hf: loading a HuggingFace checkpoint of a 124M GPT-2-shaped model, and the
// forward speed of the imported model vs the same shape built natively (design.md §7:
// ratios from one run).
//   - load seconds and peak extra memory (VmHWM growth beyond the model's own parameter
//     bytes) as a fraction of the safetensors file size, for the HF import (one tensor at
//     a time) and, for contrast, our own checkpoint format (whole-file read). Each load
//     runs in a fresh child process (this binary re-executed) so the peaks are its own;
//   - export seconds and peak extra memory (VmHWM growth while ExportHfDirectory runs on a
//     model built in a fresh child) as a fraction of the written files' size: the shards
//     are streamed one tensor at a time, so this should be far below 1;
//   - forward tokens/s of the imported model / the native model (same kernels expected: 1.0).
//
//   rlhf_bench_hf [--preset=gpt2-small] [--threads=2] [--dir=/tmp/...]
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "core/model/checkpoint.h"
#include "core/model/hf.h"
#include "core/model/model.h"

ABSL_FLAG(std::string, preset, "gpt2-small", "model shape");
ABSL_FLAG(int, threads, 2, "intra-op threads");
ABSL_FLAG(std::string, dir, "", "work directory (default: a temp dir, removed afterwards)");
ABSL_FLAG(std::string, child_load, "", "internal: load this checkpoint, print JSON, exit");
ABSL_FLAG(std::string, child_export, "", "internal: build the model, export it here, print JSON, exit");
ABSL_FLAG(std::string, json_out, "", "also write the results as JSON here");

namespace rlhf {
namespace {

using Clock = std::chrono::steady_clock;

int64_t StatusKb(const char* key) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key, 0) == 0) return std::stoll(line.substr(std::string(key).size()));
  }
  return -1;
}

int ChildLoad(const std::string& dir) {
  const int64_t before = StatusKb("VmHWM:");
  const auto t0 = Clock::now();
  auto loaded = LoadCheckpoint(dir);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s\n", std::string(loaded.status().message()).c_str());
    return 1;
  }
  int64_t param_bytes = 0;
  for (const auto& p : loaded->model->parameters()) param_bytes += p.numel() * p.element_size();
  const int64_t after = StatusKb("VmHWM:");
  nlohmann::json j = {{"seconds", secs},
                      {"hwm_growth_bytes", (after - before) * 1024},
                      {"param_bytes", param_bytes}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

uint64_t DirBytes(const std::string& dir, const std::string& ext);

// The model is built (not loaded) first, so VmHWM before the export is parameters only.
int ChildExport(const std::string& dir) {
  auto config = ModelConfigPreset(absl::GetFlag(FLAGS_preset));
  if (!config.ok()) return 1;
  torch::manual_seed(1);
  TransformerLM model(*config);
  const int64_t before = StatusKb("VmHWM:");
  const auto t0 = Clock::now();
  if (auto s = ExportHfDirectory(model, nlohmann::json::object(), dir); !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return 1;
  }
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  const int64_t after = StatusKb("VmHWM:");
  nlohmann::json j = {{"seconds", secs},
                      {"hwm_growth_bytes", (after - before) * 1024},
                      {"file_bytes", DirBytes(dir, ".safetensors")}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

nlohmann::json RunChild(const std::string& self, const std::string& dir, const char* mode = "child_load") {
  const std::string out = dir + "." + mode + ".json";
  const std::string cmd = absl::StrCat(self, " --threads=", absl::GetFlag(FLAGS_threads), " --preset=",
                                       absl::GetFlag(FLAGS_preset), " --", mode, "=", dir, " > ", out);
  if (std::system(cmd.c_str()) != 0) return nullptr;
  std::ifstream in(out);
  return nlohmann::json::parse(in, nullptr, false);
}

uint64_t DirBytes(const std::string& dir, const std::string& ext) {
  uint64_t total = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() == ext) total += e.file_size();
  }
  return total;
}

double ForwardTokensPerSec(TransformerLM& m, int64_t B, int64_t T) {
  torch::NoGradGuard no_grad;
  m->eval();
  auto ids = torch::randint(0, m->config().vocab_size, {B, T}, torch::kLong);
  m->forward(ids);  // warm-up
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = Clock::now();
    m->forward(ids);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::max(best, B * T / s);
  }
  return best;
}

int Main(const std::string& self) {
  at::set_num_threads(absl::GetFlag(FLAGS_threads));
  if (!absl::GetFlag(FLAGS_child_load).empty()) return ChildLoad(absl::GetFlag(FLAGS_child_load));
  if (!absl::GetFlag(FLAGS_child_export).empty()) return ChildExport(absl::GetFlag(FLAGS_child_export));
  auto config = ModelConfigPreset(absl::GetFlag(FLAGS_preset));
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  std::string dir = absl::GetFlag(FLAGS_dir);
  const bool temp = dir.empty();
  if (temp) dir = absl::StrCat(std::filesystem::temp_directory_path().string(), "/rlhf_bench_hf_", ::getpid());
  std::filesystem::create_directories(dir);
  torch::manual_seed(1);
  TransformerLM native(*config);
  std::fprintf(stderr, "writing %s checkpoints (%lld parameters) to %s ...\n",
               absl::GetFlag(FLAGS_preset).c_str(), static_cast<long long>(CountParameters(*config)),
               dir.c_str());
  const std::string hf_dir = dir + "/hf", ours_dir = dir + "/ours";
  if (auto s = ExportHfDirectory(native, nlohmann::json::object(), hf_dir); !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return 1;
  }
  if (auto s = SaveCheckpoint(ours_dir, native); !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return 1;
  }
  nlohmann::json result = {{"preset", absl::GetFlag(FLAGS_preset)}, {"threads", absl::GetFlag(FLAGS_threads)}};
  const std::vector<std::pair<std::string, std::string>> dirs = {{"hf", hf_dir}, {"ours", ours_dir}};
  for (const auto& [name, d] : dirs) {
    const uint64_t file = DirBytes(d, ".safetensors");
    nlohmann::json r = RunChild(self, d);
    if (r.is_null() || r.is_discarded()) {
      std::fprintf(stderr, "child load of %s failed\n", d.c_str());
      return 1;
    }
    const double extra = r["hwm_growth_bytes"].get<double>() - r["param_bytes"].get<double>();
    r["file_bytes"] = file;
    r["peak_extra_bytes"] = extra;
    r["peak_extra_over_file"] = extra / static_cast<double>(file);
    std::printf("load %-4s: %.2f s for %.0f MB (%.0f MB/s); peak extra memory %.0f MB = %.2f x file\n",
                name.c_str(), r["seconds"].get<double>(), file / 1e6,
                file / 1e6 / r["seconds"].get<double>(), extra / 1e6, extra / file);
    result["load_" + name] = r;
  }
  {
    nlohmann::json r = RunChild(self, dir + "/export", "child_export");
    if (r.is_null() || r.is_discarded()) {
      std::fprintf(stderr, "child export failed\n");
      return 1;
    }
    const double file = r["file_bytes"].get<double>(), extra = r["hwm_growth_bytes"].get<double>();
    r["peak_extra_over_file"] = extra / file;
    std::printf("export hf : %.2f s for %.0f MB (%.0f MB/s); peak extra memory %.0f MB = %.3f x file\n",
                r["seconds"].get<double>(), file / 1e6, file / 1e6 / r["seconds"].get<double>(),
                extra / 1e6, extra / file);
    result["export_hf"] = r;
  }
  auto imported = LoadCheckpoint(hf_dir);
  if (!imported.ok()) return 1;
  const int64_t B = 4, T = 128;
  double native_tps = 0, imported_tps = 0;
  for (int round = 0; round < 2; ++round) {  // interleaved, best of each
    native_tps = std::max(native_tps, ForwardTokensPerSec(native, B, T));
    imported_tps = std::max(imported_tps, ForwardTokensPerSec(imported->model, B, T));
  }
  std::printf("forward B=%lld T=%lld: native %.0f tok/s, imported %.0f tok/s, ratio %.3f\n",
              static_cast<long long>(B), static_cast<long long>(T), native_tps, imported_tps,
              imported_tps / native_tps);
  result["forward_native_tok_s"] = native_tps;
  result["forward_imported_tok_s"] = imported_tps;
  result["forward_ratio"] = imported_tps / native_tps;
  if (!absl::GetFlag(FLAGS_json_out).empty()) std::ofstream(absl::GetFlag(FLAGS_json_out)) << result.dump(2) << "\n";
  if (temp) std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace rlhf

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::error_code ec;
  const std::string self = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  return rlhf::Main(self);
}
