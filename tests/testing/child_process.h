// A real child process for end-to-end tests: started with posix_spawn, stdout and
// stderr appended to a log file, optionally in another working directory; SIGKILLed
// (and reaped) if still alive when the object dies, so a failing test leaves nothing
// running.
//
//   ChildProcess learner({bin + "/rlhf-learner", "--port=0"}, dir + "/learner.log");
//   ... learner.alive(), learner.Kill(SIGTERM), learner.Wait(absl::Seconds(60)) ...
//
// Thread-safety: one thread at a time (it reaps with waitpid).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/time/time.h"

namespace rlhf::testing {

// The whole file, or "" when it cannot be read.
std::string ReadFileOrEmpty(const std::string& path);

class ChildProcess {
 public:
  // argv[0] is the executable's path. `cwd` empty = the test's working directory.
  // pid() <= 0 when the spawn failed.
  ChildProcess(std::vector<std::string> argv, const std::string& log_path,
               const std::string& cwd = "");
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // False once it exited (it is reaped then).
  bool alive();
  void Kill(int signal);
  // Waits up to `timeout` for the exit: its exit code, or -1 on timeout or a signal.
  int Wait(absl::Duration timeout);
  // The port the process writes to `port_file` (a line ending in a newline: the
  // servers' --port_file), waiting up to `timeout`; 0, with a test failure showing the
  // log, when it exits first or the time runs out.
  int WaitForPortFile(const std::string& port_file, absl::Duration timeout);
  pid_t pid() const { return pid_; }
  std::string log() const { return ReadFileOrEmpty(log_path_); }

 private:
  std::string log_path_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int status_ = 0;
};

}  // namespace rlhf::testing
