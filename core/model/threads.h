// One compute thread pool per process (issue 24). LibTorch's intra-op work runs on its
// OpenMP pool; our binaries load OpenBLAS's OpenMP build (cmake/RlhfDeps.cmake sets the
// rpath), which shares that pool instead of spinning up a second one.
//
// Thread-safety: call ConfigureComputeThreads once from main() before other threads
// start; the query functions are safe from any thread.
#pragma once

#include <string>

namespace rlhf {

// Sets LibTorch's intra-op (OpenMP) thread count when `threads` > 0; 0 leaves LibTorch's
// default (one per core). Returns the count in effect.
int ConfigureComputeThreads(int threads);

// The file the process loaded as libblas.so.3 (e.g. ".../openblas-openmp/libblas.so.3"),
// or "" if none is loaded.
std::string LoadedBlasLibrary();

// True when the loaded BLAS runs on the OpenMP pool (OpenBLAS's OpenMP build), i.e. one
// pool owns the cores; false for the pthread build or when it cannot be told.
bool BlasSharesOpenMpPool();

// One line for logs and benchmark reports: "threads=2 blas=openblas-openmp (one pool)".
std::string ComputeThreadsSummary();

}  // namespace rlhf
