#include "tools/run_command.h"

#include <unistd.h>

#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/strings/str_split.h"
#include "tools/launcher/job.h"
#include "tools/launcher/slurm.h"

ABSL_FLAG(std::string, config, "", "run: the YAML job file (deploy/local/quickstart.yaml)");
ABSL_FLAG(std::vector<std::string>, set, {},
          "run: comma-separated path=value config overrides (e.g. rl.steps=10,actors.count=1)");
ABSL_FLAG(std::vector<std::string>, stages, {},
          "run: only these stages, of data,sft,rm,rl,eval (default: all)");
ABSL_FLAG(std::string, bin_dir, "", "run: where the rlhf-* binaries are (default: next to rlhf)");
ABSL_FLAG(std::string, launcher, "local",
          "run: local (fork/exec on this host) or slurm (write <run_dir>/slurm/job.sbatch "
          "and actors.sbatch, submit the job; docs/deploy.md)");
ABSL_FLAG(bool, submit, true, "run --launcher slurm: submit job.sbatch (false = write only)");
ABSL_FLAG(bool, wait, false, "run --launcher slurm: wait for the job to end (sbatch --wait)");

namespace rlhf::tools {

int RunRunCommand(const std::vector<std::string>& args) {
  launcher::RunOptions options;
  options.config_path = absl::GetFlag(FLAGS_config);
  // Positional "path=value" arguments are overrides too (values may contain commas).
  options.overrides = absl::GetFlag(FLAGS_set);
  for (const auto& a : args) {
    if (a.find('=') == std::string::npos) {
      std::fprintf(stderr, "rlhf run: unexpected argument '%s' (overrides are path=value)\n",
                   a.c_str());
      return 1;
    }
    options.overrides.push_back(a);
  }
  const std::string which = absl::GetFlag(FLAGS_launcher);
  if (which == "slurm") {
    launcher::SlurmOptions slurm;
    slurm.config_path = options.config_path;
    slurm.overrides = options.overrides;
    slurm.bin_dir = absl::GetFlag(FLAGS_bin_dir);
    slurm.submit = absl::GetFlag(FLAGS_submit);
    slurm.wait = absl::GetFlag(FLAGS_wait);
    auto submitted = launcher::RunOnSlurm(slurm);
    if (submitted.ok()) return 0;
    std::fprintf(stderr, "rlhf run: %s\n", std::string(submitted.status().message()).c_str());
    return 1;
  }
  if (which != "local") {
    std::fprintf(stderr, "rlhf run: --launcher: '%s' is not one of local, slurm\n",
                 which.c_str());
    return 1;
  }
  options.stages = absl::GetFlag(FLAGS_stages);
  options.bin_dir = absl::GetFlag(FLAGS_bin_dir);
  options.tty = ::isatty(2) != 0;
  absl::Status st = launcher::RunJob(options);
  if (st.ok()) return 0;
  std::fprintf(stderr, "rlhf run: %s\n", std::string(st.message()).c_str());
  return st.code() == absl::StatusCode::kCancelled ? 130 : 1;
}

}  // namespace rlhf::tools
