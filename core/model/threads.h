// One compute thread pool per process (issue 24). LibTorch's intra-op work runs on its
// OpenMP pool; our binaries load OpenBLAS's OpenMP build (cmake/RlhfDeps.cmake sets the
// rpath), which shares that pool instead of spinning up a second one.
//
// Tensor memory: glibc by default serves every allocation above a dynamic threshold
// (128 KiB at start) with fresh mmap pages and trims the heap top on free, so each forward
// pass page-faults its activations anew. On the project's VMs a fresh-page fault costs
// 20-40x a copy: a 6-layer d256 model spent 21% of a batch-8 forward in the page-fault
// handler and ran 2x slower per sequence than at batch 1. ConfigureComputeThreads
// therefore also keeps freed memory in the process (RetainFreedMemory).
//
// Thread-safety: call ConfigureComputeThreads once from main() before other threads
// start; the query functions are safe from any thread.
#pragma once

#include <string>

namespace rlhf {

// Sets LibTorch's intra-op (OpenMP) thread count when `threads` > 0; 0 leaves LibTorch's
// default (one per core), and calls RetainFreedMemory(). Returns the count in effect.
int ConfigureComputeThreads(int threads);

// Makes glibc malloc keep freed memory for reuse: allocations up to 32 MiB (glibc's
// largest mmap threshold) come from the heap, and the heap is trimmed only past 1 GiB of
// free space at its top. The process's resident memory therefore stays near its peak.
// Leaves malloc alone (returns false) when the user tuned it through GLIBC_TUNABLES or
// MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_; true when the settings took effect.
bool RetainFreedMemory();

// "retain" after RetainFreedMemory() took effect, "default" otherwise.
std::string MallocPolicy();

// The file the process loaded as libblas.so.3 (e.g. ".../openblas-openmp/libblas.so.3"),
// or "" if none is loaded.
std::string LoadedBlasLibrary();

// True when the loaded BLAS runs on the OpenMP pool (OpenBLAS's OpenMP build), i.e. one
// pool owns the cores; false for the pthread build or when it cannot be told.
bool BlasSharesOpenMpPool();

// One line for logs and benchmark reports:
// "threads=2 blas=openblas-openmp (one pool) malloc=retain".
std::string ComputeThreadsSummary();

}  // namespace rlhf
