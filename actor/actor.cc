#include "actor/actor.h"

#include <cstdio>
#include <thread>

#include <c10/util/Logging.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>

#include "absl/strings/str_cat.h"
#include "actor/step_distributions.h"
#include "core/model/checkpoint.h"
#include "core/model/device.h"
#include "core/model/generation.h"
#include "core/status_macros.h"
#include "core/util/splitmix.h"
#include "services/config/sampling_config.h"

namespace rlhf::actor {

// Busy fraction = rate(generate_seconds_total) / (rate(generate) + rate(wait)).
class ActorMetrics {
 public:
  explicit ActorMetrics(prometheus::Registry& r)
      : tokens_(prometheus::BuildCounter().Name("rlhf_actor_generated_tokens_total")
                    .Help("Sampled response tokens").Register(r).Add({})),
        gen_seconds_(prometheus::BuildCounter().Name("rlhf_actor_generate_seconds_total")
                         .Help("Time spent generating").Register(r).Add({})),
        wait_seconds_(prometheus::BuildCounter().Name("rlhf_actor_wait_seconds_total")
                          .Help("Time waiting for leases, weights or the scoring slot")
                          .Register(r).Add({})),
        submitted_(prometheus::BuildCounter().Name("rlhf_actor_trajectories_submitted_total")
                       .Help("Trajectories acknowledged by the learner").Register(r).Add({})),
        updates_(prometheus::BuildCounter().Name("rlhf_actor_weight_updates_total")
                     .Help("Weight versions applied").Register(r).Add({})),
        lag_(prometheus::BuildGauge().Name("rlhf_actor_version_lag")
                 .Help("Latest known policy version minus the held one").Register(r).Add({})),
        held_(prometheus::BuildGauge().Name("rlhf_actor_policy_version")
                  .Help("Held policy version").Register(r).Add({})),
        dist_bytes_(prometheus::BuildCounter().Name("rlhf_actor_distribution_bytes_total")
                        .Help("Serialized per-step policy distributions sent to the reference "
                              "server (kl.estimator exact); per token: divide by "
                              "rlhf_actor_distribution_tokens_total").Register(r).Add({})),
        dist_tokens_(prometheus::BuildCounter().Name("rlhf_actor_distribution_tokens_total")
                         .Help("Response tokens sent with their distribution").Register(r)
                         .Add({})),
        dist_bytes_per_token_(prometheus::BuildGauge()
                                  .Name("rlhf_actor_distribution_bytes_per_token")
                                  .Help("Wire bytes per response token of the last batch's "
                                        "distributions (0 when not sent)")
                                  .Register(r).Add({})),
        receive_(prometheus::BuildHistogram().Name("rlhf_actor_weight_receive_seconds")
                     .Help("Header to verified snapshot").Register(r)
                     .Add({}, prometheus::Histogram::BucketBoundaries{
                                  0.001, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30})) {}
  prometheus::Counter& tokens_;
  prometheus::Counter& gen_seconds_;
  prometheus::Counter& wait_seconds_;
  prometheus::Counter& submitted_;
  prometheus::Counter& updates_;
  prometheus::Gauge& lag_;
  prometheus::Gauge& held_;
  prometheus::Counter& dist_bytes_;
  prometheus::Counter& dist_tokens_;
  prometheus::Gauge& dist_bytes_per_token_;
  prometheus::Histogram& receive_;
};

struct Actor::ModelHolder {
  TransformerLM model{nullptr};
  SamplingOptions sampling;
  int samples_per_prompt = 1;
  int64_t held_version = -1;
  int64_t vocab_size = 0;
};

struct Actor::Job {
  std::string lease_id;
  std::vector<rlhf::v1::LeasedPrompt> prompts;
  std::vector<int> prompt_of_row;  // row -> index into prompts
  GenerationResult result;
  int64_t version = 0;
  rlhf::v1::KlEstimator kl_estimator = rlhf::v1::KL_ESTIMATOR_K1;
  int64_t vocab_size = 0;
};

namespace {

bool Retryable(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnavailable ||
         s.code() == absl::StatusCode::kDeadlineExceeded ||
         s.code() == absl::StatusCode::kResourceExhausted;
}

}  // namespace

Actor::Actor(const ActorOptions& options, learner::LearnerClient* learner,
             reward::RewardClient* reward, reference::ReferenceClient* reference,
             std::shared_ptr<prometheus::Registry> registry)
    : options_(options), learner_(learner), reward_(reward), reference_(reference),
      registry_(std::move(registry)), model_(std::make_unique<ModelHolder>()) {
  if (registry_) metrics_ = std::make_unique<ActorMetrics>(*registry_);
}

Actor::~Actor() = default;

void Actor::Stop() {
  {
    // Under mu_, so that threads in AwaitScorer re-evaluate their conditions.
    absl::MutexLock l(&mu_);
    if (!stopping_) {
      stopping_ = true;
      stop_time_ = absl::Now();
    }
  }
  if (!stop_.exchange(true)) stopped_.Notify();
}

void Actor::AwaitScorer(const std::function<bool()>& done_waiting) {
  auto done_or_stopping = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return done_waiting() || (stopping_ && !done_.load());
  };
  mu_.Await(absl::Condition(&done_or_stopping));
  if (done_waiting()) return;
  auto done = [&]() { return done_waiting(); };
  if (!scoring_cancelled_ &&
      !mu_.AwaitWithDeadline(absl::Condition(&done), stop_time_ + options_.drain_timeout)) {
    LOG(WARNING) << "actor " << options_.name << ": scoring still running "
                 << options_.drain_timeout << " after stop; cancelling it, releasing the lease";
    scoring_cancelled_ = true;
    reward_->CancelInFlight();
    reference_->CancelInFlight();
  }
  mu_.Await(absl::Condition(&done));
}

ActorStats Actor::stats() const {
  absl::MutexLock l(&mu_);
  return stats_;
}

void Actor::Backoff(absl::Duration d) { stopped_.WaitForNotificationWithTimeout(d); }

absl::Status Actor::RegisterLocked() {
  rlhf::v1::RegisterRequest req;
  req.set_actor_name(options_.name);
  RLHF_ASSIGN_OR_RETURN(reg_, learner_->Register(req, absl::Now() + options_.call_timeout));
  actor_id_ = reg_.actor_id();
  need_register_ = false;
  ++stats_.registrations;
  latest_known_ = std::max(latest_known_, reg_.current_version().version());
  if (stream_) stream_->Cancel();  // reopen the weights stream under the new id
  LOG(INFO) << "actor " << options_.name << ": registered as " << actor_id_;
  return absl::OkStatus();
}

absl::Status Actor::EnsureRegistered() {
  while (!stop_.load()) {
    absl::Status s;
    {
      absl::MutexLock l(&mu_);
      if (!need_register_) return absl::OkStatus();
      s = RegisterLocked();
    }
    if (s.ok()) return s;
    LOG(WARNING) << "actor " << options_.name << ": register: " << s;
    Backoff(options_.backoffs.register_retry);
  }
  return absl::CancelledError("stopped");
}

void Actor::WeightsLoop() {
  std::unique_ptr<weights::WeightReceiver> receiver;
  rlhf::v1::WeightTransport receiver_kind = rlhf::v1::WEIGHT_TRANSPORT_UNSPECIFIED;
  while (!stop_.load()) {
    rlhf::v1::WatchWeightsRequest req;
    std::shared_ptr<learner::WeightsStream> stream;
    bool registered = false;
    {
      absl::MutexLock l(&mu_);
      registered = !need_register_ && !actor_id_.empty();
      if (registered) {
        req.set_actor_id(actor_id_);
        req.mutable_have_version()->set_version(stats_.held_version);
        if (!receiver || receiver_kind != reg_.transport()) {
          weights::WeightTransportOptions wo = options_.weights;
          wo.transport = reg_.transport();
          auto r = weights::MakeWeightReceiver(wo);
          if (!r.ok()) {
            LOG(ERROR) << "actor: weights receiver: " << r.status();
            return;
          }
          receiver = *std::move(r);
          receiver_kind = reg_.transport();
        }
      }
    }
    if (!registered) {
      Backoff(options_.backoffs.unregistered_poll);
      continue;
    }
    auto opened = learner_->WatchWeights(req);
    if (!opened.ok()) {
      Backoff(options_.backoffs.watch_retry);
      continue;
    }
    stream = std::shared_ptr<learner::WeightsStream>(std::move(*opened));
    {
      absl::MutexLock l(&mu_);
      stream_ = stream;
    }
    if (stop_.load()) stream->Cancel();  // Run() may have cancelled before stream_ was set
    for (;;) {
      auto msg = stream->Next();
      if (!msg.ok()) {
        if (!stop_.load()) VLOG(1) << "actor: weights stream ended: " << msg.status();
        break;
      }
      if (!msg->has_header()) continue;
      const rlhf::v1::WeightsHeader header = msg->header();
      absl::Time t0 = absl::Now();
      // Buckets are copied from gRPC's receive buffers straight into the snapshot.
      auto flat = receiver->Receive(
          header, [&](const weights::BucketTarget& target) { return stream->NextBucket(target); });
      if (!flat.ok()) {
        LOG(WARNING) << "actor " << options_.name << ": weights version "
                     << header.version().version() << ": " << flat.status();
        if (header.transport() == rlhf::v1::WEIGHT_TRANSPORT_GRPC) break;  // resync
        continue;
      }
      if (metrics_) metrics_->receive_.Observe(absl::ToDoubleSeconds(absl::Now() - t0));
      absl::MutexLock l(&mu_);
      pending_ = *std::move(flat);
      latest_known_ = std::max(latest_known_, header.version().version());
    }
    {
      absl::MutexLock l(&mu_);
      stream_.reset();
    }
    Backoff(options_.backoffs.stream_reopen);
  }
}

void Actor::HeartbeatLoop() {
  while (!stop_.load()) {
    absl::Duration interval = options_.backoffs.heartbeat;
    rlhf::v1::HeartbeatRequest req;
    {
      absl::MutexLock l(&mu_);
      if (reg_.heartbeat_interval_ms() > 0) interval = absl::Milliseconds(reg_.heartbeat_interval_ms());
      req.set_actor_id(actor_id_);
      req.mutable_held_version()->set_version(stats_.held_version);
    }
    if (!req.actor_id().empty()) {
      // A generous deadline: a loaded machine or a reconnecting channel must not turn
      // into missed heartbeats (the lease timeout is what bounds silence).
      auto r = learner_->Heartbeat(
          req, absl::Now() + std::min(std::max(interval, absl::Seconds(2)), options_.call_timeout));
      absl::MutexLock l(&mu_);
      if (r.ok()) {
        latest_known_ = std::max(latest_known_, r->latest_version().version());
        if (r->done()) done_.store(true);
      } else if (r.status().code() == absl::StatusCode::kNotFound && actor_id_ == req.actor_id()) {
        need_register_ = true;
      }
    }
    Backoff(interval);
  }
}

bool Actor::ApplyPendingWeights() {
  std::shared_ptr<weights::FlatWeights> flat;
  {
    absl::MutexLock l(&mu_);
    flat = std::move(pending_);
    pending_.reset();
  }
  if (!flat) {
    return false;
  }
  absl::Status s = weights::Unflatten(*flat, ModelTensors(model_->model));
  if (!s.ok()) {
    LOG(ERROR) << "actor " << options_.name << ": applying weights: " << s;
    return false;
  }
  model_->held_version = flat->version;
  uint64_t hash = flat->hash;
  if (options_.log_weight_hashes) {
    auto mine = weights::Flatten(ModelTensors(model_->model), flat->version);
    if (mine.ok()) hash = (*mine)->hash;
    std::printf("weights: actor=%s version=%lld hash=%llu\n", options_.name.c_str(),
                static_cast<long long>(flat->version), static_cast<unsigned long long>(hash));
    std::fflush(stdout);
  }
  absl::MutexLock l(&mu_);
  stats_.held_version = flat->version;
  stats_.held_hash = hash;
  ++stats_.weight_updates;
  if (metrics_) {
    metrics_->updates_.Increment();
    metrics_->held_.Set(static_cast<double>(flat->version));
  }
  return true;
}

absl::Status Actor::ProcessJob(Job& job) {
  const int rows = static_cast<int>(job.result.responses.size());
  rlhf::v1::RewardScoreRequest rreq;
  rlhf::v1::ReferenceScoreRequest qreq;
  qreq.set_kl_estimator(job.kl_estimator);
  for (int i = 0; i < rows; ++i) {
    rlhf::v1::TokenSequence seq;
    const auto& p = job.prompts[job.prompt_of_row[i]];
    *seq.mutable_prompt() = p.tokens();
    seq.mutable_response()->Add(job.result.responses[i].begin(), job.result.responses[i].end());
    *rreq.add_sequences() = seq;
    auto* q = qreq.add_sequences();
    *q->mutable_tokens() = seq;
    q->mutable_policy_logprobs()->Add(job.result.logprobs[i].begin(), job.result.logprobs[i].end());
    if (job.kl_estimator == rlhf::v1::KL_ESTIMATOR_EXACT && i < static_cast<int>(job.result.top_k.size())) {
      AppendStepDistributions(job.result.top_k[i], job.vocab_size, q);
    }
  }
  if (job.kl_estimator == rlhf::v1::KL_ESTIMATOR_EXACT && metrics_) {
    int64_t bytes = 0, tokens = 0;
    for (const auto& q : qreq.sequences()) {
      for (const auto& d : q.policy_distributions()) bytes += static_cast<int64_t>(d.ByteSizeLong());
      tokens += q.policy_distributions_size();
    }
    metrics_->dist_bytes_.Increment(static_cast<double>(bytes));
    metrics_->dist_tokens_.Increment(static_cast<double>(tokens));
    metrics_->dist_bytes_per_token_.Set(tokens > 0 ? static_cast<double>(bytes) / tokens : 0.0);
  }
  const absl::Time score_deadline = absl::Now() + options_.score_timeout;
  absl::StatusOr<rlhf::v1::ReferenceScoreResponse> qresp = absl::UnknownError("not run");
  std::thread ref_thread([&] { qresp = reference_->Score(qreq, score_deadline); });
  auto rresp = reward_->Score(rreq, score_deadline);
  ref_thread.join();
  absl::Status scored = !rresp.ok() ? rresp.status() : qresp.status();
  if (scored.ok() && (rresp->rewards_size() != rows || qresp->results_size() != rows)) {
    scored = absl::InternalError("scoring servers returned the wrong number of results");
  }
  rlhf::v1::SubmitTrajectoriesRequest sub;
  {
    absl::MutexLock l(&mu_);
    sub.set_actor_id(actor_id_);
  }
  sub.set_lease_id(job.lease_id);
  if (scored.ok()) {
    for (int i = 0; i < rows; ++i) {
      auto* t = sub.add_trajectories();
      const auto& p = job.prompts[job.prompt_of_row[i]];
      t->set_prompt_id(p.prompt_id());
      *t->mutable_tokens() = rreq.sequences(i);
      t->mutable_behaviour_logprobs()->Add(job.result.logprobs[i].begin(),
                                           job.result.logprobs[i].end());
      *t->mutable_ref_logprobs() = qresp->results(i).ref_logprobs();
      *t->mutable_kl() = qresp->results(i).kl();
      *t->mutable_exact_kl() = qresp->results(i).exact_kl();
      t->set_reward(rresp->rewards(i));
      t->mutable_version()->set_version(job.version);
    }
  } else {
    LOG(WARNING) << "actor " << options_.name << ": scoring lease " << job.lease_id
                 << " failed (" << scored << "); releasing it";
  }
  // Submission (or release) is idempotent per lease: retry through a learner restart.
  const absl::Time give_up = absl::Now() + 4 * options_.call_timeout;
  for (;;) {
    auto r = learner_->Submit(sub, absl::Now() + options_.call_timeout);
    if (r.ok()) {
      absl::MutexLock l(&mu_);
      stats_.trajectories_submitted += r->accepted();
      if (metrics_) metrics_->submitted_.Increment(r->accepted());
      return scored;
    }
    // Stopping (SIGTERM) with the learner unreachable: do not keep the process alive
    // retrying; the learner expires the lease and re-issues its prompts (issue 23).
    if (!Retryable(r.status()) || absl::Now() > give_up || stop_.load()) {
      LOG(WARNING) << "actor " << options_.name << ": submit " << job.lease_id << ": " << r.status();
      if (r.status().code() == absl::StatusCode::kInvalidArgument && sub.trajectories_size() > 0) {
        sub.clear_trajectories();  // release the lease so its prompts are re-issued
        continue;
      }
      return r.status();
    }
    Backoff(options_.backoffs.submit_retry);
  }
}

void Actor::ScoreLoop() {
  for (;;) {
    std::unique_ptr<Job> job;
    {
      absl::MutexLock l(&mu_);
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return slot_ != nullptr || scorer_stop_;
      };
      mu_.Await(absl::Condition(&ready));
      if (!slot_) return;
      job = std::move(slot_);
      scorer_busy_ = true;
    }
    (void)ProcessJob(*job);
    absl::MutexLock l(&mu_);
    scorer_busy_ = false;
  }
}

absl::Status Actor::Run() {
  if (absl::Status s = EnsureRegistered(); !s.ok()) {
    return stop_.load() ? absl::OkStatus() : s;  // stopped before the learner answered
  }
  std::thread weights_thread([this] { WeightsLoop(); });
  std::thread heartbeat_thread([this] { HeartbeatLoop(); });
  std::thread score_thread([this] { ScoreLoop(); });
  absl::Status status;
  std::string model_json;
  while (!stop_.load() && !done_.load()) {
    if (!EnsureRegistered().ok()) break;
    rlhf::v1::RegisterResponse reg;
    std::string actor_id;
    {
      absl::MutexLock l(&mu_);
      reg = reg_;
      actor_id = actor_id_;
    }
    if (!model_->model || reg.model_config_json() != model_json) {
      auto config = ModelConfigFromJson(reg.model_config_json());
      if (!config.ok()) {
        status = config.status();
        break;
      }
      auto sampling = SamplingOptionsFromConfig(reg.sampling());
      if (!sampling.ok()) {
        status = sampling.status();
        break;
      }
      model_->model = TransformerLM(*config);
      if (absl::Status moved = MoveModelToDevice(model_->model, options_.device); !moved.ok()) {
        status = moved;
        break;
      }
      model_->model->eval();
      model_->sampling = *sampling;
      model_->held_version = -1;
      model_->vocab_size = config->vocab_size;
      model_json = reg.model_config_json();
    }
    model_->samples_per_prompt = std::max(1, reg.samples_per_prompt());
    // kl.estimator exact: the per-step distributions travel to the reference server.
    model_->sampling.return_top_k_distributions =
        reg.kl_estimator() == rlhf::v1::KL_ESTIMATOR_EXACT
            ? DistributionEntries(reg.kl_top_k(), model_->vocab_size)
            : 0;
    absl::Time wait_start = absl::Now();
    ApplyPendingWeights();
    if (model_->held_version < 0) {  // nothing to generate with yet
      Backoff(options_.backoffs.no_weights_poll);
      if (metrics_) metrics_->wait_seconds_.Increment(absl::ToDoubleSeconds(absl::Now() - wait_start));
      continue;
    }
    rlhf::v1::LeasePromptsRequest lreq;
    lreq.set_actor_id(actor_id);
    lreq.set_max_prompts(options_.max_prompts);
    lreq.mutable_held_version()->set_version(model_->held_version);
    auto lease = learner_->LeasePrompts(lreq, absl::Now() + options_.call_timeout);
    if (!lease.ok()) {
      if (lease.status().code() == absl::StatusCode::kNotFound) {
        absl::MutexLock l(&mu_);
        if (actor_id_ == actor_id) need_register_ = true;
      } else {
        Backoff(options_.backoffs.lease_retry);
      }
      continue;
    }
    if (lease->prompts_size() == 0) {
      if (lease->wait() == rlhf::v1::LeasePromptsResponse::WAIT_DONE) {
        done_.store(true);
        break;
      }
      Backoff(
          std::max(options_.backoffs.min_lease_wait, absl::Milliseconds(lease->retry_after_ms())));
      const double waited = absl::ToDoubleSeconds(absl::Now() - wait_start);
      if (metrics_) metrics_->wait_seconds_.Increment(waited);
      absl::MutexLock l(&mu_);
      stats_.wait_seconds += waited;
      continue;
    }
    auto job = std::make_unique<Job>();
    job->lease_id = lease->lease_id();
    job->version = model_->held_version;
    job->kl_estimator = reg.kl_estimator();
    job->vocab_size = model_->vocab_size;
    std::vector<std::vector<int32_t>> prompts;
    std::vector<uint64_t> seeds;
    for (int i = 0; i < lease->prompts_size(); ++i) {
      const auto& p = lease->prompts(i);
      job->prompts.push_back(p);
      for (int s = 0; s < model_->samples_per_prompt; ++s) {
        prompts.emplace_back(p.tokens().begin(), p.tokens().end());
        seeds.push_back(
            SplitMix64(options_.seed ^ SplitMix64(static_cast<uint64_t>(p.prompt_id()) * 131 + s)));
        job->prompt_of_row.push_back(i);
      }
    }
    const double waited = absl::ToDoubleSeconds(absl::Now() - wait_start);
    absl::Time gen_start = absl::Now();
    const bool continuous = options_.generation_batch > 0 &&
                            static_cast<int64_t>(prompts.size()) > options_.generation_batch;
    auto result = continuous ? GenerateContinuous(model_->model, prompts, seeds,
                                                  model_->sampling, options_.generation_batch)
                             : Generate(model_->model, prompts, seeds, model_->sampling);
    const double gen_seconds = absl::ToDoubleSeconds(absl::Now() - gen_start);
    if (!result.ok()) {
      LOG(ERROR) << "actor " << options_.name << ": generate: " << result.status();
      rlhf::v1::SubmitTrajectoriesRequest release;
      release.set_actor_id(actor_id);
      release.set_lease_id(job->lease_id);
      (void)learner_->Submit(release, absl::Now() + options_.call_timeout);
      status = result.status();
      break;
    }
    int64_t tokens = 0;
    for (const auto& r : result->responses) tokens += static_cast<int64_t>(r.size());
    job->result = *std::move(result);
    absl::Time slot_wait = absl::Now();
    {
      absl::MutexLock l(&mu_);
      AwaitScorer([this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return slot_ == nullptr; });
      slot_ = std::move(job);
      const double slot_waited = absl::ToDoubleSeconds(absl::Now() - slot_wait);
      stats_.generate_seconds += gen_seconds;
      stats_.wait_seconds += waited + slot_waited;
      stats_.generated_tokens += tokens;
      ++stats_.batches;
      if (continuous) ++stats_.continuous_batches;
      if (metrics_) {
        metrics_->gen_seconds_.Increment(gen_seconds);
        metrics_->wait_seconds_.Increment(waited + slot_waited);
        metrics_->tokens_.Increment(static_cast<double>(tokens));
        metrics_->lag_.Set(static_cast<double>(latest_known_ - model_->held_version));
      }
    }
  }
  // Drain: the batch in the slot and the one being scored are submitted first.
  {
    absl::MutexLock l(&mu_);
    auto drained = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return slot_ == nullptr && !scorer_busy_;
    };
    AwaitScorer(drained);
    scorer_stop_ = true;
  }
  score_thread.join();
  std::string actor_id;
  {
    absl::MutexLock l(&mu_);
    actor_id = actor_id_;
  }
  rlhf::v1::DeregisterRequest dreq;
  dreq.set_actor_id(actor_id);
  absl::Status d = learner_->Deregister(dreq, absl::Now() + options_.backoffs.deregister_timeout);
  if (!d.ok()) LOG(WARNING) << "actor " << options_.name << ": deregister: " << d;
  Stop();  // ends the heartbeat and weights threads
  {
    absl::MutexLock l(&mu_);
    if (stream_) stream_->Cancel();
  }
  heartbeat_thread.join();
  weights_thread.join();
  LOG(INFO) << "actor " << options_.name << ": stopped (" << stats().batches << " batches)";
  return status;
}

}  // namespace rlhf::actor
