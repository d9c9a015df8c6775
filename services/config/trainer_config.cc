#include "services/config/trainer_config.h"

#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/data/builtin_task.h"
#include "core/data/jsonl.h"
#include "core/tokenizer/tokenizer.h"
#include "core/status_macros.h"
#include "core/train/training_common.h"

namespace rlhf {

absl::StatusOr<TrainerOptions> TrainerOptionsFromConfig(const rlhf::v1::RlConfig& rl,
                                                        const rlhf::v1::SamplingConfig& sampling,
                                                        uint64_t seed) {
  TrainerOptions o;
  switch (rl.algorithm()) {
    case rlhf::v1::ALGORITHM_UNSPECIFIED:
    case rlhf::v1::ALGORITHM_REINFORCE: o.algorithm = RlAlgorithm::kReinforce; break;
    case rlhf::v1::ALGORITHM_RLOO: o.algorithm = RlAlgorithm::kRloo; break;
    case rlhf::v1::ALGORITHM_GRPO: o.algorithm = RlAlgorithm::kGrpo; break;
    case rlhf::v1::ALGORITHM_PPO: o.algorithm = RlAlgorithm::kPpo; break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("rl.algorithm: unknown value ", rl.algorithm()));
  }
  o.epochs = rl.epochs();
  o.minibatch_size = rl.minibatch_size();
  o.grad_accum = rl.grad_accum();
  o.lr = rl.lr();
  o.weight_decay = rl.weight_decay();
  o.grad_clip = rl.grad_clip();
  o.warmup_steps = rl.warmup_steps();
  o.decay_steps = rl.decay_steps();
  const rlhf::v1::KlConfig& kl = rl.kl();
  switch (kl.placement()) {
    case rlhf::v1::KL_PLACEMENT_UNSPECIFIED:
    case rlhf::v1::KL_PLACEMENT_IN_REWARD: o.kl_placement = KlPlacementMode::kInReward; break;
    case rlhf::v1::KL_PLACEMENT_IN_LOSS: o.kl_placement = KlPlacementMode::kInLoss; break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("rl.kl.placement: unknown value ", kl.placement()));
  }
  switch (kl.estimator()) {
    case rlhf::v1::KL_ESTIMATOR_CHOICE_UNSPECIFIED:
    case rlhf::v1::KL_ESTIMATOR_CHOICE_K1: o.kl_estimator = KlEstimator::kK1; break;
    case rlhf::v1::KL_ESTIMATOR_CHOICE_K2: o.kl_estimator = KlEstimator::kK2; break;
    case rlhf::v1::KL_ESTIMATOR_CHOICE_K3: o.kl_estimator = KlEstimator::kK3; break;
    case rlhf::v1::KL_ESTIMATOR_CHOICE_EXACT: o.kl_estimator = KlEstimator::kExact; break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("rl.kl.estimator: unknown value ", kl.estimator()));
  }
  o.kl.initial_beta = kl.beta();
  o.kl.adaptive = kl.adaptive();
  o.kl.target = kl.target();
  o.kl.horizon = kl.horizon();
  o.ptx_coef = rl.ptx_coef();
  o.entropy_coef = rl.entropy_coef();
  o.clip_eps = rl.clip_eps();
  o.value_clip_eps = rl.value_clip_eps();
  o.value_coef = rl.value_coef();
  o.gamma = rl.gamma();
  o.lam = rl.lam();
  o.is_truncation = rl.is_truncation();
  o.baseline_decay = rl.baseline_decay();
  o.aggregation = rl.loss_aggregation() == rlhf::v1::LOSS_AGGREGATION_SEQUENCE_MEAN
                      ? LossAggregation::kSequenceMean
                      : LossAggregation::kTokenMean;
  o.grpo_eps = rl.grpo_eps();
  o.whiten_advantages = rl.whiten_advantages();
  o.temperature = sampling.temperature() > 0 ? sampling.temperature() : 1.0;
  o.seed = seed;
  // Empty = a bare RlConfig (tests): the documented default fp32.
  if (rl.train_dtype() == "bf16") {
    o.train_dtype = torch::kBFloat16;
  } else if (!rl.train_dtype().empty() && rl.train_dtype() != "fp32") {
    return absl::InvalidArgumentError(
        absl::StrCat("rl.train_dtype: must be fp32 or bf16, got '", rl.train_dtype(), "'"));
  }
  RLHF_RETURN_IF_ERROR(ValidateTrainerOptions(o));
  return o;
}

absl::StatusOr<InProcessLoopOptions> LoopOptionsFromConfig(const rlhf::v1::JobConfig& job) {
  InProcessLoopOptions o;
  const rlhf::v1::RlConfig& rl = job.rl();
  o.steps = rl.steps();
  o.prompts_per_step = rl.prompts_per_step();
  o.samples_per_prompt = rl.samples_per_prompt();
  o.ptx_batch_size = rl.ptx_batch_size();
  o.checkpoint_every = rl.checkpoint_every();
  o.keep_checkpoints = rl.keep_checkpoints();
  o.seed = job.seed();
  if (!job.run_dir().empty()) o.checkpoint_dir = job.run_dir() + "/learner";
  RLHF_ASSIGN_OR_RETURN(o.sampling, SamplingOptionsFromConfig(job.sampling()));
  if (o.steps < 0) return absl::InvalidArgumentError("rl.steps must be >= 0");
  if (o.prompts_per_step < 1) return absl::InvalidArgumentError("rl.prompts_per_step must be >= 1");
  if (o.samples_per_prompt < 1) return absl::InvalidArgumentError("rl.samples_per_prompt must be >= 1");
  if (o.keep_checkpoints < 1) return absl::InvalidArgumentError("rl.keep_checkpoints must be >= 1");
  return o;
}

namespace {

// <data.dir>/<name> when the job has a data dir and the file exists, else "".
std::string ExistingDataFile(const rlhf::v1::JobConfig& job, const std::string& name) {
  if (job.data().dir().empty()) return "";
  const std::string path = job.data().dir() + "/" + name;
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return "";
  std::fclose(f);
  return path;
}

absl::StatusOr<BuiltinTask> GenerateJobTask(const rlhf::v1::JobConfig& job) {
  BuiltinTaskOptions opts;
  opts.seed = job.data().seed();
  if (job.data().num_rl_train() > 0) opts.num_rl_train = job.data().num_rl_train();
  if (job.data().num_pretrain() > 0) opts.num_pretrain = job.data().num_pretrain();
  return GenerateBuiltinTask(opts);
}

}  // namespace

absl::StatusOr<std::vector<std::vector<int32_t>>> RlPromptsFromConfig(
    const rlhf::v1::JobConfig& job, const Tokenizer& tokenizer, const std::string& path) {
  const std::string file = path.empty() ? ExistingDataFile(job, "rl_train.jsonl") : path;
  std::vector<std::vector<int32_t>> prompts;
  if (!file.empty()) {
    RLHF_ASSIGN_OR_RETURN(std::vector<PromptRecord> records, ReadPromptJsonl(file));
    for (const PromptRecord& r : records) prompts.push_back(EncodePrompt(tokenizer, r.prompt));
    return prompts;
  }
  if (job.data().task() != "builtin") {
    return absl::FailedPreconditionError(absl::StrCat(
        "data.dir: ", job.data().dir(), "/rl_train.jsonl missing (run the data stage first)"));
  }
  RLHF_ASSIGN_OR_RETURN(BuiltinTask task, GenerateJobTask(job));
  for (const PromptRecord& r : task.rl_train) prompts.push_back(EncodePrompt(tokenizer, r.prompt));
  return prompts;
}

absl::StatusOr<std::vector<std::vector<int32_t>>> PretrainFromConfig(
    const rlhf::v1::JobConfig& job, const Tokenizer& tokenizer, int64_t max_seq_len) {
  std::string source = ExistingDataFile(job, "pretrain.jsonl");
  std::vector<std::string> texts;
  if (!source.empty()) {
    RLHF_ASSIGN_OR_RETURN(std::vector<TextRecord> records, ReadTextJsonl(source));
    for (TextRecord& r : records) texts.push_back(std::move(r.text));
  } else if (job.data().task() != "builtin") {
    return absl::InvalidArgumentError(
        "rl.ptx_coef > 0 needs pretraining text: set data.pretrain.files");
  } else {
    source = "the built-in task";
    RLHF_ASSIGN_OR_RETURN(BuiltinTask task, GenerateJobTask(job));
    for (TextRecord& r : task.pretrain) texts.push_back(std::move(r.text));
  }
  std::vector<std::vector<int32_t>> pretrain = EncodePretrainTexts(tokenizer, texts, max_seq_len);
  if (pretrain.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rl.ptx_coef > 0 but no pretraining text of ", source, " fits in ", max_seq_len,
        " tokens"));
  }
  return pretrain;
}

}  // namespace rlhf
