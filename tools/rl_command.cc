#include "tools/rl_command.h"

#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/model/checkpoint.h"
#include "core/tokenizer/model_dir.h"
#include "core/tokenizer/tokenizer.h"
#include "core/status_macros.h"
#include "core/rl_training/inprocess_loop.h"
#include "core/rl_training/learner_state.h"
#include "core/rl_training/trainer.h"
#include "services/config/sampling_config.h"
#include "services/config/trainer_config.h"
#include "services/config/config.h"
#include "tools/common_flags.h"
#include "core/model/threads.h"

// Defined by run_command.cc: `rl` reads the same job file and overrides.
ABSL_DECLARE_FLAG(std::string, config);
ABSL_DECLARE_FLAG(std::vector<std::string>, set);

namespace rlhf::tools {
namespace {

absl::StatusOr<LoadedCheckpoint> LoadNamed(const std::string& dir, const char* field) {
  if (dir.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " is empty"));
  absl::StatusOr<LoadedCheckpoint> c = LoadCheckpoint(dir);
  if (!c.ok()) {
    return absl::Status(c.status().code(), absl::StrCat(field, ": ", c.status().message()));
  }
  return c;
}

nlohmann::json StepJson(const LoopStepStats& s) {
  nlohmann::json j = TrainStatsByName(s.train);
  j["step"] = s.train.step;
  j["mean_response_length"] = s.mean_response_length;
  j["generate_seconds"] = s.generate_seconds;
  j["score_seconds"] = s.score_seconds;
  j["train_seconds"] = s.train_seconds;
  return j;
}

absl::Status RunRl(const std::vector<std::string>& args) {
  config::LoadOptions load;
  load.overrides = absl::GetFlag(FLAGS_set);
  for (const std::string& a : args) {
    if (a.find('=') == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument '", a, "' (overrides are path=value)"));
    }
    load.overrides.push_back(a);
  }
  RLHF_ASSIGN_OR_RETURN(rlhf::v1::JobConfig job,
                        config::LoadJobConfig(absl::GetFlag(FLAGS_config), load));
  ConfigureComputeThreads(job.learner().threads() > 0 ? job.learner().threads()
                                                      : absl::GetFlag(FLAGS_threads));

  RLHF_ASSIGN_OR_RETURN(TrainerOptions trainer_options,
                        TrainerOptionsFromConfig(job.rl(), job.sampling(), job.seed()));
  RLHF_ASSIGN_OR_RETURN(InProcessLoopOptions loop_options, LoopOptionsFromConfig(job));
  loop_options.resume = absl::GetFlag(FLAGS_resume);
  loop_options.log_every = std::max<int64_t>(1, job.rl().steps() / 20);
  // Only read here (List / Latest); the loop writes through its own checkpointer.
  std::unique_ptr<LearnerCheckpointer> checkpoints;
  if (!loop_options.checkpoint_dir.empty()) {
    RLHF_ASSIGN_OR_RETURN(checkpoints, LearnerCheckpointer::Create(
                                           {loop_options.checkpoint_dir,
                                            loop_options.keep_checkpoints}));
  }
  if (checkpoints && !loop_options.resume && !checkpoints->List().empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(loop_options.checkpoint_dir,
                     " already holds learner checkpoints: pass --resume to continue them, "
                     "or remove the directory to start over"));
  }

  // Policy and reference both start as the SFT model; separate copies (the reference
  // stays frozen while the policy trains).
  RLHF_ASSIGN_OR_RETURN(LoadedCheckpoint policy,
                        LoadNamed(job.model().sft_checkpoint(), "model.sft_checkpoint"));
  RLHF_ASSIGN_OR_RETURN(LoadedCheckpoint reference,
                        LoadNamed(job.model().sft_checkpoint(), "model.sft_checkpoint"));
  RLHF_ASSIGN_OR_RETURN(LoadedCheckpoint rm,
                        LoadNamed(job.model().rm_checkpoint(), "model.rm_checkpoint"));
  if (!rm.config.scalar_head) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.rm_checkpoint: ", job.model().rm_checkpoint(), " is not a reward model (no scalar head)"));
  }
  TransformerLM value{nullptr};
  if (trainer_options.algorithm == RlAlgorithm::kPpo) {
    // InstructGPT initialises the value function from the reward model.
    RLHF_ASSIGN_OR_RETURN(LoadedCheckpoint v,
                          LoadNamed(job.model().rm_checkpoint(), "model.rm_checkpoint"));
    value = v.model;
  }
  const double rm_mean = rm.metadata.value("reward_mean", 0.0);
  const double rm_std = rm.metadata.value("reward_std", 1.0);

  // The policy's tokenizer (recorded in the SFT checkpoint) encodes the prompts, pads
  // batches and ends responses; the reward model pads with its own.
  RLHF_ASSIGN_OR_RETURN(std::shared_ptr<const Tokenizer> tokenizer,
                        LoadTokenizerForModel(job.model().sft_checkpoint(),
                                              policy.config.vocab_size));
  loop_options.tokenizer = tokenizer;  // each step checkpoint carries it
  RLHF_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> rm_tokenizer,
                        LoadTokenizerForModel(job.model().rm_checkpoint(), rm.config.vocab_size));
  trainer_options.pad_id = tokenizer->pad_id();
  RLHF_ASSIGN_OR_RETURN(loop_options.sampling,
                        SamplingOptionsFromConfig(WithModelEos(job.sampling(), tokenizer->eos_id())));
  RLHF_ASSIGN_OR_RETURN(auto prompts, RlPromptsFromConfig(job, *tokenizer));
  std::vector<std::vector<int32_t>> pretrain;
  if (trainer_options.ptx_coef > 0) {
    RLHF_ASSIGN_OR_RETURN(pretrain,
                          PretrainFromConfig(job, *tokenizer, policy.config.max_seq_len));
  }
  std::fprintf(stderr,
               "rl: in-process %s, %d steps x %d prompts x %d samples, %zu prompts, ptx %s, "
               "checkpoints in %s\n",
               std::string(RlAlgorithmName(trainer_options.algorithm)).c_str(), job.rl().steps(),
               job.rl().prompts_per_step(), job.rl().samples_per_prompt(), prompts.size(),
               pretrain.empty() ? "off" : absl::StrCat(pretrain.size(), " texts").c_str(),
               loop_options.checkpoint_dir.empty() ? "(none)" : loop_options.checkpoint_dir.c_str());

  reference.model->eval();
  rm.model->eval();
  RLHF_ASSIGN_OR_RETURN(std::unique_ptr<Trainer> trainer,
                        Trainer::Create(trainer_options, policy.model, value));
  RLHF_ASSIGN_OR_RETURN(
      std::unique_ptr<InProcessLoop> loop,
      InProcessLoop::Create(loop_options, std::move(trainer), reference.model,
                            RewardModelScorer(rm.model, rm_mean, rm_std, rm_tokenizer->pad_id()),
                            std::move(prompts), std::move(pretrain)));
  nlohmann::json steps = nlohmann::json::array();
  const absl::Time start = absl::Now();
  RLHF_RETURN_IF_ERROR(loop->Run([&](const LoopStepStats& s) { steps.push_back(StepJson(s)); }));
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);

  std::string final_dir;
  if (checkpoints) {
    RLHF_ASSIGN_OR_RETURN(final_dir, checkpoints->Latest());
  }
  std::printf("rl done: step %lld (%zu this run) in %.1fs", static_cast<long long>(loop->trainer().step()),
              steps.size(), seconds);
  if (!steps.empty()) {
    const nlohmann::json& last = steps.back();
    std::printf(", last reward %.4f, KL %.4f nats/seq, beta %.4f", last["reward_mean"].get<double>(),
                last["kl_mean"].get<double>(), last["beta"].get<double>());
  }
  std::printf("\n");
  if (!final_dir.empty()) {
    std::printf("policy: %s/policy\nevaluate against SFT: rlhf run --config %s --stages eval%s\n",
                final_dir.c_str(), absl::GetFlag(FLAGS_config).c_str(),
                load.overrides.empty() ? "" : " --set ...(the same overrides)");
  }
  if (!absl::GetFlag(FLAGS_json_out).empty()) {
    nlohmann::json j = {{"algorithm", std::string(RlAlgorithmName(trainer_options.algorithm))},
                        {"seconds", seconds},
                        {"step", loop->trainer().step()},
                        {"checkpoint", final_dir.empty() ? "" : final_dir + "/policy"},
                        {"steps", steps}};
    RLHF_RETURN_IF_ERROR(WriteText(absl::GetFlag(FLAGS_json_out), j.dump(2) + "\n"));
  }
  return absl::OkStatus();
}

}  // namespace

int RunRlCommand(const std::vector<std::string>& args) {
  absl::Status st = RunRl(args);
  return st.ok() ? 0 : Fail("rl", st);
}

}  // namespace rlhf::tools
