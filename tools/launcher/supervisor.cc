#include "tools/launcher/supervisor.h"

#include <signal.h>

#include <cstdio>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"

namespace rlhf::launcher {

Supervisor::Supervisor(SupervisorOptions options, prometheus::Registry* registry)
    : options_(std::move(options)) {
  if (!options_.report) {
    options_.report = [](const std::string& line) {
      std::fprintf(stderr, "%s\n", line.c_str());
    };
  }
  if (registry != nullptr) {
    up_ = &prometheus::BuildGauge()
               .Name("rlhf_launcher_processes_up")
               .Help("Child processes of rlhf run currently running, by component")
               .Register(*registry);
    configured_ = &prometheus::BuildGauge()
                       .Name("rlhf_launcher_processes_configured")
                       .Help("Child processes rlhf run is configured to keep running")
                       .Register(*registry);
    restarts_ = &prometheus::BuildCounter()
                     .Name("rlhf_launcher_restarts_total")
                     .Help("Child processes restarted after a crash, by component")
                     .Register(*registry);
    exits_ = &prometheus::BuildCounter()
                  .Name("rlhf_launcher_process_exits_total")
                  .Help("Child process exits observed (crashes and normal ends)")
                  .Register(*registry);
  }
}

Supervisor::~Supervisor() { ShutdownAll(); }

void Supervisor::Report(const std::string& line) { options_.report("[launcher] " + line); }

void Supervisor::Fail(const std::string& why) {
  if (state_ != JobState::kRunning) return;
  state_ = JobState::kFailed;
  reason_ = why;
  Report(absl::StrCat("job failed: ", why));
}

absl::Status Supervisor::SpawnAndReady(Child& child) {
  auto p = Process::Spawn(child.spec.process);
  if (!p.ok()) return p.status();
  child.process = std::move(*p);
  if (child.spec.ready) {
    absl::Status st = child.spec.ready(*child.process);
    if (!st.ok()) {
      child.process->Stop(options_.grace);
      return st;
    }
  }
  return absl::OkStatus();
}

absl::Status Supervisor::Start(ChildSpec spec) {
  auto child = std::make_unique<Child>();
  child->spec = std::move(spec);
  if (configured_ != nullptr) {
    configured_->Add({{"kind", child->spec.component}}).Increment();
    // Counters exist from zero, so rate()/increase() see the first restart.
    restarts_->Add({{"kind", child->spec.component}});
    exits_->Add({{"kind", child->spec.component}});
  }
  absl::Status st = SpawnAndReady(*child);
  if (st.ok()) {
    Report(absl::StrCat("started ", child->spec.process.name, " (pid ", child->process->pid(),
                        ")"));
  }
  children_.push_back(std::move(child));
  UpdateGauges();
  return st;
}

void Supervisor::ReapOrphansNow() {
  ReapOrphans([this](pid_t pid) {
    for (const auto& c : children_) {
      if (c->process != nullptr && c->process->running() && c->process->pid() == pid) {
        return true;
      }
    }
    return false;
  });
}

void Supervisor::Tick() {
  ReapOrphansNow();
  const absl::Time now = absl::Now();
  for (auto& c : children_) {
    Child& child = *c;
    if (child.stopped || child.gave_up) continue;
    if (child.process != nullptr && !child.process->running()) {
      // Already handled exit; waiting for restart_at.
    } else if (child.process != nullptr && !child.process->Poll()) {
      const std::string& name = child.spec.process.name;
      const std::string how = child.process->DescribeExit();
      if (exits_ != nullptr) exits_->Add({{"kind", child.spec.component}}).Increment();
      if (state_ != JobState::kRunning) continue;
      const std::string tail = TailFile(child.spec.process.log_path, options_.log_tail_lines);
      const std::string log_part =
          tail.empty() ? ""
                       : absl::StrCat("; last lines of ", child.spec.process.log_path, ":\n",
                                      tail);
      if (child.spec.critical) {
        if (child.spec.completes_job && child.process->exited_cleanly()) {
          state_ = JobState::kCompleted;
          reason_ = absl::StrCat(name, " finished");
          Report(reason_);
          continue;
        }
        if (child.restarts >= child.spec.max_restarts) {
          Fail(absl::StrCat(name, " ", how,
                            child.spec.max_restarts > 0
                                ? absl::StrCat(" after ", child.restarts, " restarts")
                                : "",
                            log_part));
          continue;
        }
        // A stateless server: restart it like a crashed actor (below).
      }
      if (!child.spec.critical && child.process->exited_cleanly()) {
        Report(absl::StrCat(name, " finished (exit code 0); not restarted"));
        child.gave_up = true;
        continue;
      }
      if (child.restarts < child.spec.max_restarts) {
        ++child.restarts;
        child.restart_at = now + child.spec.restart_backoff;
        Report(absl::StrCat(name, " ", how, "; restarting in ",
                            absl::FormatDuration(child.spec.restart_backoff), " (restart ",
                            child.restarts, " of ", child.spec.max_restarts, ")", log_part));
      } else {
        child.gave_up = true;
        Report(absl::StrCat(name, " ", how, "; giving up after ", child.restarts,
                            " restarts", log_part));
        bool any_left = false;
        for (const auto& o : children_) {
          if (o->spec.component == child.spec.component && !o->gave_up) any_left = true;
        }
        if (!any_left) {
          Fail(absl::StrCat("every ", child.spec.component, " process gave up (last: ", name,
                            " ", how, ")"));
        }
      }
    }
    if (state_ == JobState::kRunning && child.process != nullptr &&
        !child.process->running() && !child.gave_up && absl::Now() >= child.restart_at) {
      child.restart_at = absl::InfiniteFuture();
      if (child.spec.before_restart) child.spec.before_restart(child.spec.process);
      absl::Status st = SpawnAndReady(child);
      if (st.ok()) {
        if (restarts_ != nullptr) {
          restarts_->Add({{"kind", child.spec.component}}).Increment();
        }
        Report(absl::StrCat("restarted ", child.spec.process.name, " (pid ",
                            child.process->pid(), ")"));
      } else {
        // Counts as another crash: the next Tick reports it and applies the policy.
        Report(absl::StrCat("restart of ", child.spec.process.name, " failed: ",
                            st.message()));
        if (child.restarts < child.spec.max_restarts) {
          ++child.restarts;
          child.restart_at = absl::Now() + child.spec.restart_backoff;
        } else {
          child.gave_up = true;
          if (child.spec.critical) {
            Fail(absl::StrCat(child.spec.process.name, " could not be restarted: ",
                              st.message()));
          }
        }
      }
    }
  }
  UpdateGauges();
}

void Supervisor::ShutdownAll() {
  if (shut_down_) return;
  shut_down_ = true;
  std::set<int> orders;
  for (const auto& c : children_) orders.insert(c->spec.stop_order);
  for (int order : orders) {
    std::vector<Child*> group;
    for (auto& c : children_) {
      if (c->spec.stop_order != order) continue;
      c->stopped = true;
      if (c->process != nullptr && c->process->Poll()) {
        c->process->Signal(SIGTERM);
        group.push_back(c.get());
      }
    }
    const absl::Time deadline = absl::Now() + options_.grace;
    for (Child* c : group) {
      if (!c->process->WaitExit(deadline)) {
        Report(absl::StrCat(c->spec.process.name, " did not stop within ",
                            absl::FormatDuration(options_.grace), "; sending SIGKILL"));
      }
      // Stop() SIGKILLs what is left (leader and any grandchildren) and reaps.
      c->process->Stop(absl::ZeroDuration());
    }
  }
  for (auto& c : children_) {
    if (c->process != nullptr) c->process->Stop(absl::ZeroDuration());
  }
  // SIGKILLed group members die asynchronously; wait (briefly) until every group is
  // gone and collect the orphans re-parented to us (BecomeSubreaper).
  const absl::Time deadline = absl::Now() + absl::Seconds(2);
  while (true) {
    ReapOrphansNow();
    bool any_alive = false;
    for (auto& c : children_) {
      if (c->process != nullptr && ProcessGroupAlive(c->process->pid())) {
        ::kill(-c->process->pid(), SIGKILL);
        any_alive = true;
      }
    }
    if (!any_alive || absl::Now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ReapOrphansNow();
  UpdateGauges();
}

int Supervisor::Running(const std::string& component) const {
  int n = 0;
  for (const auto& c : children_) {
    if (c->spec.component == component && c->process != nullptr && c->process->running()) ++n;
  }
  return n;
}

pid_t Supervisor::PidOf(const std::string& name) const {
  for (const auto& c : children_) {
    if (c->spec.process.name == name && c->process != nullptr && c->process->running()) {
      return c->process->pid();
    }
  }
  return 0;
}

void Supervisor::UpdateGauges() {
  std::map<std::string, int> up;
  std::vector<ChildStatus> snap;
  for (const auto& c : children_) {
    ChildStatus s;
    s.name = c->spec.process.name;
    s.component = c->spec.component;
    s.instance = c->spec.instance;
    s.up = c->process != nullptr && c->process->running();
    s.restarts = c->restarts;
    s.gave_up = c->gave_up;
    s.pid = s.up ? c->process->pid() : 0;
    up[s.component] += s.up ? 1 : 0;
    snap.push_back(std::move(s));
  }
  if (up_ != nullptr) {
    for (const auto& [component, n] : up) up_->Add({{"kind", component}}).Set(n);
  }
  absl::MutexLock lock(&snapshot_mu_);
  snapshot_ = std::move(snap);
}

std::vector<ChildStatus> Supervisor::Snapshot() const {
  absl::MutexLock lock(&snapshot_mu_);
  return snapshot_;
}

}  // namespace rlhf::launcher
