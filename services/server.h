// GrpcServer: the bootstrap every server of the project uses.
//
//   GrpcServerOptions options;            // plain struct, defaults below
//   options.port = 0;                     // 0 = pick a free port, read back with port()
//   RLHF_ASSIGN_OR_RETURN(auto server, GrpcServer::Create(options, {&my_service}));
//   RLHF_RETURN_IF_ERROR(server->Start());   // health: SERVING
//   ... WaitForShutdownSignal() ...
//   server->Shutdown(absl::Now() + absl::Seconds(10));  // NOT_SERVING, drain, stop
//
// Every server gets gRPC standard health checking (grpc.health.v1.Health; the overall
// status "" and every registered service name), server reflection, explicit max
// send/receive message sizes and keepalive settings, optional TLS / mutual TLS, and an
// optional shared bearer token (checked by each service with BearerTokenAuth, see
// auth.h). A server asked to listen on a non-loopback address without TLS refuses to
// start (FailedPrecondition naming the address), token or not (a token over plaintext
// is readable on the wire), unless allow_insecure is set.
//
// Thread-safety: Start/Shutdown/SetServing may be called from any thread, Shutdown at
// most once after Start. The services passed to Create are not owned and must outlive
// the server.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/impl/codegen/service_type.h>
#include <grpcpp/server.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace rlhf::services {

// Server-side TLS. Empty cert_file = plaintext.
struct ServerTlsOptions {
  std::string cert_file;  // PEM certificate chain of this server
  std::string key_file;   // PEM private key
  std::string ca_file;    // PEM CA bundle used to verify client certificates (mTLS)
  bool require_client_cert = false;  // true: mutual TLS, clients without a valid cert fail
  bool enabled() const { return !cert_file.empty(); }
};

struct GrpcServerOptions {
  std::string name = "server";    // used in log lines and errors only
  std::string host = "127.0.0.1"; // listen address; "0.0.0.0" / "::" for all interfaces
  int port = 0;                   // 0 = any free port (read back with port())
  int max_message_bytes = 64 << 20;               // send and receive limit, bytes
  absl::Duration keepalive_time = absl::Seconds(30);     // ping idle connections
  absl::Duration keepalive_timeout = absl::Seconds(10);  // drop if no ping ack
  ServerTlsOptions tls;
  std::string auth_token;         // non-empty: every call needs "authorization: Bearer <t>"
  bool allow_insecure = false;    // listen on non-loopback without TLS (token or not)
  int max_threads = 0;            // > 0: cap gRPC's thread pool (ResourceQuota)
  // Close each client connection (GOAWAY) after this long, +-10% jitter, so clients
  // reconnect and re-resolve: a replica added behind a DNS name then gets its share of
  // the calls. Zero = never (the default: the learner's weight streams are long-lived).
  // Calls in flight at that moment get max_connection_age_grace to finish. Both in
  // [0, 24 days].
  absl::Duration max_connection_age = absl::ZeroDuration();
  absl::Duration max_connection_age_grace = absl::Seconds(30);
  // Fully qualified service names ("rlhf.v1.RewardService") that health checking also
  // reports individually (the overall "" status is always reported).
  std::vector<std::string> health_service_names;
};

// The reward and reference servers' max_connection_age (their --max_connection_age_s):
// stateless replicas that an actor reaches through one DNS name.
inline constexpr int kDefaultScorerMaxConnectionAgeS = 300;

// True for 127.0.0.0/8, ::1, "localhost" and unix sockets.
bool IsLoopbackHost(const std::string& host);
// "host:port" with IPv6 literals bracketed.
std::string JoinHostPort(const std::string& host, int port);

class GrpcServer {
 public:
  // Validates options (TLS files readable, insecure exposure refused) without binding.
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Create(
      const GrpcServerOptions& options, std::vector<grpc::Service*> services);
  ~GrpcServer();

  // Binds and starts serving; health becomes SERVING. Unavailable if the port is taken.
  absl::Status Start();
  // Health NOT_SERVING, stop accepting, let in-flight calls finish until `deadline`,
  // then cancel the rest. Idempotent.
  void Shutdown(absl::Time deadline);
  // Health status of the server and all its services.
  void SetServing(bool serving);

  int port() const { return port_; }
  std::string address() const { return JoinHostPort(options_.host, port_); }
  const GrpcServerOptions& options() const { return options_; }

 private:
  GrpcServer(GrpcServerOptions options, std::vector<grpc::Service*> services,
             std::string cert, std::string key, std::string ca)
      : options_(std::move(options)), services_(std::move(services)),
        cert_pem_(std::move(cert)), key_pem_(std::move(key)), ca_pem_(std::move(ca)) {}

  const GrpcServerOptions options_;
  const std::vector<grpc::Service*> services_;
  const std::string cert_pem_, key_pem_, ca_pem_;
  absl::Mutex mu_;
  std::unique_ptr<grpc::Server> server_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  int port_ = 0;
};

// --max_message_mb -> bytes: 1..2047 MiB (gRPC sizes are int; 2048 MiB overflows).
// InvalidArgument naming `flag` otherwise.
absl::StatusOr<int> MessageBytesFromMiB(int64_t mib, const std::string& flag = "max_message_mb");

// Reads a whole file (PEMs, tokens). NotFound / PermissionDenied name the path.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);
// Reads a bearer token file: its contents with surrounding whitespace removed; empty
// files are InvalidArgument.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);
// Writes "<port>\n" to path via a temporary file + rename, so a reader polling for
// the file never sees a partial number (launchers use it with port 0).
absl::Status WritePortFile(const std::string& path, int port);

}  // namespace rlhf::services
