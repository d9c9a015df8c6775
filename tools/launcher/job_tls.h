// The per-job PKI behind security.auto_tls (config.proto): `rlhf run` makes, under
// <run_dir>/tls/, a CA, a server certificate whose SANs are every address the job's
// processes listen on or are dialled at (plus localhost, 127.0.0.1 and this host's name),
// a client certificate and a random bearer token, then points security.* at them so
// that every server runs mutual TLS + token and every client (actors, the launcher's
// readiness probes) presents the client certificate.
//
//   if (AutoTlsEnabled(config)) {
//     RLHF_ASSIGN_OR_RETURN(JobTlsFiles f, EnsureJobTls(run_dir + "/tls", JobTlsNames(config)));
//     UseJobTls(f, config.mutable_security());
//   }
//
// Files are made with the `openssl` command (Debian package openssl; scripts/deps.sh):
// EC P-256 keys, 10-year validity. Private keys and the token are 0600, the directory
// 0700. A second run over the same directory (resume) reuses everything; only the
// server certificate is re-issued, by the same CA, when the set of names changed.
//
// Thread-safety: free functions; EnsureJobTls spawns processes and writes files, so
// call it from one thread (the launcher's main thread) per directory.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "rlhf/v1/config.pb.h"

namespace rlhf::launcher {

struct JobTlsFiles {
  std::string dir;
  std::string ca_cert, ca_key;          // ca.pem, ca.key
  std::string server_cert, server_key;  // server.pem, server.key
  std::string client_cert, client_key;  // client.pem, client.key
  std::string token_file;               // token (64 hex characters)
};

// security.auto_tls when set; unset: true when any server endpoint listens off loopback
// (services::IsLoopbackHost) and security.tls_cert is empty.
bool AutoTlsEnabled(const rlhf::v1::JobConfig& config);

// The server certificate's names: each endpoint's host (wildcards 0.0.0.0 / :: left
// out) and advertise address, then localhost, 127.0.0.1 and gethostname(); no
// duplicates, in that order.
std::vector<std::string> JobTlsNames(const rlhf::v1::JobConfig& config);

// Creates (or reuses) the files in `dir`. FailedPrecondition when openssl is not on
// PATH; Internal with openssl's output when a command fails; the filesystem's error
// otherwise.
absl::StatusOr<JobTlsFiles> EnsureJobTls(const std::string& dir,
                                         const std::vector<std::string>& names);

// Points `security` at the files: tls_cert/tls_key/tls_ca, require_client_cert,
// client_cert/client_key, and token_file unless one is configured already. Clears
// auto_tls (the resolved config then names the files, and reloading it uses them).
void UseJobTls(const JobTlsFiles& files, rlhf::v1::SecurityConfig* security);

}  // namespace rlhf::launcher
