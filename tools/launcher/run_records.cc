#include "tools/launcher/run_records.h"

#include <cmath>
#include <fstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/server.h"

namespace rlhf::launcher {

std::optional<nlohmann::json> LearnerRecordFromStats(const rlhf::v1::LearnerStats& stats) {
  if (stats.step() < 1) return std::nullopt;
  nlohmann::json j;
  j["step"] = stats.step();
  j["policy_version"] = stats.policy_version();
  j["actors_connected"] = stats.actors_connected();
  // The same names as the learner's Prometheus series rlhf_learner_train_stat{name} and
  // rlhf_learner_trajectories_total{outcome}, so records and dashboards agree.
  for (const auto& [name, value] : stats.last_step_stats()) {
    if (std::isfinite(value)) j[name] = value;
  }
  j["trajectories_accepted_total"] = stats.trajectories_accepted();
  j["trajectories_dropped_stale_total"] = stats.trajectories_dropped_stale();
  j["trajectories_rejected_total"] = stats.trajectories_rejected();
  j["trajectories_trained_total"] = stats.trajectories_trained();
  if (stats.done()) j["final"] = true;
  return j;
}

absl::StatusOr<services::ChannelOptions> LearnerChannelOptions(
    const rlhf::v1::SecurityConfig& security, const std::string& target) {
  services::ChannelOptions c;
  c.target = target;
  if (!security.token_file().empty()) {
    absl::StatusOr<std::string> token = services::ReadTokenFile(security.token_file());
    if (!token.ok()) return token.status();
    c.auth_token = *std::move(token);
  }
  // The learner serves TLS exactly when the job gives the servers a certificate
  // (learner/main.cc reads security.* from the job config, as the actors' flags do).
  c.tls.enabled = !security.tls_cert().empty();
  c.tls.ca_file = security.tls_ca();
  if (security.require_client_cert()) {
    c.tls.cert_file = security.tls_cert();
    c.tls.key_file = security.tls_key();
  }
  return c;
}

RunRecorder::RunRecorder(learner::LearnerClient* client, std::string jsonl_path, int64_t last_step,
                         absl::Time start)
    : client_(client), jsonl_path_(std::move(jsonl_path)), last_step_(last_step), start_(start) {}

absl::Status RunRecorder::Poll(absl::Time deadline) {
  absl::StatusOr<rlhf::v1::LearnerStats> stats = client_->GetStats(deadline);
  if (!stats.ok()) return stats.status();
  std::optional<nlohmann::json> record = LearnerRecordFromStats(*stats);
  if (!record.has_value() || stats->step() <= last_step_) return absl::OkStatus();
  const absl::Time now = absl::Now();
  (*record)["time_unix_s"] = absl::ToDoubleSeconds(now - absl::UnixEpoch());
  (*record)["elapsed_s"] = absl::ToDoubleSeconds(now - start_);
  std::ofstream out(jsonl_path_, std::ios::app);
  out << record->dump() << "\n";
  out.flush();
  if (!out) return absl::InternalError(absl::StrCat("cannot append to ", jsonl_path_));
  last_step_ = stats->step();
  return absl::OkStatus();
}

}  // namespace rlhf::launcher
