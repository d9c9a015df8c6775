#include "tools/launcher/ready.h"

#include <thread>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include "absl/strings/str_cat.h"
#include "services/health.h"
#include "services/server.h"

namespace rlhf::launcher {

absl::Status WaitForServing(const std::string& host, int port, Process& process,
                            absl::Time deadline) {
  const std::string target = services::JoinHostPort(host, port);
  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  std::string last = "no answer";
  while (true) {
    auto st = services::CheckHealth(channel, "", absl::Now() + absl::Seconds(2));
    if (st.ok() && *st == services::HealthStatus::kServing) return absl::OkStatus();
    last = st.ok() ? absl::StrCat("health status ", static_cast<int>(*st))
                   : std::string(st.status().message());
    if (!process.Poll()) {
      return absl::FailedPreconditionError(absl::StrCat(
          process.name(), " ", process.DescribeExit(), " before becoming healthy; last lines of ",
          process.spec().log_path, ":\n", TailFile(process.spec().log_path, 15)));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(process.name(), " at ", target,
                                                      " not SERVING in time (", last, ")"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

}  // namespace rlhf::launcher
