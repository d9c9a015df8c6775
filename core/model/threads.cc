#include "core/model/threads.h"

#include <dlfcn.h>
#include <link.h>
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include <ATen/Parallel.h>

namespace rlhf {

namespace {
std::atomic<bool> retained{false};

// libgomp's entry points, as GCC's code for `#pragma omp parallel` calls them. Looked up
// in the process (LibTorch loaded libgomp) rather than linked, so that a clang build,
// whose OpenMP would be libomp, joins the same pool.
struct Gomp {
  void (*parallel)(void (*fn)(void*), void* data, unsigned num_threads, unsigned flags) = nullptr;
  int (*thread_num)() = nullptr;
  int (*num_threads)() = nullptr;
};

const Gomp& LoadedGomp() {
  static const Gomp gomp = [] {
    Gomp g;
    g.parallel = reinterpret_cast<decltype(g.parallel)>(::dlsym(RTLD_DEFAULT, "GOMP_parallel"));
    g.thread_num =
        reinterpret_cast<decltype(g.thread_num)>(::dlsym(RTLD_DEFAULT, "omp_get_thread_num"));
    g.num_threads =
        reinterpret_cast<decltype(g.num_threads)>(::dlsym(RTLD_DEFAULT, "omp_get_num_threads"));
    if (g.parallel == nullptr || g.thread_num == nullptr || g.num_threads == nullptr) return Gomp{};
    return g;
  }();
  return gomp;
}

struct ParallelRegion {
  const Gomp* gomp;
  int64_t begin, end;
  absl::FunctionRef<void(int64_t, int64_t)>* fn;
};

// Each team member takes its own chunk; the chunks follow the team's actual size, which
// libgomp may make smaller than asked.
void RunChunk(void* data) {
  const auto* region = static_cast<const ParallelRegion*>(data);
  const int64_t team = std::max(1, region->gomp->num_threads());
  const int64_t me = region->gomp->thread_num();
  const int64_t chunk = (region->end - region->begin + team - 1) / team;
  const int64_t first = region->begin + me * chunk;
  if (first < region->end) (*region->fn)(first, std::min(region->end, first + chunk));
}
}  // namespace

void ParallelFor(int64_t begin, int64_t end, int64_t work_per_item,
                 absl::FunctionRef<void(int64_t, int64_t)> fn) {
  if (begin >= end) return;
  const Gomp& gomp = LoadedGomp();
  const int64_t by_work = (end - begin) * std::max<int64_t>(1, work_per_item) / kMinParallelWork;
  const int64_t threads =
      gomp.parallel == nullptr ? 1 : std::min<int64_t>(at::get_num_threads(), by_work);
  if (threads <= 1 || at::in_parallel_region()) {
    fn(begin, end);
    return;
  }
  ParallelRegion region{&gomp, begin, end, &fn};
  gomp.parallel(&RunChunk, &region, static_cast<unsigned>(threads), 0);
}

bool ParallelForHasPool() { return LoadedGomp().parallel != nullptr; }

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
