#include "tools/launcher/slurm.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "core/status_macros.h"
#include "services/config/config.h"
#include "tools/launcher/stage_argv.h"
#include "tools/launcher/process.h"

namespace rlhf::launcher {
namespace {

namespace fs = std::filesystem;
using rlhf::v1::JobConfig;

// Single-quoted for bash: 'it'\''s'.
std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string BashArray(const std::string& name, const std::vector<std::string>& items) {
  std::vector<std::string> quoted;
  for (const auto& i : items) quoted.push_back(Quote(i));
  return absl::StrCat(name, "=(", absl::StrJoin(quoted, " "), ")\n");
}

std::string SelfDir() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : exe.parent_path().string();
}

// The #SBATCH lines both scripts share: partition, account, time, memory, extras.
std::string CommonSbatchLines(const JobConfig& c) {
  const auto& s = c.slurm();
  std::string out;
  if (!s.partition().empty()) absl::StrAppend(&out, "#SBATCH --partition=", s.partition(), "\n");
  if (!s.account().empty()) absl::StrAppend(&out, "#SBATCH --account=", s.account(), "\n");
  if (!s.time_limit().empty()) absl::StrAppend(&out, "#SBATCH --time=", s.time_limit(), "\n");
  if (s.mem_per_cpu_mb() > 0) {
    absl::StrAppend(&out, "#SBATCH --mem-per-cpu=", s.mem_per_cpu_mb(), "M\n");
  }
  if (s.overcommit()) absl::StrAppend(&out, "#SBATCH --overcommit\n");
  for (const auto& a : s.sbatch_args()) absl::StrAppend(&out, "#SBATCH ", a, "\n");
  return out;
}

// Variables both scripts' bodies use.
std::string CommonVariables(const JobConfig& c, const std::string& bin_dir) {
  const auto& s = c.slurm();
  const auto& a = c.actors();
  std::string out;
  absl::StrAppend(&out, "RUN_DIR=", Quote(c.run_dir()), "\n");
  absl::StrAppend(&out, "BIN=", Quote(bin_dir), "\n");
  absl::StrAppend(&out, "CONFIG=\"$RUN_DIR/config.yaml\"\n");
  absl::StrAppend(&out, "ACTOR_THREADS=", std::max(1, a.threads()), "\n");
  absl::StrAppend(&out, "ACTOR_SEED_BASE=", c.seed() * 1000, "\n");
  absl::StrAppend(&out, "ACTOR_MAX_RESTARTS=", std::max(0, a.max_restarts()), "\n");
  absl::StrAppend(&out, "ACTOR_BACKOFF_S=", std::max(0, a.restart_backoff_ms()) / 1000.0, "\n");
  absl::StrAppend(&out, "STOP_GRACE_S=", s.stop_grace_s(), "\n");
  absl::StrAppend(&out, "OVERCOMMIT=", s.overcommit() ? "--overcommit" : "", "\n");
  absl::StrAppend(&out, BashArray("ACTOR_SECURITY", ActorSecurityArgs(c.security())));
  absl::StrAppend(&out, BashArray("ACTOR_DEVICE", DeviceArgs(c)));
  return out;
}

// Shell functions both scripts use (bash >= 5.1).
constexpr char kCommonFunctions[] = R"BASH(
say() { echo "[slurm $(date +%H:%M:%S)] $*"; }
# The step id ("JOB.STEP") of this job's step named $1, or "".
step_id() { squeue -h -s -j "$SLURM_JOB_ID" -o "%i %j" | awk -v n="$1" '$2 == n {print $1; exit}'; }
# One actor task of an actors step: runs the actor, restarts it after a crash
# ($3 times, $4 s apart); SIGTERM drains it (the batch in hand is submitted).
# Usage: rlhf_actor_task NAME_PREFIX SEED_BASE MAX_RESTARTS BACKOFF_S ACTOR ARGS...
rlhf_actor_task() {
  local name=$1$SLURM_PROCID seed=$(($2 + SLURM_PROCID)) restarts_left=$3 backoff=$4
  shift 4
  local child="" stop=0 rc=0
  trap 'stop=1; [[ -n $child ]] && kill -TERM "$child" 2>/dev/null' TERM INT
  while :; do
    "$@" --actor_name="$name" --seed="$seed" &
    child=$!
    wait "$child"; rc=$?
    while kill -0 "$child" 2>/dev/null; do wait "$child"; rc=$?; done
    if (( stop || rc == 0 )); then exit "$rc"; fi
    if (( restarts_left <= 0 )); then echo "$name: exit code $rc, no restarts left"; exit "$rc"; fi
    restarts_left=$((restarts_left - 1))
    echo "$name: exit code $rc; restarting in ${backoff}s"
    sleep "$backoff"
  done
}
export -f rlhf_actor_task
# SIGTERM to step $1's tasks (srun process $2), then cancel it after STOP_GRACE_S.
stop_step() {
  local name=$1 pid=$2 id waited=0
  [[ -n $pid ]] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    id=$(step_id "$name")
    say "stopping $name${id:+ (step $id)}"
    [[ -n $id ]] && scancel --signal=TERM "$id" 2>/dev/null
    while kill -0 "$pid" 2>/dev/null && (( waited < STOP_GRACE_S * 5 )); do
      sleep 0.2; waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
      say "$name still running after ${STOP_GRACE_S}s; cancelling it"
      [[ -n $id ]] && scancel "$id" 2>/dev/null
    fi
  fi
  wait "$pid" 2>/dev/null
  return 0
}
)BASH";

constexpr char kJobBody[] = R"BASH(
SLURM_DIR="$RUN_DIR/slurm"
LOGS="$RUN_DIR/logs"
PORTS="$SLURM_DIR/ports-$SLURM_JOB_ID"
mkdir -p "$LOGS" "$PORTS"
# This shell runs on the first node of the allocation: the servers go there too, so
# their port files are local to it (no shared filesystem needed for the addresses).
HEAD=${SLURMD_NODENAME:-$(hostname -s)}
ADVERTISE=${RLHF_ADVERTISE_HOST:-${ADVERTISE:-$(hostname)}}
declare -A PID=()

# One task on this node: step NAME CPUS COMMAND... (log: $LOGS/NAME.log).
step() {
  local name=$1 cpus=$2
  shift 2
  srun --exact --nodes=1 --ntasks=1 --cpus-per-task="$cpus" $OVERCOMMIT --nodelist="$HEAD" \
    --job-name="$name" --output="$LOGS/$name.log" --kill-on-bad-exit=1 "$@" &
  PID[$name]=$!
}
stop_named() { stop_step "$1" "${PID[$1]:-}"; unset "PID[$1]"; }
stop_all() {
  for n in actors stages learner reference_server reward_server eval; do stop_named "$n"; done
}
fail() { say "FAILED: $*"; stop_all; exit 1; }
trap 'say "signal: stopping actors, learner, servers"; stop_all; say "stopped"; exit 143' TERM INT
# Waits for NAME's port file; fails when its step ends first or after HEALTH_TIMEOUT_S.
wait_port() {
  local name=$1 t=0
  while [[ ! -s $PORTS/$name.port ]]; do
    if ! kill -0 "${PID[$name]}" 2>/dev/null; then
      tail -n 20 "$LOGS/$name.log"
      fail "$name exited before serving (log: $LOGS/$name.log)"
    fi
    (( t < HEALTH_TIMEOUT_S * 5 )) || fail "$name not serving after ${HEALTH_TIMEOUT_S}s"
    sleep 0.2; t=$((t + 1))
  done
}
port_of() { cat "$PORTS/$1.port"; }
metrics_port_of() { cat "$PORTS/$1.metrics.port" 2>/dev/null || true; }
wait_step() {  # wait_step NAME: its exit code, the step forgotten
  local rc=0
  wait "${PID[$1]}" || rc=$?
  unset "PID[$1]"
  return "$rc"
}

say "job $SLURM_JOB_ID on $SLURM_JOB_NODELIST; first node $HEAD (advertised as $ADVERTISE); run dir $RUN_DIR"
if (( TRAIN_MISSING )); then
  say "data, sft, rm (each only when missing): $LOGS/stages.log"
  step stages "$LEARNER_THREADS" "$BIN/rlhf" run --config="$CONFIG" --stages=data,sft,rm --bin_dir="$BIN"
  wait_step stages || fail "data/sft/rm stages failed (log: $LOGS/stages.log)"
fi

rm -f "$PORTS"/*.port "$SLURM_DIR/addresses.env"
say "starting reward_server, reference_server"
step reward_server "$REWARD_THREADS" "$BIN/rlhf-reward-server" --host=0.0.0.0 \
  --port="$REWARD_PORT" --port_file="$PORTS/reward_server.port" \
  --metrics_port="$REWARD_METRICS_PORT" --metrics_port_file="$PORTS/reward_server.metrics.port" \
  "${REWARD_ARGS[@]}" "${SERVER_SECURITY[@]}"
step reference_server "$REFERENCE_THREADS" "$BIN/rlhf-reference-server" --host=0.0.0.0 \
  --port="$REFERENCE_PORT" --port_file="$PORTS/reference_server.port" \
  --metrics_port="$REFERENCE_METRICS_PORT" --metrics_port_file="$PORTS/reference_server.metrics.port" \
  "${REFERENCE_ARGS[@]}" "${SERVER_SECURITY[@]}"
wait_port reward_server
wait_port reference_server
say "starting learner"
step learner "$LEARNER_THREADS" "$BIN/rlhf-learner" --config="$CONFIG" \
  --checkpoint_dir="$RUN_DIR/learner" --host=0.0.0.0 --port="$LEARNER_PORT" \
  --port_file="$PORTS/learner.port" --metrics_port="$LEARNER_METRICS_PORT" \
  --metrics_port_file="$PORTS/learner.metrics.port"
wait_port learner

export RLHF_LEARNER_ADDRESS="$ADVERTISE:$(port_of learner)"
export RLHF_REWARD_ADDRESS="$ADVERTISE:$(port_of reward_server)"
export RLHF_REFERENCE_ADDRESS="$ADVERTISE:$(port_of reference_server)"
# For actors.sbatch (joining actors) and for people: the addresses of this job.
{
  echo "RLHF_SLURM_JOB_ID=$SLURM_JOB_ID"
  echo "RLHF_LEARNER_ADDRESS=$RLHF_LEARNER_ADDRESS"
  echo "RLHF_REWARD_ADDRESS=$RLHF_REWARD_ADDRESS"
  echo "RLHF_REFERENCE_ADDRESS=$RLHF_REFERENCE_ADDRESS"
} > "$SLURM_DIR/addresses.env.tmp"
# Prometheus file_sd targets of the servers (actors print theirs in their logs).
targets=()
for n in learner reward_server reference_server; do
  p=$(metrics_port_of "$n")
  if [[ -n $p ]]; then
    echo "RLHF_${n^^}_METRICS=$ADVERTISE:$p" >> "$SLURM_DIR/addresses.env.tmp"
    targets+=("{\"targets\": [\"$ADVERTISE:$p\"], \"labels\": {\"component\": \"$n\", \"slurm_job\": \"$SLURM_JOB_ID\"}}")
  fi
done
(IFS=,; echo "[${targets[*]}]") > "$SLURM_DIR/targets.json"
mv "$SLURM_DIR/addresses.env.tmp" "$SLURM_DIR/addresses.env"
say "learner $RLHF_LEARNER_ADDRESS, reward $RLHF_REWARD_ADDRESS, reference $RLHF_REFERENCE_ADDRESS ($SLURM_DIR/addresses.env)"

say "starting $N_ACTORS actors (logs: $LOGS/actor-N.log); more: sbatch -n K $SLURM_DIR/actors.sbatch"
srun --exact --ntasks="$N_ACTORS" --cpus-per-task="$ACTOR_THREADS" $OVERCOMMIT --job-name=actors \
  --output="$LOGS/actor-%t.log" --kill-on-bad-exit=0 \
  bash -c 'rlhf_actor_task "$@"' rlhf_actor_task actor- "$ACTOR_SEED_BASE" "$ACTOR_MAX_RESTARTS" \
  "$ACTOR_BACKOFF_S" "$BIN/rlhf-actor" --learner_address="$RLHF_LEARNER_ADDRESS" \
  --reward_address="$RLHF_REWARD_ADDRESS" --reference_address="$RLHF_REFERENCE_ADDRESS" \
  --threads="$ACTOR_THREADS" --metrics_host=0.0.0.0 --metrics_port=0 "${ACTOR_SECURITY[@]}" "${ACTOR_DEVICE[@]}" &
PID[actors]=$!

# The learner exits 0 after rl.steps (once the actors have left); a server that exits
# first fails the job.
finished=""
rc=0
while [[ -z $finished ]]; do
  wait -n -p finished "${PID[learner]}" "${PID[reward_server]}" "${PID[reference_server]}" || rc=$?
done
if [[ $finished != "${PID[learner]}" ]]; then
  for n in reward_server reference_server; do
    [[ $finished == "${PID[$n]}" ]] && unset "PID[$n]" && fail "$n exited (code $rc) before the learner finished (log: $LOGS/$n.log)"
  done
fi
unset "PID[learner]"
(( rc == 0 )) || fail "learner exited with code $rc (log: $LOGS/learner.log)"
say "learner finished: $(grep '^done: ' "$LOGS/learner.log" | tail -n 1)"
stop_named actors
stop_named reference_server
stop_named reward_server
rm -f "$SLURM_DIR/addresses.env"

if (( EVAL )); then
  say "eval: $LOGS/eval.log"
  step eval "$LEARNER_THREADS" "$BIN/rlhf" run --config="$CONFIG" --stages=eval --bin_dir="$BIN"
  wait_step eval || fail "eval failed (log: $LOGS/eval.log)"
fi
say "completed; summary: $RUN_DIR/summary.json"
exit 0
)BASH";

constexpr char kActorsBody[] = R"BASH(
ADDRESSES=${RLHF_ADDRESSES_FILE:-$RUN_DIR/slurm/addresses.env}
if [[ -z ${RLHF_LEARNER_ADDRESS:-} ]]; then
  if [[ ! -s $ADDRESSES ]]; then
    say "no RLHF_LEARNER_ADDRESS and no $ADDRESSES: is the RL job running?"
    exit 1
  fi
  # shellcheck disable=SC1090
  source "$ADDRESSES"
fi
for v in RLHF_LEARNER_ADDRESS RLHF_REWARD_ADDRESS RLHF_REFERENCE_ADDRESS; do
  [[ -n ${!v:-} ]] || { say "$v is not set"; exit 1; }
done
mkdir -p "$RUN_DIR/logs"
n=${SLURM_NTASKS:-1}
say "job $SLURM_JOB_ID: $n actors joining learner $RLHF_LEARNER_ADDRESS (logs: $RUN_DIR/logs/actor-j$SLURM_JOB_ID-N.log)"
srun --exact --ntasks="$n" --cpus-per-task="$ACTOR_THREADS" $OVERCOMMIT --job-name=actors \
  --output="$RUN_DIR/logs/actor-j%j-%t.log" --kill-on-bad-exit=0 \
  bash -c 'rlhf_actor_task "$@"' rlhf_actor_task "actor-j$SLURM_JOB_ID-" \
  "$((ACTOR_SEED_BASE + 100000 + (SLURM_JOB_ID % 1000) * 100))" "$ACTOR_MAX_RESTARTS" \
  "$ACTOR_BACKOFF_S" "$BIN/rlhf-actor" --learner_address="$RLHF_LEARNER_ADDRESS" \
  --reward_address="$RLHF_REWARD_ADDRESS" --reference_address="$RLHF_REFERENCE_ADDRESS" \
  --threads="$ACTOR_THREADS" --metrics_host=0.0.0.0 --metrics_port=0 "${ACTOR_SECURITY[@]}" "${ACTOR_DEVICE[@]}" &
actors=$!
trap 'say "signal: draining actors"; stop_step actors "$actors"; say "stopped"; exit 0' TERM INT
rc=0
wait "$actors" || rc=$?
say "actors finished (code $rc)"
exit "$rc"
)BASH";

absl::Status CheckRunnable(const JobConfig& c) {
  const auto& s = c.security();
  // The servers refuse plaintext off loopback, token or not (services/server.h).
  if (s.tls_cert().empty() && !s.allow_insecure()) {
    return absl::FailedPreconditionError(
        "security: on Slurm the servers listen on all interfaces (actors run on other "
        "nodes); set security.tls_cert/tls_key/tls_ca (and security.token_file), or "
        "security.allow_insecure: true on a trusted network (a token alone would travel "
        "in clear text)");
  }
  if (c.weights().transport() == rlhf::v1::WEIGHT_TRANSPORT_COLLECTIVE) {
    return absl::FailedPreconditionError(
        "weights.transport: 'collective' is not supported by --launcher slurm (its "
        "rendezvous host is not known before the allocation); use 'grpc'");
  }
  return absl::OkStatus();
}

std::string JobScript(const JobConfig& c, const std::string& bin_dir, const std::string& cwd) {
  const auto& a = c.actors();
  const int learner_threads = std::max(1, c.learner().threads());
  const int reward_threads = std::max(1, c.reward_server().endpoint().threads());
  const int reference_threads = std::max(1, c.reference_server().endpoint().threads());
  const int actor_threads = std::max(1, a.threads());
  const int max_threads =
      std::max({learner_threads, reward_threads, reference_threads, actor_threads});
  std::string out = "#!/bin/bash\n";
  absl::StrAppend(&out, "# RL job '", c.name(), "' on Slurm, written by `rlhf run --launcher slurm`.\n",
                  "# Submit (or resubmit to resume after a failure): sbatch ", c.run_dir(),
                  "/slurm/job.sbatch\n# More actors: sbatch -n K ", c.run_dir(),
                  "/slurm/actors.sbatch; stop: scancel JOB_ID\n");
  absl::StrAppend(&out, "#SBATCH --job-name=rlhf-", c.name(), "\n");
  // One task per process: learner, two servers, N actors; every task gets the CPUs of
  // the widest process so that any step fits on any task's share.
  absl::StrAppend(&out, "#SBATCH --ntasks=", 3 + a.count(), "\n");
  absl::StrAppend(&out, "#SBATCH --cpus-per-task=", max_threads, "\n");
  if (c.slurm().nodes() > 0) absl::StrAppend(&out, "#SBATCH --nodes=", c.slurm().nodes(), "\n");
  absl::StrAppend(&out, "#SBATCH --chdir=", cwd, "\n");
  absl::StrAppend(&out, "#SBATCH --output=", c.run_dir(), "/logs/slurm-%j.out\n");
  absl::StrAppend(&out, CommonSbatchLines(c));
  absl::StrAppend(&out, "set -u\n", CommonVariables(c, bin_dir));
  absl::StrAppend(&out, "N_ACTORS=", a.count(), "\n");
  absl::StrAppend(&out, "LEARNER_THREADS=", learner_threads, "\n");
  absl::StrAppend(&out, "REWARD_THREADS=", reward_threads, "\n");
  absl::StrAppend(&out, "REFERENCE_THREADS=", reference_threads, "\n");
  absl::StrAppend(&out, "LEARNER_PORT=", c.learner().endpoint().port(), "\n");
  absl::StrAppend(&out, "REWARD_PORT=", c.reward_server().endpoint().port(), "\n");
  absl::StrAppend(&out, "REFERENCE_PORT=", c.reference_server().endpoint().port(), "\n");
  absl::StrAppend(&out, "LEARNER_METRICS_PORT=", c.learner().endpoint().metrics_port(), "\n");
  absl::StrAppend(&out, "REWARD_METRICS_PORT=", c.reward_server().endpoint().metrics_port(), "\n");
  absl::StrAppend(&out, "REFERENCE_METRICS_PORT=", c.reference_server().endpoint().metrics_port(),
                  "\n");
  absl::StrAppend(&out, "HEALTH_TIMEOUT_S=", c.launcher().health_timeout_s(), "\n");
  absl::StrAppend(&out, "TRAIN_MISSING=", c.launcher().train_missing() ? 1 : 0, "\n");
  absl::StrAppend(&out, "EVAL=", c.launcher().eval() ? 1 : 0, "\n");
  absl::StrAppend(&out, "ADVERTISE=", Quote(c.slurm().advertise_host()), "\n");
  absl::StrAppend(&out, BashArray("REWARD_ARGS", RewardServerArgs(c)));
  absl::StrAppend(&out, BashArray("REFERENCE_ARGS", ReferenceServerArgs(c)));
  absl::StrAppend(&out, BashArray("SERVER_SECURITY", ServerSecurityArgs(c.security())));
  absl::StrAppend(&out, kCommonFunctions, kJobBody);
  return out;
}

std::string ActorsScript(const JobConfig& c, const std::string& bin_dir, const std::string& cwd) {
  std::string out = "#!/bin/bash\n";
  absl::StrAppend(&out, "# K more actors for the RL job '", c.name(),
                  "' (written by `rlhf run --launcher slurm`):\n#   sbatch -n K ", c.run_dir(),
                  "/slurm/actors.sbatch    # scancel its id to drain them\n",
                  "# Addresses: $RLHF_{LEARNER,REWARD,REFERENCE}_ADDRESS, else "
                  "$RLHF_ADDRESSES_FILE (default <run_dir>/slurm/addresses.env).\n");
  absl::StrAppend(&out, "#SBATCH --job-name=rlhf-", c.name(), "-actors\n");
  absl::StrAppend(&out, "#SBATCH --ntasks=1\n");
  absl::StrAppend(&out, "#SBATCH --cpus-per-task=", std::max(1, c.actors().threads()), "\n");
  absl::StrAppend(&out, "#SBATCH --chdir=", cwd, "\n");
  absl::StrAppend(&out, "#SBATCH --output=", c.run_dir(), "/logs/slurm-actors-%j.out\n");
  absl::StrAppend(&out, CommonSbatchLines(c));
  absl::StrAppend(&out, "set -u\n", CommonVariables(c, bin_dir));
  absl::StrAppend(&out, kCommonFunctions, kActorsBody);
  return out;
}

absl::Status WriteExecutable(const std::string& path, const std::string& text) {
  {
    std::ofstream out(path + ".tmp");
    out << text;
    if (!out) return absl::InternalError(absl::StrCat("writing ", path));
  }
  std::error_code ec;
  fs::permissions(path + ".tmp", fs::perms::owner_all | fs::perms::group_read |
                                     fs::perms::group_exec | fs::perms::others_read |
                                     fs::perms::others_exec, ec);
  fs::rename(path + ".tmp", path, ec);
  if (ec) return absl::InternalError(absl::StrCat("writing ", path, ": ", ec.message()));
  return absl::OkStatus();
}

// `name` looked up in $PATH (Process::Spawn does no lookup).
absl::StatusOr<std::string> FindInPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path == nullptr ? "" : path, ':')) {
    if (dir.empty()) continue;
    std::string candidate = absl::StrCat(dir, "/", name);
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return absl::NotFoundError(absl::StrCat(name, ": not found in PATH (is this a Slurm login node?)"));
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

absl::StatusOr<SlurmSubmission> RunOnSlurm(const SlurmOptions& options) {
  config::LoadOptions lo;
  lo.overrides = options.overrides;
  RLHF_ASSIGN_OR_RETURN(JobConfig config, config::LoadJobConfig(options.config_path, lo));
  RLHF_RETURN_IF_ERROR(CheckRunnable(config));
  const std::string bin_dir = options.bin_dir.empty() ? SelfDir() : options.bin_dir;
  const std::string run_dir = config.run_dir();
  std::error_code ec;
  fs::create_directories(run_dir + "/slurm", ec);
  fs::create_directories(run_dir + "/logs", ec);
  if (ec) return absl::InternalError(absl::StrCat("creating ", run_dir, ": ", ec.message()));
  RLHF_RETURN_IF_ERROR(config::WriteJobConfig(config, run_dir + "/config.yaml"));
  const std::string cwd = fs::current_path().string();
  SlurmSubmission result;
  result.job_script = run_dir + "/slurm/job.sbatch";
  result.actors_script = run_dir + "/slurm/actors.sbatch";
  RLHF_RETURN_IF_ERROR(WriteExecutable(result.job_script, JobScript(config, bin_dir, cwd)));
  RLHF_RETURN_IF_ERROR(WriteExecutable(result.actors_script, ActorsScript(config, bin_dir, cwd)));
  std::fprintf(stderr, "[slurm] wrote %s and %s\n", result.job_script.c_str(),
               result.actors_script.c_str());
  if (!options.submit) return result;

  RLHF_ASSIGN_OR_RETURN(std::string sbatch, FindInPath("sbatch"));
  ProcessSpec spec;
  spec.name = "sbatch";
  spec.argv = {sbatch, "--parsable"};
  if (options.wait) spec.argv.push_back("--wait");
  spec.argv.push_back(result.job_script);
  spec.log_path = run_dir + "/slurm/sbatch.log";
  fs::remove(spec.log_path, ec);
  RLHF_ASSIGN_OR_RETURN(auto p, Process::Spawn(spec));
  // sbatch --parsable prints "JOBID[;CLUSTER]" once submitted (and with --wait keeps
  // running until the job ends): follow the job's output meanwhile.
  std::streamoff followed = 0;
  auto follow = [&] {
    if (result.job_id.empty()) {
      std::string log = ReadAll(spec.log_path);
      for (absl::string_view line : absl::StrSplit(log, '\n')) {
        line = absl::StripAsciiWhitespace(line);
        std::string id(line.substr(0, line.find(';')));
        if (!id.empty() && std::all_of(id.begin(), id.end(), ::isdigit)) {
          result.job_id = id;
          std::fprintf(stderr,
                       "[slurm] submitted job %s; output %s/logs/slurm-%s.out\n"
                       "[slurm] more actors: sbatch -n K %s; stop: scancel %s\n",
                       id.c_str(), run_dir.c_str(), id.c_str(), result.actors_script.c_str(),
                       id.c_str());
          break;
        }
      }
    }
    if (!options.wait || result.job_id.empty()) return;
    std::ifstream in(absl::StrCat(run_dir, "/logs/slurm-", result.job_id, ".out"),
                     std::ios::binary);
    if (!in) return;
    in.seekg(followed);
    std::string chunk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    followed += static_cast<std::streamoff>(chunk.size());
    std::fputs(chunk.c_str(), stderr);
  };
  while (p->Poll()) {
    follow();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  follow();
  if (result.job_id.empty()) {
    return absl::UnavailableError(
        absl::StrCat("sbatch ", p->DescribeExit(), ": ", TailFile(spec.log_path, 10)));
  }
  if (options.wait && !p->exited_cleanly()) {
    return absl::InternalError(absl::StrCat("Slurm job ", result.job_id, " failed (sbatch ",
                                            p->DescribeExit(), "); output: ", run_dir,
                                            "/logs/slurm-", result.job_id, ".out"));
  }
  return result;
}

}  // namespace rlhf::launcher
