#include "tests/testing/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "absl/time/clock.h"

extern char** environ;

namespace rlhf::testing {

std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int ChildProcess::WaitForPortFile(const std::string& port_file, absl::Duration timeout) {
  const absl::Time until = absl::Now() + timeout;
  while (absl::Now() < until) {
    const std::string text = ReadFileOrEmpty(port_file);
    if (!text.empty() && text.back() == '\n') return std::atoi(text.c_str());
    if (!alive()) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  ADD_FAILURE() << "no port in " << port_file << "; log:\n" << log();
  return 0;
}

ChildProcess::ChildProcess(std::vector<std::string> argv, const std::string& log_path,
                           const std::string& cwd)
    : log_path_(log_path) {
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                   0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  if (!cwd.empty()) posix_spawn_file_actions_addchdir_np(&actions, cwd.c_str());
  const int rc = posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) pid_ = -1;
}

ChildProcess::~ChildProcess() {
  if (alive()) {
    ::kill(pid_, SIGKILL);
    Wait(absl::Seconds(10));
  }
}

bool ChildProcess::alive() {
  if (pid_ <= 0 || exited_) return false;
  int status;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    exited_ = true;
    status_ = status;
    return false;
  }
  return true;
}

void ChildProcess::Kill(int signal) {
  if (alive()) ::kill(pid_, signal);
}

int ChildProcess::Wait(absl::Duration timeout) {
  const absl::Time until = absl::Now() + timeout;
  while (alive() && absl::Now() < until) absl::SleepFor(absl::Milliseconds(50));
  if (!exited_) return -1;
  return WIFEXITED(status_) ? WEXITSTATUS(status_) : -1;
}

}  // namespace rlhf::testing
