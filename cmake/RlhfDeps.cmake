# Every third-party dependency is found here, once (design.md §5: Debian 12 packages).
set(THREADS_PREFER_PTHREAD_FLAG ON)
find_package(Threads REQUIRED)
find_package(Torch REQUIRED)
find_package(absl CONFIG REQUIRED)
find_package(nlohmann_json CONFIG REQUIRED)
# RLHF_CORE_ONLY: core/ and the model benchmark need nothing below.
if(NOT RLHF_CORE_ONLY)
  find_package(Protobuf REQUIRED)
  find_package(gRPC CONFIG REQUIRED)
  find_package(prometheus-cpp CONFIG REQUIRED)
  find_package(yaml-cpp CONFIG REQUIRED)
  find_package(GTest CONFIG REQUIRED)
  find_package(benchmark CONFIG QUIET)
  find_program(RLHF_GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)
endif()
message(STATUS "rlhf: LibTorch ${Torch_VERSION} from ${Torch_DIR}")

# LibTorch's CMake config puts include dirs and flags on the `torch` target; wrap it so
# our targets say PUBLIC rlhf::torch and nothing else.
if(NOT TARGET rlhf_torch)
  add_library(rlhf_torch INTERFACE)
  target_link_libraries(rlhf_torch INTERFACE ${TORCH_LIBRARIES} Threads::Threads)
  # -pthread (it defines _REENTRANT) on every torch target, LibTorch being threaded anyway:
  # re2::re2, and through gRPC every gRPC user, compiles with it, and GCC takes a
  # precompiled header only when such macros match, so with it on all of them one PCH
  # serves every torch target (cmake/RlhfTargets.cmake). Threads::Threads adds no flag
  # here: glibc has pthreads in libc.
  target_compile_options(rlhf_torch INTERFACE -pthread)
  if(RLHF_WITH_CUDA)
    target_compile_definitions(rlhf_torch INTERFACE RLHF_WITH_CUDA=1)
  endif()
  add_library(rlhf::torch ALIAS rlhf_torch)
  # One thread pool (issue 24): Debian's LibTorch loads libblas.so.3 through the
  # alternatives system, which picks OpenBLAS's pthread build, whose own thread pool
  # then fights LibTorch's OpenMP pool for the cores (2-2.7x slower matrix work). The
  # OpenMP build shares LibTorch's pool. A DT_RPATH (not RUNPATH) on our binaries is
  # searched for libtorch's own dependencies too, so every binary of ours loads the
  # OpenMP build whatever the machine's alternatives say. core/model/threads.h reports
  # which one a process loaded.
  set(RLHF_OPENBLAS_OPENMP_DIR "/usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp"
      CACHE PATH "OpenBLAS OpenMP build (Debian's libopenblas0-openmp)")
  if(EXISTS "${RLHF_OPENBLAS_OPENMP_DIR}/libblas.so.3")
    target_link_options(rlhf_torch INTERFACE
      "LINKER:--disable-new-dtags" "LINKER:-rpath,${RLHF_OPENBLAS_OPENMP_DIR}")
  else()
    message(WARNING "OpenBLAS OpenMP build not found in ${RLHF_OPENBLAS_OPENMP_DIR}: "
                    "install libopenblas0-openmp, or matrix work runs with two thread pools")
  endif()
endif()
