// Prometheus plumbing shared by every process: one prometheus::Registry per process
// (created in main), a pull Exposer serving it at http://host:port/metrics, and the
// per-RPC metrics every gRPC service records.
#pragma once

#include <atomic>
#include <map>
#include <thread>
#include <memory>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace rlhf::services {

// Serves `registry` at http://host:port/metrics in the Prometheus text format. port 0 =
// any free port, read back with port().
//
// A small built-in HTTP/1.0 server instead of prometheus-cpp's civetweb Exposer:
// civetweb starts its workers with a fixed small thread stack, and in processes that
// load LibTorch (large static TLS) pthread_create fails ("Cannot create threads: error
// 0"), so the Exposer cannot start in our servers. One thread runs a poll() loop over
// non-blocking sockets: every connection has a 2 s deadline for the whole exchange and
// at most 64 are open, so idle or slow clients (one byte at a time) never delay other
// scrapes. Bind it to its own address (--metrics_host) to keep it off the network the
// gRPC port serves: it has no TLS and no token.
// Thread-safety: immutable after Create; the destructor stops the thread.
class MetricsExposer {
 public:
  static absl::StatusOr<std::unique_ptr<MetricsExposer>> Create(
      const std::string& host, int port, std::shared_ptr<prometheus::Registry> registry);
  ~MetricsExposer();

  int port() const { return port_; }
  std::string url() const;

 private:
  MetricsExposer(int fd, std::string host, int port, std::shared_ptr<prometheus::Registry> r);
  void Serve();
  std::string Respond(const std::string& request) const;  // the whole HTTP response

  std::shared_ptr<prometheus::Registry> registry_;
  int fd_;
  std::string host_;
  int port_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Writes `registry` in the Prometheus text format to `path` (atomically: readers see the
// old file or the whole new one). For a process that exits on its own to leave its final
// numbers where the launcher collects them (--metrics_file), however briefly it ran.
absl::Status WriteMetricsFile(const prometheus::Registry& registry, const std::string& path);

// Per-RPC metrics of one component, families built here once:
//   rlhf_<component>_requests_total{method, code}   counter
//   rlhf_<component>_request_duration_seconds{method} histogram
// Thread-safety: Record is thread-safe.
class RpcMetrics {
 public:
  RpcMetrics(prometheus::Registry& registry, const std::string& component);
  void Record(const std::string& method, absl::StatusCode code, absl::Duration latency);

 private:
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& latency_;
};

}  // namespace rlhf::services

#include "services/batcher.h"

namespace rlhf::services {

// Metrics of a batched model server, families built here once:
//   rlhf_<c>_batch_size                  histogram (sequences per forward)
//   rlhf_<c>_batch_padding_ratio         histogram (padded-but-empty share of a forward)
//   rlhf_<c>_forward_duration_seconds    histogram (time inside the model per forward)
//   rlhf_<c>_queue_depth                 gauge     (queued sequences)
//   rlhf_<c>_sequences_total             counter   (scored sequences; rate() = seq/s)
//   rlhf_<c>_tokens_total                counter   (real tokens scored; rate() = tok/s)
//   rlhf_<c>_model_info{...labels}       gauge = 1 (what is served)
// Hooks() feeds the first six from a DynamicBatcher. Thread-safe.
class BatchMetrics {
 public:
  BatchMetrics(prometheus::Registry& registry, const std::string& component);
  BatcherHooks Hooks();
  void SetModelInfo(const std::map<std::string, std::string>& labels);

 private:
  prometheus::Histogram& batch_size_;
  prometheus::Histogram& padding_;
  prometheus::Histogram& forward_seconds_;
  prometheus::Gauge& queue_depth_;
  prometheus::Counter& sequences_;
  prometheus::Counter& tokens_;
  prometheus::Family<prometheus::Gauge>& model_info_;
};

}  // namespace rlhf::services
