// The actor loop (design.md §1): lease prompts -> generate with the weights it holds ->
// reward and reference servers concurrently -> submit, with generation of the next
// batch overlapping the scoring and submission of the previous one (a second thread
// behind a one-slot queue).
//
// Weights arrive on a third thread (the WatchWeights stream + the configured transport)
// and are applied by the generating thread between batches, so a batch never mixes
// versions; every trajectory carries the version that sampled it. A heartbeat thread
// keeps the leases alive. NOT_FOUND from the learner (it restarted or expired us) means
// re-register; every call has a deadline and is retried with backoff. Stop() drains: no
// new leases, the batch in hand is finished and submitted (scoring bounded by
// drain_timeout, then cancelled and the lease released), then Deregister.
//
// Thread-safety: Run() once, from one thread; Stop() and the accessors from any thread.
// Clients are not owned and must outlive Run().
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <prometheus/registry.h>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "learner/learner_client.h"
#include "reference_server/reference_client.h"
#include "reward_server/reward_client.h"
#include "services/weights/transport.h"

namespace rlhf::actor {

// Waits between retries and polls. Every default lives here; main.cc keeps them, tests
// shorten them. Each wait ends early on Stop().
struct ActorBackoffs {
  absl::Duration register_retry = absl::Milliseconds(500);    // after a failed Register
  absl::Duration unregistered_poll = absl::Milliseconds(50);  // weights thread, not registered
  absl::Duration watch_retry = absl::Milliseconds(200);       // WatchWeights failed to open
  absl::Duration stream_reopen = absl::Milliseconds(100);     // after a weights stream ended
  absl::Duration no_weights_poll = absl::Milliseconds(20);    // before the first version
  absl::Duration lease_retry = absl::Milliseconds(300);       // LeasePrompts failed (not NOT_FOUND)
  absl::Duration min_lease_wait = absl::Milliseconds(10);     // floor on the learner's retry_after
  absl::Duration submit_retry = absl::Milliseconds(300);      // retryable Submit error
  absl::Duration heartbeat = absl::Seconds(2);                // when the learner names no interval
  absl::Duration deregister_timeout = absl::Seconds(5);       // deadline of the final Deregister
};

struct ActorOptions {
  std::string name = "actor";
  uint64_t seed = 1;                              // sampling seeds derive from it + prompt id
  absl::Duration call_timeout = absl::Seconds(30);  // deadline of each RPC (with retries)
  absl::Duration score_timeout = absl::Seconds(120);  // reward/reference calls
  // After Stop(): how long the batch in hand may still be scored. Past it the scoring
  // calls are cancelled and the lease released, so a hung scorer cannot keep a stopping
  // actor alive past the launcher's grace period (10 s by default).
  absl::Duration drain_timeout = absl::Seconds(5);
  int max_prompts = 0;                            // per lease; 0 = the learner's choice
  // Rows decoded together: 0 = all of a lease's rows (Generate); N > 0 and fewer than
  // the rows: continuous batching with N rows (GenerateContinuous).
  int generation_batch = 0;
  bool log_weight_hashes = false;                 // print "weights: version V hash H" of the
                                                  // model's parameters after each update
  // Where the policy generates (core/model/device.h): the KV cache and sampling run
  // there; only token ids and log-probs are copied back. Default CPU. With a CUDA device
  // set weights.use_cuda too (NCCL for the collective transport; main.cc does).
  torch::Device device = torch::kCPU;
  weights::WeightTransportOptions weights;        // receiver side (transport from Register)
  ActorBackoffs backoffs;
};

struct ActorStats {
  int64_t held_version = -1;
  uint64_t held_hash = 0;
  int64_t batches = 0;
  int64_t trajectories_submitted = 0;
  int64_t weight_updates = 0;
  int64_t registrations = 0;
  double generate_seconds = 0;
  double wait_seconds = 0;
  int64_t generated_tokens = 0;
  int64_t continuous_batches = 0;  // leases generated with continuous batching
};

class ActorMetrics;

class Actor {
 public:
  Actor(const ActorOptions& options, learner::LearnerClient* learner,
        reward::RewardClient* reward, reference::ReferenceClient* reference,
        std::shared_ptr<prometheus::Registry> registry);
  ~Actor();

  // Runs until the learner says the run is done or Stop() is called; then drains and
  // deregisters. Errors only for unrecoverable problems (bad model config, ...).
  absl::Status Run();
  void Stop();
  ActorStats stats() const;

 private:
  struct Job;
  absl::Status RegisterLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status EnsureRegistered();
  void WeightsLoop();
  void HeartbeatLoop();
  void ScoreLoop();
  absl::Status ProcessJob(Job& job);
  bool ApplyPendingWeights();
  void Backoff(absl::Duration d);
  // Waits (mu_ held) until `done_waiting`, a condition on the scoring thread's progress.
  // After Stop() it waits at most until drain_timeout past the stop, then cancels the
  // scoring calls (the batch then fails fast and its lease is released) and waits on.
  void AwaitScorer(const std::function<bool()>& done_waiting) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ActorOptions options_;
  learner::LearnerClient* const learner_;
  reward::RewardClient* const reward_;
  reference::ReferenceClient* const reference_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<ActorMetrics> metrics_;

  std::atomic<bool> stop_{false};
  std::atomic<bool> done_{false};
  absl::Notification stopped_;  // wakes sleeping threads on Stop

  mutable absl::Mutex mu_;
  std::string actor_id_ ABSL_GUARDED_BY(mu_);
  bool need_register_ ABSL_GUARDED_BY(mu_) = true;
  rlhf::v1::RegisterResponse reg_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<weights::FlatWeights> pending_ ABSL_GUARDED_BY(mu_);
  int64_t latest_known_ ABSL_GUARDED_BY(mu_) = -1;
  ActorStats stats_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Job> slot_ ABSL_GUARDED_BY(mu_);  // the one-slot queue to ScoreLoop
  bool scorer_busy_ ABSL_GUARDED_BY(mu_) = false;
  bool scorer_stop_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;  // Stop() was called (mu_-visible copy)
  absl::Time stop_time_ ABSL_GUARDED_BY(mu_);
  bool scoring_cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<learner::WeightsStream> stream_ ABSL_GUARDED_BY(mu_);

  struct ModelHolder;
  std::unique_ptr<ModelHolder> model_;  // used by the Run() thread only
};

}  // namespace rlhf::actor
