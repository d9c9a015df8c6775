#include "tools/launcher/ready.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "services/health.h"
#include "services/server.h"

namespace rlhf::launcher {

ProbeOptions ProbeOptionsFromSecurity(const rlhf::v1::SecurityConfig& s) {
  ProbeOptions probe;
  if (s.tls_cert().empty()) return probe;
  probe.tls.enabled = true;
  probe.tls.ca_file = s.tls_ca();
  if (!s.client_cert().empty()) {
    probe.tls.cert_file = s.client_cert();
    probe.tls.key_file = s.client_key();
  } else if (s.require_client_cert()) {
    // Without a separate client certificate the actors present the server's own (see
    // ActorSecurityArgs); the probe does the same so that it sees what they see.
    probe.tls.cert_file = s.tls_cert();
    probe.tls.key_file = s.tls_key();
  }
  return probe;
}

absl::Status WaitForServing(const std::string& host, int port, Process& process,
                            absl::Time deadline, const ProbeOptions& probe) {
  services::ChannelOptions options;
  options.target = services::JoinHostPort(host, port);
  options.tls = probe.tls;
  options.lb_policy = "";  // one address
  auto channel = services::MakeChannel(options);
  if (!channel.ok()) {
    return absl::Status(
        channel.status().code(),
        absl::StrCat(process.name(), ": readiness probe: ", channel.status().message()));
  }
  std::string last = "no answer";
  while (true) {
    auto st = services::CheckHealth(*channel, "", absl::Now() + absl::Seconds(2));
    if (st.ok() && *st == services::HealthStatus::kServing) return absl::OkStatus();
    last = st.ok() ? absl::StrCat("health status ", static_cast<int>(*st))
                   : std::string(st.status().message());
    if (!process.Poll()) {
      return absl::FailedPreconditionError(absl::StrCat(
          process.name(), " ", process.DescribeExit(), " before becoming healthy; last lines of ",
          process.spec().log_path, ":\n", TailFile(process.spec().log_path, 15)));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat(process.name(), " at ", options.target, " not SERVING in time over ",
                       probe.tls.enabled ? "TLS" : "plaintext", " (", last, ")"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

}  // namespace rlhf::launcher
