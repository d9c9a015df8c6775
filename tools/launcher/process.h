// One child process of `rlhf run`: spawned in its own process group with stdout and
// stderr appended to a log file, signalled as a group, reaped exactly once.
//
//   ProcessSpec spec{.name = "actor-0", .argv = {bin, "--flag"}, .log_path = log};
//   RLHF_ASSIGN_OR_RETURN(auto p, Process::Spawn(spec));
//   ...
//   if (!p->Poll()) LOG(INFO) << p->DescribeExit();   // reaped, no zombie
//   p->Stop(absl::Seconds(10));   // SIGTERM to the group, SIGKILL after the grace
//
// The child gets a clean signal mask and default dispositions, and PR_SET_PDEATHSIG
// (SIGKILL) so that it dies with the launcher even if the launcher is SIGKILLed.
// Because that signal fires when the *thread* that forked exits, spawn from a thread
// that outlives the children (the launcher's main thread).
//
// Thread-safety: a Process is used by one thread at a time (the supervisor's loop).
// The destructor kills (SIGKILL) and reaps a child that is still running.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace rlhf::launcher {

struct ProcessSpec {
  std::string name;               // for messages: "actor-0", "learner"
  std::vector<std::string> argv;  // argv[0] is the executable path (no PATH lookup)
  std::string log_path;           // stdout + stderr appended here; empty = inherit
  std::vector<std::string> env;   // extra "KEY=VALUE" entries on top of our environment
  std::string working_dir;        // empty = ours
};

class Process {
 public:
  // Forks and execs. Fails (with the reason) if the log cannot be opened or the
  // executable does not exist / is not executable; exec errors after the fork show up
  // as exit code 127 with the reason in the log.
  static absl::StatusOr<std::unique_ptr<Process>> Spawn(const ProcessSpec& spec);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  const ProcessSpec& spec() const { return spec_; }
  const std::string& name() const { return spec_.name; }
  pid_t pid() const { return pid_; }
  absl::Time start_time() const { return start_time_; }

  // Non-blocking: reaps the child if it has exited. Returns true while it runs.
  bool Poll();
  bool running() const { return running_; }
  // Valid after the child exited: "exited with code 3", "killed by signal 9 (SIGKILL)".
  std::string DescribeExit() const;
  bool exited_cleanly() const;  // exit code 0
  int exit_code() const { return exit_code_; }    // -1 unless it exited normally
  int term_signal() const { return term_signal_; }  // 0 unless killed by a signal

  // Sends `sig` to the child's whole process group (no-op once reaped).
  void Signal(int sig);
  // Waits until the child exits or `deadline` passes; true if it exited (and was reaped).
  bool WaitExit(absl::Time deadline);
  // SIGTERM to the group; after `grace` SIGKILL to the group; reaps. Returns
  // DescribeExit(). Any leftover members of the group are SIGKILLed too.
  std::string Stop(absl::Duration grace);

 private:
  Process(ProcessSpec spec, pid_t pid) : spec_(std::move(spec)), pid_(pid) {}
  void RecordStatus(int wstatus);

  ProcessSpec spec_;
  pid_t pid_;
  absl::Time start_time_ = absl::Now();
  bool running_ = true;
  int exit_code_ = -1;
  int term_signal_ = 0;
};

// The last `max_lines` lines of a text file ("" if unreadable), for crash reports.
std::string TailFile(const std::string& path, int max_lines);

// The port number in `path` (a child's port file), nullopt when it is missing, empty or
// not a port in [1, 65535].
std::optional<int> ReadPortFile(const std::string& path);

// Waits for `path` to hold a port number (a child writes it once it listens). Returns
// early with FailedPrecondition if `process` exits first (message includes its log
// tail), DeadlineExceeded after `deadline`.
absl::StatusOr<int> WaitForPortFile(const std::string& path, Process& process,
                                    absl::Time deadline);

// Whether any process of group `pgid` is still running (zombies do not count).
bool ProcessGroupAlive(pid_t pgid);

// Makes this process the reaper of its orphaned descendants (PR_SET_CHILD_SUBREAPER):
// a grandchild whose parent died is re-parented to us instead of to init, so that
// ReapOrphans() can collect it and nothing lingers.
void BecomeSubreaper();

// Reaps exited children that no Process owns (`is_known(pid)` false). Stops at the
// first exited child that is known (its Process::Poll reaps it). Returns how many.
int ReapOrphans(const std::function<bool(pid_t)>& is_known);

}  // namespace rlhf::launcher
