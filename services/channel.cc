#include "services/channel.h"

#include <algorithm>
#include <cmath>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/auth.h"
#include "services/replica_target.h"
#include "services/server.h"

namespace rlhf::services {

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ChannelOptions& options) {
  if (options.target.empty()) return absl::InvalidArgumentError("target: empty");
  if (options.max_message_bytes <= 0) {
    return absl::InvalidArgumentError("max_message_bytes: must be > 0");
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options.keepalive_time)));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options.keepalive_timeout)));
  // Our own backoff (CallWithRetry) decides retries; keep gRPC's reconnects brisk.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  if (!options.lb_policy.empty()) args.SetLoadBalancingPolicyName(options.lb_policy);
  auto target = ParseReplicaTarget(options.target);
  if (!target.ok()) return target.status();
  // A replica list's static target has no name: TLS checks the first entry's host (and
  // call metadata carries it), unless server_name_override says otherwise.
  if (!target->authority.empty() && options.tls.server_name_override.empty()) {
    args.SetString(GRPC_ARG_DEFAULT_AUTHORITY, target->authority);
  }

  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (options.tls.enabled) {
    grpc::SslCredentialsOptions ssl;
    if (!options.tls.ca_file.empty()) {
      auto ca = ReadFileToString(options.tls.ca_file);
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *std::move(ca);
    }
    if (!options.tls.cert_file.empty() || !options.tls.key_file.empty()) {
      auto cert = ReadFileToString(options.tls.cert_file);
      if (!cert.ok()) return cert.status();
      auto key = ReadFileToString(options.tls.key_file);
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *std::move(cert);
      ssl.pem_private_key = *std::move(key);
    }
    if (!options.tls.server_name_override.empty()) {
      args.SetSslTargetNameOverride(options.tls.server_name_override);
    }
    creds = grpc::SslCredentials(ssl);
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  return grpc::CreateCustomChannel(target->target, creds, args);
}

absl::Status WaitForChannelReady(const std::shared_ptr<grpc::Channel>& channel,
                                 absl::Time deadline) {
  if (channel->WaitForConnected(absl::ToChronoTime(deadline))) return absl::OkStatus();
  return absl::DeadlineExceededError("channel not ready before the deadline");
}

void PrepareContext(grpc::ClientContext* context, absl::Time deadline,
                    const std::string& auth_token) {
  if (deadline != absl::InfiniteFuture()) context->set_deadline(absl::ToChronoTime(deadline));
  AddBearerToken(context, auth_token);
}

absl::Duration BackoffForAttempt(const RetryOptions& options, int attempt) {
  const double scale = std::pow(options.multiplier, std::max(0, attempt - 1));
  const absl::Duration d = options.initial_backoff * scale;
  return std::min(d, options.max_backoff);
}

absl::Status CallWithRetry(const RetryOptions& options, absl::Time deadline,
                           const std::function<absl::Status(absl::Time deadline)>& attempt) {
  absl::BitGen gen;
  absl::Status status;
  const int max_attempts = std::max(1, options.max_attempts);
  for (int i = 0; i < max_attempts; ++i) {
    if (i > 0) {
      absl::Duration backoff = BackoffForAttempt(options, i);
      if (options.jitter > 0) {
        backoff *= absl::Uniform(gen, 1.0 - options.jitter, 1.0 + options.jitter);
      }
      if (absl::Now() + backoff >= deadline) break;
      absl::SleepFor(backoff);
    }
    status = attempt(deadline);
    if (status.code() != absl::StatusCode::kUnavailable) return status;
  }
  return status;
}

CallCanceller::Scope::Scope(CallCanceller& canceller, grpc::ClientContext* context)
    : canceller_(canceller), context_(context) {
  absl::MutexLock lock(&canceller_.mu_);
  if (canceller_.cancelled_) {
    status_ = absl::CancelledError("call cancelled: the client is shutting down");
    context_ = nullptr;
    return;
  }
  canceller_.live_.insert(context_);
}

CallCanceller::Scope::~Scope() {
  if (context_ == nullptr) return;
  absl::MutexLock lock(&canceller_.mu_);
  canceller_.live_.erase(context_);
}

void CallCanceller::CancelAll() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  // TryCancel under the lock: a Scope cannot end (and its context die) meanwhile.
  for (grpc::ClientContext* context : live_) context->TryCancel();
}

bool CallCanceller::cancelled() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

}  // namespace rlhf::services
