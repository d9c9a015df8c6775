// Checkpoint and resume of the complete learner state: policy (and value) weights,
// AdamW moments, step, policy version, optimizer-step count (LR schedule), KL
// controller β, REINFORCE baseline, RNG states (the trainer's shuffle generator and
// LibTorch's default CPU generator) and an opaque JSON "cursor" that belongs to the
// caller (the in-process loop's prompt cursor; the LearnerService's leases and buffered
// trajectories).
//
// Layout under `root`:
//   step-00000040/                 one complete checkpoint (name = trainer step, 8 digits)
//     policy/model.safetensors     } core/model/checkpoint.h format: `policy/` is also a
//     policy/config.json           } plain model checkpoint (eval, reference server)
//     value/...                    PPO only
//     optimizer.safetensors        "policy/<param>/exp_avg", ".../exp_avg_sq", ...
//     learner_state.json           counters, β, baseline, RNG states, cursor; written last
//   tmp-step-00000044-<nonce>/     a save in progress (or interrupted): ignored, removed
//
// Atomicity: a save writes everything into a fresh tmp-* directory, fsyncs every file
// and directory, then renames it to step-N and fsyncs `root`. A crash at any point
// leaves either the old set of checkpoints or the old set plus the new one; a step-N
// without a readable learner_state.json is never chosen. After a successful save only
// the newest keep_last complete checkpoints are kept.
//
// Thread-safety: one LearnerCheckpointer per root, used by one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/rl_training/trainer.h"
#include "core/tokenizer/tokenizer.h"

namespace rlhf {

struct LearnerCheckpointerOptions {
  std::string root;   // directory holding the step-* checkpoints (created if missing)
  int keep_last = 3;  // >= 1 complete checkpoints kept after each save
  // The policy's tokenizer: its files are copied into each checkpoint's policy/ (and
  // value/) and recorded in their metadata, so that a step checkpoint alone is a usable
  // model (core/tokenizer/model_dir.h). Null = none recorded (readers then assume the
  // byte tokenizer). Shared, immutable.
  std::shared_ptr<const Tokenizer> tokenizer = nullptr;
};

class LearnerCheckpointer {
 public:
  // Creates `root` if needed and removes leftover tmp-* directories of interrupted saves.
  static absl::StatusOr<std::unique_ptr<LearnerCheckpointer>> Create(
      const LearnerCheckpointerOptions& options);

  // Writes the trainer's complete state plus `cursor` (any JSON value) as
  // step-<trainer.step()>, replacing a checkpoint of the same step; then prunes.
  // Returns the checkpoint directory.
  absl::StatusOr<std::string> Save(Trainer& trainer,
                                   const nlohmann::json& cursor = nlohmann::json::object());

  // Complete checkpoints, oldest first (full paths).
  std::vector<std::string> List() const;
  // The newest complete checkpoint; NotFound when there is none.
  absl::StatusOr<std::string> Latest() const;

  const LearnerCheckpointerOptions& options() const { return options_; }

 private:
  explicit LearnerCheckpointer(const LearnerCheckpointerOptions& options) : options_(options) {}
  LearnerCheckpointerOptions options_;
};

struct RestoredLearner {
  std::unique_ptr<Trainer> trainer;
  nlohmann::json cursor;
  std::string dir;
};

// Rebuilds a trainer from checkpoint directory `dir` with fresh models loaded from it
// and `options` (the job's; seed/algorithm must match what was saved: PPO needs value/).
// Restores LibTorch's default CPU generator state too. Errors: NotFound (missing
// files), InvalidArgument (corrupt or mismatching content, naming the file).
absl::StatusOr<RestoredLearner> RestoreLearner(const std::string& dir,
                                               const TrainerOptions& options);

}  // namespace rlhf
