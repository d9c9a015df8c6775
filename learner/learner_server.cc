#include "learner/learner_server.h"

#include <c10/util/Logging.h>

#include "absl/strings/str_cat.h"
#include "core/model/checkpoint.h"
#include "core/status_macros.h"

namespace rlhf::learner {
namespace {

bool AllFinite(const NamedTensors& tensors) {
  for (const auto& [name, t] : tensors) {
    if (!torch::isfinite(t).all().item<bool>()) return false;
  }
  return true;
}

}  // namespace

// Prometheus view of the handler and publisher counters, refreshed by the poll thread
// (counters advance by the delta since the last refresh).
class LearnerMetrics {
 public:
  explicit LearnerMetrics(prometheus::Registry& r)
      : steps_(prometheus::BuildCounter().Name("rlhf_learner_steps_total")
                   .Help("Policy updates").Register(r).Add({})),
        version_(prometheus::BuildGauge().Name("rlhf_learner_policy_version")
                     .Help("Current policy version").Register(r).Add({})),
        actors_(prometheus::BuildGauge().Name("rlhf_learner_actors_connected")
                    .Help("Registered live actors").Register(r).Add({})),
        stat_(prometheus::BuildGauge().Name("rlhf_learner_train_stat")
                  .Help("Last step's trainer statistics (reward_mean, kl_mean, beta, "
                        "policy_loss, ...)").Register(r)),
        traj_(prometheus::BuildCounter().Name("rlhf_learner_trajectories_total")
                  .Help("Trajectories by outcome").Register(r)),
        leases_(prometheus::BuildCounter().Name("rlhf_learner_leases_total")
                    .Help("Leases by event").Register(r)),
        reissued_(prometheus::BuildCounter().Name("rlhf_learner_prompts_reissued_total")
                      .Help("Prompts re-issued after expiry or staleness").Register(r).Add({})),
        staleness_(prometheus::BuildHistogram().Name("rlhf_learner_trajectory_staleness_versions")
                       .Help("Versions between sampling and acceptance").Register(r)
                       .Add({}, prometheus::Histogram::BucketBoundaries{0, 1, 2, 3, 5, 8})),
        sync_seconds_(prometheus::BuildHistogram().Name("rlhf_learner_weight_sync_seconds")
                          .Help("Weight distribution time per version").Register(r)
                          .Add({}, prometheus::Histogram::BucketBoundaries{
                                       0.001, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30})),
        sync_bytes_(prometheus::BuildCounter().Name("rlhf_learner_weight_sync_bytes_total")
                        .Help("Weight bytes handed to the transport").Register(r).Add({})),
        batches_dropped_(prometheus::BuildCounter().Name("rlhf_learner_batches_dropped_total")
                             .Help("Batches the trainer refused; their prompts were re-issued")
                             .Register(r).Add({})),
        nonfinite_(prometheus::BuildCounter().Name("rlhf_learner_nonfinite_updates_total")
                       .Help("Optimizer steps skipped for a non-finite loss or gradient")
                       .Register(r).Add({})) {}

  void ObserveStaleness(int64_t s) { staleness_.Observe(static_cast<double>(s)); }
  void ObserveSync(double seconds) { sync_seconds_.Observe(seconds); }

  void Refresh(const rlhf::v1::LearnerStats& s, const weights::PublisherStats& p) {
    absl::MutexLock l(&mu_);
    Bump(steps_, s.step(), last_.step());
    version_.Set(static_cast<double>(s.policy_version()));
    actors_.Set(s.actors_connected());
    Bump(traj_.Add({{"outcome", "accepted"}}), s.trajectories_accepted(), last_.trajectories_accepted());
    Bump(traj_.Add({{"outcome", "dropped_stale"}}), s.trajectories_dropped_stale(),
         last_.trajectories_dropped_stale());
    Bump(traj_.Add({{"outcome", "rejected"}}), s.trajectories_rejected(), last_.trajectories_rejected());
    Bump(traj_.Add({{"outcome", "trained"}}), s.trajectories_trained(), last_.trajectories_trained());
    Bump(leases_.Add({{"event", "issued"}}), s.leases_issued(), last_.leases_issued());
    Bump(leases_.Add({{"event", "expired"}}), s.leases_expired(), last_.leases_expired());
    Bump(leases_.Add({{"event", "completed"}}), s.leases_completed(), last_.leases_completed());
    Bump(reissued_, s.prompts_reissued(), last_.prompts_reissued());
    Bump(sync_bytes_, p.bytes, last_bytes_);
    Bump(batches_dropped_, s.batches_dropped(), last_.batches_dropped());
    Bump(nonfinite_, s.nonfinite_updates_skipped(), last_.nonfinite_updates_skipped());
    last_bytes_ = p.bytes;
    if (!s.recent_steps().empty()) {
      for (const auto& [k, v] : s.recent_steps().rbegin()->stats()) stat_.Add({{"name", k}}).Set(v);
    }
    last_ = s;
  }

 private:
  static void Bump(prometheus::Counter& c, int64_t now, int64_t before) {
    if (now > before) c.Increment(static_cast<double>(now - before));
  }
  prometheus::Counter& steps_;
  prometheus::Gauge& version_;
  prometheus::Gauge& actors_;
  prometheus::Family<prometheus::Gauge>& stat_;
  prometheus::Family<prometheus::Counter>& traj_;
  prometheus::Family<prometheus::Counter>& leases_;
  prometheus::Counter& reissued_;
  prometheus::Histogram& staleness_;
  prometheus::Histogram& sync_seconds_;
  prometheus::Counter& sync_bytes_;
  prometheus::Counter& batches_dropped_;
  prometheus::Counter& nonfinite_;
  absl::Mutex mu_;
  rlhf::v1::LearnerStats last_;
  int64_t last_bytes_ = 0;
};

absl::StatusOr<std::unique_ptr<LearnerServer>> LearnerServer::Create(
    const LearnerServerOptions& options, TransformerLM policy,
    std::vector<std::vector<int32_t>> prompts, std::shared_ptr<prometheus::Registry> registry,
    TransformerLM value) {
  RLHF_RETURN_IF_ERROR(ValidateTrainerOptions(options.trainer));
  if (!policy) return absl::InvalidArgumentError("policy: null model");
  if (options.trainer.algorithm == RlAlgorithm::kPpo && !value) {
    return absl::InvalidArgumentError("PPO needs a value model (e.g. the reward model)");
  }
  if (options.checkpoint_every < 1) return absl::InvalidArgumentError("checkpoint_every must be >= 1");
  if (options.trainer.ptx_coef > 0) {
    if (options.pretrain.empty()) {
      return absl::InvalidArgumentError(
          "rl.ptx_coef > 0 but no pretraining texts were given (the ptx term needs them)");
    }
    if (options.ptx_batch_size < 1) return absl::InvalidArgumentError("ptx_batch_size must be >= 1");
    for (size_t i = 0; i < options.pretrain.size(); ++i) {
      if (options.pretrain[i].size() < 2) {
        return absl::InvalidArgumentError(
            absl::StrCat("pretrain text ", i, " has ", options.pretrain[i].size(),
                         " tokens (need >= 2)"));
      }
    }
  }
  return std::unique_ptr<LearnerServer>(
      new LearnerServer(options, std::move(policy), std::move(prompts), std::move(registry),
                        std::move(value)));
}

LearnerServer::LearnerServer(const LearnerServerOptions& options, TransformerLM policy,
                             std::vector<std::vector<int32_t>> prompts,
                             std::shared_ptr<prometheus::Registry> registry,
                             TransformerLM value)
    : options_(options), initial_policy_(std::move(policy)), initial_value_(std::move(value)),
      prompts_(std::move(prompts)), registry_(std::move(registry)) {}

LearnerServer::~LearnerServer() { Shutdown(absl::Now()); }

absl::Status LearnerServer::Start() {
  if (!options_.checkpoint_dir.empty()) {
    RLHF_ASSIGN_OR_RETURN(checkpointer_,
                          LearnerCheckpointer::Create({options_.checkpoint_dir,
                                                       options_.keep_checkpoints,
                                                       options_.tokenizer}));
    store_ = std::make_unique<FileStateStore>(options_.checkpoint_dir +
                                              "/learner_service_state.pb");
  }
  RLHF_ASSIGN_OR_RETURN(handler_, LearnerHandler::Create(options_.handler, prompts_, store_.get()));
  absl::StatusOr<std::string> latest =
      checkpointer_ ? checkpointer_->Latest() : absl::NotFoundError("no checkpoint dir");
  if (latest.ok()) {
    RLHF_ASSIGN_OR_RETURN(RestoredLearner restored, RestoreLearner(*latest, options_.trainer));
    trainer_ = std::move(restored.trainer);
    LOG(INFO) << "learner: restored " << *latest << " (step " << trainer_->step() << ", version "
              << trainer_->policy_version() << ")";
  } else {
    RLHF_ASSIGN_OR_RETURN(trainer_, Trainer::Create(options_.trainer, initial_policy_,
                                                    initial_value_));
    if (checkpointer_) RLHF_RETURN_IF_ERROR(Checkpoint());  // step 0: restart = same init
  }
  RLHF_RETURN_IF_ERROR(handler_->Restore(trainer_->step(), trainer_->policy_version()));
  if (std::string note = handler_->restore_note(); !note.empty()) {
    LOG(WARNING) << "learner: accounting reset (allow_state_reset): " << note;
  }

  RLHF_ASSIGN_OR_RETURN(publisher_, weights::MakeWeightPublisher(options_.weights));
  if (registry_) {
    rpc_metrics_ = std::make_unique<services::RpcMetrics>(*registry_, "learner");
    metrics_ = std::make_unique<LearnerMetrics>(*registry_);
    handler_->set_staleness_hook([m = metrics_.get()](int64_t s) { m->ObserveStaleness(s); });
  }
  rlhf::v1::RegisterResponse tmpl;
  tmpl.set_heartbeat_interval_ms(absl::ToInt64Milliseconds(options_.heartbeat_interval));
  *tmpl.mutable_sampling() = options_.sampling;
  tmpl.set_transport(options_.weights.transport);
  tmpl.set_model_config_json(ModelConfigToJson(trainer_->policy()->config()));
  tmpl.set_kl_estimator(options_.kl_estimator);
  tmpl.set_kl_top_k(options_.kl_top_k);
  service_ = std::make_unique<LearnerServiceImpl>(handler_.get(), publisher_.get(), tmpl,
                                                  options_.grpc.auth_token, rpc_metrics_.get());
  services::GrpcServerOptions grpc = options_.grpc;
  grpc.health_service_names.push_back(rlhf::v1::LearnerService::service_full_name());
  grpc.max_message_bytes =
      std::max(grpc.max_message_bytes, weights::MaxMessageBytesFor(options_.weights.bucket_bytes));
  RLHF_ASSIGN_OR_RETURN(server_, services::GrpcServer::Create(grpc, {service_.get()}));
  RLHF_RETURN_IF_ERROR(PublishCurrent());
  RLHF_RETURN_IF_ERROR(server_->Start());
  if (handler_->done()) done_.Notify();
  train_thread_ = std::thread([this] { TrainLoop(); });
  poll_thread_ = std::thread([this] { PollLoop(); });
  return absl::OkStatus();
}

absl::Status LearnerServer::PublishCurrent() {
  absl::Time start = absl::Now();
  RLHF_ASSIGN_OR_RETURN(auto flat, weights::Flatten(ModelTensors(trainer_->policy()),
                                                    trainer_->policy_version(), &flat_pool_));
  handler_->set_weights_hash(flat->hash);
  publisher_->Publish(std::move(flat));
  if (metrics_) metrics_->ObserveSync(absl::ToDoubleSeconds(absl::Now() - start));
  return absl::OkStatus();
}

absl::Status LearnerServer::Checkpoint() {
  nlohmann::json cursor = {{"service_state", "learner_service_state.pb"},
                           {"step", trainer_->step()}};
  RLHF_ASSIGN_OR_RETURN(std::string dir, checkpointer_->Save(*trainer_, cursor));
  (void)dir;
  last_checkpoint_step_ = trainer_->step();
  if (handler_) return handler_->OnCheckpointed(trainer_->step());
  return absl::OkStatus();
}

std::vector<std::vector<int32_t>> LearnerServer::PtxBatch(int64_t step) const {
  std::vector<std::vector<int32_t>> batch;
  if (options_.trainer.ptx_coef <= 0) return batch;
  const int64_t n = static_cast<int64_t>(options_.pretrain.size());
  for (int64_t i = 0; i < options_.ptx_batch_size; ++i) {
    batch.push_back(options_.pretrain[(step * options_.ptx_batch_size + i) % n]);
  }
  return batch;
}

std::vector<Trajectory> TrajectoriesForStep(const LearnerHandler::Batch& batch,
                                            int64_t trainer_version) {
  std::vector<Trajectory> trajectories;
  for (const auto& g : batch.groups) {
    for (const auto& t : g.trajectories()) {
      Trajectory tr;
      tr.prompt.assign(t.tokens().prompt().begin(), t.tokens().prompt().end());
      tr.response.assign(t.tokens().response().begin(), t.tokens().response().end());
      tr.behaviour_logprobs.assign(t.behaviour_logprobs().begin(), t.behaviour_logprobs().end());
      tr.reference_logprobs.assign(t.ref_logprobs().begin(), t.ref_logprobs().end());
      tr.exact_kl.assign(t.exact_kl().begin(), t.exact_kl().end());
      tr.reward = t.reward();
      tr.policy_version = std::min<int64_t>(t.version().version(), trainer_version);
      tr.group_id = g.prompt().prompt_id();
      trajectories.push_back(std::move(tr));
    }
  }
  return trajectories;
}

void LearnerServer::TrainLoop() {
  while (!stop_.load()) {
    std::optional<LearnerHandler::Batch> batch = handler_->WaitForBatch(options_.poll_interval);
    if (!batch) {
      if (handler_->done() && !done_.HasBeenNotified()) done_.Notify();
      continue;
    }
    std::vector<Trajectory> trajectories = TrajectoriesForStep(*batch, trainer_->policy_version());
    absl::StatusOr<TrainStats> stats = trainer_->Step(trajectories, PtxBatch(trainer_->step()));
    if (!stats.ok()) {
      // The same batch would fail the same way again (Step is deterministic in its
      // input and leaves the trainer unchanged on error): drop it, count it and sample
      // its prompts afresh rather than retrying forever.
      LOG(ERROR) << "learner: step " << batch->step << " refused its batch (dropped, prompts "
                 << "re-issued): " << stats.status();
      {
        absl::MutexLock l(&error_mu_);
        last_error_ = std::string(stats.status().message());
      }
      if (absl::Status s = handler_->OnTrainRejected(*batch, stats.status()); !s.ok()) {
        LOG(ERROR) << "learner: recording the dropped batch: " << s;
      }
      continue;
    }
    if (stats->nonfinite_updates_skipped > 0) {
      LOG(ERROR) << "learner: step " << stats->step << " skipped "
                 << stats->nonfinite_updates_skipped
                 << " optimizer step(s) with a non-finite loss or gradient";
      handler_->AddNonfiniteSkipped(stats->nonfinite_updates_skipped);
    }
    const std::map<std::string, double> m = TrainStatsByName(*stats);
    // Last line of defence: non-finite weights are never published or checkpointed.
    if (!AllFinite(ModelTensors(trainer_->policy()))) {
      LOG(ERROR) << "learner: step " << stats->step << " produced non-finite weights; "
                 << "training stops without publishing them";
      absl::MutexLock l(&error_mu_);
      last_error_ = "non-finite weights after step " + std::to_string(stats->step);
      return;
    }
    // Version and hash become visible together (GetStats), then the weights go out.
    absl::Time flat_start = absl::Now();
    absl::StatusOr<std::shared_ptr<weights::FlatWeights>> flat =
        weights::Flatten(ModelTensors(trainer_->policy()), trainer_->policy_version(),
                         &flat_pool_);
    absl::Status s = flat.status();
    if (s.ok()) s = handler_->OnTrained(*batch, trainer_->policy_version(), m, (*flat)->hash);
    if (s.ok()) {
      publisher_->Publish(*std::move(flat));
      if (metrics_) metrics_->ObserveSync(absl::ToDoubleSeconds(absl::Now() - flat_start));
    }
    const bool last = handler_->done();
    if (s.ok() && checkpointer_ &&
        (last || trainer_->step() % options_.checkpoint_every == 0)) {
      s = Checkpoint();
    }
    LOG(INFO) << "learner: step " << stats->step << " version " << stats->policy_version
              << " reward " << stats->reward_mean << " kl " << stats->kl_mean << " beta "
              << stats->beta << " loss "
              << stats->policy_loss << " (" << stats->seconds << " s)";
    if (!s.ok()) {
      LOG(ERROR) << "learner: after step " << stats->step << ": " << s;
      absl::MutexLock l(&error_mu_);
      last_error_ = std::string(s.message());
    }
    if (last && !done_.HasBeenNotified()) done_.Notify();
  }
}

void LearnerServer::PollLoop() {
  while (!stop_.load()) {
    int expired = handler_->ExpireSilentActors();
    if (expired > 0) LOG(INFO) << "learner: expired " << expired << " lease(s) of silent actors";
    // Actors the handler no longer knows must not hold up collective rounds.
    if (metrics_) metrics_->Refresh(handler_->Stats(), publisher_->stats());
    absl::SleepFor(options_.poll_interval);
  }
}

bool LearnerServer::WaitDone(absl::Duration timeout) {
  return done_.WaitForNotificationWithTimeout(timeout);
}

void LearnerServer::Shutdown(absl::Time deadline) {
  if (stop_.exchange(true)) return;
  if (server_) server_->Shutdown(deadline);
  if (train_thread_.joinable()) train_thread_.join();
  if (poll_thread_.joinable()) poll_thread_.join();
  // A graceful stop keeps every trained step: without this a restart would redo up
  // to checkpoint_every - 1 of them.
  if (checkpointer_ && trainer_ && trainer_->step() != last_checkpoint_step_) {
    if (absl::Status s = Checkpoint(); !s.ok()) {
      LOG(ERROR) << "learner: final checkpoint at step " << trainer_->step() << ": " << s;
    } else {
      LOG(INFO) << "learner: final checkpoint at step " << trainer_->step();
    }
  }
  if (publisher_) publisher_->Shutdown();
}

int LearnerServer::port() const { return server_ ? server_->port() : 0; }
bool LearnerServer::FinalStatsPending() const {
  return service_ != nullptr &&
         service_->StatsPollerWaiting(absl::Now(), options_.stats_poller_window);
}
std::string LearnerServer::rendezvous_address() const {
  return publisher_ ? publisher_->rendezvous_address() : "";
}
std::string LearnerServer::last_error() const {
  absl::MutexLock l(&error_mu_);
  return last_error_;
}

}  // namespace rlhf::learner
