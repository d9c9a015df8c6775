#include "tools/launcher/status.h"

#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace rlhf::launcher {

std::optional<double> JsonNumber(const nlohmann::json& j,
                                 std::initializer_list<const char*> keys) {
  if (!j.is_object()) return std::nullopt;
  for (const char* k : keys) {
    auto it = j.find(k);
    if (it == j.end()) continue;
    if (it->is_number()) return it->get<double>();
    double v;
    if (it->is_string() && absl::SimpleAtod(it->get<std::string>(), &v)) return v;
  }
  return std::nullopt;
}

std::optional<nlohmann::json> ReadLastJsonLine(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff start = std::max<std::streamoff>(0, size - 65536);
  in.seekg(start);
  std::string tail((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Only newline-terminated lines are complete (the writer may be mid-line).
  size_t end = tail.rfind('\n');
  while (end != std::string::npos && end > 0) {
    size_t begin = tail.rfind('\n', end - 1);
    begin = begin == std::string::npos ? 0 : begin + 1;
    auto j = nlohmann::json::parse(tail.substr(begin, end - begin), nullptr, false);
    if (!j.is_discarded() && j.is_object()) return j;
    if (begin == 0) break;
    end = begin - 1;
  }
  return std::nullopt;
}

TrainingStatus StatusTracker::Update(const std::optional<nlohmann::json>& record, int actors_up,
                                     int actors_configured, absl::Time now) {
  TrainingStatus s = last_;
  s.total_steps = total_steps_;
  s.actors_up = actors_up;
  s.actors_configured = actors_configured;
  if (record.has_value()) {
    const auto& j = *record;
    if (auto v = JsonNumber(j, {"step", "learner_step"})) s.step = static_cast<int64_t>(*v);
    if (auto v = JsonNumber(j, {"policy_version", "version"})) {
      s.policy_version = static_cast<int64_t>(*v);
    }
    if (auto v = JsonNumber(j, {"reward", "reward_mean", "score_mean", "rm_score"})) s.reward = v;
    if (auto v = JsonNumber(j, {"kl", "kl_mean", "kl_to_ref", "kl_seq"})) s.kl = v;
    if (auto v = JsonNumber(j, {"beta", "kl_beta", "kl_coef"})) s.beta = v;
    const auto reported_rate = JsonNumber(j, {"trajectories_per_s", "trajectories_per_second"});
    if (reported_rate.has_value()) s.trajectories_per_s = reported_rate;
    const auto total_traj = JsonNumber(j, {"trajectories_total", "trajectories_trained_total",
                                           "trajectories_seen", "trajectories"});
    if (s.step.has_value()) {
      if (!first_step_time_.has_value()) {
        first_step_time_ = now;
        first_step_ = *s.step;
        first_trajectories_ = total_traj;
      } else if (*s.step > *first_step_) {
        const double elapsed = absl::ToDoubleSeconds(now - *first_step_time_);
        const double per_step = elapsed / static_cast<double>(*s.step - *first_step_);
        if (total_steps_ > 0) {
          s.eta = absl::Seconds(per_step * static_cast<double>(std::max<int64_t>(
                                               0, total_steps_ - *s.step)));
        }
        // Recomputed at every update (the previous line's rate is only a fallback):
        // the mean rate since the first step seen.
        if (!reported_rate.has_value() && total_traj.has_value() &&
            first_trajectories_.has_value() && elapsed > 0) {
          s.trajectories_per_s = (*total_traj - *first_trajectories_) / elapsed;
        }
      }
    }
  }
  last_ = s;
  return s;
}

std::string FormatStatusLine(const TrainingStatus& s) {
  auto num = [](const std::optional<double>& v, int decimals) -> std::string {
    if (!v.has_value()) return "-";
    return absl::StrFormat("%.*f", decimals, *v);
  };
  std::string step = s.step.has_value() ? absl::StrCat(*s.step) : "-";
  if (s.total_steps > 0) absl::StrAppend(&step, "/", s.total_steps);
  std::string eta = "-";
  if (s.eta.has_value()) {
    const int64_t secs = absl::ToInt64Seconds(*s.eta);
    eta = secs >= 60 ? absl::StrCat(secs / 60, "m", absl::StrFormat("%02d", secs % 60), "s")
                     : absl::StrCat(secs, "s");
  }
  return absl::StrCat("step ", step, " v",
                      s.policy_version.has_value() ? absl::StrCat(*s.policy_version) : "-",
                      " | reward ", num(s.reward, 3), " | KL ", num(s.kl, 3), " | beta ",
                      num(s.beta, 4), " | ", num(s.trajectories_per_s, 1), " traj/s | actors ",
                      s.actors_up, "/", s.actors_configured, " | ETA ", eta);
}

}  // namespace rlhf::launcher
