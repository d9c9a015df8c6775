// Replica lists for client targets: "host:port,host:port" names several replicas of one
// service (reward or reference servers). gRPC takes one target name per channel, so a
// list becomes gRPC's static-address target ("ipv4:10.0.0.1:50051,10.0.0.2:50051"),
// which the channel's round_robin policy spreads calls over and which skips a replica
// whose connection fails (its calls go to the others; no call is pinned to a dead one).
//
//   RLHF_ASSIGN_OR_RETURN(ReplicaTarget t, ParseReplicaTarget("r1:50051,r2:50051"));
//   // t.target = "ipv4:10.0.0.7:50051,10.0.0.8:50051", t.authority = "r1:50051"
//
// Each host is resolved once, here (getaddrinfo, its first IPv4 address, else its first
// IPv6 one): a replica whose address later changes needs a new channel. For a set of
// replicas that changes while the job runs, use one DNS name that resolves to every
// replica ("dns:///rlhf-reward:50051", a Kubernetes headless Service) instead: gRPC
// re-resolves it. A target that is one address or already a gRPC URI (ipv4:, ipv6:,
// dns:, unix:, ...) is returned unchanged.
//
// Thread-safety: a pure function (getaddrinfo is thread-safe).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace rlhf::services {

struct ReplicaTarget {
  std::string target;  // what grpc::CreateChannel takes
  // The name TLS checks the servers' certificates against when the target is a list:
  // the first entry's "host:port" (every replica's certificate must carry that name,
  // e.g. in its subject alternative names). Empty when `target` is the input unchanged.
  std::string authority;
};

// InvalidArgument naming the entry (1-based) and what is wrong: an empty entry, no
// ":port", a port outside 1..65535, a host that does not resolve, or IPv4 and IPv6
// replicas in one list (gRPC's static targets take one family).
absl::StatusOr<ReplicaTarget> ParseReplicaTarget(const std::string& target);

// Splits one "host:port" or "[v6]:port" into host (brackets removed) and port, the inverse
// of JoinHostPort (services/server.h). InvalidArgument when there is no single ":port" or
// the port is outside 1..65535; *host and *port are unspecified then.
absl::Status SplitHostPort(const std::string& entry, std::string* host, int* port);

}  // namespace rlhf::services
