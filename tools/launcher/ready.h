// Readiness checks the launcher runs after spawning a child: wait for its port file,
// then for grpc.health.v1 SERVING on that port, speaking the job's security settings
// (TLS with the job's CA, the client certificate under mutual TLS).
//
// Thread-safety: free functions; `process` is only Poll()ed.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "rlhf/v1/config.pb.h"
#include "services/channel.h"
#include "tools/launcher/process.h"

namespace rlhf::launcher {

// How the probe connects. Default: plaintext. No bearer token: health checking is open
// on every server, token or not (services/auth.h), so that probes work.
struct ProbeOptions {
  services::ClientTlsOptions tls;
};

// The probe for a job's servers: plaintext without security.tls_cert; otherwise TLS
// verified against security.tls_ca (system roots when empty) presenting
// security.client_cert/client_key when set, else (require_client_cert) tls_cert/tls_key,
// as the actors do (stage_argv.h ActorSecurityArgs).
ProbeOptions ProbeOptionsFromSecurity(const rlhf::v1::SecurityConfig& security);

// Polls grpc.health.v1.Health/Check("") on host:port until SERVING. Fails early when
// `process` exits (message has its log tail), at once with the channel's error when the
// probe's TLS files are unusable, and with DeadlineExceeded (naming the last health
// answer, e.g. a TLS handshake failure) after `deadline`.
absl::Status WaitForServing(const std::string& host, int port, Process& process,
                            absl::Time deadline, const ProbeOptions& probe = {});

}  // namespace rlhf::launcher
