// DynamicBatcher: coalesces concurrent requests into padded batched forward passes.
//
// A request is a list of items (token sequences). Submit() queues it; one worker thread
// waits until the queue holds max_batch_tokens / max_batch_sequences worth of work or the
// oldest request has waited max_wait, then takes queued requests in FIFO order (at least
// one) up to those budgets, drops the ones that were cancelled or whose deadline passed
// (done(CANCELLED / DEADLINE_EXCEEDED)), sorts the remaining items by length (longest
// first, so each forward pads little) and splits them into forwards of at most
// max_batch_sequences items and max_batch_tokens padded tokens (len_max * count). Each
// forward calls batch_fn once; results are scattered back and each request's done runs
// exactly once with results in its own item order.
//
// Batching disabled = max_batch_sequences 1 and max_wait 0: one sequence per forward.
//
// Bounded memory: Submit answers RESOURCE_EXHAUSTED (and queues nothing) when the queue
// would exceed max_queue_sequences; UNAVAILABLE after Shutdown. When Submit returns an
// error, done is never called.
//
// Thread-safety: Submit and Shutdown are thread-safe. batch_fn and done run on the
// worker thread (never concurrently with each other); done must not block for long.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "services/batching_defaults.h"

namespace rlhf::services {

// Defaults: services/batching_defaults.h (shared with the job config and the flags).
struct BatcherOptions {
  int64_t max_batch_tokens = kDefaultMaxBatchTokens;    // padded tokens (longest x count)
  int max_batch_sequences = kDefaultMaxBatchSequences;  // items per forward
  absl::Duration max_wait = absl::Milliseconds(kDefaultMaxWaitMs);  // oldest item's wait
  int64_t max_queue_sequences = kDefaultMaxQueueSequences;          // beyond: RESOURCE_EXHAUSTED
};

absl::Status ValidateBatcherOptions(const BatcherOptions& options);

// What one forward pass looked like (for metrics).
struct BatchStats {
  int sequences = 0;
  int requests = 0;            // distinct requests with items in this forward
  int64_t real_tokens = 0;     // sum of item lengths
  int64_t padded_tokens = 0;   // longest length x sequences
  absl::Duration forward_time;  // time inside batch_fn
  double padding_waste() const {
    return padded_tokens == 0 ? 0.0 : 1.0 - static_cast<double>(real_tokens) / padded_tokens;
  }
};

struct BatcherHooks {
  std::function<void(const BatchStats&)> on_forward;   // after each forward
  std::function<void(int64_t queued_sequences)> on_queue_depth;
};

// Set to true (e.g. from ServerUnaryReactor::OnCancel) to withdraw a queued request.
using CancelFlag = std::shared_ptr<std::atomic<bool>>;
inline CancelFlag NewCancelFlag() { return std::make_shared<std::atomic<bool>>(false); }

template <typename Item, typename Result>
class DynamicBatcher {
 public:
  // items are sorted by length, longest first; must return one Result per item.
  using BatchFn =
      std::function<absl::StatusOr<std::vector<Result>>(const std::vector<const Item*>& items)>;
  using DoneFn = std::function<void(absl::StatusOr<std::vector<Result>>)>;
  using LengthFn = std::function<int64_t(const Item&)>;

  DynamicBatcher(const BatcherOptions& options, LengthFn length_fn, BatchFn batch_fn,
                 BatcherHooks hooks = {})
      : options_(options), length_fn_(std::move(length_fn)), batch_fn_(std::move(batch_fn)),
        hooks_(std::move(hooks)) {
    worker_ = std::thread([this] { Run(); });
  }
  ~DynamicBatcher() { Shutdown(); }

  DynamicBatcher(const DynamicBatcher&) = delete;
  DynamicBatcher& operator=(const DynamicBatcher&) = delete;

  absl::Status Submit(std::vector<Item> items, absl::Time deadline, CancelFlag cancelled,
                      DoneFn done) {
    if (items.empty()) {
      return absl::InvalidArgumentError("batcher: a request needs at least one item");
    }
    auto request = std::make_unique<Request>();
    request->tokens = 0;
    for (const Item& item : items) request->tokens += length_fn_(item);
    request->items = std::move(items);
    request->deadline = deadline;
    request->cancelled = cancelled ? std::move(cancelled) : NewCancelFlag();
    request->done = std::move(done);
    request->arrival = absl::Now();
    absl::MutexLock lock(&mu_);
    if (stopping_) return absl::UnavailableError("batcher: shutting down");
    const int64_t n = static_cast<int64_t>(request->items.size());
    if (queued_sequences_ + n > options_.max_queue_sequences) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "queue full: ", queued_sequences_, " sequences queued, request adds ", n,
          ", limit ", options_.max_queue_sequences));
    }
    queued_sequences_ += n;
    queued_tokens_ += request->tokens;
    queue_.push_back(std::move(request));
    if (hooks_.on_queue_depth) hooks_.on_queue_depth(queued_sequences_);
    return absl::OkStatus();
  }

  // Stops accepting, finishes everything already queued, joins the worker. Idempotent.
  void Shutdown() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    if (worker_.joinable()) worker_.join();
  }

  int64_t queued_sequences() const {
    absl::MutexLock lock(&mu_);
    return queued_sequences_;
  }

 private:
  struct Request {
    std::vector<Item> items;
    int64_t tokens = 0;
    absl::Time arrival;
    absl::Time deadline;
    CancelFlag cancelled;
    DoneFn done;
    std::vector<Result> results;
    absl::Status status;
  };

  bool BudgetReached() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return queued_tokens_ >= options_.max_batch_tokens ||
           queued_sequences_ >= options_.max_batch_sequences;
  }

  std::vector<std::unique_ptr<Request>> TakeBatch() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](DynamicBatcher* self) ABSL_NO_THREAD_SAFETY_ANALYSIS {
          return self->stopping_ || !self->queue_.empty();
        },
        this));
    if (queue_.empty()) return {};
    // Wait for company until the budget fills or the oldest request has waited enough.
    const absl::Time until = queue_.front()->arrival + options_.max_wait;
    mu_.AwaitWithDeadline(
        absl::Condition(
            +[](DynamicBatcher* self) ABSL_NO_THREAD_SAFETY_ANALYSIS {
              return self->stopping_ || self->BudgetReached();
            },
            this),
        until);
    std::vector<std::unique_ptr<Request>> taken;
    int64_t tokens = 0, sequences = 0;
    while (!queue_.empty()) {
      Request& next = *queue_.front();
      const int64_t n = static_cast<int64_t>(next.items.size());
      if (!taken.empty() && (tokens + next.tokens > options_.max_batch_tokens ||
                             sequences + n > options_.max_batch_sequences)) {
        break;
      }
      tokens += next.tokens;
      sequences += n;
      queued_tokens_ -= next.tokens;
      queued_sequences_ -= n;
      taken.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    if (hooks_.on_queue_depth) hooks_.on_queue_depth(queued_sequences_);
    return taken;
  }

  void Run() {
    while (true) {
      std::vector<std::unique_ptr<Request>> requests = TakeBatch();
      if (requests.empty()) return;  // stopping and drained
      Process(requests);
    }
  }

  void Process(std::vector<std::unique_ptr<Request>>& requests) {
    const absl::Time now = absl::Now();
    struct Slot {
      Request* request;
      size_t index;
      int64_t length;
    };
    std::vector<Slot> slots;
    for (auto& request : requests) {
      if (request->cancelled->load()) {
        request->status = absl::CancelledError("request cancelled before it was batched");
        continue;
      }
      if (request->deadline <= now) {
        request->status = absl::DeadlineExceededError("deadline passed while queued");
        continue;
      }
      request->results.resize(request->items.size());
      for (size_t i = 0; i < request->items.size(); ++i) {
        slots.push_back({request.get(), i, length_fn_(request->items[i])});
      }
    }
    std::stable_sort(slots.begin(), slots.end(),
                     [](const Slot& a, const Slot& b) { return a.length > b.length; });
    size_t begin = 0;
    while (begin < slots.size()) {
      // Longest first: the first slot of a forward fixes its padded length.
      const int64_t longest = std::max<int64_t>(1, slots[begin].length);
      size_t end = begin + 1;
      while (end < slots.size() &&
             static_cast<int>(end - begin) < options_.max_batch_sequences &&
             static_cast<int64_t>(end - begin + 1) * longest <= options_.max_batch_tokens) {
        ++end;
      }
      RunForward(slots, begin, end);
      begin = end;
    }
    for (auto& request : requests) {
      if (request->status.ok()) {
        request->done(std::move(request->results));
      } else {
        request->done(request->status);
      }
    }
  }

  template <typename Slots>
  void RunForward(const Slots& slots, size_t begin, size_t end) {
    std::vector<const Item*> items;
    BatchStats stats;
    std::vector<Request*> distinct;
    for (size_t i = begin; i < end; ++i) {
      items.push_back(&slots[i].request->items[slots[i].index]);
      stats.real_tokens += slots[i].length;
      if (std::find(distinct.begin(), distinct.end(), slots[i].request) == distinct.end()) {
        distinct.push_back(slots[i].request);
      }
    }
    stats.sequences = static_cast<int>(items.size());
    stats.requests = static_cast<int>(distinct.size());
    stats.padded_tokens = slots[begin].length * stats.sequences;
    const absl::Time start = absl::Now();
    absl::StatusOr<std::vector<Result>> results = batch_fn_(items);
    stats.forward_time = absl::Now() - start;
    if (results.ok() && results->size() != items.size()) {
      results = absl::InternalError(absl::StrCat("batch function returned ", results->size(),
                                                 " results for ", items.size(), " items"));
    }
    for (size_t i = begin; i < end; ++i) {
      Request* request = slots[i].request;
      if (!results.ok()) {
        if (request->status.ok()) request->status = results.status();
      } else {
        request->results[slots[i].index] = std::move((*results)[i - begin]);
      }
    }
    if (hooks_.on_forward) hooks_.on_forward(stats);
  }

  const BatcherOptions options_;
  const LengthFn length_fn_;
  const BatchFn batch_fn_;
  const BatcherHooks hooks_;
  mutable absl::Mutex mu_;
  std::deque<std::unique_ptr<Request>> queue_ ABSL_GUARDED_BY(mu_);
  int64_t queued_sequences_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t queued_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread worker_;
};

inline absl::Status ValidateBatcherOptions(const BatcherOptions& options) {
  if (options.max_batch_tokens < 1) {
    return absl::InvalidArgumentError("batcher.max_batch_tokens: must be >= 1");
  }
  if (options.max_batch_sequences < 1) {
    return absl::InvalidArgumentError("batcher.max_batch_sequences: must be >= 1");
  }
  if (options.max_wait < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("batcher.max_wait: must be >= 0");
  }
  if (options.max_queue_sequences < 1) {
    return absl::InvalidArgumentError("batcher.max_queue_sequences: must be >= 1");
  }
  return absl::OkStatus();
}

}  // namespace rlhf::services
