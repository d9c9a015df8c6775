// KL coefficient control (design.md §2).
//
// Adaptive (Ziegler et al. 2019): after each update with observed KL (nats per
// sequence, same units as `target`) over n_steps samples,
//   e = clip(KL / target - 1, -0.2, 0.2),   β <- β · (1 + e · n_steps / horizon).
// Fixed: β never changes. Value type; not thread-safe.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace rlhf {

struct KlControllerOptions {
  double initial_beta = 0.05;
  bool adaptive = true;
  double target = 3.0;     // nats per sequence
  int64_t horizon = 10000; // samples
};

class KlController {
 public:
  explicit KlController(const KlControllerOptions& options)
      : options_(options), beta_(options.initial_beta) {}

  // Checks beta >= 0, target > 0 and horizon > 0 (adaptive only); names the field.
  static absl::Status Validate(const KlControllerOptions& options);

  double beta() const { return beta_; }
  const KlControllerOptions& options() const { return options_; }

  // Folds one observation in; returns the new β. No-op when not adaptive.
  double Update(double observed_kl, int64_t n_steps);

  // Restores a checkpointed β.
  void set_beta(double beta) { beta_ = beta; }

 private:
  KlControllerOptions options_;
  double beta_;
};

}  // namespace rlhf
