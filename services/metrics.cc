#include "services/metrics.h"

#include <exception>

#include "absl/strings/str_cat.h"
#include "services/server.h"

namespace rlhf::services {

absl::StatusOr<std::unique_ptr<MetricsExposer>> MetricsExposer::Create(
    const std::string& host, int port, std::shared_ptr<prometheus::Registry> registry) {
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics port: ", port, " not in [0, 65535]"));
  }
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    // civetweb throws when it cannot bind.
    exposer = std::make_unique<prometheus::Exposer>(JoinHostPort(host, port), 2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("metrics: cannot listen on ",
                                               JoinHostPort(host, port), ": ", e.what()));
  }
  exposer->RegisterCollectable(registry);
  const std::vector<int> ports = exposer->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(absl::StrCat("metrics: no listening port for ",
                                               JoinHostPort(host, port)));
  }
  return std::unique_ptr<MetricsExposer>(
      new MetricsExposer(std::move(exposer), host, ports[0], std::move(registry)));
}

std::string MetricsExposer::url() const {
  return absl::StrCat("http://", JoinHostPort(host_, port_), "/metrics");
}

RpcMetrics::RpcMetrics(prometheus::Registry& registry, const std::string& component)
    : requests_(prometheus::BuildCounter()
                    .Name(absl::StrCat("rlhf_", component, "_requests_total"))
                    .Help("RPCs handled, by method and final status code")
                    .Register(registry)),
      latency_(prometheus::BuildHistogram()
                   .Name(absl::StrCat("rlhf_", component, "_request_duration_seconds"))
                   .Help("RPC latency from arrival to response, seconds")
                   .Register(registry)) {}

void RpcMetrics::Record(const std::string& method, absl::StatusCode code,
                        absl::Duration latency) {
  requests_.Add({{"method", method}, {"code", absl::StatusCodeToString(code)}}).Increment();
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  latency_.Add({{"method", method}}, kBuckets).Observe(absl::ToDoubleSeconds(latency));
}

}  // namespace rlhf::services
