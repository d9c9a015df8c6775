// Supervisor: starts a set of child processes in order, watches them, restarts the
// restartable ones, decides when the job has completed or failed, and shuts
// everything down in stop order with no process left behind.
//
//   Supervisor sup(options, registry);            // registry may be null
//   RLHF_RETURN_IF_ERROR(sup.Start(reward_spec));  // runs spec.ready (port + health)
//   ...
//   while (sup.state() == JobState::kRunning && !stop_requested) {
//     sup.Tick();                                  // reap, report, restart
//     ...sleep a little...
//   }
//   sup.ShutdownAll();                             // actors, learner, servers, ...
//
// Policies per child (ChildSpec): `critical` children (learner, servers) end the job
// when they exit, unless they have restarts left (max_restarts > 0: the stateless
// reward/reference servers, restarted like a crashed actor, before_restart pinning the
// port they first bound so clients find them again); `completes_job` (the learner)
// ends it successfully when it exits 0;
// restartable children (actors) are restarted after `restart_backoff` up to
// `max_restarts` times and each crash is reported with the tail of its log; a group
// whose members all gave up (`min_running`) fails the job.
//
// Metrics (when a registry is given): rlhf_launcher_processes_up{kind},
// rlhf_launcher_processes_configured{kind}, rlhf_launcher_restarts_total{kind},
// rlhf_launcher_process_exits_total{kind}.
//
// Thread-safety: one thread drives a Supervisor (Start/Tick/ShutdownAll); Snapshot()
// may be called from any thread.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "tools/launcher/process.h"

namespace rlhf::launcher {

struct ChildSpec {
  ProcessSpec process;
  std::string component;   // metric label and group: "learner", "actor", ...
  std::string instance;    // "0", "1" for actors; "" for singletons
  int stop_order = 0;      // ShutdownAll stops lower numbers first
  bool critical = false;   // its exit ends the job (failure unless completes_job + code 0)
                           // once its restarts (if any) are used up
  bool completes_job = false;  // exit code 0 = the job finished successfully
  int max_restarts = 0;    // restarts after a crash before giving up (critical: failing)
  // Called before each restart (not the first spawn) to adjust the command line, e.g.
  // to pin the port the first run bound.
  std::function<void(ProcessSpec&)> before_restart;
  absl::Duration restart_backoff = absl::Seconds(1);
  // Called after every (re)spawn; returns when the child is ready (port written,
  // health SERVING). An error kills the child and counts as a crash.
  std::function<absl::Status(Process&)> ready;
};

enum class JobState { kRunning, kCompleted, kFailed };

struct SupervisorOptions {
  absl::Duration grace = absl::Seconds(10);  // SIGTERM -> SIGKILL per stop group
  int log_tail_lines = 20;                   // lines of a crashed child's log reported
  // Where event lines go ("[launcher] actor-1 killed by signal 9 ..."); default stderr.
  std::function<void(const std::string&)> report;
};

struct ChildStatus {
  std::string name, component, instance;
  bool up = false;
  int restarts = 0;
  bool gave_up = false;
  pid_t pid = 0;
};

class Supervisor {
 public:
  Supervisor(SupervisorOptions options, prometheus::Registry* registry);
  ~Supervisor();  // ShutdownAll() if not done yet.

  // Spawns the child and runs its ready() hook. An error here is returned (the child
  // is stopped) and does not change the job state: startup failures are the caller's.
  absl::Status Start(ChildSpec spec);

  // Reaps exited children, reports them, schedules and performs restarts, updates
  // metrics and the job state. Never blocks longer than a restarted child's ready().
  void Tick();

  JobState state() const { return state_; }
  // Why the job failed or completed (one line), "" while running.
  const std::string& reason() const { return reason_; }

  // Stops every child: stop groups in ascending stop_order, each SIGTERM -> grace ->
  // SIGKILL, all reaped. Idempotent.
  void ShutdownAll();

  // Number of running children of `component`.
  int Running(const std::string& component) const;
  std::vector<ChildStatus> Snapshot() const;
  // The pid of a running child by name (for tests and status), 0 if none.
  pid_t PidOf(const std::string& name) const;

 private:
  struct Child {
    ChildSpec spec;
    std::unique_ptr<Process> process;
    int restarts = 0;
    bool gave_up = false;
    bool stopped = false;           // stopped by ShutdownAll
    absl::Time restart_at = absl::InfiniteFuture();
  };

  absl::Status SpawnAndReady(Child& child);
  void Report(const std::string& line);
  void Fail(const std::string& why);
  void UpdateGauges();
  void ReapOrphansNow();

  SupervisorOptions options_;
  std::vector<std::unique_ptr<Child>> children_;
  JobState state_ = JobState::kRunning;
  std::string reason_;
  bool shut_down_ = false;
  mutable absl::Mutex snapshot_mu_;
  std::vector<ChildStatus> snapshot_ ABSL_GUARDED_BY(snapshot_mu_);

  prometheus::Family<prometheus::Gauge>* up_ = nullptr;
  prometheus::Family<prometheus::Gauge>* configured_ = nullptr;
  prometheus::Family<prometheus::Counter>* restarts_ = nullptr;
  prometheus::Family<prometheus::Counter>* exits_ = nullptr;
};

}  // namespace rlhf::launcher
