// A stand-in for the real servers in the launcher tests: a real gRPC server with
// health checking and a real /metrics exposer, port files like the real binaries,
// and knobs to crash, finish, ignore SIGTERM or leave a grandchild behind.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "services/metrics.h"
#include "services/server.h"

ABSL_FLAG(std::string, name, "fake", "name written to --events_file on SIGTERM");
ABSL_FLAG(std::string, port_file, "", "write the gRPC port here once serving");
ABSL_FLAG(std::string, metrics_port_file, "", "write the metrics port here");
ABSL_FLAG(std::string, events_file, "", "append '<name> sigterm' here on SIGTERM");
ABSL_FLAG(std::string, grandchild_pid_file, "", "fork a sleeping grandchild, write its pid");
ABSL_FLAG(int, crash_after_ms, -1, ">= 0: abort() after this long");
ABSL_FLAG(int, exit_after_ms, -1, ">= 0: exit(exit_code) after this long");
ABSL_FLAG(int, exit_code, 0, "exit code for --exit_after_ms");
ABSL_FLAG(bool, ignore_sigterm, false, "ignore SIGTERM (the launcher must SIGKILL)");
ABSL_FLAG(int, startup_delay_ms, 0, "wait before serving");

namespace {
void WriteFile(const std::string& path, const std::string& text) {
  if (path.empty()) return;
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << text << "\n";
  }
  std::rename(tmp.c_str(), path.c_str());
}
}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  if (absl::GetFlag(FLAGS_ignore_sigterm)) {
    signal(SIGTERM, SIG_IGN);
    sigdelset(&set, SIGTERM);
  }
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  if (!absl::GetFlag(FLAGS_grandchild_pid_file).empty()) {
    pid_t g = fork();
    if (g == 0) {
      execl("/bin/sleep", "sleep", "1000", static_cast<char*>(nullptr));
      _exit(127);
    }
    WriteFile(absl::GetFlag(FLAGS_grandchild_pid_file), std::to_string(g));
  }
  absl::SleepFor(absl::Milliseconds(absl::GetFlag(FLAGS_startup_delay_ms)));

  rlhf::services::GrpcServerOptions options;
  options.name = absl::GetFlag(FLAGS_name);
  auto server = rlhf::services::GrpcServer::Create(options, {});
  if (!server.ok() || !(*server)->Start().ok()) {
    std::fprintf(stderr, "fake child: cannot start server\n");
    return 2;
  }
  auto registry = std::make_shared<prometheus::Registry>();
  auto& family = prometheus::BuildCounter()
                     .Name("rlhf_fake_ticks_total")
                     .Help("Fake child ticks")
                     .Register(*registry);
  auto& ticks = family.Add({});
  auto exposer = rlhf::services::MetricsExposer::Create("127.0.0.1", 0, registry);
  if (!exposer.ok()) return 3;
  WriteFile(absl::GetFlag(FLAGS_metrics_port_file), std::to_string((*exposer)->port()));
  WriteFile(absl::GetFlag(FLAGS_port_file), std::to_string((*server)->port()));
  std::printf("fake child %s serving on %d\n", options.name.c_str(), (*server)->port());
  std::fflush(stdout);

  const absl::Time start = absl::Now();
  const int crash_ms = absl::GetFlag(FLAGS_crash_after_ms);
  const int exit_ms = absl::GetFlag(FLAGS_exit_after_ms);
  while (true) {
    timespec ts{0, 20 * 1000 * 1000};
    int sig = sigtimedwait(&set, nullptr, &ts);
    ticks.Increment();
    if (sig == SIGTERM || sig == SIGINT) {
      if (!absl::GetFlag(FLAGS_events_file).empty()) {
        std::ofstream(absl::GetFlag(FLAGS_events_file), std::ios::app)
            << options.name << " sigterm\n";
      }
      (*server)->Shutdown(absl::Now() + absl::Seconds(1));
      return 0;
    }
    const double elapsed_ms = absl::ToDoubleMilliseconds(absl::Now() - start);
    if (crash_ms >= 0 && elapsed_ms >= crash_ms) {
      std::fprintf(stderr, "fake child %s about to crash\n", options.name.c_str());
      std::fflush(stderr);
      abort();
    }
    if (exit_ms >= 0 && elapsed_ms >= exit_ms) {
      std::printf("fake child %s done\n", options.name.c_str());
      return absl::GetFlag(FLAGS_exit_code);
    }
  }
}
