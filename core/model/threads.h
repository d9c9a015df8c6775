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
// start; the query functions and ParallelFor are safe from any thread.
#pragma once

#include <cstdint>
#include <string>

#include "absl/functional/function_ref.h"

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

// Calls fn(chunk_begin, chunk_end) on contiguous chunks that cover [begin, end) once,
// on LibTorch's OpenMP pool, the way at::parallel_for does in LibTorch itself. Use it
// instead of at::parallel_for in our sources: that one's parallel region is an inline
// template that runs on one thread in any unit compiled without -fopenmp, which ours are
// (under clang -fopenmp would mean LLVM's libomp, a second pool beside LibTorch's
// libgomp). This enters the pool through libgomp's GOMP_parallel, looked up in the
// process at run time, so it is the pool LibTorch loaded whichever compiler built us.
//
// `work_per_item` is one item's cost (multiply-adds, or elements visited). The range is
// split only as many ways as give every thread at least kMinParallelWork of it, so small
// work pays no fork/join; fn(begin, end) runs on the calling thread when that is one way,
// with one intra-op thread, inside a parallel region, or when the process has no libgomp
// (a LibTorch built without OpenMP). fn runs concurrently on several threads and must not
// throw.
void ParallelFor(int64_t begin, int64_t end, int64_t work_per_item,
                 absl::FunctionRef<void(int64_t, int64_t)> fn);

// Work per thread below which splitting a loop costs more than it saves: rlhf_bench_model's
// tiny decode at batch 8 (~160k multiply-adds per layer in attention) ran 7-22% slower
// split across 2 threads than on 1, at batch 64 15-24% faster.
constexpr int64_t kMinParallelWork = int64_t{1} << 17;

// True when ParallelFor can use more than the calling thread (libgomp is loaded).
bool ParallelForHasPool();

// One line for logs and benchmark reports:
// "threads=2 blas=openblas-openmp (one pool) malloc=retain".
std::string ComputeThreadsSummary();

}  // namespace rlhf
