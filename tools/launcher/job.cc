#include "tools/launcher/job.h"

#include <signal.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <thread>

#include <nlohmann/json.hpp>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "core/status_macros.h"
#include "core/util/file_util.h"
#include "learner/learner_client.h"
#include "services/config/config.h"
#include "services/metrics.h"
#include "services/server.h"
#include "services/shutdown.h"
#include "tools/launcher/eval_report.h"
#include "tools/launcher/http.h"
#include "tools/launcher/job_tls.h"
#include "tools/launcher/process.h"
#include "tools/launcher/prometheus.h"
#include "tools/launcher/ready.h"
#include "tools/launcher/run_records.h"
#include "tools/launcher/stage_argv.h"
#include "tools/launcher/status.h"
#include "tools/launcher/summary.h"
#include "tools/launcher/supervisor.h"

#ifndef RLHF_DEPLOY_DIR
#define RLHF_DEPLOY_DIR ""
#endif

namespace rlhf::launcher {
namespace {

// Restarts of a crashed learner / reward / reference server before the job fails.
constexpr int kServerRestarts = 3;

namespace fs = std::filesystem;
using Json = nlohmann::json;
using rlhf::v1::JobConfig;

// SIGINT/SIGTERM are blocked in every thread (services/shutdown.h, from RunJob) and
// consumed here by polling; once seen, the stop request stays.
bool g_stop_requested = false;
bool StopRequested() {
  if (!g_stop_requested && services::PollShutdownSignal() != 0) g_stop_requested = true;
  return g_stop_requested;
}

void Say(const std::string& line) {
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

std::string SelfDir() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : exe.parent_path().string();
}

std::string Fmt(double v, int digits = 3) { return absl::StrFormat("%.*f", digits, v); }

// Appends new complete lines of a growing log file to our stderr with a prefix.
class LogFollower {
 public:
  LogFollower(std::string path, std::string prefix)
      : path_(std::move(path)), prefix_(std::move(prefix)) {}
  void Pump() {
    std::ifstream in(path_, std::ios::binary);
    if (!in) return;
    in.seekg(offset_);
    std::string chunk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    offset_ += static_cast<std::streamoff>(chunk.size());
    partial_ += chunk;
    size_t nl;
    while ((nl = partial_.find_first_of("\n\r")) != std::string::npos) {
      std::string line = partial_.substr(0, nl);
      partial_.erase(0, nl + 1);
      if (!line.empty()) Say(absl::StrCat(prefix_, line));
    }
  }

 private:
  std::string path_, prefix_;
  std::streamoff offset_ = 0;
  std::string partial_;
};

class Job {
 public:
  Job(const RunOptions& options, JobConfig config)
      : options_(options), config_(std::move(config)) {
    bin_dir_ = options_.bin_dir.empty() ? SelfDir() : options_.bin_dir;
    run_dir_ = config_.run_dir();
    logs_ = run_dir_ + "/logs";
    paths_ = {bin_dir_, run_dir_};
  }

  absl::Status Run();

 private:
  std::string Bin(const std::string& name) const { return bin_dir_ + "/" + name; }
  std::string Log(const std::string& name) const { return logs_ + "/" + name + ".log"; }
  bool WantStage(const std::string& stage) const {
    if (options_.stages.empty()) return true;
    return std::find(options_.stages.begin(), options_.stages.end(), stage) !=
           options_.stages.end();
  }

  absl::Status RunStage(const std::string& name, std::vector<std::string> argv);
  absl::Status Data();
  absl::Status Sft();
  absl::Status Rm();
  absl::Status Rl();
  absl::Status Eval();
  absl::Status Export();
  absl::Status StartRlChildren(Supervisor& sup);
  absl::Status StartServer(Supervisor& sup, const std::string& name, const std::string& binary,
                           const rlhf::v1::ServerEndpoint& endpoint, std::vector<std::string> args,
                           int stop_order, bool security_flags, std::string* address);
  // The learner's progress: a metrics.jsonl record per new step (from GetStats,
  // run_records.h) and its newest /metrics body as its snapshot.
  void PollLearner();
  // The client PollLearner reads GetStats with (after StartRlChildren).
  absl::Status ConnectLearner();
  void SnapshotMetrics();
  // Atomically replaces <run_dir>/metrics/<name>.prom with `body`.
  void WriteMetricsSnapshot(const std::string& name, const std::string& body);
  // The RM win rate at RL checkpoints (eval.step_prompts; eval_report.h): one `rlhf eval`
  // at a time, started from the RL loop, first of the SFT policy (the baseline), then of
  // each new learner checkpoint (the newest one when several appeared meanwhile).
  // StartStepEvals at RL start; TickStepEval each loop turn (never blocks);
  // FinishStepEvals after RL: waits for the one in flight, evaluates the final
  // checkpoint, and merges the results into metrics.jsonl.
  std::string TrainingRmCheckpoint() const;
  void StartStepEvals();
  void TickStepEval();
  void FinishStepEvals(bool interrupted);
  void SpawnStepEval(int64_t step, const std::string& policy);
  void HarvestStepEval();
  // <run_dir>/eval_steps/sft.json (step 0) or step-<8 digits>.json.
  std::string StepEvalJson(int64_t step) const;
  ChildSpec ActorSpec(int index);
  absl::Status StartPrometheus(Supervisor& sup);
  std::vector<ScrapeTarget> ScrapeTargets() const;
  // Rewrites <run_dir>/prometheus/targets.json when the targets changed (polled every
  // 100 ms: actors write their /metrics port once up, and a restarted one gets a new one).
  void UpdateTargets();
  void WriteProcesses(const Supervisor& sup);
  void PrintTable();
  absl::Status WriteSummary(const std::string& state, const std::string& message);

  RunOptions options_;
  JobConfig config_;
  std::string bin_dir_, run_dir_, logs_;
  JobPaths paths_;
  Json summary_ = Json::object();
  absl::Time job_start_ = absl::Now();

  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
  std::unique_ptr<services::MetricsExposer> exposer_;
  // The servers' /metrics addresses (fixed once they serve); ScrapeTargets() adds the
  // actors' (from their metrics port files, which change when one restarts) and ours.
  std::vector<ScrapeTarget> targets_;
  bool prometheus_targets_ = false;  // UpdateTargets maintains <run_dir>/prometheus/targets.json
  std::string written_targets_;      // its current content
  std::string reward_addr_, reference_addr_, learner_addr_;
  int learner_metrics_port_ = -1;
  std::unique_ptr<learner::LearnerClient> learner_client_;
  std::unique_ptr<RunRecorder> recorder_;
  std::string prometheus_url_;
  std::string rl_checkpoint_;
  std::string step_eval_rm_;            // "" = per-checkpoint win rates off
  std::unique_ptr<Process> step_eval_;  // the `rlhf eval` in flight
  int64_t step_eval_step_ = 0;          // its learner step (0 = the SFT baseline)
  int64_t last_step_evaluated_ = 0;     // newest checkpoint step evaluated or started
  std::optional<Json> step_eval_sft_;   // the SFT baseline's `rlhf eval` document
  std::map<int64_t, Json> step_win_rates_;  // step -> StepWinRateFields
};

absl::Status Job::RunStage(const std::string& name, std::vector<std::string> argv) {
  ProcessSpec spec;
  spec.name = name;
  spec.argv = std::move(argv);
  spec.log_path = Log(name);
  std::error_code ec;
  fs::remove(spec.log_path, ec);
  Say(absl::StrCat("[run] ", name, ": ", absl::StrJoin(spec.argv, " ")));
  const absl::Time start = absl::Now();
  RLHF_ASSIGN_OR_RETURN(auto p, Process::Spawn(spec));
  LogFollower follow(spec.log_path, absl::StrCat("[", name, "] "));
  while (p->Poll()) {
    follow.Pump();
    if (StopRequested()) {
      p->Stop(absl::Milliseconds(config_.launcher().grace_period_ms()));
      follow.Pump();
      return absl::CancelledError(absl::StrCat(name, " interrupted"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  follow.Pump();
  const double secs = absl::ToDoubleSeconds(absl::Now() - start);
  summary_["wall_seconds"][name] = secs;
  if (!p->exited_cleanly()) {
    return absl::InternalError(absl::StrCat(name, " ", p->DescribeExit(), "; last lines of ",
                                            spec.log_path, ":\n", TailFile(spec.log_path, 20)));
  }
  Say(absl::StrCat("[run] ", name, " done in ", Fmt(secs, 1), "s"));
  return absl::OkStatus();
}

absl::Status Job::Data() {
  const auto& d = config_.data();
  if (d.task() == "files") return RunStage("data", UserDataArgv(config_, paths_));
  if (fs::exists(d.dir() + "/rl_heldout.jsonl")) {
    Say(absl::StrCat("[run] data: using ", d.dir()));
    return absl::OkStatus();
  }
  if (d.task() != "builtin") {
    return absl::FailedPreconditionError(absl::StrCat(
        "data.dir: '", d.dir(), "' has no rl_heldout.jsonl and data.task is '", d.task(),
        "' (only 'builtin' can be generated)"));
  }
  return RunStage("data", DataArgv(config_, paths_));
}

absl::Status Job::Sft() {
  const std::string out = config_.model().sft_checkpoint();
  if (fs::exists(out + "/config.json")) {
    Say(absl::StrCat("[run] sft: using checkpoint ", out));
    return absl::OkStatus();
  }
  return RunStage("sft", SftArgv(config_, paths_));
}

absl::Status Job::Rm() {
  bool needs_rm = false;
  for (const auto& sc : config_.reward_server().scorers()) needs_rm |= sc.type() == "rm";
  const std::string out = config_.model().rm_checkpoint();
  if (!needs_rm) {
    Say("[run] rm: no 'rm' scorer configured; skipping reward-model training");
    return absl::OkStatus();
  }
  if (fs::exists(out + "/config.json")) {
    Say(absl::StrCat("[run] rm: using checkpoint ", out));
    return absl::OkStatus();
  }
  const auto& r = config_.rm();
  const std::string data = config_.data().dir();
  std::string rank_files = data + "/rank.jsonl";
  if (r.label_samples_per_prompt() > 0 && config_.data().task() == "builtin") {
    // InstructGPT's comparison data: the SFT policy's own samples, ranked by the labeller.
    const std::string labelled = run_dir_ + "/rank_policy.jsonl";
    if (fs::exists(labelled)) {
      Say(absl::StrCat("[run] label: using ", labelled));
    } else {
      RLHF_RETURN_IF_ERROR(RunStage("label", LabelArgv(config_, paths_, labelled)));
    }
    absl::StrAppend(&rank_files, ",", labelled);
  }
  return RunStage("rm", RmArgv(config_, paths_, rank_files));
}

absl::Status Job::StartServer(Supervisor& sup, const std::string& name, const std::string& binary,
                              const rlhf::v1::ServerEndpoint& endpoint,
                              std::vector<std::string> args, int stop_order,
                              bool security_flags, std::string* address) {
  const std::string port_file = paths_.PortFile(name);
  const std::string metrics_port_file = paths_.MetricsPortFile(name);
  std::error_code ec;
  fs::remove(port_file, ec);
  fs::remove(metrics_port_file, ec);
  // /metrics listens where configured (endpoint.metrics_host, default the gRPC host), on
  // endpoint.metrics_port or (0) one the server picks and writes to its metrics port
  // file; -1 = none.
  const std::string metrics_host =
      endpoint.metrics_host().empty() ? endpoint.host() : endpoint.metrics_host();
  const bool metrics = endpoint.metrics_port() >= 0;
  ChildSpec spec;
  spec.process.name = name;
  spec.process.argv = {Bin(binary), "--host=" + endpoint.host(),
                       absl::StrCat("--port=", endpoint.port()), "--port_file=" + port_file,
                       absl::StrCat("--metrics_port=", endpoint.metrics_port())};
  if (metrics) spec.process.argv.push_back("--metrics_port_file=" + metrics_port_file);
  if (!endpoint.metrics_host().empty())
    spec.process.argv.push_back("--metrics_host=" + metrics_host);
  for (auto& a : args) spec.process.argv.push_back(std::move(a));
  if (security_flags) {
    for (auto& a : ServerSecurityArgs(config_.security()))
      spec.process.argv.push_back(std::move(a));
  }
  spec.process.log_path = Log(name);
  spec.process.env = {"OMP_NUM_THREADS=" + std::to_string(std::max(1, endpoint.threads()))};
  spec.component = name;
  spec.stop_order = stop_order;
  spec.critical = true;
  // The learner exits 0 once rl.steps are done: that is the job completing.
  spec.completes_job = name == "learner";
  // Others dial the advertised address; the probe does too, with the job's TLS.
  const std::string host = AdvertisedHost(endpoint);
  const ProbeOptions probe = ProbeOptionsFromSecurity(config_.security());
  const absl::Duration timeout = absl::Seconds(config_.launcher().health_timeout_s());
  auto port_out = std::make_shared<int>(0);
  auto metrics_port_out = std::make_shared<int>(0);
  // A crash is not the end (issue 23): the scoring servers are stateless and the
  // learner resumes from its checkpoint dir; each comes back on the ports it first
  // bound so that clients (retrying UNAVAILABLE) and Prometheus find it again.
  spec.max_restarts = kServerRestarts;
  spec.before_restart = [port_out, metrics_port_out, port_file, metrics_port_file](ProcessSpec& p) {
    std::error_code ec;
    fs::remove(port_file, ec);  // ready() must read the new process's port files
    fs::remove(metrics_port_file, ec);
    for (auto& a : p.argv) {
      if (absl::StartsWith(a, "--port=") && *port_out > 0) a = absl::StrCat("--port=", *port_out);
      if (absl::StartsWith(a, "--metrics_port=") && *metrics_port_out > 0) {
        a = absl::StrCat("--metrics_port=", *metrics_port_out);
      }
    }
  };
  spec.ready = [port_file, metrics_port_file, metrics, host, probe, timeout, port_out,
                metrics_port_out](Process& p) -> absl::Status {
    const absl::Time deadline = absl::Now() + timeout;
    // /metrics is up before gRPC (every server's main), so both files are there by now.
    RLHF_ASSIGN_OR_RETURN(int port, WaitForPortFile(port_file, p, deadline));
    if (metrics) {
      RLHF_ASSIGN_OR_RETURN(*metrics_port_out, WaitForPortFile(metrics_port_file, p, deadline));
    }
    *port_out = port;
    return WaitForServing(host, port, p, deadline, probe);
  };
  Say(absl::StrCat("[run] starting ", name, " (log ", spec.process.log_path, ")"));
  RLHF_RETURN_IF_ERROR(sup.Start(std::move(spec)));
  *address = services::JoinHostPort(host, *port_out);
  const int metrics_port = *metrics_port_out;
  if (metrics) {
    const bool wildcard = metrics_host == "0.0.0.0" || metrics_host == "::";
    targets_.push_back({services::JoinHostPort(wildcard ? host : metrics_host, metrics_port),
                        {{"component", name}}});
    if (name == "learner") learner_metrics_port_ = metrics_port;
  }
  Say(absl::StrCat("[run] ", name, " serving at ", *address,
                   metrics ? absl::StrCat(", metrics :", metrics_port) : ""));
  return absl::OkStatus();
}

ChildSpec Job::ActorSpec(int index) {
  const std::string name = absl::StrCat("actor-", index);
  ChildSpec spec;
  spec.process.name = name;
  spec.process.argv =
      ActorArgv(config_, paths_, index, {learner_addr_, reward_addr_, reference_addr_});
  // Its /metrics port is read from this file (ScrapeTargets); a restarted actor writes
  // the port it binds then.
  const std::string metrics_port_file = paths_.MetricsPortFile(name);
  std::error_code ec;
  fs::remove(metrics_port_file, ec);
  spec.before_restart = [metrics_port_file](ProcessSpec&) {
    std::error_code ec;
    fs::remove(metrics_port_file, ec);
  };
  spec.process.log_path = Log(name);
  spec.process.env = {"OMP_NUM_THREADS=" + std::to_string(config_.actors().threads())};
  spec.component = "actor";
  spec.instance = std::to_string(index);
  spec.stop_order = 0;
  spec.max_restarts = config_.actors().max_restarts();
  spec.restart_backoff = absl::Milliseconds(config_.actors().restart_backoff_ms());
  return spec;
}

absl::Status Job::StartRlChildren(Supervisor& sup) {
  // <run_dir>/metrics/: the launcher's snapshots and the actors' own --metrics_file.
  std::error_code ec;
  fs::create_directories(paths_.MetricsDir(), ec);
  RLHF_RETURN_IF_ERROR(StartServer(sup, "reward_server", "rlhf-reward-server",
                                   config_.reward_server().endpoint(), RewardServerArgs(config_), 2,
                                   true, &reward_addr_));
  RLHF_RETURN_IF_ERROR(StartServer(sup, "reference_server", "rlhf-reference-server",
                                   config_.reference_server().endpoint(),
                                   ReferenceServerArgs(config_), 2, true, &reference_addr_));
  // The learner reads security.* from config.yaml too; the flags say the same, so that
  // the command line shows how it was started.
  RLHF_RETURN_IF_ERROR(StartServer(sup, "learner", "rlhf-learner", config_.learner().endpoint(),
                                   LearnerArgs(config_, paths_), 1, true, &learner_addr_));
  // The learner's exit code 0 means "rl.steps done": the job completed.
  for (int i = 0; i < config_.actors().count(); ++i) {
    Say(absl::StrCat("[run] starting actor-", i));
    RLHF_RETURN_IF_ERROR(sup.Start(ActorSpec(i)));
  }
  return absl::OkStatus();
}

std::vector<ScrapeTarget> Job::ScrapeTargets() const {
  std::vector<ScrapeTarget> all = targets_;
  for (int i = 0; i < config_.actors().count(); ++i) {
    if (std::optional<int> port = ReadPortFile(paths_.MetricsPortFile(absl::StrCat("actor-", i)))) {
      all.push_back({absl::StrCat("127.0.0.1:", *port),
                     {{"component", "actor"}, {"actor_id", std::to_string(i)}}});
    }
  }
  if (exposer_ != nullptr) {
    all.push_back({absl::StrCat("127.0.0.1:", exposer_->port()), {{"component", "launcher"}}});
  }
  return all;
}

void Job::UpdateTargets() {
  if (!prometheus_targets_) return;
  const std::string path = run_dir_ + "/prometheus/targets.json";
  const std::vector<ScrapeTarget> all = ScrapeTargets();
  const std::string json = FileSdJson(all);
  if (json == written_targets_) return;  // Prometheus re-reads the file on every change
  if (WriteFileSd(path, all).ok()) written_targets_ = json;
}

absl::Status Job::StartPrometheus(Supervisor& sup) {
  const std::string dir = run_dir_ + "/prometheus";
  fs::create_directories(dir + "/data");
  prometheus_targets_ = true;
  UpdateTargets();
  PrometheusJobOptions po;
  po.job_name = "rlhf";
  po.scrape_interval_ms = config_.monitoring().scrape_interval_ms();
  po.file_sd_path = dir + "/targets.json";
  const std::string rules_src = std::string(RLHF_DEPLOY_DIR) + "/prometheus/alerts.yml";
  std::error_code ec;
  if (!std::string(RLHF_DEPLOY_DIR).empty() && fs::exists(rules_src)) {
    fs::copy_file(rules_src, dir + "/alerts.yml", fs::copy_options::overwrite_existing, ec);
    if (!ec) po.rule_files.push_back(dir + "/alerts.yml");
  }
  {
    std::ofstream out(dir + "/prometheus.yml");
    out << PrometheusConfigYaml(po);
  }
  int port = config_.monitoring().prometheus_port();
  if (port == 0) {
    RLHF_ASSIGN_OR_RETURN(port, PickFreePort());
  }
  const std::string binary = "/usr/bin/prometheus";
  if (::access(binary.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(
        "monitoring.prometheus: /usr/bin/prometheus not found (apt-get install prometheus)");
  }
  RLHF_RETURN_IF_ERROR(sup.Start(PrometheusChild(binary, dir + "/prometheus.yml", dir + "/data",
                                                 port, Log("prometheus"),
                                                 absl::Seconds(60))));
  prometheus_url_ = absl::StrCat("http://127.0.0.1:", port);
  summary_["prometheus_url"] = prometheus_url_;
  {
    std::ofstream(run_dir_ + "/prometheus/url") << prometheus_url_ << "\n";
  }
  Say(absl::StrCat("[run] Prometheus at ", prometheus_url_, " (targets: ", po.file_sd_path,
                   ")"));
  return absl::OkStatus();
}

absl::Status Job::ConnectLearner() {
  RLHF_ASSIGN_OR_RETURN(services::ChannelOptions channel,
                        LearnerChannelOptions(config_.security(), learner_addr_));
  // One attempt per poll: the next poll is the retry (a restarting learner must not
  // hold up the status loop).
  services::RetryOptions once;
  once.max_attempts = 1;
  RLHF_ASSIGN_OR_RETURN(learner_client_, learner::GrpcLearnerClient::Create(channel, once));
  return absl::OkStatus();
}

// metrics.jsonl gets one line per new learner step its GetStats reports (polled a few
// times a second: a step takes seconds, so in practice every step; a finished learner
// answers until a poller has seen its last step, learner/main.cc).
void Job::PollLearner() {
  if (recorder_ != nullptr) {
    const int64_t missed_before = recorder_->steps_missed();
    (void)recorder_->Poll(absl::Now() + absl::Seconds(1));
    if (recorder_->steps_missed() > missed_before) {
      Say(absl::StrCat("[run] metrics.jsonl: ", recorder_->steps_missed() - missed_before,
                       " step(s) before step ", recorder_->last_step(),
                       " have no record (the learner keeps only its last steps' records)"));
    }
  }
  if (learner_metrics_port_ <= 0) return;
  auto body = HttpGet("127.0.0.1", learner_metrics_port_, "/metrics", absl::Seconds(1));
  // The learner may exit between two status ticks; keep its newest body as its snapshot.
  if (body.ok()) WriteMetricsSnapshot("learner", *body);
}

// <run_dir>/metrics/<process>.prom: the last /metrics body read from each process
// (refreshed every status tick, so a process that exited leaves its final numbers).
void Job::SnapshotMetrics() {
  for (const auto& t : ScrapeTargets()) {
    const size_t colon = t.address.rfind(':');
    int port = 0;
    if (colon == std::string::npos || !absl::SimpleAtoi(t.address.substr(colon + 1), &port)) {
      continue;
    }
    auto body = HttpGet(t.address.substr(0, colon), port, "/metrics", absl::Seconds(1));
    if (!body.ok()) continue;
    std::string name = t.labels.at("component");
    if (auto it = t.labels.find("actor_id"); it != t.labels.end()) {
      name = absl::StrCat("actor-", it->second);
    }
    WriteMetricsSnapshot(name, *body);
  }
}

void Job::WriteMetricsSnapshot(const std::string& name, const std::string& body) {
  (void)WriteFileAtomically(paths_.MetricsSnapshot(name), body, kNotDurable);
}

// <run_dir>/processes.json: the job's processes now (name, component, pid, up,
// restarts), rewritten atomically at every status tick; for users and tests.
void Job::WriteProcesses(const Supervisor& sup) {
  Json list = Json::array();
  for (const auto& c : sup.Snapshot()) {
    list.push_back({{"name", c.name},
                    {"component", c.component},
                    {"instance", c.instance},
                    {"pid", c.pid},
                    {"up", c.up},
                    {"restarts", c.restarts},
                    {"gave_up", c.gave_up}});
  }
  (void)WriteFileAtomically(run_dir_ + "/processes.json", list.dump(2) + "\n", kNotDurable);
}

// The final policy of an RL run: the newest learner checkpoint's policy
// (<run_dir>/learner/step-N/policy), or "" when there is none.
std::string NewestLearnerPolicy(const std::string& run_dir) {
  std::error_code ec;
  std::string newest;
  for (const auto& e : fs::directory_iterator(run_dir + "/learner", ec)) {
    const std::string n = e.path().filename().string();
    if (absl::StartsWith(n, "step-") && fs::exists(e.path() / "policy" / "config.json") &&
        n > newest) {
      newest = n;
    }
  }
  return newest.empty() ? "" : run_dir + "/learner/" + newest + "/policy";
}

// The learner checkpoints under <run_dir>/learner: step -> policy directory.
std::map<int64_t, std::string> LearnerPolicies(const std::string& run_dir) {
  std::map<int64_t, std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(run_dir + "/learner", ec)) {
    const std::string n = e.path().filename().string();
    int64_t step = 0;
    if (absl::StartsWith(n, "step-") && absl::SimpleAtoi(n.substr(5), &step) &&
        fs::exists(e.path() / "policy" / "config.json")) {
      out[step] = (e.path() / "policy").string();
    }
  }
  return out;
}

std::string Job::TrainingRmCheckpoint() const {
  for (const auto& sc : config_.reward_server().scorers()) {
    if (sc.type() == "rm" && fs::exists(sc.checkpoint() + "/config.json")) return sc.checkpoint();
  }
  return "";
}

void Job::StartStepEvals() {
  step_eval_rm_.clear();
  if (!config_.launcher().eval() || config_.eval().step_prompts() <= 0) return;
  step_eval_rm_ = TrainingRmCheckpoint();
  if (step_eval_rm_.empty()) return;
  // Checkpoints of an earlier run in this run_dir were evaluated then.
  const auto existing = LearnerPolicies(run_dir_);
  last_step_evaluated_ = existing.empty() ? 0 : existing.rbegin()->first;
  std::error_code ec;
  fs::create_directories(run_dir_ + "/eval_steps", ec);
  SpawnStepEval(0, config_.model().sft_checkpoint());
}

std::string Job::StepEvalJson(int64_t step) const {
  return step == 0 ? run_dir_ + "/eval_steps/sft.json"
                   : absl::StrFormat("%s/eval_steps/step-%08d.json", run_dir_, step);
}

void Job::SpawnStepEval(int64_t step, const std::string& policy) {
  const std::string json = StepEvalJson(step);
  std::error_code ec;
  fs::remove(json, ec);
  ProcessSpec spec;
  spec.name = "eval_steps";
  spec.argv = StepEvalArgv(config_, paths_, policy, step_eval_rm_, json);
  spec.log_path = Log("eval_steps");
  auto p = Process::Spawn(spec);
  if (!p.ok()) {
    Say(absl::StrCat("[eval] per-checkpoint win rates off: ", p.status().message()));
    step_eval_rm_.clear();
    return;
  }
  step_eval_ = std::move(*p);
  step_eval_step_ = step;
}

// A finished eval's result: its JSON document (the process may have been reaped by the
// supervisor's orphan reaper, so its exit code is not the test).
void Job::HarvestStepEval() {
  const int64_t step = step_eval_step_;
  step_eval_.reset();
  const std::string json = StepEvalJson(step);
  std::ifstream in(json);
  Json doc = in ? Json::parse(in, nullptr, false) : Json();
  if (!doc.is_object() || !doc.contains("samples")) {
    Say(absl::StrCat("[eval] ", step == 0 ? "SFT" : absl::StrCat("step ", step),
                     " win-rate evaluation failed; last lines of ", Log("eval_steps"), ":\n",
                     TailFile(Log("eval_steps"), 10)));
    if (step == 0) step_eval_rm_.clear();  // no baseline: nothing to compare with
    return;
  }
  if (step == 0) {
    step_eval_sft_ = std::move(doc);
    return;
  }
  std::optional<Json> fields = StepWinRateFields(*step_eval_sft_, doc);
  if (!fields.has_value()) return;
  const Json& ci = (*fields)["rm_win_rate_ci95"];
  Say(absl::StrCat("[eval] step ", step, ": RM win rate over SFT ",
                   Fmt((*fields)["rm_win_rate"].get<double>()), " [",
                   Fmt(ci[0].get<double>()), ", ", Fmt(ci[1].get<double>()), "] on ",
                   (*fields)["eval_prompts"].get<int>(), " held-out prompts"));
  step_win_rates_[step] = std::move(*fields);
}

void Job::TickStepEval() {
  if (step_eval_rm_.empty()) return;
  if (step_eval_ != nullptr) {
    if (step_eval_->Poll()) return;
    HarvestStepEval();
    if (step_eval_rm_.empty()) return;
  }
  const auto policies = LearnerPolicies(run_dir_);
  if (policies.empty() || policies.rbegin()->first <= last_step_evaluated_) return;
  last_step_evaluated_ = policies.rbegin()->first;
  SpawnStepEval(last_step_evaluated_, policies.rbegin()->second);
}

void Job::FinishStepEvals(bool interrupted) {
  // Waits for the eval in flight and harvests it; on a stop request, stops it instead.
  auto wait = [&]() {
    while (!interrupted && step_eval_->Poll()) {
      if (StopRequested()) interrupted = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (interrupted) {
      step_eval_->Stop(absl::Milliseconds(config_.launcher().grace_period_ms()));
      step_eval_.reset();
      return;
    }
    HarvestStepEval();
  };
  if (step_eval_ != nullptr) wait();
  // The final checkpoint, saved when the learner finished.
  if (!interrupted) {
    TickStepEval();
    if (step_eval_ != nullptr) wait();
  }
  if (step_win_rates_.empty()) return;
  std::vector<Json> records;
  {
    std::ifstream in(run_dir_ + "/metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      Json j = Json::parse(line, nullptr, false);
      if (!j.is_discarded()) records.push_back(std::move(j));
    }
  }
  std::string text;
  for (const Json& r : MergeStepFields(std::move(records), step_win_rates_)) {
    absl::StrAppend(&text, r.dump(), "\n");
  }
  if (absl::Status s = WriteFileAtomically(run_dir_ + "/metrics.jsonl", text); !s.ok()) {
    Say(absl::StrCat("[eval] writing the win rates to metrics.jsonl: ", s.message()));
  }
  step_win_rates_.clear();
}

absl::Status Job::Rl() {
  const absl::Time start = absl::Now();
  SupervisorOptions so;
  so.grace = absl::Milliseconds(config_.launcher().grace_period_ms());
  so.report = [](const std::string& line) { Say(line); };
  Supervisor sup(so, registry_.get());
  std::error_code ec;
  fs::remove(run_dir_ + "/metrics.jsonl.launcher", ec);
  // A resumed run appends to the same metrics.jsonl: steps the learner trains again
  // after restoring an older checkpoint are not written twice (issue 23).
  int64_t last_jsonl_step = 0;
  if (auto last = ReadLastJsonLine(run_dir_ + "/metrics.jsonl");
      last.has_value() && last->contains("step") && (*last)["step"].is_number_integer()) {
    last_jsonl_step = (*last)["step"].get<int64_t>();
  }

  absl::Status st = StartRlChildren(sup);
  if (st.ok()) st = ConnectLearner();
  if (st.ok() && config_.monitoring().prometheus()) st = StartPrometheus(sup);
  if (!st.ok()) {
    sup.ShutdownAll();
    return st;
  }
  Say(absl::StrCat("[run] RL running: ", config_.actors().count(), " actors, ",
                   config_.rl().steps(), " steps; Ctrl-C stops the job cleanly"));

  StatusTracker tracker(config_.rl().steps());
  absl::Time next_status = absl::Now();
  const absl::Duration interval = absl::Milliseconds(config_.launcher().status_interval_ms());
  std::optional<absl::Time> steps_done_at;
  bool printed_line = false;
  std::optional<int64_t> last_printed_step;
  absl::Time last_print = absl::InfinitePast();
  recorder_ = std::make_unique<RunRecorder>(learner_client_.get(), run_dir_ + "/metrics.jsonl",
                                            last_jsonl_step, absl::Now());
  absl::Time next_poll = absl::Now();
  StartStepEvals();
  while (sup.state() == JobState::kRunning && !StopRequested()) {
    sup.Tick();
    if (absl::Now() >= next_poll) {
      next_poll = absl::Now() + absl::Milliseconds(100);
      PollLearner();
      UpdateTargets();
      TickStepEval();
    }
    const absl::Time now = absl::Now();
    if (now >= next_status) {
      next_status = now + interval;
      WriteProcesses(sup);
      SnapshotMetrics();
      auto record = ReadLastJsonLine(run_dir_ + "/metrics.jsonl");
      TrainingStatus s =
          tracker.Update(record, sup.Running("actor"), config_.actors().count(), now);
      const std::string line = FormatStatusLine(s);
      if (options_.tty) {
        std::fprintf(stderr, "\r\033[K%s", line.c_str());
        printed_line = true;
      } else if (s.step != last_printed_step || now - last_print > absl::Seconds(10)) {
        // Logs and pipes get a line per learner step (or every 10 s while waiting).
        Say("[rl] " + line);
        last_printed_step = s.step;
        last_print = now;
      }
      // A learner that reached rl.steps but keeps serving is told to stop.
      if (s.step.has_value() && *s.step >= config_.rl().steps()) {
        if (!steps_done_at.has_value()) steps_done_at = now;
      }
    }
    if (steps_done_at.has_value() && absl::Now() - *steps_done_at > absl::Seconds(30)) {
      Say("[run] learner reached rl.steps; stopping it");
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  PollLearner();
  if (printed_line) std::fprintf(stderr, "\n");
  const bool interrupted = StopRequested();
  const JobState state = sup.state();
  const std::string reason = sup.reason();
  if (interrupted) Say("[run] stopping (signal); shutting down actors, learner, servers");
  if (!prometheus_url_.empty() && !interrupted) {
    // One more scrape interval so Prometheus records the final values.
    std::this_thread::sleep_for(
        std::chrono::milliseconds(config_.monitoring().scrape_interval_ms() * 2));
  }
  // The processes still up leave their final numbers (the last status tick may predate
  // their last updates, or have found one of them busy).
  SnapshotMetrics();
  sup.ShutdownAll();
  WriteProcesses(sup);
  FinishStepEvals(interrupted || state == JobState::kFailed);
  summary_["wall_seconds"]["rl"] = absl::ToDoubleSeconds(absl::Now() - start);
  if (auto last = ReadLastJsonLine(run_dir_ + "/metrics.jsonl")) {
    summary_["rl"]["last_step"] = *last;
  }
  int restarts = 0;
  for (const auto& c : sup.Snapshot()) restarts += c.restarts;
  summary_["rl"]["actor_restarts"] = restarts;
  rl_checkpoint_ = NewestLearnerPolicy(run_dir_);
  if (!rl_checkpoint_.empty()) summary_["rl"]["checkpoint"] = rl_checkpoint_;
  if (interrupted) return absl::CancelledError("stopped by signal");
  if (state == JobState::kFailed) return absl::InternalError(reason);
  Say("[run] RL finished");
  return absl::OkStatus();
}

absl::Status Job::Export() {
  // The final policy as a HuggingFace directory (core/model/hf.h); tokenizer files come
  // from the HF directory the job started from.
  if (rl_checkpoint_.empty()) rl_checkpoint_ = NewestLearnerPolicy(run_dir_);
  const std::string policy =
      rl_checkpoint_.empty() ? config_.model().sft_checkpoint() : rl_checkpoint_;
  const std::string out = config_.launcher().export_dir() + "/policy";
  std::vector<std::string> argv = {Bin("rlhf"), "export", "--format=hf",
                                   "--checkpoint=" + policy, "--out=" + out};
  if (!config_.model().init_checkpoint().empty()) {
    argv.push_back("--tokenizer_dir=" + config_.model().init_checkpoint());
  }
  RLHF_RETURN_IF_ERROR(RunStage("export", argv));
  summary_["export"]["policy"] = out;
  summary_["export"]["from"] = policy;
  return absl::OkStatus();
}

absl::Status Job::Eval() {
  // Evaluate the SFT policy and the final RL policy on the held-out prompts.
  // Without an rl stage in this run (`--stages eval`), the policy of an earlier run in
  // the same run_dir: distributed, or `rlhf rl` in one process.
  if (rl_checkpoint_.empty()) rl_checkpoint_ = NewestLearnerPolicy(run_dir_);
  std::vector<std::pair<std::string, std::string>> policies = {
      {"sft", config_.model().sft_checkpoint()}};
  if (!rl_checkpoint_.empty()) policies.push_back({"rl", rl_checkpoint_});
  const std::string rm = TrainingRmCheckpoint();
  for (const auto& [name, ckpt] : policies) {
    RLHF_RETURN_IF_ERROR(RunStage("eval_" + name, EvalArgv(config_, paths_, name, ckpt, rm)));
  }
  return absl::OkStatus();
}

absl::Status Job::WriteSummary(const std::string& state, const std::string& message) {
  summary_["name"] = config_.name();
  summary_["run_dir"] = run_dir_;
  summary_["config"] = run_dir_ + "/config.yaml";
  summary_["state"] = state;
  if (!message.empty()) summary_["message"] = message;
  summary_["wall_seconds"]["total"] = absl::ToDoubleSeconds(absl::Now() - job_start_);
  AddStageResults(run_dir_, config_.eval().samples_per_prompt(), &summary_);
  // The evaluation's KL is always the exact one (over the vocabulary); training used
  // rl.kl.estimator ("exact" = the same quantity, from the actors' distributions).
  std::string estimator = rlhf::v1::KlEstimatorChoice_Name(config_.rl().kl().estimator());
  summary_["rl"]["kl_estimator"] =
      absl::AsciiStrToLower(absl::StripPrefix(estimator, "KL_ESTIMATOR_CHOICE_"));
  AddPolicyComparison(run_dir_, config_.eval().num_examples(), &summary_);
  if (WriteMetricsPlot(run_dir_, summary_)) summary_["plot"] = run_dir_ + "/plot.html";
  return WriteFileAtomically(run_dir_ + "/summary.json", summary_.dump(2) + "\n");
}

void Job::PrintTable() {
  std::fprintf(stdout, "%s", FormatSummaryTable(summary_, config_.eval().num_examples(), config_.eval().gold()).c_str());
  std::fflush(stdout);
}

absl::Status Job::Run() {
  fs::create_directories(logs_);
  fs::create_directories(paths_.PortsDir());
  if (AutoTlsEnabled(config_)) {
    // Before config.yaml: the learner reads security.* from it.
    RLHF_ASSIGN_OR_RETURN(JobTlsFiles tls, EnsureJobTls(run_dir_ + "/tls", JobTlsNames(config_)));
    UseJobTls(tls, config_.mutable_security());
    Say(absl::StrCat("[run] security.auto_tls: mutual TLS + token, CA and certificates in ",
                     tls.dir));
  }
  RLHF_RETURN_IF_ERROR(config::WriteJobConfig(config_, run_dir_ + "/config.yaml"));
  Say(absl::StrCat("[run] job '", config_.name(), "': run dir ", run_dir_,
                   " (resolved config: config.yaml)"));
  // Job-level bounds as gauges, so alert rules and dashboards compare against them
  // without per-job editing (deploy/prometheus/alerts.yml).
  auto gauge = [&](const char* name, const char* help, double v) {
    prometheus::BuildGauge().Name(name).Help(help).Register(*registry_).Add({}).Set(v);
  };
  gauge("rlhf_launcher_kl_target_nats", "Configured KL target per sequence (rl.kl.target)",
        config_.rl().kl().target());
  gauge("rlhf_launcher_max_staleness_versions",
        "Configured staleness bound in policy versions (rl.max_staleness)",
        config_.rl().max_staleness());
  gauge("rlhf_launcher_rl_steps", "Configured learner steps of the job (rl.steps)",
        config_.rl().steps());
  if (config_.launcher().metrics_port() >= 0) {
    RLHF_ASSIGN_OR_RETURN(exposer_, services::MetricsExposer::Create(
                                        "127.0.0.1", config_.launcher().metrics_port(),
                                        registry_));
    Say(absl::StrCat("[run] launcher metrics at ", exposer_->url()));
  }
  absl::Status st = absl::OkStatus();
  const bool train = config_.launcher().train_missing();
  auto stage = [&](const char* name, absl::Status (Job::*fn)()) {
    if (!st.ok() || !WantStage(name)) return;
    const absl::Time t = absl::Now();
    st = (this->*fn)();
    if (!summary_["wall_seconds"].contains(name)) {
      summary_["wall_seconds"][name] = absl::ToDoubleSeconds(absl::Now() - t);
    }
  };
  if (train) {
    stage("data", &Job::Data);
    stage("sft", &Job::Sft);
    stage("rm", &Job::Rm);
  }
  stage("rl", &Job::Rl);
  if (config_.launcher().eval()) stage("eval", &Job::Eval);
  if (!config_.launcher().export_dir().empty()) stage("export", &Job::Export);
  const std::string state = st.ok() ? "completed"
                            : st.code() == absl::StatusCode::kCancelled ? "interrupted"
                                                                          : "failed";
  absl::Status ws = WriteSummary(state, st.ok() ? "" : std::string(st.message()));
  if (st.ok()) PrintTable();
  Say(absl::StrCat("[run] ", state, "; summary: ", run_dir_, "/summary.json"));
  if (!ws.ok()) Say(std::string(ws.message()));
  return st;
}

}  // namespace

absl::Status RunJob(const RunOptions& options) {
  // First, before any thread exists (the metrics exposer, the supervisor's): every
  // thread inherits the mask; children get it cleared again (process.cc).
  services::BlockShutdownSignals();
  signal(SIGPIPE, SIG_IGN);
  config::LoadOptions lo;
  lo.overrides = options.overrides;
  RLHF_ASSIGN_OR_RETURN(JobConfig config, config::LoadJobConfig(options.config_path, lo));
  BecomeSubreaper();

  Job job(options, std::move(config));
  return job.Run();
}

}  // namespace rlhf::launcher
