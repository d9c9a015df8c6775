// The command lines `rlhf run` starts, as pure functions of the job config: no files,
// no processes, no ports chosen here (callers pass what they picked). Each child's flags
// are spelled in exactly one place, and tests/launcher/stage_argv_test.cc checks them
// against expected argv.
//
// Stage commands (`rlhf data|sft|label|rm|eval`) get the full argv including the binary;
// server commands get the arguments after the common --host/--port/--port_file/
// --metrics_port prefix, which the supervisor-facing code adds.
#pragma once

#include <string>
#include <vector>

#include "rlhf/v1/config.pb.h"

namespace rlhf::launcher {

using Argv = std::vector<std::string>;

// Where the job's files live; all paths are used as given.
struct JobPaths {
  std::string bin_dir;  // rlhf, rlhf-actor, rlhf-learner, ... live here
  std::string run_dir;  // <run_dir>/config.yaml, <run_dir>/learner, <run_dir>/*.json
  std::string Bin(const std::string& name) const { return bin_dir + "/" + name; }
  // <run_dir>/metrics/<process>.prom: a process's last /metrics text, kept by the launcher
  // (and written by each actor itself as it exits).
  std::string MetricsDir() const { return run_dir + "/metrics"; }
  std::string MetricsSnapshot(const std::string& process) const {
    return MetricsDir() + "/" + process + ".prom";
  }
  // <run_dir>/ports/<process>.port and .metrics.port: the gRPC and /metrics ports a
  // process bound (it listens on port 0 and writes the one it got: no port is picked
  // and released for it, which another process could take in between).
  std::string PortsDir() const { return run_dir + "/ports"; }
  std::string PortFile(const std::string& process) const {
    return PortsDir() + "/" + process + ".port";
  }
  std::string MetricsPortFile(const std::string& process) const {
    return PortsDir() + "/" + process + ".metrics.port";
  }
};

Argv DataArgv(const rlhf::v1::JobConfig& c, const JobPaths& p);
// `rlhf data --task=files`: the job's data.* files materialised into data.dir with the
// job's prompt template applied once (core/data/user_data.h).
Argv UserDataArgv(const rlhf::v1::JobConfig& c, const JobPaths& p);
Argv SftArgv(const rlhf::v1::JobConfig& c, const JobPaths& p);
// `rlhf label`: the SFT policy's samples ranked by the gold labeller, into `out`.
Argv LabelArgv(const rlhf::v1::JobConfig& c, const JobPaths& p, const std::string& out);
// rank_files: comma-separated ranking files (rank.jsonl[,rank_policy.jsonl]).
Argv RmArgv(const rlhf::v1::JobConfig& c, const JobPaths& p, const std::string& rank_files);
// `rlhf eval` of `policy` as `name` ("sft" or "rl"); rm_checkpoint "" = no RM column.
Argv EvalArgv(const rlhf::v1::JobConfig& c, const JobPaths& p, const std::string& name,
              const std::string& policy, const std::string& rm_checkpoint);

// `rlhf eval` for the win rate at an RL checkpoint (eval.step_prompts; eval_report.h):
// `policy` on the first eval.step_prompts held-out prompts, one sample each, scored by
// `rm_checkpoint`, into `json_out`; no KL, no samples shown, one thread.
Argv StepEvalArgv(const rlhf::v1::JobConfig& c, const JobPaths& p, const std::string& policy,
                  const std::string& rm_checkpoint, const std::string& json_out);

// Server-specific arguments (after the common prefix).
Argv RewardServerArgs(const rlhf::v1::JobConfig& c);
Argv ReferenceServerArgs(const rlhf::v1::JobConfig& c);
Argv LearnerArgs(const rlhf::v1::JobConfig& c, const JobPaths& p);
// model.device as the --device flag of the processes that run the RL stage's models
// (learner, actors, reward and reference servers); none when unset (the binaries' own
// default, cpu). The offline stages (sft, rm, label, eval) run on the CPU.
Argv DeviceArgs(const rlhf::v1::JobConfig& c);
// The TLS / token flags every server gets from security.*.
Argv ServerSecurityArgs(const rlhf::v1::SecurityConfig& s);
// The client side: the token, the CA that signs the servers and the certificate and key
// the actor presents: security.client_cert/client_key when set, else, with
// require_client_cert, tls_cert/tls_key (mutual TLS).
Argv ActorSecurityArgs(const rlhf::v1::SecurityConfig& s);

// The address clients dial for `e`: e.advertise, else e.host, else (host 0.0.0.0 / ::)
// 127.0.0.1.
std::string AdvertisedHost(const rlhf::v1::ServerEndpoint& e);

struct ActorAddresses {
  std::string learner, reward, reference;
};
// Actor `index` (its name is "actor-<index>"). Its /metrics listens on a port of its own
// choosing, written to p.MetricsPortFile("actor-<index>"), and it writes its final
// /metrics to p.MetricsSnapshot("actor-<index>") as it exits (--metrics_file).
Argv ActorArgv(const rlhf::v1::JobConfig& c, const JobPaths& p, int index,
               const ActorAddresses& addresses);

}  // namespace rlhf::launcher
