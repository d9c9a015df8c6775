// Client for gRPC standard health checking (grpc.health.v1.Health/Check) without the
// health .proto (not shipped by Debian's gRPC): the two one-field messages are encoded
// by hand on a generic stub.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/channel.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace rlhf::services {

enum class HealthStatus { kUnknown = 0, kServing = 1, kNotServing = 2, kServiceUnknown = 3 };

// Health of `service` ("" = the whole server). RPC failures come back as the Status
// (e.g. UNAVAILABLE when nothing listens; NOT_FOUND for a service never registered).
absl::StatusOr<HealthStatus> CheckHealth(const std::shared_ptr<grpc::Channel>& channel,
                                         const std::string& service, absl::Time deadline);

}  // namespace rlhf::services
