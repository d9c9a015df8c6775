// `rlhf run --launcher slurm --config JOB.yaml`: the job on a Slurm allocation.
//
// Writes into <run_dir>:
//   config.yaml            the resolved job config (what every process reads)
//   slurm/job.sbatch       the batch script of the whole job
//   slurm/actors.sbatch    K more actors that join the running job (sbatch -n K ...)
// and submits job.sbatch with sbatch (unless submit is false).
//
// job.sbatch, on the allocation (one `srun --exact` step per component, each with the
// CPUs of its `threads`):
//   [data, sft, rm when missing: `rlhf run --stages data,sft,rm` on the first node] ->
//   reward server, reference server, learner on the first node (they listen on all
//   interfaces; the batch shell reads their port files) -> addresses exported as
//   RLHF_{LEARNER,REWARD,REFERENCE}_ADDRESS and written to slurm/addresses.env ->
//   N actors as one step of N tasks, anywhere in the allocation (a crashed actor is
//   restarted actors.max_restarts times) -> the learner exits after rl.steps -> actors,
//   servers stopped with SIGTERM -> [eval: `rlhf run --stages eval` -> summary.json].
// `scancel JOB` sends SIGTERM to every step (actors drain: the batch in hand is
// submitted, then they deregister; servers finish in-flight calls); the batch shell's
// trap stops whatever is left in order (actors, learner, servers), each step cancelled
// outright after slurm.stop_grace_s. Resubmitting job.sbatch resumes: finished stages
// are skipped and the learner resumes from <run_dir>/learner.
//
// actors.sbatch reads the addresses from $RLHF_LEARNER_ADDRESS, $RLHF_REWARD_ADDRESS,
// $RLHF_REFERENCE_ADDRESS when set, else from $RLHF_ADDRESSES_FILE (default
// <run_dir>/slurm/addresses.env); `scancel` of it drains its actors without touching
// the main job.
//
// Servers listen off-loopback, so the config must set security.token_file (and
// usually TLS) or security.allow_insecure; weights.transport must be grpc.
//
// Thread-safety: call from the main thread (it may spawn sbatch and wait for it).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace rlhf::launcher {

struct SlurmOptions {
  std::string config_path;             // YAML job file ("" = defaults only)
  std::vector<std::string> overrides;  // "dotted.path=value", applied after the file
  // Where the rlhf binaries are on the cluster's nodes. Empty = the directory of the
  // running executable (a shared install or the same path on every node).
  std::string bin_dir;
  bool submit = true;  // false = write the scripts only
  // true = `sbatch --wait`: block until the job ends (its output followed on stderr);
  // the result is then the job's: OK when it completed.
  bool wait = false;
};

struct SlurmSubmission {
  std::string job_script;     // <run_dir>/slurm/job.sbatch
  std::string actors_script;  // <run_dir>/slurm/actors.sbatch
  std::string job_id;         // "" when not submitted
};

// Loads the config, writes the scripts and (with submit) submits the job. Errors: the
// config's (naming the YAML path), a config Slurm cannot run (names the field), sbatch's
// message when the submission fails, and with wait the job's failure.
absl::StatusOr<SlurmSubmission> RunOnSlurm(const SlurmOptions& options);

}  // namespace rlhf::launcher
