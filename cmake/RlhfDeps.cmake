# Every third-party dependency is found here, once (design.md §5: Debian 12 packages).
set(THREADS_PREFER_PTHREAD_FLAG ON)
find_package(Threads REQUIRED)
find_package(Torch REQUIRED)
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)
find_package(absl CONFIG REQUIRED)
find_package(prometheus-cpp CONFIG REQUIRED)
find_package(nlohmann_json CONFIG REQUIRED)
find_package(yaml-cpp CONFIG REQUIRED)
find_package(GTest CONFIG REQUIRED)
find_package(benchmark CONFIG QUIET)
find_program(RLHF_GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)

# LibTorch's CMake config puts include dirs and flags on the `torch` target; wrap it so
# our targets say PUBLIC rlhf::torch and nothing else.
if(NOT TARGET rlhf_torch)
  add_library(rlhf_torch INTERFACE)
  target_link_libraries(rlhf_torch INTERFACE ${TORCH_LIBRARIES})
  if(RLHF_WITH_CUDA)
    target_compile_definitions(rlhf_torch INTERFACE RLHF_WITH_CUDA=1)
  endif()
  add_library(rlhf::torch ALIAS rlhf_torch)
endif()
