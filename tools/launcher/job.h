// The whole job behind `rlhf run --config JOB.yaml`:
//
//   load + validate config -> run dir (config.yaml, logs/) ->
//   [data -> sft -> rm]   (child `rlhf data|sft|rm` processes, only when their outputs
//                          are missing and launcher.train_missing is true) ->
//   rl: reward server, reference server, learner, N actors (+ Prometheus when
//       monitoring.prometheus), supervised with a live status line ->
//   eval: `rlhf eval` of the SFT and the RL policy on held-out prompts ->
//   summary.json + a comparison table.
//
// Every child is a separate process in its own process group with its log in
// <run_dir>/logs/<name>.log; ports 0 become free ports read back from --port_file.
// SIGINT/SIGTERM stop the job in order (actors, learner, servers, Prometheus) with no
// process left behind.
//
// Thread-safety: RunJob is called once per process from the main thread, before any
// other thread exists (it blocks SIGINT/SIGTERM for every thread, services/shutdown.h,
// polls for them, and becomes the child subreaper).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace rlhf::launcher {

struct RunOptions {
  std::string config_path;             // YAML job file ("" = defaults only)
  std::vector<std::string> overrides;  // "dotted.path=value", applied after the file
  // Where rlhf-reward-server, rlhf-reference-server, rlhf-learner, rlhf-actor and rlhf
  // live. Empty = the directory of the running executable.
  std::string bin_dir;
  // Stages to run, in pipeline order, among "data", "sft", "rm", "rl", "eval".
  // Empty = all (data/sft/rm only when missing; eval per launcher.eval).
  std::vector<std::string> stages;
  // Status output: true = one rewritten line (TTY), false = a new line per update.
  bool tty = false;
};

// Runs the job; OK when it completed. Cancelled when stopped by a signal (everything
// shut down), otherwise the first error (a crashed learner or server, a failed stage)
// with its message and the tail of the offending log.
absl::Status RunJob(const RunOptions& options);

}  // namespace rlhf::launcher
