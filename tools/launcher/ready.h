// Readiness checks the launcher runs after spawning a child: wait for its port file,
// then for grpc.health.v1 SERVING on that port.
//
// Thread-safety: free functions; `process` is only Poll()ed.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "tools/launcher/process.h"

namespace rlhf::launcher {

// Polls grpc.health.v1.Health/Check("") on host:port until SERVING. Fails early when
// `process` exits (message has its log tail) and with DeadlineExceeded (naming the
// last health answer) after `deadline`.
absl::Status WaitForServing(const std::string& host, int port, Process& process,
                            absl::Time deadline);

}  // namespace rlhf::launcher
