#include "services/shutdown.h"

#include <pthread.h>
#include <signal.h>

#include <algorithm>

namespace rlhf::services {
namespace {

sigset_t ShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

void BlockShutdownSignals() {
  const sigset_t set = ShutdownSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForShutdownSignal() {
  const sigset_t set = ShutdownSignals();
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  return sig;
}

int PollShutdownSignal(absl::Duration timeout) {
  const sigset_t set = ShutdownSignals();
  const timespec wait = absl::ToTimespec(std::max(timeout, absl::ZeroDuration()));
  const int sig = sigtimedwait(&set, nullptr, &wait);
  return sig > 0 ? sig : 0;
}

}  // namespace rlhf::services
