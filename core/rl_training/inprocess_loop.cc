#include "core/rl_training/inprocess_loop.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <utility>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/model/chunked_unembedding.h"
#include "core/model/logprobs.h"
#include "core/status_macros.h"
#include "core/util/splitmix.h"

namespace rlhf {
namespace {

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return absl::StrCat(s / 3600, "h", (s % 3600) / 60, "m");
  if (s >= 60) return absl::StrCat(s / 60, "m", s % 60, "s");
  return absl::StrCat(s, "s");
}

}  // namespace

RewardFn RewardModelScorer(TransformerLM rm, double mean, double std, int32_t pad_id,
                           int64_t batch_size) {
  rm->eval();
  return [rm, mean, std, pad_id, batch_size](
             const std::vector<std::vector<int32_t>>& prompts,
             const std::vector<std::vector<int32_t>>& responses)
             mutable -> absl::StatusOr<std::vector<float>> {
    if (prompts.size() != responses.size()) {
      return absl::InvalidArgumentError("reward: prompts and responses differ in count");
    }
    std::vector<float> out;
    out.reserve(prompts.size());
    for (size_t start = 0; start < prompts.size(); start += batch_size) {
      const size_t end = std::min(prompts.size(), start + static_cast<size_t>(batch_size));
      std::vector<std::vector<int32_t>> p(prompts.begin() + start, prompts.begin() + end);
      std::vector<std::vector<int32_t>> r(responses.begin() + start, responses.begin() + end);
      SequenceBatchOptions o;
      o.pad_id = pad_id;
      o.max_len = rm->config().max_seq_len;
      RLHF_ASSIGN_OR_RETURN(SequenceBatch b, MakeSequenceBatch(p, r, o));
      RLHF_ASSIGN_OR_RETURN(torch::Tensor scores, TorchCall([&] {
        torch::NoGradGuard no_grad;
        const ForwardOutput f = rm->forward(b.ids, b.attention_mask, b.position_ids);
        return ((ScoreAtLastToken(f.scalar, b.attention_mask) - mean) / std)
            .to(torch::kFloat32)
            .contiguous();
      }, "reward model"));
      const float* s = scores.data_ptr<float>();
      out.insert(out.end(), s, s + scores.numel());
    }
    return out;
  };
}

nlohmann::json PromptCursor::ToJson() const {
  return {{"epoch", epoch}, {"position", position}, {"ptx_position", ptx_position}};
}

absl::StatusOr<PromptCursor> PromptCursor::FromJson(const nlohmann::json& j) {
  PromptCursor c;
  const absl::Status s = TorchCall([&] {
    c.epoch = j.at("epoch").get<int64_t>();
    c.position = j.at("position").get<int64_t>();
    c.ptx_position = j.at("ptx_position").get<int64_t>();
  }, "prompt cursor");
  if (!s.ok()) return absl::InvalidArgumentError(s.message());
  if (c.epoch < 0 || c.position < 0 || c.ptx_position < 0) {
    return absl::InvalidArgumentError("prompt cursor: negative field");
  }
  return c;
}

InProcessLoop::InProcessLoop(const InProcessLoopOptions& options, std::unique_ptr<Trainer> trainer,
                             TransformerLM reference, RewardFn reward,
                             std::vector<std::vector<int32_t>> prompts,
                             std::vector<std::vector<int32_t>> pretrain)
    : options_(options),
      trainer_(std::move(trainer)),
      reference_(std::move(reference)),
      reward_(std::move(reward)),
      prompts_(std::move(prompts)),
      pretrain_(std::move(pretrain)) {}

absl::StatusOr<std::unique_ptr<InProcessLoop>> InProcessLoop::Create(
    const InProcessLoopOptions& options, std::unique_ptr<Trainer> trainer,
    TransformerLM reference, RewardFn reward, std::vector<std::vector<int32_t>> prompts,
    std::vector<std::vector<int32_t>> pretrain) {
  if (!trainer) return absl::InvalidArgumentError("trainer is null");
  if (!reference) return absl::InvalidArgumentError("reference model is null");
  if (!reward) return absl::InvalidArgumentError("reward function is empty");
  if (prompts.empty()) return absl::InvalidArgumentError("prompts is empty");
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].empty()) return absl::InvalidArgumentError(absl::StrCat("prompts[", i, "] is empty"));
  }
  if (options.steps < 0) return absl::InvalidArgumentError("rl.steps must be >= 0");
  if (options.prompts_per_step < 1) return absl::InvalidArgumentError("rl.prompts_per_step must be >= 1");
  if (options.samples_per_prompt < 1) {
    return absl::InvalidArgumentError("rl.samples_per_prompt must be >= 1");
  }
  RLHF_RETURN_IF_ERROR(ValidateSamplingOptions(options.sampling));
  if (trainer->options().ptx_coef > 0 && pretrain.empty()) {
    return absl::InvalidArgumentError("rl.ptx_coef > 0 but no pretraining texts were given");
  }
  std::unique_ptr<InProcessLoop> loop(new InProcessLoop(options, std::move(trainer),
                                                        std::move(reference), std::move(reward),
                                                        std::move(prompts), std::move(pretrain)));
  loop->reference_->eval();
  if (!options.checkpoint_dir.empty()) {
    RLHF_ASSIGN_OR_RETURN(loop->checkpointer_,
                          LearnerCheckpointer::Create({options.checkpoint_dir, options.keep_checkpoints,
                                                       options.tokenizer}));
    if (options.resume) {
      absl::StatusOr<std::string> latest = loop->checkpointer_->Latest();
      if (latest.ok()) {
        RLHF_ASSIGN_OR_RETURN(RestoredLearner restored,
                              RestoreLearner(*latest, loop->trainer_->options()));
        RLHF_ASSIGN_OR_RETURN(loop->cursor_, PromptCursor::FromJson(restored.cursor));
        loop->trainer_ = std::move(restored.trainer);
        fprintf(stderr, "rl: resumed from %s at step %lld\n", latest->c_str(),
                static_cast<long long>(loop->trainer_->step()));
      } else if (latest.status().code() != absl::StatusCode::kNotFound) {
        return latest.status();
      }
    }
  }
  loop->order_ = loop->Permutation(loop->cursor_.epoch);
  return loop;
}

std::vector<int64_t> InProcessLoop::Permutation(int64_t epoch) const {
  std::vector<int64_t> order(prompts_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  std::mt19937_64 rng(SplitMix64(options_.seed * 7919 + static_cast<uint64_t>(epoch)));
  // Own Fisher-Yates: std::shuffle's algorithm is implementation-defined.
  for (size_t i = order.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(rng() % i);
    std::swap(order[i - 1], order[j]);
  }
  return order;
}

std::vector<std::vector<int32_t>> InProcessLoop::NextPrompts() {
  std::vector<std::vector<int32_t>> out;
  while (static_cast<int64_t>(out.size()) < options_.prompts_per_step) {
    if (cursor_.position >= static_cast<int64_t>(order_.size())) {
      ++cursor_.epoch;
      cursor_.position = 0;
      order_ = Permutation(cursor_.epoch);
    }
    out.push_back(prompts_[order_[cursor_.position++]]);
  }
  return out;
}

std::vector<std::vector<int32_t>> InProcessLoop::NextPretrain() {
  std::vector<std::vector<int32_t>> out;
  if (trainer_->options().ptx_coef <= 0 || pretrain_.empty()) return out;
  for (int64_t i = 0; i < options_.ptx_batch_size; ++i) {
    out.push_back(pretrain_[cursor_.ptx_position % pretrain_.size()]);
    ++cursor_.ptx_position;
  }
  return out;
}

absl::StatusOr<LoopStepStats> InProcessLoop::RunStep() {
  LoopStepStats stats;
  const PromptCursor cursor_before = cursor_;
  const std::vector<int64_t> order_before = order_;
  auto rollback = [&](absl::Status s) {
    cursor_ = cursor_before;
    order_ = order_before;
    return s;
  };
  const std::vector<std::vector<int32_t>> step_prompts = NextPrompts();
  const std::vector<std::vector<int32_t>> ptx = NextPretrain();
  const int64_t g = options_.samples_per_prompt;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<uint64_t> seeds;
  std::vector<int64_t> groups;
  const uint64_t step_key =
      SplitMix64(options_.seed ^ SplitMix64(static_cast<uint64_t>(trainer_->step())));
  for (size_t i = 0; i < step_prompts.size(); ++i) {
    for (int64_t s = 0; s < g; ++s) {
      seeds.push_back(SplitMix64(step_key + prompts.size()));
      prompts.push_back(step_prompts[i]);
      groups.push_back(static_cast<int64_t>(i));
    }
  }

  const bool exact_kl = trainer_->options().kl_estimator == KlEstimator::kExact;
  absl::Time t0 = absl::Now();
  absl::StatusOr<GenerationResult> gen = [&]() -> absl::StatusOr<GenerationResult> {
    torch::NoGradGuard no_grad;
    SamplingOptions sampling = options_.sampling;
    // kl.estimator exact: the sampling distribution's full row per step.
    if (exact_kl) sampling.return_top_k_distributions = trainer_->policy()->config().vocab_size;
    return Generate(trainer_->policy(), prompts, seeds, sampling);
  }();
  if (!gen.ok()) return rollback(gen.status());
  stats.generate_seconds = absl::ToDoubleSeconds(absl::Now() - t0);

  t0 = absl::Now();
  SequenceBatchOptions sbo;
  sbo.pad_id = trainer_->options().pad_id;
  sbo.max_len = reference_->config().max_seq_len;
  absl::StatusOr<SequenceBatch> packed = MakeSequenceBatch(prompts, gen->responses, sbo);
  if (!packed.ok()) return rollback(packed.status());
  std::vector<std::vector<float>> exact(prompts.size());
  absl::StatusOr<std::vector<std::vector<float>>> ref_lp = TorchCall([&] {
    torch::NoGradGuard no_grad;
    const torch::Tensor hidden =
        reference_->forward_hidden(packed->ids, packed->attention_mask, packed->position_ids)
            .hidden;
    const double temp = LogProbTemperature(options_.sampling);
    if (exact_kl) {  // as the reference server does, from the same forward
      const int64_t V = reference_->config().vocab_size;
      for (size_t b = 0; b < prompts.size(); ++b) {
        const int64_t n = static_cast<int64_t>(gen->responses[b].size());
        if (n == 0) continue;
        const torch::Tensor ref_rows = at::log_softmax(
            reference_->Unembed(hidden[b].narrow(0, packed->prompt_lengths[b] - 1, n))
                    .to(torch::kFloat) /
                temp,
            -1);
        torch::Tensor policy = torch::empty({n, V}, torch::kFloat);
        for (int64_t t = 0; t < n; ++t) {
          const TopKDistribution& d = gen->top_k[b][t];
          float* row = policy[t].data_ptr<float>();
          for (size_t i = 0; i < d.ids.size(); ++i) row[d.ids[i]] = d.logprobs[i];
        }
        const torch::Tensor kl = ExactKlFull(policy, ref_rows).contiguous();
        exact[b].assign(kl.data_ptr<float>(), kl.data_ptr<float>() + n);
      }
    }
    return PerSequenceResponseValues(
        ResponseLogProbsFromHidden(hidden, reference_->unembedding(), *packed, temp,
                                   /*with_entropy=*/false)
            .logp,
        *packed);
  }, "reference model");
  if (!ref_lp.ok()) return rollback(ref_lp.status());
  absl::StatusOr<std::vector<float>> rewards = reward_(prompts, gen->responses);
  if (!rewards.ok()) return rollback(rewards.status());
  if (rewards->size() != prompts.size()) {
    return rollback(absl::InternalError("reward function returned the wrong number of scores"));
  }
  stats.score_seconds = absl::ToDoubleSeconds(absl::Now() - t0);

  std::vector<Trajectory> batch(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    Trajectory& t = batch[i];
    t.prompt = prompts[i];
    t.response = gen->responses[i];
    t.behaviour_logprobs = gen->logprobs[i];
    t.reference_logprobs = (*ref_lp)[i];
    t.exact_kl = std::move(exact[i]);
    t.reward = (*rewards)[i];
    t.policy_version = trainer_->policy_version();
    t.group_id = groups[i];
    stats.generated_tokens += static_cast<int64_t>(t.response.size());
  }
  stats.mean_response_length =
      static_cast<double>(stats.generated_tokens) / std::max<size_t>(1, prompts.size());
  t0 = absl::Now();
  absl::StatusOr<TrainStats> train = trainer_->Step(batch, ptx);
  if (!train.ok()) return rollback(train.status());
  stats.train_seconds = absl::ToDoubleSeconds(absl::Now() - t0);
  stats.train = *train;
  return stats;
}

absl::StatusOr<std::string> InProcessLoop::Checkpoint() {
  if (!checkpointer_) return std::string();
  return checkpointer_->Save(*trainer_, cursor_.ToJson());
}

absl::Status InProcessLoop::Run(const std::function<void(const LoopStepStats&)>& on_step) {
  const absl::Time start = absl::Now();
  const int64_t first = trainer_->step();
  while (trainer_->step() < options_.steps) {
    RLHF_ASSIGN_OR_RETURN(LoopStepStats s, RunStep());
    if (on_step) on_step(s);
    const int64_t step = trainer_->step();
    const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
    const double per_step = elapsed / static_cast<double>(step - first);
    if (options_.log_every > 0 && (step % options_.log_every == 0 || step == options_.steps)) {
      fprintf(stderr,
              "rl %s step %lld/%lld  reward %.3f±%.3f  kl %.3f (max %.2f)  beta %.4f  "
              "loss %.4f  entropy %.3f  len %.1f  %.2f s/step (gen %.2f, score %.2f, train %.2f)  "
              "%.0f learner tok/s  ETA %s\n",
              std::string(RlAlgorithmName(trainer_->options().algorithm)).c_str(),
              static_cast<long long>(step), static_cast<long long>(options_.steps),
              s.train.reward_mean, s.train.reward_std, s.train.kl_mean, s.train.kl_max,
              s.train.beta, s.train.policy_loss, s.train.entropy, s.mean_response_length,
              per_step, s.generate_seconds, s.score_seconds, s.train_seconds,
              s.train.tokens_processed / std::max(1e-9, s.train_seconds),
              FormatDuration(per_step * static_cast<double>(options_.steps - step)).c_str());
    }
    if (checkpointer_ && options_.checkpoint_every > 0 && step % options_.checkpoint_every == 0) {
      RLHF_RETURN_IF_ERROR(Checkpoint().status());
    }
  }
  if (checkpointer_) RLHF_RETURN_IF_ERROR(Checkpoint().status());
  return absl::OkStatus();
}

}  // namespace rlhf
