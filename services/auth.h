// Shared bearer-token authentication.
//
// Server side: each service adapter holds a BearerTokenAuth built from the server's
// token and calls Check(context) first in every RPC method; a missing or wrong
// "authorization: Bearer <token>" header is UNAUTHENTICATED. (An AuthMetadataProcessor
// would cover only TLS servers; this works over plaintext loopback too. Health stays
// open so that probes work; a server with a token serves no reflection at all, see
// server.h.) The scheme is matched case-insensitively (RFC 6750).
//
// Client side: AddBearerToken(context, token) (PrepareContext in channel.h calls it).
//
// Thread-safety: BearerTokenAuth is immutable after construction.
#pragma once

#include <string>

#include <grpcpp/client_context.h>
#include <grpcpp/impl/codegen/server_context.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace rlhf::services {

class BearerTokenAuth {
 public:
  // Empty token: authentication disabled, Check always OK.
  explicit BearerTokenAuth(std::string token) : token_(std::move(token)) {}

  bool enabled() const { return !token_.empty(); }
  // OK or UNAUTHENTICATED (the message never echoes the presented token).
  absl::Status Check(const grpc::ServerContextBase& context) const;
  // Same check on a raw header value, for tests and non-gRPC endpoints.
  absl::Status CheckHeader(absl::string_view authorization) const;

 private:
  const std::string token_;
};

void AddBearerToken(grpc::ClientContext* context, absl::string_view token);

}  // namespace rlhf::services
