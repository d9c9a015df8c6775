#include "learner/learner_handler.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/bounded_echo.h"
#include "core/util/file_util.h"

namespace rlhf::learner {
namespace {

template <typename C>
absl::Status CheckFinite(const C& values, const std::string& field) {
  for (int j = 0; j < static_cast<int>(values.size()); ++j) {
    if (!std::isfinite(values[j])) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, "[", j, "]: non-finite value ", values[j]));
    }
  }
  return absl::OkStatus();
}

// A store error as the caller sees it: retriable (a full disk stays RESOURCE_EXHAUSTED).
absl::Status RetriableStoreError(const absl::Status& s) {
  const absl::StatusCode code =
      s.code() == absl::StatusCode::kResourceExhausted ? s.code() : absl::StatusCode::kUnavailable;
  return absl::Status(code, absl::StrCat("persisting the learner state: ", s.message()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<LearnerHandler>> LearnerHandler::Create(
    const LearnerHandlerOptions& options, std::vector<std::vector<int32_t>> prompts,
    StateStore* store, Clock clock) {
  if (options.prompts_per_step < 1) return absl::InvalidArgumentError("prompts_per_step must be >= 1");
  if (options.samples_per_prompt < 1) return absl::InvalidArgumentError("samples_per_prompt must be >= 1");
  if (options.prompts_per_lease < 1) return absl::InvalidArgumentError("prompts_per_lease must be >= 1");
  if (options.max_staleness < 0) return absl::InvalidArgumentError("max_staleness must be >= 0");
  if (prompts.empty()) return absl::InvalidArgumentError("prompts: empty prompt set");
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].empty()) return absl::InvalidArgumentError(absl::StrCat("prompts[", i, "]: empty"));
    for (int32_t id : prompts[i]) {
      if (id < 0 || id >= options.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("prompts[", i, "]: token id ", id, " outside [0, ", options.vocab_size, ")"));
      }
    }
  }
  if (!clock) clock = [] { return absl::Now(); };
  return std::unique_ptr<LearnerHandler>(
      new LearnerHandler(options, std::move(prompts), store, std::move(clock)));
}

LearnerHandler::LearnerHandler(const LearnerHandlerOptions& options,
                               std::vector<std::vector<int32_t>> prompts, StateStore* store,
                               Clock clock)
    : options_(options), prompts_(std::move(prompts)), store_(store), clock_(std::move(clock)) {
  absl::BitGen gen;
  run_id_ = absl::StrFormat("%08x", absl::Uniform<uint32_t>(gen));
}

absl::Status LearnerHandler::Restore(int64_t trainer_step, int64_t policy_version) {
  absl::MutexLock lock(&mu_);
  stats_.set_step(trainer_step);
  stats_.set_policy_version(policy_version);
  if (store_ == nullptr) return absl::OkStatus();
  auto state = store_->Read();
  if (!state.ok()) return state.status();
  // A state we wrote always has a run id; none (or an empty file) next to a trained
  // checkpoint would silently zero every counter and forget every acknowledged batch.
  const bool missing = !state->has_value() || (*state)->run_id().empty();
  if (missing && trainer_step > 0) {
    const std::string lost = absl::StrCat(
        "no learner state (", state->has_value() ? "empty" : "missing",
        ") but the trainer checkpoint is at step ", trainer_step,
        ": leases, acknowledged trajectories not yet trained and every accounting counter "
        "of steps 1..", trainer_step, " are lost");
    if (!options_.allow_state_reset) {
      return absl::FailedPreconditionError(absl::StrCat(
          lost, "; put the state file back, or allow the reset explicitly "
                "(--allow_state_reset) to start the accounting over"));
    }
    restore_note_ = lost;
    return PersistLocked();  // the log starts after a snapshot
  }
  if (missing) return PersistLocked();
  FromProtoLocked(**state);
  // Acknowledged calls after the snapshot: their records, applied as they were live.
  auto records = store_->ReadLog();
  if (!records.ok()) return records.status();
  for (auto& record : *records) {
    if (record.seq() > (*state)->log_seq()) ApplyLocked(std::move(record));
  }
  // Batches of steps the restored trainer has not seen go back to the buffer's front.
  std::vector<rlhf::v1::TrainedBatch> keep;
  std::deque<rlhf::v1::BufferedGroup> rebuffer;
  const int64_t counted_step = stats_.step();  // steps whose batches were counted
  for (auto& batch : trained_) {
    if (batch.step() <= trainer_step) {
      keep.push_back(batch);
      continue;
    }
    for (auto& g : *batch.mutable_groups()) {
      if (batch.step() <= counted_step) {
        stats_.set_prompts_trained(stats_.prompts_trained() - 1);
        stats_.set_trajectories_trained(stats_.trajectories_trained() - g.trajectories_size());
      }
      rebuffer.push_back(g);
    }
  }
  trained_ = std::move(keep);
  for (auto it = rebuffer.rbegin(); it != rebuffer.rend(); ++it) buffer_.push_front(*it);
  // Records of steps the restored trainer will train again.
  auto* recent = stats_.mutable_recent_steps();
  while (!recent->empty() && recent->rbegin()->step() > trainer_step) recent->RemoveLast();
  stats_.set_step(trainer_step);
  stats_.set_policy_version(policy_version);
  const absl::Time now = clock_();
  for (auto& [id, actor] : actors_) actor.last_seen = now;  // grace after a restart
  DropStaleLocked();
  return PersistLocked();
}

rlhf::v1::LearnerState LearnerHandler::ToProtoLocked() const {
  rlhf::v1::LearnerState s;
  s.set_run_id(run_id_);
  s.set_next_prompt_id(next_prompt_id_);
  s.set_prompt_cursor(cursor_);
  for (int64_t r : reissue_) s.add_reissue_queue(r);
  for (const auto& [id, lease] : leases_) *s.add_outstanding() = lease;
  for (const auto& g : buffer_) *s.add_buffered() = g;
  for (const auto& id : completed_order_) s.add_completed_leases(id);
  for (const auto& id : expired_order_) s.add_expired_leases(id);
  *s.mutable_stats() = stats_;
  for (const auto& [id, actor] : actors_) {
    auto* a = s.add_actors();
    a->set_actor_id(id);
    a->set_name(actor.name);
  }
  s.set_next_lease_number(next_lease_number_);
  s.set_next_actor_number(next_actor_number_);
  for (const auto& b : trained_) *s.add_trained_batches() = b;
  s.set_checkpointed_step(checkpointed_step_);
  for (int64_t src : trained_sources_) s.add_trained_sources(src);
  s.mutable_completed_owners()->insert(completed_owner_.begin(), completed_owner_.end());
  s.set_log_seq(store_ != nullptr ? store_->last_seq() : 0);
  return s;
}

void LearnerHandler::FromProtoLocked(const rlhf::v1::LearnerState& s) {
  run_id_ = s.run_id();
  next_prompt_id_ = s.next_prompt_id();
  cursor_ = s.prompt_cursor();
  reissue_.assign(s.reissue_queue().begin(), s.reissue_queue().end());
  leases_.clear();
  for (const auto& l : s.outstanding()) leases_[l.lease_id()] = l;
  buffer_.assign(s.buffered().begin(), s.buffered().end());
  completed_order_.assign(s.completed_leases().begin(), s.completed_leases().end());
  completed_ = {completed_order_.begin(), completed_order_.end()};
  expired_order_.assign(s.expired_leases().begin(), s.expired_leases().end());
  expired_ = {expired_order_.begin(), expired_order_.end()};
  stats_ = s.stats();
  actors_.clear();
  for (const auto& a : s.actors()) actors_[a.actor_id()] = Actor{a.name(), clock_()};
  next_lease_number_ = s.next_lease_number();
  next_actor_number_ = s.next_actor_number();
  trained_.assign(s.trained_batches().begin(), s.trained_batches().end());
  checkpointed_step_ = s.checkpointed_step();
  trained_sources_ = {s.trained_sources().begin(), s.trained_sources().end()};
  completed_owner_ = {s.completed_owners().begin(), s.completed_owners().end()};
}

absl::Status LearnerHandler::PersistLocked() {
  if (store_ == nullptr) return absl::OkStatus();
  absl::Status s = store_->Write(ToProtoLocked());
  return s.ok() ? s : RetriableStoreError(s);
}

absl::Status LearnerHandler::RecordLocked(rlhf::v1::LearnerLogRecord record, int64_t* seq) {
  *seq = 0;
  if (store_ == nullptr) {
    ApplyLocked(std::move(record));
    return absl::OkStatus();
  }
  if (!options_.log_records) {
    const Snapshot before = SnapshotLocked();
    ApplyLocked(std::move(record));
    return CommitLocked(before);
  }
  // Decide, log, then apply: a failed append leaves nothing to roll back.
  absl::StatusOr<int64_t> appended = store_->Append(record);
  if (!appended.ok()) {
    absl::Status s = RetriableStoreError(appended.status());
    return absl::Status(s.code(), absl::StrCat(s.message(), " (nothing changed; retry)"));
  }
  ApplyLocked(std::move(record));
  *seq = *appended;
  // The log holds the record whether or not this snapshot succeeds.
  if (store_->log_bytes() > options_.max_log_bytes) (void)PersistLocked();
  return absl::OkStatus();
}

void LearnerHandler::ApplyLocked(rlhf::v1::LearnerLogRecord record) {
  switch (record.op_case()) {
    case rlhf::v1::LearnerLogRecord::kRegisterActor: {
      auto& op = *record.mutable_register_actor();
      actors_[op.actor_id()] = Actor{op.name(), clock_()};
      next_actor_number_ = std::max(next_actor_number_, op.actor_number() + 1);
      stats_.set_actors_registered_total(stats_.actors_registered_total() + 1);
      break;
    }
    case rlhf::v1::LearnerLogRecord::kLease: {
      auto& op = *record.mutable_lease();
      const auto& lease = op.lease();
      const int n = lease.prompts_size();
      for (int i = 0; i < op.from_reissue() && !reissue_.empty(); ++i) reissue_.pop_front();
      cursor_ += n - op.from_reissue();
      if (n > 0) {
        next_prompt_id_ = std::max(next_prompt_id_, lease.prompts(n - 1).prompt_id() + 1);
      }
      next_lease_number_ = std::max(next_lease_number_, op.lease_number() + 1);
      stats_.set_leases_issued(stats_.leases_issued() + 1);
      stats_.set_prompts_leased(stats_.prompts_leased() + n);
      const std::string id = lease.lease_id();
      leases_[id] = std::move(*op.mutable_lease());
      break;
    }
    case rlhf::v1::LearnerLogRecord::kSubmit: {
      auto& op = *record.mutable_submit();
      int64_t accepted = 0;
      for (auto& g : *op.mutable_accepted()) {
        accepted += g.trajectories_size();
        buffer_.push_back(std::move(g));
      }
      for (int64_t source : op.stale_sources()) ReissueLocked(source);
      stats_.set_trajectories_dropped_stale(stats_.trajectories_dropped_stale() +
                                            op.stale_trajectories());
      stats_.set_trajectories_accepted(stats_.trajectories_accepted() + accepted);
      stats_.set_leases_completed(stats_.leases_completed() + 1);
      RememberLocked(completed_order_, completed_, op.lease_id());
      completed_owner_[op.lease_id()] = op.actor_id();
      leases_.erase(op.lease_id());
      break;
    }
    case rlhf::v1::LearnerLogRecord::kRelease:
      ExpireLeaseLocked(record.release().lease_id());
      break;
    case rlhf::v1::LearnerLogRecord::OP_NOT_SET:
      break;
  }
}

absl::Status LearnerHandler::AwaitDurable(int64_t seq) {
  if (seq <= 0) return absl::OkStatus();
  absl::Status s = store_->Sync(seq);
  return s.ok() ? s : RetriableStoreError(s);
}

int64_t LearnerHandler::AckSeqLocked() const {
  return store_ != nullptr && options_.log_records ? store_->last_seq() : 0;
}

LearnerHandler::Snapshot LearnerHandler::SnapshotLocked() const {
  Snapshot snap;
  if (store_ == nullptr) return snap;  // nothing can fail to persist
  snap.state = ToProtoLocked();
  for (const auto& [id, a] : actors_) snap.last_seen[id] = a.last_seen;
  return snap;
}

absl::Status LearnerHandler::CommitLocked(const Snapshot& before) {
  absl::Status s = PersistLocked();
  if (s.ok() || !before.state.has_value()) return s;
  FromProtoLocked(*before.state);
  for (auto& [id, a] : actors_) {
    auto it = before.last_seen.find(id);
    if (it != before.last_seen.end()) a.last_seen = it->second;
  }
  return absl::Status(s.code(), absl::StrCat(s.message(), " (nothing changed; retry)"));
}

bool LearnerHandler::TouchLocked(const std::string& actor_id) {
  auto it = actors_.find(actor_id);
  if (it == actors_.end()) return false;
  it->second.last_seen = clock_();
  return true;
}

void LearnerHandler::RememberLocked(std::deque<std::string>& order, std::set<std::string>& set,
                                    const std::string& id) {
  if (!set.insert(id).second) return;
  order.push_back(id);
  while (static_cast<int>(order.size()) > options_.max_remembered_leases) {
    set.erase(order.front());
    completed_owner_.erase(order.front());
    order.pop_front();
  }
}

void LearnerHandler::ReissueLocked(int64_t source_index) {
  reissue_.push_back(source_index);
  stats_.set_prompts_reissued(stats_.prompts_reissued() + 1);
}

void LearnerHandler::ExpireLeaseLocked(const std::string& lease_id) {
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) return;
  for (const auto& p : it->second.prompts()) ReissueLocked(p.source_index());
  stats_.set_leases_expired(stats_.leases_expired() + 1);
  RememberLocked(expired_order_, expired_, lease_id);
  leases_.erase(it);
}

int64_t LearnerHandler::EffectiveVersionLocked() const {
  return stats_.policy_version() + (in_training_.has_value() ? 1 : 0);
}

absl::StatusOr<rlhf::v1::RegisterResponse> LearnerHandler::Register(
    const rlhf::v1::RegisterRequest& request) {
  if (request.actor_name().size() > options_.max_name_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("actor_name: ", request.actor_name().size(),
                                                   " bytes > ", options_.max_name_bytes));
  }
  rlhf::v1::RegisterResponse response;
  int64_t seq = 0;
  {
    absl::MutexLock lock(&mu_);
    rlhf::v1::LearnerLogRecord record;
    auto* op = record.mutable_register_actor();
    op->set_actor_id(absl::StrCat(run_id_, "-A", next_actor_number_));
    op->set_name(request.actor_name());
    op->set_actor_number(next_actor_number_);
    response.set_actor_id(op->actor_id());
    if (absl::Status s = RecordLocked(std::move(record), &seq); !s.ok()) return s;
    response.set_lease_timeout_ms(absl::ToInt64Milliseconds(options_.lease_timeout));
    response.set_samples_per_prompt(options_.samples_per_prompt);
    response.set_prompts_per_lease(options_.prompts_per_lease);
    response.mutable_current_version()->set_version(stats_.policy_version());
  }
  if (absl::Status s = AwaitDurable(seq); !s.ok()) return s;
  return response;
}

absl::StatusOr<rlhf::v1::HeartbeatResponse> LearnerHandler::Heartbeat(
    const rlhf::v1::HeartbeatRequest& request) {
  absl::MutexLock lock(&mu_);
  if (!TouchLocked(request.actor_id())) {
    return absl::NotFoundError(
        absl::StrCat("actor_id: unknown actor ", BoundedEcho(request.actor_id()), " (re-register)"));
  }
  rlhf::v1::HeartbeatResponse response;
  response.mutable_latest_version()->set_version(stats_.policy_version());
  response.set_done(stats_.step() >= options_.total_steps);
  return response;
}

absl::Status LearnerHandler::Deregister(const rlhf::v1::DeregisterRequest& request) {
  absl::MutexLock lock(&mu_);
  const Snapshot before = SnapshotLocked();
  if (actors_.erase(request.actor_id()) == 0) {
    return absl::NotFoundError(
        absl::StrCat("actor_id: unknown actor ", BoundedEcho(request.actor_id())));
  }
  std::vector<std::string> mine;
  for (const auto& [id, lease] : leases_) {
    if (lease.actor_id() == request.actor_id()) mine.push_back(id);
  }
  for (const auto& id : mine) ExpireLeaseLocked(id);
  return CommitLocked(before);
}

absl::StatusOr<rlhf::v1::LeasePromptsResponse> LearnerHandler::LeasePrompts(
    const rlhf::v1::LeasePromptsRequest& request) {
  rlhf::v1::LeasePromptsResponse response;
  int64_t seq = 0;
  {
    absl::MutexLock lock(&mu_);
    if (!TouchLocked(request.actor_id())) {
      return absl::NotFoundError(absl::StrCat("actor_id: unknown actor ",
                                              BoundedEcho(request.actor_id()), " (re-register)"));
    }
    if (request.max_prompts() < 0) {
      return absl::InvalidArgumentError("max_prompts: must be >= 0");
    }
    response.mutable_latest_version()->set_version(stats_.policy_version());
    response.set_retry_after_ms(absl::ToInt64Milliseconds(options_.retry_after));
    if (stats_.step() >= options_.total_steps) {
      response.set_wait(rlhf::v1::LeasePromptsResponse::WAIT_DONE);
      return response;
    }
    // Work sampled with `held` must still be trainable when the learner is one update
    // further (the batch being trained now, if any).
    if (request.held_version().version() < EffectiveVersionLocked() - options_.max_staleness) {
      response.set_wait(rlhf::v1::LeasePromptsResponse::WAIT_STALE_WEIGHTS);
      return response;
    }
    int64_t in_flight = static_cast<int64_t>(buffer_.size()) +
                        (in_training_ ? static_cast<int64_t>(in_training_->groups.size()) : 0);
    for (const auto& [id, lease] : leases_) in_flight += lease.prompts_size();
    const int64_t capacity =
        int64_t{options_.prompts_per_step} * (options_.max_staleness + 1) - in_flight;
    int64_t n = options_.prompts_per_lease;
    if (request.max_prompts() > 0) n = std::min<int64_t>(n, request.max_prompts());
    n = std::min(n, capacity);
    if (n <= 0) {
      response.set_wait(rlhf::v1::LeasePromptsResponse::WAIT_BATCH_FULL);
      return response;
    }
    // Decide the lease without changing anything; ApplyLocked takes it.
    rlhf::v1::LearnerLogRecord record;
    auto* op = record.mutable_lease();
    auto* lease = op->mutable_lease();
    lease->set_lease_id(absl::StrCat(run_id_, "-L", next_lease_number_));
    op->set_lease_number(next_lease_number_);
    lease->set_actor_id(request.actor_id());
    lease->set_issued_version(stats_.policy_version());
    int from_reissue = 0;
    int64_t cursor = cursor_;
    int64_t prompt_id = next_prompt_id_;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t source = from_reissue < static_cast<int>(reissue_.size())
                                 ? reissue_[from_reissue++]
                                 : cursor++ % static_cast<int64_t>(prompts_.size());
      auto* p = lease->add_prompts();
      p->set_prompt_id(prompt_id++);
      p->set_source_index(source);
      p->mutable_tokens()->Add(prompts_[source].begin(), prompts_[source].end());
    }
    op->set_from_reissue(from_reissue);
    response.set_lease_id(lease->lease_id());
    *response.mutable_prompts() = lease->prompts();
    if (absl::Status s = RecordLocked(std::move(record), &seq); !s.ok()) return s;
    response.set_expires_unix_ms(absl::ToUnixMillis(clock_() + options_.lease_timeout));
  }
  // Not waited for: a lease acknowledges no data. Its record precedes the record of the
  // submission that completes it, so that submission's sync makes both durable; after a
  // crash that lost it, the submission is refused (unknown lease, or a prompt that
  // differs) and its prompts are leased again.
  return response;
}

absl::Status LearnerHandler::ValidateLocked(const rlhf::v1::SubmitTrajectoriesRequest& request,
                                            const rlhf::v1::LearnerState::Lease& lease) const {
  std::map<int64_t, const rlhf::v1::LeasedPrompt*> leased;
  for (const auto& p : lease.prompts()) leased[p.prompt_id()] = &p;
  std::map<int64_t, int> count;
  std::map<int64_t, int64_t> group_version;
  for (int i = 0; i < request.trajectories_size(); ++i) {
    const auto& t = request.trajectories(i);
    const std::string f = absl::StrCat("trajectories[", i, "]");
    auto it = leased.find(t.prompt_id());
    if (it == leased.end()) {
      return absl::InvalidArgumentError(absl::StrCat(f, ".prompt_id: ", t.prompt_id(),
                                                     " is not in lease ", lease.lease_id()));
    }
    const auto& prompt = t.tokens().prompt();
    if (prompt.size() != it->second->tokens().size() ||
        !std::equal(prompt.begin(), prompt.end(), it->second->tokens().begin())) {
      return absl::InvalidArgumentError(
          absl::StrCat(f, ".tokens.prompt: differs from the leased prompt ", t.prompt_id()));
    }
    const int n = t.tokens().response_size();
    if (n == 0) return absl::InvalidArgumentError(absl::StrCat(f, ".tokens.response: empty"));
    if (prompt.size() + n > options_.max_seq_len) {
      return absl::InvalidArgumentError(absl::StrCat(f, ".tokens: prompt + response = ",
                                                     prompt.size() + n, " tokens > max_seq_len ",
                                                     options_.max_seq_len));
    }
    for (int j = 0; j < n; ++j) {
      int32_t id = t.tokens().response(j);
      if (id < 0 || id >= options_.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(f, ".tokens.response[", j, "]: token id ",
                                                       id, " outside [0, ", options_.vocab_size,
                                                       ")"));
      }
    }
    auto check_len = [&](int size, const char* name) -> absl::Status {
      if (size != n) {
        return absl::InvalidArgumentError(absl::StrCat(f, ".", name, ": ", size,
                                                       " values for ", n, " response tokens"));
      }
      return absl::OkStatus();
    };
    if (auto s = check_len(t.behaviour_logprobs_size(), "behaviour_logprobs"); !s.ok()) return s;
    if (auto s = check_len(t.ref_logprobs_size(), "ref_logprobs"); !s.ok()) return s;
    if (auto s = check_len(t.kl_size(), "kl"); !s.ok()) return s;
    if (auto s = CheckFinite(t.behaviour_logprobs(), f + ".behaviour_logprobs"); !s.ok()) return s;
    if (auto s = CheckFinite(t.ref_logprobs(), f + ".ref_logprobs"); !s.ok()) return s;
    if (auto s = CheckFinite(t.kl(), f + ".kl"); !s.ok()) return s;
    if (t.exact_kl_size() > 0 || options_.require_exact_kl) {
      if (auto s = check_len(t.exact_kl_size(), "exact_kl"); !s.ok()) return s;
      if (auto s = CheckFinite(t.exact_kl(), f + ".exact_kl"); !s.ok()) return s;
    }
    if (!std::isfinite(t.reward())) {
      return absl::InvalidArgumentError(absl::StrCat(f, ".reward: non-finite value ", t.reward()));
    }
    // What the trainer assumes (it refuses positive log-probs; extreme finite values
    // overflow its float32 sums into NaN weights).
    for (const auto* field : {&t.behaviour_logprobs(), &t.ref_logprobs()}) {
      const char* name = field == &t.behaviour_logprobs() ? "behaviour_logprobs" : "ref_logprobs";
      for (int j = 0; j < field->size(); ++j) {
        const float lp = field->Get(j);
        if (lp > 0) {
          return absl::InvalidArgumentError(
              absl::StrCat(f, ".", name, "[", j, "]: ", lp, " is not a log-prob (must be <= 0)"));
        }
        if (lp < options_.min_logprob) {
          return absl::InvalidArgumentError(absl::StrCat(f, ".", name, "[", j, "]: ", lp,
                                                         " is below the floor ",
                                                         options_.min_logprob));
        }
      }
    }
    if (std::abs(t.reward()) > options_.max_abs_reward) {
      return absl::InvalidArgumentError(absl::StrCat(f, ".reward: ", t.reward(), " outside [",
                                                     -options_.max_abs_reward, ", ",
                                                     options_.max_abs_reward, "]"));
    }
    for (int j = 0; j < t.kl_size(); ++j) {
      if (std::abs(t.kl(j)) > options_.max_abs_kl) {
        return absl::InvalidArgumentError(absl::StrCat(f, ".kl[", j, "]: ", t.kl(j), " outside [",
                                                       -options_.max_abs_kl, ", ",
                                                       options_.max_abs_kl, "]"));
      }
    }
    const int64_t v = t.version().version();
    if (v < 0 || v > stats_.policy_version()) {
      return absl::InvalidArgumentError(absl::StrCat(f, ".version: ", v, " is not in [0, ",
                                                     stats_.policy_version(), "]"));
    }
    auto [gv, inserted] = group_version.emplace(t.prompt_id(), v);
    if (!inserted && gv->second != v) {
      return absl::InvalidArgumentError(absl::StrCat(
          f, ".version: ", v, " differs from the other samples of prompt ", t.prompt_id()));
    }
    ++count[t.prompt_id()];
  }
  for (const auto& [id, p] : leased) {
    if (count[id] != options_.samples_per_prompt) {
      return absl::InvalidArgumentError(absl::StrCat("trajectories: prompt_id ", id, " has ",
                                                     count[id], " trajectories, expected ",
                                                     options_.samples_per_prompt));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<rlhf::v1::SubmitTrajectoriesResponse> LearnerHandler::Submit(
    const rlhf::v1::SubmitTrajectoriesRequest& request) {
  rlhf::v1::SubmitTrajectoriesResponse response;
  if (request.lease_id().empty()) return absl::InvalidArgumentError("lease_id: empty");
  if (request.lease_id().size() > options_.max_id_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("lease_id: ", request.lease_id().size(),
                                                   " bytes > ", options_.max_id_bytes));
  }
  const int64_t max_trajectories =
      int64_t{options_.prompts_per_lease} * options_.samples_per_prompt;
  if (request.trajectories_size() > max_trajectories) {
    return absl::InvalidArgumentError(absl::StrCat(
        "trajectories: ", request.trajectories_size(), " > ", max_trajectories,
        " (prompts_per_lease x samples_per_prompt)"));
  }
  int64_t seq = 0;
  {
    absl::MutexLock lock(&mu_);
    TouchLocked(request.actor_id());
    if (auto owner = completed_owner_.find(request.lease_id());
        completed_.count(request.lease_id()) &&
        (owner == completed_owner_.end() || owner->second == request.actor_id())) {
      stats_.set_duplicate_submissions(stats_.duplicate_submissions() + 1);
      response.set_duplicate(true);
      seq = AckSeqLocked();  // the original's record may still be on its way to disk
    } else {
      auto it = leases_.find(request.lease_id());
      if (it == leases_.end()) {
        stats_.set_trajectories_rejected(stats_.trajectories_rejected() +
                                         request.trajectories_size());
        if (expired_.count(request.lease_id())) {
          return absl::FailedPreconditionError(absl::StrCat(
              "lease_id: lease ", request.lease_id(), " expired; its prompts were re-issued"));
        }
        if (completed_.count(request.lease_id())) {
          return absl::PermissionDeniedError(
              absl::StrCat("actor_id: lease ", request.lease_id(), " was issued to another actor"));
        }
        return absl::InvalidArgumentError(
            absl::StrCat("lease_id: unknown lease ", BoundedEcho(request.lease_id())));
      }
      if (it->second.actor_id() != request.actor_id()) {
        return absl::PermissionDeniedError(absl::StrCat("actor_id: lease ", request.lease_id(),
                                                        " was issued to another actor, not ",
                                                        BoundedEcho(request.actor_id())));
      }
      rlhf::v1::LearnerLogRecord record;
      std::vector<int64_t> accepted_staleness;
      if (request.trajectories_size() == 0) {  // an explicit release: re-issue its prompts
        record.mutable_release()->set_lease_id(request.lease_id());
      } else {
        if (absl::Status s = ValidateLocked(request, it->second); !s.ok()) {
          stats_.set_trajectories_rejected(stats_.trajectories_rejected() +
                                           request.trajectories_size());
          return s;
        }
        // Group by prompt in lease order; decide which groups are too stale to keep.
        auto* op = record.mutable_submit();
        op->set_lease_id(request.lease_id());
        op->set_actor_id(it->second.actor_id());
        for (const auto& p : it->second.prompts()) {
          rlhf::v1::BufferedGroup g;
          g.set_lease_id(request.lease_id());
          g.set_actor_id(it->second.actor_id());
          *g.mutable_prompt() = p;
          for (const auto& t : request.trajectories()) {
            if (t.prompt_id() == p.prompt_id()) *g.add_trajectories() = t;
          }
          g.set_version(g.trajectories(0).version().version());
          const int64_t staleness = stats_.policy_version() - g.version();
          if (staleness > options_.max_staleness) {
            op->add_stale_sources(p.source_index());
            op->set_stale_trajectories(op->stale_trajectories() + g.trajectories_size());
            response.set_dropped_stale(response.dropped_stale() + g.trajectories_size());
            continue;
          }
          accepted_staleness.push_back(staleness);
          response.set_accepted(response.accepted() + g.trajectories_size());
          *op->add_accepted() = std::move(g);
        }
      }
      if (absl::Status s = RecordLocked(std::move(record), &seq); !s.ok()) return s;
      if (staleness_hook_) {
        for (int64_t staleness : accepted_staleness) staleness_hook_(staleness);
      }
    }
  }
  // Durable before the acknowledgement.
  if (absl::Status s = AwaitDurable(seq); !s.ok()) return s;
  return response;
}

int LearnerHandler::ExpireSilentActors() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_();
  std::vector<std::string> silent;
  for (const auto& [id, actor] : actors_) {
    if (now - actor.last_seen > options_.lease_timeout) silent.push_back(id);
  }
  if (silent.empty()) return 0;
  const Snapshot before = SnapshotLocked();
  int expired = 0;
  for (const auto& id : silent) {
    actors_.erase(id);
    std::vector<std::string> mine;
    for (const auto& [lid, lease] : leases_) {
      if (lease.actor_id() == id) mine.push_back(lid);
    }
    for (const auto& lid : mine) ExpireLeaseLocked(lid);
    expired += static_cast<int>(mine.size());
  }
  // Not persisted: nothing changes, and the next poll tries again.
  if (!CommitLocked(before).ok()) return 0;
  return expired;
}

bool LearnerHandler::BatchReadyLocked() const {
  return !in_training_ && stats_.step() < options_.total_steps &&
         static_cast<int>(buffer_.size()) >= options_.prompts_per_step;
}

std::optional<LearnerHandler::Batch> LearnerHandler::WaitForBatch(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return BatchReadyLocked(); };
  if (!mu_.AwaitWithTimeout(absl::Condition(&ready), timeout)) return std::nullopt;
  Batch batch;
  batch.step = stats_.step() + 1;
  for (int i = 0; i < options_.prompts_per_step; ++i) {
    batch.groups.push_back(std::move(buffer_.front()));
    buffer_.pop_front();
  }
  rlhf::v1::TrainedBatch record;
  record.set_step(batch.step);
  for (const auto& g : batch.groups) *record.add_groups() = g;
  trained_.push_back(std::move(record));
  in_training_ = batch;
  (void)PersistLocked();  // the groups are in trained_ either way: nothing can be lost
  return batch;
}

void LearnerHandler::DropStaleLocked() {
  std::deque<rlhf::v1::BufferedGroup> keep;
  for (auto& g : buffer_) {
    if (stats_.policy_version() - g.version() > options_.max_staleness) {
      stats_.set_trajectories_dropped_stale(stats_.trajectories_dropped_stale() +
                                            g.trajectories_size());
      ReissueLocked(g.prompt().source_index());
    } else {
      keep.push_back(std::move(g));
    }
  }
  buffer_ = std::move(keep);
}

absl::Status LearnerHandler::OnTrained(const Batch& batch, int64_t new_version,
                                       const std::map<std::string, double>& step_stats,
                                       uint64_t weights_hash) {
  absl::MutexLock lock(&mu_);
  in_training_.reset();
  if (weights_hash != 0) stats_.set_weights_hash(weights_hash);
  stats_.set_step(batch.step);
  stats_.set_policy_version(new_version);
  for (const auto& g : batch.groups) {
    stats_.set_prompts_trained(stats_.prompts_trained() + 1);
    stats_.set_trajectories_trained(stats_.trajectories_trained() + g.trajectories_size());
    trained_sources_.insert(g.prompt().source_index());
  }
  stats_.set_distinct_prompts_trained(static_cast<int64_t>(trained_sources_.size()));
  DropStaleLocked();
  rlhf::v1::StepRecord& record = *stats_.add_recent_steps();
  record.set_step(batch.step);
  record.set_policy_version(new_version);
  record.mutable_stats()->insert(step_stats.begin(), step_stats.end());
  record.set_trajectories_accepted(stats_.trajectories_accepted());
  record.set_trajectories_dropped_stale(stats_.trajectories_dropped_stale());
  record.set_trajectories_rejected(stats_.trajectories_rejected());
  record.set_trajectories_trained(stats_.trajectories_trained());
  record.set_actors_connected(static_cast<int32_t>(actors_.size()));
  record.set_time_unix_s(absl::ToDoubleSeconds(clock_() - absl::UnixEpoch()));
  const int excess = stats_.recent_steps_size() - std::max(options_.step_records_kept, 1);
  if (excess > 0) stats_.mutable_recent_steps()->DeleteSubrange(0, excess);
  return PersistLocked();
}

void LearnerHandler::OnTrainFailed(const Batch& batch) {
  absl::MutexLock lock(&mu_);
  in_training_.reset();
  for (auto it = batch.groups.rbegin(); it != batch.groups.rend(); ++it) buffer_.push_front(*it);
  if (!trained_.empty() && trained_.back().step() == batch.step) trained_.pop_back();
  (void)PersistLocked();
}

absl::Status LearnerHandler::OnTrainRejected(const Batch& batch, const absl::Status& why) {
  (void)why;  // the caller logs it; the count is what stays
  absl::MutexLock lock(&mu_);
  in_training_.reset();
  if (!trained_.empty() && trained_.back().step() == batch.step) trained_.pop_back();
  for (const auto& g : batch.groups) ReissueLocked(g.prompt().source_index());
  stats_.set_batches_dropped(stats_.batches_dropped() + 1);
  return PersistLocked();
}

void LearnerHandler::AddNonfiniteSkipped(int64_t n) {
  absl::MutexLock lock(&mu_);
  stats_.set_nonfinite_updates_skipped(stats_.nonfinite_updates_skipped() + n);
}

std::string LearnerHandler::restore_note() const {
  absl::MutexLock lock(&mu_);
  return restore_note_;
}

absl::Status LearnerHandler::OnCheckpointed(int64_t step) {
  absl::MutexLock lock(&mu_);
  checkpointed_step_ = step;
  std::vector<rlhf::v1::TrainedBatch> keep;
  for (auto& b : trained_) {
    if (b.step() > step) keep.push_back(std::move(b));
  }
  trained_ = std::move(keep);
  return PersistLocked();
}

rlhf::v1::LearnerStats LearnerHandler::Stats(int64_t steps_after) const {
  absl::MutexLock lock(&mu_);
  rlhf::v1::LearnerStats s = stats_;
  auto* recent = s.mutable_recent_steps();
  int seen = 0;
  while (seen < recent->size() && recent->Get(seen).step() <= steps_after) ++seen;
  recent->DeleteSubrange(0, seen);
  int64_t outstanding = 0;
  for (const auto& [id, lease] : leases_) outstanding += lease.prompts_size();
  s.set_prompts_outstanding(outstanding);
  s.set_prompts_buffered(static_cast<int64_t>(buffer_.size()) +
                         (in_training_ ? static_cast<int64_t>(in_training_->groups.size()) : 0));
  s.set_actors_connected(static_cast<int32_t>(actors_.size()));
  s.set_done(stats_.step() >= options_.total_steps);
  return s;
}

std::vector<std::string> LearnerHandler::ActorIds() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> ids;
  for (const auto& [id, a] : actors_) ids.push_back(id);
  return ids;
}

bool LearnerHandler::IsActor(const std::string& actor_id) const {
  absl::MutexLock lock(&mu_);
  return actors_.count(actor_id) > 0;
}

bool LearnerHandler::done() const {
  absl::MutexLock lock(&mu_);
  return stats_.step() >= options_.total_steps;
}

int64_t LearnerHandler::version() const {
  absl::MutexLock lock(&mu_);
  return stats_.policy_version();
}

void LearnerHandler::set_weights_hash(uint64_t hash) {
  absl::MutexLock lock(&mu_);
  stats_.set_weights_hash(hash);
}

void LearnerHandler::set_staleness_hook(StalenessHook hook) {
  absl::MutexLock lock(&mu_);
  staleness_hook_ = std::move(hook);
}

}  // namespace rlhf::learner
