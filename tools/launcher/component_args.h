// The command-line flags of the RL job's server processes as the job config implies
// them, for launchers that start those processes elsewhere (slurm.h writes them into a
// batch script). Listening address, ports and port files are the caller's.
//
// (job.cc's StartRlChildren builds the same flags inline; it should call these once the
// job.cc split has landed, so that the two launchers cannot drift.)
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <vector>

#include "rlhf/v1/config.pb.h"

namespace rlhf::launcher {

// rlhf-reward-server: scorers, threads, batching, max_seq_len (no security flags).
std::vector<std::string> RewardServerArgs(const rlhf::v1::JobConfig& config);

// rlhf-reference-server: checkpoint, threads, batching, max_seq_len.
std::vector<std::string> ReferenceServerArgs(const rlhf::v1::JobConfig& config);

// Server-side security flags from `security` (token, TLS, mTLS, allow_insecure).
std::vector<std::string> ServerSecurityArgs(const rlhf::v1::JobConfig& config);

// Actor-side security flags: the token, the CA that signs the servers, and with
// require_client_cert the certificate and key the actor presents.
std::vector<std::string> ActorSecurityArgs(const rlhf::v1::JobConfig& config);

}  // namespace rlhf::launcher
