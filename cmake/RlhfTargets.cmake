# Helpers that give every target of ours the same warnings and layout.

# rlhf_warnings(target): -Wall -Wextra -Werror on our own code only.
function(rlhf_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror
    # LibTorch 1.13 and protobuf headers trip these; they are not ours.
    -Wno-unused-parameter -Wno-missing-field-initializers)
endfunction()

# rlhf_library(name SOURCES ... DEPS ... [PRIVATE_DEPS ...])
function(rlhf_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  target_link_libraries(${name} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  rlhf_warnings(${name})
endfunction()

# rlhf_binary(name SOURCES ... DEPS ...): binaries land in build/bin/.
function(rlhf_binary name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
  rlhf_warnings(${name})
endfunction()

# rlhf_torch_pch(target): reuse one precompiled LibTorch header; torch headers dominate
# compile time (a bare <torch/torch.h> TU is ~25 s on 2 cores).
function(rlhf_torch_pch target)
  if(TARGET rlhf_torch_pch_anchor)
    target_precompile_headers(${target} REUSE_FROM rlhf_torch_pch_anchor)
  endif()
endfunction()

# rlhf_test(name SOURCES ... DEPS ... [LABELS ...] [TIMEOUT s])
# Every test is labelled with its component (the folder under tests/) plus LABELS;
# label anything over ~30 s `slow` and anything that spawns a whole job `e2e`, so that
# `ctest -LE "slow|e2e"` stays the fast inner loop.
function(rlhf_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  get_filename_component(component ${CMAKE_CURRENT_SOURCE_DIR} NAME)
  list(PREPEND ARG_LABELS ${component})
  list(REMOVE_DUPLICATES ARG_LABELS)
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  rlhf_warnings(${name})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  add_test(NAME ${name} COMMAND ${name} WORKING_DIRECTORY ${PROJECT_BINARY_DIR})
  set_tests_properties(${name} PROPERTIES TIMEOUT ${ARG_TIMEOUT}
    LABELS "${ARG_LABELS}"
    ENVIRONMENT "RLHF_SOURCE_DIR=${PROJECT_SOURCE_DIR};RLHF_BIN_DIR=${PROJECT_BINARY_DIR}/bin;OMP_NUM_THREADS=1")
endfunction()

# rlhf_add_subdirectories(dir...): adds each dir that has a CMakeLists.txt.
macro(rlhf_add_subdirectories)
  foreach(rlhf_sub ${ARGN})
    if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${rlhf_sub}/CMakeLists.txt)
      add_subdirectory(${rlhf_sub})
    endif()
  endforeach()
endmacro()
