// The live status line of `rlhf run`, built from the learner's metrics.jsonl (one JSON
// object per learner step, run_records.h) and the supervisor's view of its processes:
//
//   step 12/60 v12 | reward 0.412 | KL 1.23 | beta 0.051 | 37.2 traj/s | actors 2/2 | ETA 1m20s
//
// Key names in metrics.jsonl are matched from a short list of synonyms (e.g. "reward",
// "reward_mean") so the line survives small renames; missing values print as "-".
//
// Thread-safety: StatusTracker is used by one thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/time/time.h"

namespace rlhf::launcher {

struct TrainingStatus {
  std::optional<int64_t> step;
  int64_t total_steps = 0;
  std::optional<int64_t> policy_version;
  std::optional<double> reward;
  std::optional<double> kl;
  std::optional<double> beta;
  std::optional<double> trajectories_per_s;
  int actors_up = 0;
  int actors_configured = 0;
  std::optional<absl::Duration> eta;
};

std::string FormatStatusLine(const TrainingStatus& s);

// The last complete line of a JSONL file parsed (nullopt if none parses).
std::optional<nlohmann::json> ReadLastJsonLine(const std::string& path);

// First numeric value among `keys` in a JSON object (numbers or numeric strings).
std::optional<double> JsonNumber(const nlohmann::json& j, std::initializer_list<const char*> keys);

// Accumulates successive metrics.jsonl records into rates and an ETA.
class StatusTracker {
 public:
  explicit StatusTracker(int64_t total_steps) : total_steps_(total_steps) {}
  // `record` is the latest metrics.jsonl line (or nullopt); `now` the wall time.
  TrainingStatus Update(const std::optional<nlohmann::json>& record, int actors_up,
                        int actors_configured, absl::Time now);

 private:
  int64_t total_steps_;
  std::optional<absl::Time> first_step_time_;
  std::optional<int64_t> first_step_;
  std::optional<double> first_trajectories_;
  TrainingStatus last_;
};

}  // namespace rlhf::launcher
