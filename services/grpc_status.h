// The one place where absl::Status and grpc::Status are converted (house style: convert
// once per boundary). Codes map one to one (both follow google.rpc.Code); the message
// is carried unchanged.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace rlhf::services {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace rlhf::services
