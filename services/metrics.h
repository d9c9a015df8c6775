// Prometheus plumbing shared by every process: one prometheus::Registry per process
// (created in main), a pull Exposer serving it at http://host:port/metrics, and the
// per-RPC metrics every gRPC service records.
#pragma once

#include <memory>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace rlhf::services {

// Serves `registry` at /metrics. port 0 = any free port, read back with port().
// Thread-safety: immutable after Create; the registry is shared and thread-safe.
class MetricsExposer {
 public:
  static absl::StatusOr<std::unique_ptr<MetricsExposer>> Create(
      const std::string& host, int port, std::shared_ptr<prometheus::Registry> registry);

  int port() const { return port_; }
  std::string url() const;

 private:
  MetricsExposer(std::unique_ptr<prometheus::Exposer> exposer, std::string host, int port,
                 std::shared_ptr<prometheus::Registry> registry)
      : registry_(std::move(registry)), exposer_(std::move(exposer)),
        host_(std::move(host)), port_(port) {}

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string host_;
  int port_;
};

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
