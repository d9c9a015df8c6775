// Graceful shutdown on SIGTERM / SIGINT for main.cc (the one signal scheme of every
// binary; a polling loop uses PollShutdownSignal instead of waiting):
//
//   int main(int argc, char** argv) {
//     rlhf::services::BlockShutdownSignals();   // first, before any thread exists
//     ... parse flags, create and Start servers ...
//     int sig = rlhf::services::WaitForShutdownSignal();
//     server->Shutdown(absl::Now() + absl::Seconds(10));  // drain in-flight work
//     return 0;
//   }
//
// Blocking the signals in the main thread before other threads start makes every
// thread inherit the mask, so the signal is only ever consumed by sigwait() here —
// no async-signal-safety concerns and no handler racing with gRPC or LibTorch threads.
#pragma once

#include "absl/time/time.h"

namespace rlhf::services {

// Blocks SIGINT and SIGTERM in the calling thread (and threads it creates later).
void BlockShutdownSignals();
// Waits for SIGINT or SIGTERM (must have been blocked); returns the signal number.
int WaitForShutdownSignal();
// Waits up to `timeout` (default: not at all) for SIGINT/SIGTERM (must have been
// blocked), consumes it and returns its number; 0 when none came. For loops that poll
// (the `rlhf run` launcher supervising its children, the learner waiting for "done").
int PollShutdownSignal(absl::Duration timeout = absl::ZeroDuration());

}  // namespace rlhf::services
