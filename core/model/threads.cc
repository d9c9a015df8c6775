#include "core/model/threads.h"

#include <link.h>
#include <malloc.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include <ATen/Parallel.h>

namespace rlhf {

namespace {
std::atomic<bool> retained{false};
}  // namespace

int ConfigureComputeThreads(int threads) {
  RetainFreedMemory();
  if (threads > 0) at::set_num_threads(threads);
  return at::get_num_threads();
}

bool RetainFreedMemory() {
  if (retained.load()) return true;
  // A user who tuned malloc knows better than our defaults.
  for (const char* name : {"GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                           "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_"}) {
    if (std::getenv(name) != nullptr) return false;
  }
  constexpr int kMmapThreshold = 32 << 20;  // glibc's maximum (HEAP_MAX_SIZE / 2)
  constexpr int kTrimThreshold = 1 << 30;
  constexpr int kTopPad = 64 << 20;  // grow the heap in steps of 64 MiB, not page by page
  const bool ok = mallopt(M_MMAP_THRESHOLD, kMmapThreshold) == 1 &&
                  mallopt(M_TRIM_THRESHOLD, kTrimThreshold) == 1 &&
                  mallopt(M_TOP_PAD, kTopPad) == 1;
  retained.store(ok);
  return ok;
}

std::string MallocPolicy() { return retained.load() ? "retain" : "default"; }

std::string LoadedBlasLibrary() {
  std::string found;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* out) {
        const char* name = info->dlpi_name;
        if (name != nullptr && std::strstr(name, "libblas.so") != nullptr) {
          *static_cast<std::string*>(out) = name;
          return 1;
        }
        return 0;
      },
      &found);
  return found;
}

bool BlasSharesOpenMpPool() { return LoadedBlasLibrary().find("openmp") != std::string::npos; }

std::string ComputeThreadsSummary() {
  const std::string blas = LoadedBlasLibrary();
  std::string kind = "none";
  if (!blas.empty()) {
    const size_t slash = blas.rfind('/');
    const size_t dir = slash == std::string::npos ? std::string::npos : blas.rfind('/', slash - 1);
    kind = dir == std::string::npos ? blas : blas.substr(dir + 1, slash - dir - 1);
  }
  return "threads=" + std::to_string(at::get_num_threads()) + " blas=" + kind +
         (BlasSharesOpenMpPool() ? " (one pool)" : " (separate BLAS pool)") +
         " malloc=" + MallocPolicy();
}

}  // namespace rlhf
