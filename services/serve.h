// The lifecycle every server binary's main() shares, after it has built its server:
//
//   RLHF_ASSIGN_OR_RETURN(auto exposer, StartMetricsExposer(host, metrics_port, registry));
//   return ServeUntilSignal(**server, {"reward-server", port_file, grace});
//
// ServeUntilSignal starts the server, prints "listening on HOST:PORT" (launchers and
// tests read it), writes the bound port to `port_file` when set, blocks until SIGTERM or
// SIGINT (BlockShutdownSignals() must have run first in main), then shuts down giving
// in-flight work `shutdown_grace`. Server is any type with Start() -> absl::Status,
// port(), grpc_server().address() and Shutdown(absl::Time).
#pragma once

#include <cstdio>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "services/metrics.h"
#include "services/server.h"
#include "services/shutdown.h"

namespace rlhf::services {

struct ServeOptions {
  std::string name;                  // for the shutdown log line, e.g. "reward-server"
  std::string port_file;             // empty = none
  absl::Duration shutdown_grace = absl::Seconds(10);
};

// Starts a /metrics exposer on host:port and prints its URL; port < 0 = none (nullptr).
// With port 0 the kernel picks a free port: a launcher learns it from `port_file` (when
// set, the bound port is written there, atomically) instead of picking one itself and
// racing every other process for it.
inline absl::StatusOr<std::unique_ptr<MetricsExposer>> StartMetricsExposer(
    const std::string& host, int port, std::shared_ptr<prometheus::Registry> registry,
    const std::string& port_file = "") {
  if (port < 0) return std::unique_ptr<MetricsExposer>();
  auto exposer = MetricsExposer::Create(host, port, std::move(registry));
  if (!exposer.ok()) return exposer.status();
  std::printf("metrics on %s\n", (*exposer)->url().c_str());
  std::fflush(stdout);
  if (!port_file.empty()) {
    if (absl::Status s = WritePortFile(port_file, (*exposer)->port()); !s.ok()) return s;
  }
  return exposer;
}

template <typename Server>
absl::Status ServeUntilSignal(Server& server, const ServeOptions& options) {
  if (absl::Status s = server.Start(); !s.ok()) return s;
  std::printf("listening on %s\n", server.grpc_server().address().c_str());
  std::fflush(stdout);
  if (!options.port_file.empty()) {
    if (absl::Status s = WritePortFile(options.port_file, server.port()); !s.ok()) return s;
  }
  const int sig = WaitForShutdownSignal();
  std::fprintf(stderr, "%s: signal %d, shutting down\n", options.name.c_str(), sig);
  server.Shutdown(absl::Now() + options.shutdown_grace);
  return absl::OkStatus();
}

}  // namespace rlhf::services
