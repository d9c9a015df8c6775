#include "core/rl/kl_controller.h"

#include <algorithm>

namespace rlhf {

absl::Status KlController::Validate(const KlControllerOptions& options) {
  if (!(options.initial_beta >= 0)) {
    return absl::InvalidArgumentError("kl.beta must be >= 0");
  }
  if (options.adaptive) {
    if (!(options.target > 0)) return absl::InvalidArgumentError("kl.target must be > 0");
    if (options.horizon <= 0) return absl::InvalidArgumentError("kl.horizon must be > 0");
  }
  return absl::OkStatus();
}

double KlController::Update(double observed_kl, int64_t n_steps) {
  if (!options_.adaptive) return beta_;
  const double error = std::clamp(observed_kl / options_.target - 1.0, -0.2, 0.2);
  beta_ *= 1.0 + error * static_cast<double>(n_steps) / static_cast<double>(options_.horizon);
  return beta_;
}

}  // namespace rlhf
