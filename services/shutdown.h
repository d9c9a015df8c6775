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

namespace rlhf::services {

// Blocks SIGINT and SIGTERM in the calling thread (and threads it creates later).
void BlockShutdownSignals();
// Waits for SIGINT or SIGTERM (must have been blocked); returns the signal number.
int WaitForShutdownSignal();
// Non-blocking: consumes a pending SIGINT/SIGTERM (must have been blocked) and returns
// its number, or 0 when none is pending. For loops that poll (the `rlhf run` launcher
// supervising its children).
int PollShutdownSignal();

}  // namespace rlhf::services
