#include "core/rl_training/rl_experiment.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/tokenizer/model_dir.h"
#include "core/tokenizer/tokenizer.h"
#include "core/status_macros.h"
#include "core/train/training_common.h"

namespace rlhf {
namespace {

namespace fs = std::filesystem;

absl::StatusOr<LoadedCheckpoint> CopyCheckpoint(const std::string& dir) {
  return LoadCheckpoint(dir);
}

}  // namespace

absl::StatusOr<PreparedModels> PrepareModels(const RlExperimentOptions& options) {
  if (options.workdir.empty()) return absl::InvalidArgumentError("workdir is empty");
  PreparedModels out;
  RLHF_ASSIGN_OR_RETURN(out.task, GenerateBuiltinTask(options.task));
  // options.model is a fresh byte-vocabulary model, so the byte tokenizer is its tokenizer
  // for SFT and RM training; the checkpoints record it, and what follows reads it back.
  const ByteTokenizer byte_tokenizer;
  const std::string sft_dir = options.workdir + "/sft";
  const std::string rm_dir = options.workdir + "/rm";
  const ProgressFn progress = options.quiet ? ProgressFn() : ProgressFn([](const TrainProgress& p) {
    fprintf(stderr, "%s\n", FormatProgress(p).c_str());
  });
  const bool cached = fs::exists(sft_dir + "/model.safetensors") &&
                      fs::exists(rm_dir + "/model.safetensors");
  if (!cached) {
    std::error_code ec;
    fs::create_directories(options.workdir, ec);
    SftOptions sft = options.sft;
    sft.out_dir = sft_dir;
    RLHF_RETURN_IF_ERROR(ValidateModelConfig(options.model));
    // Seed the initialisation explicitly: the global generator's state here depends on
    // whatever the process drew before (the benchmark's timed sgemm loop draws a
    // time-dependent amount), which made SFT, and everything after it, differ run to run.
    torch::manual_seed(options.sft.seed);
    TransformerLM policy(options.model);
    RLHF_ASSIGN_OR_RETURN(std::unique_ptr<SftTrainer> sft_trainer,
                          SftTrainer::Create(policy, byte_tokenizer, sft, out.task.sft,
                                             out.task.sft_heldout));
    RLHF_RETURN_IF_ERROR(sft_trainer->Train(progress).status());
    RLHF_ASSIGN_OR_RETURN(LoadedCheckpoint sft_ckpt, LoadCheckpoint(sft_dir));
    RLHF_ASSIGN_OR_RETURN(TransformerLM rm, RewardModelFromSft(sft_ckpt, options.rm.seed));
    RewardOptions rm_options = options.rm;
    rm_options.out_dir = rm_dir;
    std::vector<RankedRecord> rank = out.task.rank;
    if (options.label_prompts > 0) {
      std::vector<std::string> prompts;
      for (const RankedRecord& r : out.task.rank) {
        if (static_cast<int64_t>(prompts.size()) == options.label_prompts) break;
        prompts.push_back(r.prompt);
      }
      PolicyLabelStats stats;
      RLHF_ASSIGN_OR_RETURN(std::vector<RankedRecord> labelled,
                            RankPolicySamples(sft_ckpt.model, byte_tokenizer, prompts, options.label,
                                              &stats));
      if (!options.quiet) {
        fprintf(stderr, "label: %lld SFT samples (gold %.3f) -> %lld rankings\n",
                static_cast<long long>(stats.samples), stats.mean_gold,
                static_cast<long long>(stats.records));
      }
      rank.insert(rank.end(), labelled.begin(), labelled.end());
    }
    RLHF_ASSIGN_OR_RETURN(std::unique_ptr<RewardTrainer> rm_trainer,
                          RewardTrainer::Create(rm, byte_tokenizer, rm_options, rank,
                                                out.task.rank_heldout));
    RLHF_ASSIGN_OR_RETURN(RewardResult rm_result, rm_trainer->Train(progress));
    if (!options.quiet) {
      fprintf(stderr, "rm: held-out pairwise accuracy %.3f over %lld pairs\n",
              rm_result.heldout_accuracy, static_cast<long long>(rm_result.heldout_pairs));
    }
  }
  RLHF_ASSIGN_OR_RETURN(out.sft, CopyCheckpoint(sft_dir));
  RLHF_ASSIGN_OR_RETURN(out.rm, CopyCheckpoint(rm_dir));
  out.rm_mean = out.rm.metadata.value("reward_mean", 0.0);
  out.rm_std = out.rm.metadata.value("reward_std", 1.0);
  RLHF_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer,
                        LoadTokenizerForModel(sft_dir, out.sft.config.vocab_size));
  for (const PromptRecord& r : out.task.rl_train) {
    out.rl_prompts.push_back(EncodePrompt(*tokenizer, r.prompt));
  }
  std::vector<std::string> texts;
  for (const TextRecord& r : out.task.pretrain) texts.push_back(r.text);
  out.pretrain = EncodePretrainTexts(*tokenizer, texts, out.sft.config.max_seq_len);
  for (const PromptRecord& r : out.task.rl_heldout) out.heldout_prompts.push_back(r.prompt);
  if (options.eval_prompts >= 0 &&
      static_cast<int64_t>(out.heldout_prompts.size()) > options.eval_prompts) {
    out.heldout_prompts.resize(options.eval_prompts);
  }
  return out;
}

absl::StatusOr<RlRunResult> RunRl(const PreparedModels& models, const RlExperimentOptions& options,
                                  const TrainerOptions& trainer_options_in,
                                  const InProcessLoopOptions& loop_options_in,
                                  bool evaluate_before) {
  // Fresh copies: the prepared checkpoints stay untouched for the next run.
  RLHF_ASSIGN_OR_RETURN(LoadedCheckpoint policy, LoadCheckpoint(options.workdir + "/sft"));
  RLHF_ASSIGN_OR_RETURN(LoadedCheckpoint reference, LoadCheckpoint(options.workdir + "/sft"));
  RLHF_ASSIGN_OR_RETURN(LoadedCheckpoint rm, LoadCheckpoint(options.workdir + "/rm"));
  // BOS/EOS/PAD come from the checkpoints' tokenizers: the policy's pads the trainer's
  // batches and its EOS always ends a response; the RM pads with its own.
  RLHF_ASSIGN_OR_RETURN(std::shared_ptr<const Tokenizer> tokenizer,
                        LoadTokenizerForModel(options.workdir + "/sft", policy.config.vocab_size));
  RLHF_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> rm_tokenizer,
                        LoadTokenizerForModel(options.workdir + "/rm", rm.config.vocab_size));
  TrainerOptions trainer_options = trainer_options_in;
  trainer_options.pad_id = tokenizer->pad_id();
  InProcessLoopOptions loop_options = loop_options_in;
  loop_options.tokenizer = tokenizer;
  std::vector<int32_t>& stops = loop_options.sampling.stop_tokens;
  if (tokenizer->eos_id() >= 0 &&
      std::find(stops.begin(), stops.end(), tokenizer->eos_id()) == stops.end()) {
    stops.push_back(tokenizer->eos_id());
  }
  TransformerLM value{nullptr};
  if (trainer_options.algorithm == RlAlgorithm::kPpo) {
    RLHF_ASSIGN_OR_RETURN(LoadedCheckpoint v, LoadCheckpoint(options.workdir + "/rm"));
    value = v.model;
  }
  PolicyEvalOptions eval = options.eval;
  eval.rm_mean = models.rm_mean;
  eval.rm_std = models.rm_std;
  RlRunResult result;
  reference.model->eval();
  rm.model->eval();
  if (evaluate_before) {
    RLHF_ASSIGN_OR_RETURN(result.before,
                          EvaluatePolicy(policy.model, &reference.model, &rm.model, *tokenizer,
                                         models.heldout_prompts, eval));
  }
  RLHF_ASSIGN_OR_RETURN(std::unique_ptr<Trainer> trainer,
                        Trainer::Create(trainer_options, policy.model, value));
  RLHF_ASSIGN_OR_RETURN(
      std::unique_ptr<InProcessLoop> loop,
      InProcessLoop::Create(loop_options, std::move(trainer), reference.model,
                            RewardModelScorer(rm.model, models.rm_mean, models.rm_std,
                                              rm_tokenizer->pad_id()),
                            models.rl_prompts, models.pretrain));
  const absl::Time start = absl::Now();
  RLHF_RETURN_IF_ERROR(loop->Run([&](const LoopStepStats& s) {
    result.steps.push_back(s);
    result.learner_tokens += s.train.tokens_processed;
    result.learner_seconds += s.train_seconds;
  }));
  result.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  result.learner_flops = 6.0 * static_cast<double>(CountParameters(models.sft.config)) *
                         static_cast<double>(result.learner_tokens);
  TransformerLM& final_policy = loop->trainer().policy();
  final_policy->eval();
  RLHF_ASSIGN_OR_RETURN(result.after,
                        EvaluatePolicy(final_policy, &reference.model, &rm.model, *tokenizer,
                                       models.heldout_prompts, eval));
  final_policy->train();
  return result;
}

}  // namespace rlhf
