// `rlhf run --config JOB.yaml [--set path=value ...] [--stages rl,eval]`: the whole job
// (tools/launcher/job.h). Exit code 0 = completed, 1 = failed or bad config,
// 130 = stopped by Ctrl-C / SIGTERM (everything shut down).
#pragma once

#include <string>
#include <vector>

namespace rlhf::tools {

int RunRunCommand(const std::vector<std::string>& args);

}  // namespace rlhf::tools
