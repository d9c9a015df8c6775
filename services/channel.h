// Client-side helpers shared by every client of the project (actor -> learner, actor ->
// reward/reference servers, tools):
//
//   ChannelOptions opts;  opts.target = "127.0.0.1:50051";  opts.auth_token = token;
//   RLHF_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, MakeChannel(opts));
//   auto stub = rlhf::v1::RewardService::NewStub(channel);
//   absl::Status s = CallWithRetry(RetryOptions{}, absl::Now() + absl::Seconds(5),
//       [&](absl::Time deadline) {
//         grpc::ClientContext ctx;                 // a fresh context per attempt
//         PrepareContext(&ctx, deadline, opts.auth_token);
//         return FromGrpcStatus(stub->Score(&ctx, request, &response));
//       });
//
// MakeChannel sets explicit max send/receive message sizes, keepalive, and TLS / mTLS
// credentials; the bearer token travels as per-call metadata (PrepareContext), which
// also works on plaintext loopback channels where gRPC refuses call credentials.
// CallWithRetry retries UNAVAILABLE (server down, restarting, connection reset) with
// exponential backoff and jitter, never past the overall deadline; every other code is
// returned at once (non-idempotent calls must not use it unless the server dedups).
//
// Thread-safety: all functions are thread-safe; channels are shared freely.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace rlhf::services {

struct ClientTlsOptions {
  bool enabled = false;
  std::string ca_file;    // PEM roots that sign the server cert; empty = system roots
  std::string cert_file;  // PEM client certificate (mutual TLS); empty = none
  std::string key_file;   // its private key
  std::string server_name_override;  // expected server name (tests with "localhost" certs)
};

struct ChannelOptions {
  // "host:port", "dns:///name:port", "unix:/path", or replicas of one service as
  // "host:port,host:port" (see replica_target.h: resolved once, round_robin over them).
  std::string target;
  ClientTlsOptions tls;
  std::string auth_token;            // sent by PrepareContext; kept here for convenience
  int max_message_bytes = 64 << 20;  // send and receive limit, bytes
  absl::Duration keepalive_time = absl::Seconds(30);
  absl::Duration keepalive_timeout = absl::Seconds(10);
  // gRPC load-balancing policy over the addresses the target resolves to: round_robin
  // spreads calls over every backend (a Kubernetes headless Service name as
  // "dns:///rlhf-reward-server:50051" resolves to one address per pod); "" = gRPC's
  // default, pick_first (one connection to the first address that works).
  std::string lb_policy = "round_robin";
};

// Builds the channel (lazy: it connects on first use). InvalidArgument / NotFound for
// bad options or unreadable PEM files.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ChannelOptions& options);

// Blocks until the channel is READY or the deadline passes (DeadlineExceeded).
absl::Status WaitForChannelReady(const std::shared_ptr<grpc::Channel>& channel,
                                 absl::Time deadline);

// Sets the call deadline and, when non-empty, "authorization: Bearer <token>".
void PrepareContext(grpc::ClientContext* context, absl::Time deadline,
                    const std::string& auth_token);

struct RetryOptions {
  int max_attempts = 5;                                  // including the first
  absl::Duration initial_backoff = absl::Milliseconds(50);
  absl::Duration max_backoff = absl::Seconds(2);
  double multiplier = 2.0;                               // backoff growth per attempt
  double jitter = 0.2;                                   // +- fraction of each backoff
};

// Backoff before attempt `attempt` (1-based retries: attempt 1 = first retry), without
// jitter: min(initial * multiplier^(attempt-1), max).
absl::Duration BackoffForAttempt(const RetryOptions& options, int attempt);

// Calls attempt(deadline) until it returns non-UNAVAILABLE, max_attempts are used, or the
// next backoff would end past `deadline`. Returns the last status. The attempt gets the
// overall deadline to put on its ClientContext.
absl::Status CallWithRetry(const RetryOptions& options, absl::Time deadline,
                           const std::function<absl::Status(absl::Time deadline)>& attempt);

// CallCanceller: ends a client's in-flight calls early from another thread (an actor
// that must stop within its grace period cancels its scoring calls). Each attempt runs
// under a Scope holding its ClientContext; CancelAll() TryCancel()s every live context
// and makes every later Scope fail at once with CANCELLED (it is sticky: the client is
// done). CallWithRetry does not retry CANCELLED.
//
//   grpc::ClientContext ctx;
//   PrepareContext(&ctx, deadline, token);
//   CallCanceller::Scope scope(canceller, &ctx);
//   if (!scope.status().ok()) return scope.status();
//   return FromGrpcStatus(stub->Score(&ctx, request, &response));
//
// Thread-safety: all members are thread-safe. A Scope must end before its context does.
class CallCanceller {
 public:
  class Scope {
   public:
    Scope(CallCanceller& canceller, grpc::ClientContext* context);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
    // CANCELLED when CancelAll() ran before this call started; OK otherwise.
    const absl::Status& status() const { return status_; }

   private:
    CallCanceller& canceller_;
    grpc::ClientContext* context_;
    absl::Status status_;
  };

  void CancelAll();
  bool cancelled() const;

 private:
  mutable absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<grpc::ClientContext*> live_ ABSL_GUARDED_BY(mu_);
};

}  // namespace rlhf::services
