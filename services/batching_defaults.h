// The dynamic-batching defaults of the reward and reference servers, in ONE place: the
// job config's defaults (services/config DefaultJobConfig: reward_server.batching,
// reference_server.batching), the servers' command-line flags, BatcherOptions and the
// handlers' request limits all read these. tests/config/defaults_test.cc checks that
// they agree, including the flags the server binaries print.
#pragma once

#include <cstdint>

namespace rlhf::services {

inline constexpr int64_t kDefaultMaxBatchTokens = 8192;     // padded tokens per forward
inline constexpr int kDefaultMaxBatchSequences = 64;        // sequences per forward
inline constexpr int kDefaultMaxWaitMs = 5;                 // oldest request's wait, ms
inline constexpr int64_t kDefaultMaxQueueSequences = 1024;  // beyond: RESOURCE_EXHAUSTED
inline constexpr int kDefaultMaxSequencesPerRequest = 512;  // per Score request
// The reference server's [tokens, vocab] float32 logits per forward, MiB: it lowers
// max_batch_tokens to fit (vocabulary 259: no change; 50,257: 1,335 tokens). Past glibc's
// 32 MiB mmap threshold every forward page-faults its logits afresh, and the cost per
// sequence rises with the batch (gpt2-small, 96-token sequences, bench/server_bench.cc).
inline constexpr int64_t kDefaultMaxLogitsMb = 256;

}  // namespace rlhf::services
