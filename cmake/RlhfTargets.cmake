# Helpers that give every target of ours the same warnings and layout.

# rlhf_warnings(target): -Wall -Wextra -Werror on our own code only.
# Under clang (the default compiler, CMakeLists.txt) every compile also checks Abseil's lock
# annotations (ABSL_GUARDED_BY & co.), which GCC parses but ignores; a GCC build runs
# scripts/check_thread_safety.py as a test instead (tests/CMakeLists.txt).
function(rlhf_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror
    # LibTorch 1.13 and protobuf headers trip these; they are not ours.
    -Wno-unused-parameter -Wno-missing-field-initializers
    $<$<CXX_COMPILER_ID:Clang>:-Wthread-safety>)
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

# One precompiled LibTorch header (core/CMakeLists.txt: rlhf_torch_pch_anchor) for every
# target that links LibTorch, directly or through our libraries; torch headers dominate
# compile time (a bare <torch/torch.h> TU is ~25 s on 2 cores). GCC uses a PCH only when
# the macros it was built with match the TU's, so every torch target compiles with the
# same flags: rlhf::torch carries -pthread (which gRPC users get anyway, from re2), and rlhf_use_torch_pch_everywhere() (called once, at the end of the top
# CMakeLists.txt) attaches the PCH to each such target -- none is listed by hand.
# -Winvalid-pch with -Werror turns a PCH GCC refuses into a build error, not a slow build.

# rlhf_torch_pch(target): reuse the shared PCH in `target` (idempotent).
function(rlhf_torch_pch target)
  get_target_property(reuse ${target} PRECOMPILE_HEADERS_REUSE_FROM)
  if(TARGET rlhf_torch_pch_anchor AND NOT reuse AND NOT target STREQUAL rlhf_torch_pch_anchor)
    target_precompile_headers(${target} REUSE_FROM rlhf_torch_pch_anchor)
  endif()
endfunction()

# Sets ${out} to TRUE when `target` links rlhf_torch through its link closure.
function(_rlhf_links_torch target out)
  set(todo ${target})
  set(seen "")
  set(found FALSE)
  while(todo)
    list(POP_FRONT todo t)
    # $<LINK_ONLY:x> still links x; other generator expressions are not ours.
    string(REGEX REPLACE "^\\$<LINK_ONLY:(.*)>$" "\\1" t "${t}")
    if(t MATCHES "^\\$<" OR NOT TARGET "${t}" OR t IN_LIST seen)
      continue()
    endif()
    list(APPEND seen "${t}")
    get_target_property(aliased "${t}" ALIASED_TARGET)
    if(aliased)
      list(APPEND todo "${aliased}")
      continue()
    endif()
    if(t STREQUAL "rlhf_torch")
      set(found TRUE)
      break()
    endif()
    # Imported targets (LibTorch's own, absl, gRPC, ...) cannot lead back to ours.
    get_target_property(imported "${t}" IMPORTED)
    if(imported)
      continue()
    endif()
    get_target_property(type "${t}" TYPE)
    if(NOT type STREQUAL "INTERFACE_LIBRARY")
      get_target_property(deps "${t}" LINK_LIBRARIES)
      if(deps)
        list(APPEND todo ${deps})
      endif()
    endif()
    get_target_property(ideps "${t}" INTERFACE_LINK_LIBRARIES)
    if(ideps)
      list(APPEND todo ${ideps})
    endif()
  endwhile()
  set(${out} ${found} PARENT_SCOPE)
endfunction()

# Attaches the shared torch PCH to every compiled target of ours under `dir` (default:
# the whole project) that links LibTorch.
function(rlhf_use_torch_pch_everywhere)
  set(dirs ${ARGN})
  if(NOT dirs)
    set(dirs ${PROJECT_SOURCE_DIR})
  endif()
  while(dirs)
    list(POP_FRONT dirs dir)
    get_property(subdirs DIRECTORY ${dir} PROPERTY SUBDIRECTORIES)
    list(APPEND dirs ${subdirs})
    get_property(targets DIRECTORY ${dir} PROPERTY BUILDSYSTEM_TARGETS)
    foreach(t ${targets})
      get_target_property(type ${t} TYPE)
      if(type MATCHES "^(STATIC_LIBRARY|SHARED_LIBRARY|OBJECT_LIBRARY|MODULE_LIBRARY|EXECUTABLE)$")
        _rlhf_links_torch(${t} links_torch)
        if(links_torch)
          rlhf_torch_pch(${t})
        endif()
      endif()
    endforeach()
  endwhile()
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
  # A test's own code only sets up and checks; the libraries it drives keep -O3. At -O1
  # the suite's sources compile about a fifth faster (issue 24, docs/benchmarks.md "Build
  # time") and still use the shared torch PCH, built at -O3: GCC and clang only require
  # that both define __OPTIMIZE__ (-O0 would not).
  target_compile_options(${name} PRIVATE $<$<CONFIG:Release>:-O1>)
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
