#include "tools/launcher/run_records.h"

#include <cmath>
#include <fstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/server.h"

namespace rlhf::launcher {

nlohmann::json LearnerRecordFromStep(const rlhf::v1::StepRecord& step, bool final) {
  nlohmann::json j;
  j["step"] = step.step();
  j["policy_version"] = step.policy_version();
  j["actors_connected"] = step.actors_connected();
  // The same names as the learner's Prometheus series rlhf_learner_train_stat{name} and
  // rlhf_learner_trajectories_total{outcome}, so records and dashboards agree.
  for (const auto& [name, value] : step.stats()) {
    if (std::isfinite(value)) j[name] = value;
  }
  j["trajectories_accepted_total"] = step.trajectories_accepted();
  j["trajectories_dropped_stale_total"] = step.trajectories_dropped_stale();
  j["trajectories_rejected_total"] = step.trajectories_rejected();
  j["trajectories_trained_total"] = step.trajectories_trained();
  if (final) j["final"] = true;
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
  rlhf::v1::GetStatsRequest request;
  request.set_steps_after(last_step_);
  absl::StatusOr<rlhf::v1::LearnerStats> stats = client_->GetStats(request, deadline);
  if (!stats.ok()) return stats.status();
  std::string lines;
  int64_t newest = last_step_;
  int64_t missed = 0;
  for (const rlhf::v1::StepRecord& step : stats->recent_steps()) {
    if (step.step() <= newest) continue;  // a learner restored behind what was written
    missed += step.step() - newest - 1;
    nlohmann::json record =
        LearnerRecordFromStep(step, stats->done() && step.step() == stats->step());
    record["time_unix_s"] = step.time_unix_s();
    record["elapsed_s"] = step.time_unix_s() - absl::ToDoubleSeconds(start_ - absl::UnixEpoch());
    absl::StrAppend(&lines, record.dump(), "\n");
    newest = step.step();
  }
  if (lines.empty()) return absl::OkStatus();
  std::ofstream out(jsonl_path_, std::ios::app);
  out << lines;
  out.flush();
  if (!out) return absl::InternalError(absl::StrCat("cannot append to ", jsonl_path_));
  last_step_ = newest;
  steps_missed_ += missed;
  return absl::OkStatus();
}

}  // namespace rlhf::launcher
