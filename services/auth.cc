#include "services/auth.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace rlhf::services {
namespace {

// Compares in time independent of where the first difference is.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char ca = i < a.size() ? a[i] : 0;
    const unsigned char cb = i < b.size() ? b[i] : 0;
    diff |= ca ^ cb;
  }
  return diff == 0;
}

}  // namespace

absl::Status BearerTokenAuth::CheckHeader(absl::string_view authorization) const {
  if (token_.empty()) return absl::OkStatus();
  // RFC 6750 / RFC 7235: the auth scheme is case-insensitive ("bearer", "BEARER").
  constexpr absl::string_view kPrefix = "Bearer ";
  if (!absl::StartsWithIgnoreCase(authorization, kPrefix)) {
    return absl::UnauthenticatedError("missing 'authorization: Bearer <token>' metadata");
  }
  if (!ConstantTimeEquals(authorization.substr(kPrefix.size()), token_)) {
    return absl::UnauthenticatedError("invalid bearer token");
  }
  return absl::OkStatus();
}

absl::Status BearerTokenAuth::Check(const grpc::ServerContextBase& context) const {
  if (token_.empty()) return absl::OkStatus();
  const auto& md = context.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return CheckHeader("");
  return CheckHeader(absl::string_view(it->second.data(), it->second.size()));
}

void AddBearerToken(grpc::ClientContext* context, absl::string_view token) {
  if (!token.empty()) context->AddMetadata("authorization", absl::StrCat("Bearer ", token));
}

}  // namespace rlhf::services
