#include "tools/launcher/component_args.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace rlhf::launcher {

std::vector<std::string> RewardServerArgs(const rlhf::v1::JobConfig& config) {
  const auto& rs = config.reward_server();
  std::vector<std::string> scorer_specs;
  bool normalize = false;
  for (const auto& sc : rs.scorers()) {
    if (sc.type() == "gold") {
      scorer_specs.push_back(absl::StrCat("gold:", sc.weight()));
    } else {
      scorer_specs.push_back(absl::StrCat("rm:", sc.checkpoint(), ":", sc.weight()));
      normalize |= sc.normalize();
    }
  }
  std::vector<std::string> args = {
      "--scorers=" + absl::StrJoin(scorer_specs, ","),
      absl::StrCat("--threads=", rs.endpoint().threads()),
      absl::StrCat("--max_batch_tokens=", rs.batching().max_batch_tokens()),
      absl::StrCat("--max_wait_ms=", rs.batching().max_wait_ms()),
      absl::StrCat("--max_queue_sequences=", rs.batching().max_queue()),
      absl::StrCat("--max_sequences_per_request=", rs.batching().max_sequences_per_request()),
      absl::StrCat("--max_seq_len=", config.model().max_seq_len())};
  if (normalize) args.push_back("--normalize");
  return args;
}

std::vector<std::string> ReferenceServerArgs(const rlhf::v1::JobConfig& config) {
  const auto& ref = config.reference_server();
  return {"--checkpoint=" + ref.checkpoint(),
          absl::StrCat("--threads=", ref.endpoint().threads()),
          absl::StrCat("--max_batch_tokens=", ref.batching().max_batch_tokens()),
          absl::StrCat("--max_wait_ms=", ref.batching().max_wait_ms()),
          absl::StrCat("--max_queue_sequences=", ref.batching().max_queue()),
          absl::StrCat("--max_sequences_per_request=", ref.batching().max_sequences_per_request()),
          absl::StrCat("--max_seq_len=", config.model().max_seq_len())};
}

std::vector<std::string> ServerSecurityArgs(const rlhf::v1::JobConfig& config) {
  std::vector<std::string> a;
  const auto& s = config.security();
  if (!s.token_file().empty()) a.push_back("--token_file=" + s.token_file());
  if (!s.tls_cert().empty()) a.push_back("--tls_cert=" + s.tls_cert());
  if (!s.tls_key().empty()) a.push_back("--tls_key=" + s.tls_key());
  if (!s.tls_ca().empty()) a.push_back("--tls_ca=" + s.tls_ca());
  if (s.require_client_cert()) a.push_back("--require_client_cert");
  if (s.allow_insecure()) a.push_back("--allow_insecure");
  return a;
}

std::vector<std::string> ActorSecurityArgs(const rlhf::v1::JobConfig& config) {
  std::vector<std::string> a;
  const auto& s = config.security();
  if (!s.token_file().empty()) a.push_back("--token_file=" + s.token_file());
  if (!s.tls_ca().empty()) a.push_back("--tls_ca=" + s.tls_ca());
  // Mutual TLS: the servers ask every client for a certificate signed by tls_ca.
  if (s.require_client_cert()) {
    a.push_back("--tls_cert=" + s.tls_cert());
    a.push_back("--tls_key=" + s.tls_key());
  }
  return a;
}

}  // namespace rlhf::launcher
