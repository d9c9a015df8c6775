#include "tools/launcher/process.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

extern char** environ;

namespace rlhf::launcher {
namespace {

// Between fork and exec only async-signal-safe calls: write the reason and _exit(127).
[[noreturn]] void ChildFail(const char* what) {
  const char* err = strerror(errno);
  (void)!write(2, "rlhf launcher: ", 15);
  (void)!write(2, what, strlen(what));
  (void)!write(2, ": ", 2);
  (void)!write(2, err, strlen(err));
  (void)!write(2, "\n", 1);
  _exit(127);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Process>> Process::Spawn(const ProcessSpec& spec) {
  if (spec.argv.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(spec.name, ": empty argv"));
  }
  if (::access(spec.argv[0].c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat(spec.name, ": cannot execute '", spec.argv[0],
                                            "': ", strerror(errno)));
  }
  int log_fd = -1;
  if (!spec.log_path.empty()) {
    log_fd = ::open(spec.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) {
      return absl::InternalError(absl::StrCat(spec.name, ": cannot open log '", spec.log_path,
                                              "': ", strerror(errno)));
    }
  }
  // Everything the child needs is built before fork (no allocation after it).
  std::vector<char*> argv;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) env_storage.emplace_back(*e);
  for (const auto& e : spec.env) env_storage.push_back(e);
  std::vector<char*> envp;
  for (auto& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);
  const pid_t parent = ::getpid();

  const pid_t pid = ::fork();
  if (pid < 0) {
    if (log_fd >= 0) ::close(log_fd);
    return absl::ResourceExhaustedError(
        absl::StrCat(spec.name, ": fork failed: ", strerror(errno)));
  }
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) _exit(1);  // the launcher died before prctl.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int sig : {SIGINT, SIGTERM, SIGPIPE, SIGCHLD, SIGHUP}) ::signal(sig, SIG_DFL);
    if (log_fd >= 0) {
      if (::dup2(log_fd, 1) < 0 || ::dup2(log_fd, 2) < 0) ChildFail("dup2");
    }
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    if (!spec.working_dir.empty() && ::chdir(spec.working_dir.c_str()) != 0) ChildFail("chdir");
    ::execve(argv[0], argv.data(), envp.data());
    ChildFail(argv[0]);
  }
  // Also set the group from the parent: whichever runs first wins, so there is no
  // window in which a Signal() to the group misses the child.
  ::setpgid(pid, pid);
  if (log_fd >= 0) ::close(log_fd);
  return std::unique_ptr<Process>(new Process(spec, pid));
}

Process::~Process() {
  if (running_) {
    ::kill(-pid_, SIGKILL);
    int wstatus;
    while (::waitpid(pid_, &wstatus, 0) < 0 && errno == EINTR) {
    }
    running_ = false;
  }
  if (ProcessGroupAlive(pid_)) ::kill(-pid_, SIGKILL);
}

void Process::RecordStatus(int wstatus) {
  running_ = false;
  if (WIFEXITED(wstatus)) exit_code_ = WEXITSTATUS(wstatus);
  if (WIFSIGNALED(wstatus)) term_signal_ = WTERMSIG(wstatus);
}

bool Process::Poll() {
  if (!running_) return false;
  int wstatus;
  pid_t r = ::waitpid(pid_, &wstatus, WNOHANG);
  if (r == pid_) RecordStatus(wstatus);
  if (r < 0 && errno == ECHILD) running_ = false;  // reaped elsewhere; treat as gone
  return running_;
}

std::string Process::DescribeExit() const {
  if (running_) return "running";
  if (term_signal_ != 0) {
    const char* abbrev = sigabbrev_np(term_signal_);
    return absl::StrCat("killed by signal ", term_signal_, " (SIG",
                        abbrev != nullptr ? abbrev : "?", ")");
  }
  return absl::StrCat("exited with code ", exit_code_);
}

bool Process::exited_cleanly() const { return !running_ && term_signal_ == 0 && exit_code_ == 0; }

void Process::Signal(int sig) {
  if (running_) ::kill(-pid_, sig);
}

bool Process::WaitExit(absl::Time deadline) {
  // waitpid has no timeout; a short poll keeps this simple and costs nothing measurable
  // next to a process shutting down.
  while (Poll()) {
    if (absl::Now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

std::string Process::Stop(absl::Duration grace) {
  if (running_) {
    Signal(SIGTERM);
    if (!WaitExit(absl::Now() + grace)) {
      Signal(SIGKILL);
      WaitExit(absl::InfiniteFuture());
    }
  }
  // Grandchildren that outlived the leader (same group) go too.
  if (ProcessGroupAlive(pid_)) ::kill(-pid_, SIGKILL);
  return DescribeExit();
}

bool ProcessGroupAlive(pid_t pgid) {
  if (::kill(-pgid, 0) != 0 && errno != EPERM) return false;
  // kill() also succeeds for zombies; only a member that still runs counts.
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || !absl::ascii_isdigit(name[0])) continue;
    std::ifstream in(entry.path() / "stat");
    std::string stat;
    if (!std::getline(in, stat)) continue;
    // "pid (comm) state ppid pgrp ...": comm may contain spaces; parse after ')'.
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::vector<std::string> f = absl::StrSplit(stat.substr(close + 2), ' ');
    int group = 0;
    if (f.size() < 3 || !absl::SimpleAtoi(f[2], &group)) continue;
    if (group == pgid && f[0] != "Z" && f[0] != "X") return true;
  }
  return false;
}

void BecomeSubreaper() { ::prctl(PR_SET_CHILD_SUBREAPER, 1); }

int ReapOrphans(const std::function<bool(pid_t)>& is_known) {
  int reaped = 0;
  while (true) {
    siginfo_t info{};
    if (::waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid == 0) break;
    if (is_known(info.si_pid)) break;  // a supervised child: its Process reaps it.
    int wstatus;
    ::waitpid(info.si_pid, &wstatus, WNOHANG);
    ++reaped;
  }
  return reaped;
}

std::string TailFile(const std::string& path, int max_lines) {
  std::ifstream in(path);
  if (!in) return "";
  std::deque<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    lines.push_back(line);
    if (static_cast<int>(lines.size()) > max_lines) lines.pop_front();
  }
  return absl::StrJoin(lines, "\n");
}

std::optional<int> ReadPortFile(const std::string& path) {
  std::ifstream in(path);
  std::string text;
  int port;
  if (in && std::getline(in, text) && absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &port) &&
      port > 0 && port < 65536) {
    return port;
  }
  return std::nullopt;
}

absl::StatusOr<int> WaitForPortFile(const std::string& path, Process& process,
                                    absl::Time deadline) {
  while (true) {
    if (std::optional<int> port = ReadPortFile(path)) return *port;
    if (!process.Poll()) {
      return absl::FailedPreconditionError(absl::StrCat(
          process.name(), " ", process.DescribeExit(), " before writing its port to ", path,
          "; last lines of ", process.spec().log_path, ":\n",
          TailFile(process.spec().log_path, 15)));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(process.name(),
                                                      " did not write its port to ", path,
                                                      " in time"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace rlhf::launcher
