#include "core/model/threads.h"

#include <link.h>

#include <cstring>

#include <ATen/Parallel.h>

namespace rlhf {

int ConfigureComputeThreads(int threads) {
  if (threads > 0) at::set_num_threads(threads);
  return at::get_num_threads();
}

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
         (BlasSharesOpenMpPool() ? " (one pool)" : " (separate BLAS pool)");
}

}  // namespace rlhf
