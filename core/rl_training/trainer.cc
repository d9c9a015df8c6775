#include "core/rl_training/trainer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <utility>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/utils/clip_grad.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/model/chunked_unembedding.h"
#include "core/model/compute_dtype.h"
#include "core/model/device.h"
#include "core/model/logprobs.h"
#include "core/model/torch_compat.h"
#include "core/rl/advantages.h"
#include "core/status_macros.h"

namespace rlhf {

std::map<std::string, double> TrainStatsByName(const TrainStats& s) {
  return {{"policy_loss", s.policy_loss},
          {"value_loss", s.value_loss},
          {"ptx_loss", s.ptx_loss},
          {"kl_mean", s.kl_mean},
          {"kl_max", s.kl_max},
          {"beta", s.beta},
          {"next_beta", s.next_beta},
          {"entropy", s.entropy},
          {"clip_fraction", s.clip_fraction},
          {"value_clip_fraction", s.value_clip_fraction},
          {"approx_kl", s.approx_kl},
          {"grad_norm", s.grad_norm},
          {"explained_variance", s.explained_variance},
          {"reward_mean", s.reward_mean},
          {"reward_std", s.reward_std},
          {"advantage_mean", s.advantage_mean},
          {"return_mean", s.return_mean},
          {"mean_staleness", s.mean_staleness},
          {"lr", s.lr},
          {"seconds", s.seconds},
          {"tokens_processed", static_cast<double>(s.tokens_processed)},
          {"nonfinite_updates_skipped", static_cast<double>(s.nonfinite_updates_skipped)}};
}
namespace {

constexpr double kPi = 3.14159265358979323846;

// Rows `rows` of a packed batch, cut to the longest of them (micro-batches of short
// sequences do not pay for the batch's longest row).
SequenceBatch SliceBatch(const SequenceBatch& b, const torch::Tensor& rows) {
  SequenceBatch out;
  const torch::Tensor attn = b.attention_mask.index_select(0, rows);
  const int64_t len = std::max<int64_t>(1, attn.sum(1).max().item<int64_t>());
  out.ids = b.ids.index_select(0, rows).slice(1, 0, len);
  out.attention_mask = attn.slice(1, 0, len);
  out.response_mask = b.response_mask.index_select(0, rows).slice(1, 0, len);
  out.position_ids = b.position_ids.index_select(0, rows).slice(1, 0, len);
  out.target_mask = b.target_mask.index_select(0, rows).slice(1, 0, len);
  out.last_index = b.last_index.index_select(0, rows);
  out.real_tokens = out.attention_mask.sum().item<int64_t>();
  const auto acc = rows.accessor<int64_t, 1>();
  for (int64_t i = 0; i < rows.size(0); ++i) {
    out.prompt_lengths.push_back(b.prompt_lengths[acc[i]]);
    out.response_lengths.push_back(b.response_lengths[acc[i]]);
  }
  return out;
}

torch::Tensor Rows(const torch::Tensor& x, const torch::Tensor& rows, int64_t len) {
  return x.index_select(0, rows).slice(1, 0, len);
}

// Value of the state that emitted each token: scalar output at position t-1.
torch::Tensor ShiftRight(const torch::Tensor& x) {
  return at::cat({torch::zeros({x.size(0), 1}, x.options()), x.slice(1, 0, x.size(1) - 1)}, 1);
}

compat::OptimizerStateKeyType ParamStateKey(const torch::Tensor& p) {
  return compat::OptimizerStateKey(p);
}

// Every parameter float32: the trainer keeps fp32 master weights whatever train_dtype.
absl::Status CheckMasterWeights(const TransformerLM& model, const char* which) {
  for (const auto& item : model->named_parameters()) {
    if (item.value().scalar_type() != torch::kFloat32) {
      return absl::InvalidArgumentError(absl::StrCat(
          which, " parameter ", item.key(), " is ", ComputeDtypeName(item.value().scalar_type()),
          "; the trainer needs fp32 master weights (use rl.train_dtype bf16 for bf16 compute)"));
    }
  }
  return absl::OkStatus();
}

void ExportOptimizer(const std::string& prefix, const TransformerLM& model,
                     const torch::optim::AdamW& opt, TrainerState* state) {
  for (const auto& item : model->named_parameters()) {
    auto it = opt.state().find(ParamStateKey(item.value()));
    if (it == opt.state().end()) continue;
    const auto& s = static_cast<const torch::optim::AdamWParamState&>(*it->second);
    const std::string name = absl::StrCat(prefix, "/", item.key());
    state->optimizer_tensors.emplace_back(name + "/exp_avg", s.exp_avg().detach().clone());
    state->optimizer_tensors.emplace_back(name + "/exp_avg_sq", s.exp_avg_sq().detach().clone());
    state->optimizer_steps_by_param.emplace_back(name, s.step());
  }
}

std::string ToHex(const torch::Tensor& bytes) {
  static const char* kDigits = "0123456789abcdef";
  const torch::Tensor c = bytes.contiguous();
  const uint8_t* p = c.data_ptr<uint8_t>();
  std::string out;
  out.reserve(c.numel() * 2);
  for (int64_t i = 0; i < c.numel(); ++i) {
    out.push_back(kDigits[p[i] >> 4]);
    out.push_back(kDigits[p[i] & 15]);
  }
  return out;
}

absl::StatusOr<torch::Tensor> FromHex(const std::string& hex) {
  if (hex.size() % 2 != 0) return absl::InvalidArgumentError("rng state: odd hex length");
  torch::Tensor out = torch::empty({static_cast<int64_t>(hex.size() / 2)}, torch::kUInt8);
  uint8_t* p = out.data_ptr<uint8_t>();
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 0; i < hex.size(); i += 2) {
    const int hi = nibble(hex[i]), lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) return absl::InvalidArgumentError("rng state: not lower-case hex");
    p[i / 2] = static_cast<uint8_t>(hi * 16 + lo);
  }
  return out;
}

}  // namespace

std::string GeneratorStateHex(const at::Generator& gen) { return ToHex(gen.get_state()); }

absl::Status SetGeneratorStateHex(at::Generator& gen, const std::string& hex) {
  RLHF_ASSIGN_OR_RETURN(torch::Tensor bytes, FromHex(hex));
  return TorchCall([&] { gen.set_state(bytes); }, "rng state");
}

absl::string_view RlAlgorithmName(RlAlgorithm algorithm) {
  switch (algorithm) {
    case RlAlgorithm::kReinforce: return "reinforce";
    case RlAlgorithm::kRloo: return "rloo";
    case RlAlgorithm::kGrpo: return "grpo";
    case RlAlgorithm::kPpo: return "ppo";
  }
  return "reinforce";
}

absl::Status ValidateTrainerOptions(const TrainerOptions& o) {
  auto bad = [](absl::string_view field, absl::string_view want) {
    return absl::InvalidArgumentError(absl::StrCat("rl.", field, " must be ", want));
  };
  if (o.epochs < 1) return bad("epochs", ">= 1");
  if (o.minibatch_size < 1) return bad("minibatch_size", ">= 1");
  if (o.grad_accum < 1) return bad("grad_accum", ">= 1");
  if (!(o.lr > 0) || !std::isfinite(o.lr)) return bad("lr", "> 0 and finite");
  if (!(o.weight_decay >= 0)) return bad("weight_decay", ">= 0");
  if (o.warmup_steps < 0) return bad("warmup_steps", ">= 0");
  if (o.decay_steps < 0) return bad("decay_steps", ">= 0");
  if (!(o.ptx_coef >= 0)) return bad("ptx_coef", ">= 0");
  if (!(o.entropy_coef >= 0)) return bad("entropy_coef", ">= 0");
  if (!(o.clip_eps > 0 && o.clip_eps < 1)) return bad("clip_eps", "in (0, 1)");
  if (!(o.value_coef >= 0)) return bad("value_coef", ">= 0");
  if (!(o.gamma >= 0 && o.gamma <= 1)) return bad("gamma", "in [0, 1]");
  if (!(o.lam >= 0 && o.lam <= 1)) return bad("lam", "in [0, 1]");
  if (!(o.baseline_decay >= 0 && o.baseline_decay < 1)) return bad("baseline_decay", "in [0, 1)");
  if (!(o.grpo_eps > 0)) return bad("grpo_eps", "> 0");
  if (!(o.temperature > 0)) return bad("temperature", "> 0");
  if (o.train_dtype != torch::kFloat32 && o.train_dtype != torch::kBFloat16) {
    return bad("train_dtype", absl::StrCat("fp32 or bf16, got ", ComputeDtypeName(o.train_dtype)));
  }
  if (o.kl_estimator == KlEstimator::kExact && o.kl_placement != KlPlacementMode::kInReward) {
    // In the loss the KL must be differentiable in the current policy; the exact KL
    // arrives as numbers computed from the behaviour distribution.
    return bad("kl.estimator", "k1, k2 or k3 with kl.placement in_loss (exact is in_reward only)");
  }
  if (absl::Status s = KlController::Validate(o.kl); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("rl.", s.message()));
  }
  return absl::OkStatus();
}

Trainer::Trainer(const TrainerOptions& options, TransformerLM policy, TransformerLM value_model)
    : options_(options),
      policy_(std::move(policy)),
      value_(std::move(value_model)),
      kl_(options.kl),
      baseline_(options.baseline_decay),
      shuffle_gen_(at::detail::createCPUGenerator(options.seed)),
      device_(options.device) {
  torch::optim::AdamWOptions opt(options.lr);
  opt.weight_decay(options.weight_decay);
  policy_opt_ = std::make_unique<torch::optim::AdamW>(policy_->parameters(), opt);
  policy_->train();
  if (value_) {
    value_opt_ = std::make_unique<torch::optim::AdamW>(value_->parameters(), opt);
    value_->train();
  }
}

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const TrainerOptions& options,
                                                         TransformerLM policy,
                                                         TransformerLM value_model) {
  RLHF_RETURN_IF_ERROR(ValidateTrainerOptions(options));
  if (!policy) return absl::InvalidArgumentError("policy model is null");
  if (!policy->config().lm_head) return absl::InvalidArgumentError("policy model has no lm_head");
  if (options.algorithm == RlAlgorithm::kPpo) {
    if (!value_model) return absl::InvalidArgumentError("PPO needs a value model");
    if (!value_model->config().scalar_head) {
      return absl::InvalidArgumentError("value model has no scalar_head");
    }
    if (value_model->config().max_seq_len < policy->config().max_seq_len) {
      return absl::InvalidArgumentError("value model max_seq_len is shorter than the policy's");
    }
  } else if (value_model) {
    return absl::InvalidArgumentError(
        absl::StrCat("a value model is only used by PPO, not ", RlAlgorithmName(options.algorithm)));
  }
  RLHF_RETURN_IF_ERROR(CheckMasterWeights(policy, "policy"));
  if (value_model) RLHF_RETURN_IF_ERROR(CheckMasterWeights(value_model, "value model"));
  // Before the optimizers exist: they hold the parameters as they are after the move.
  RLHF_RETURN_IF_ERROR(MoveModelToDevice(policy, options.device));
  if (value_model) RLHF_RETURN_IF_ERROR(MoveModelToDevice(value_model, options.device));
  return std::unique_ptr<Trainer>(new Trainer(options, std::move(policy), std::move(value_model)));
}

absl::Status Trainer::ValidateBatch(const std::vector<Trajectory>& batch,
                                    const std::vector<std::vector<int32_t>>& pretrain) const {
  if (batch.empty()) return absl::InvalidArgumentError("batch is empty");
  const int64_t vocab = policy_->config().vocab_size;
  const int64_t max_len = policy_->config().max_seq_len;
  auto check_ids = [&](const std::vector<int32_t>& ids, const std::string& where) {
    for (size_t j = 0; j < ids.size(); ++j) {
      if (ids[j] < 0 || ids[j] >= vocab) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, "[", j, "] = ", ids[j], " outside [0, ", vocab, ")"));
      }
    }
    return absl::OkStatus();
  };
  for (size_t i = 0; i < batch.size(); ++i) {
    const Trajectory& t = batch[i];
    const std::string at = absl::StrCat("trajectories[", i, "]");
    if (t.prompt.empty()) return absl::InvalidArgumentError(at + ".prompt is empty");
    RLHF_RETURN_IF_ERROR(check_ids(t.prompt, at + ".prompt"));
    RLHF_RETURN_IF_ERROR(check_ids(t.response, at + ".response"));
    if (static_cast<int64_t>(t.prompt.size() + t.response.size()) > max_len) {
      return absl::InvalidArgumentError(absl::StrCat(at, ": prompt + response length ",
                                                     t.prompt.size() + t.response.size(),
                                                     " > max_seq_len ", max_len));
    }
    if (t.behaviour_logprobs.size() != t.response.size()) {
      return absl::InvalidArgumentError(absl::StrCat(at, ".behaviour_logprobs has ",
                                                     t.behaviour_logprobs.size(), " entries but response has ",
                                                     t.response.size()));
    }
    if (t.reference_logprobs.size() != t.response.size()) {
      return absl::InvalidArgumentError(absl::StrCat(at, ".reference_logprobs has ",
                                                     t.reference_logprobs.size(), " entries but response has ",
                                                     t.response.size()));
    }
    for (size_t j = 0; j < t.response.size(); ++j) {
      if (!std::isfinite(t.behaviour_logprobs[j]) || t.behaviour_logprobs[j] > 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(at, ".behaviour_logprobs[", j, "] is not a finite log-prob"));
      }
      if (!std::isfinite(t.reference_logprobs[j]) || t.reference_logprobs[j] > 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(at, ".reference_logprobs[", j, "] is not a finite log-prob"));
      }
    }
    if (options_.kl_estimator == KlEstimator::kExact) {
      if (t.exact_kl.size() != t.response.size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            at, ".exact_kl has ", t.exact_kl.size(), " entries but response has ",
            t.response.size(), " (kl.estimator exact needs one per response token)"));
      }
      for (size_t j = 0; j < t.exact_kl.size(); ++j) {
        if (!std::isfinite(t.exact_kl[j]) || t.exact_kl[j] < -1e-3f) {
          return absl::InvalidArgumentError(
              absl::StrCat(at, ".exact_kl[", j, "] = ", t.exact_kl[j], " is not a KL (finite, >= 0)"));
        }
      }
    }
    if (!std::isfinite(t.reward)) return absl::InvalidArgumentError(at + ".reward is not finite");
    if (t.policy_version < 0 || t.policy_version > policy_version_) {
      return absl::InvalidArgumentError(absl::StrCat(at, ".policy_version ", t.policy_version,
                                                     " outside [0, ", policy_version_, "]"));
    }
  }
  if (options_.algorithm == RlAlgorithm::kRloo || options_.algorithm == RlAlgorithm::kGrpo) {
    std::map<int64_t, int> sizes;
    for (const Trajectory& t : batch) ++sizes[t.group_id];
    for (const auto& [id, n] : sizes) {
      if (n < 2) {
        return absl::InvalidArgumentError(absl::StrCat(
            "group_id ", id, " has ", n, " trajectory; ", RlAlgorithmName(options_.algorithm),
            " needs >= 2 samples per prompt"));
      }
    }
  }
  for (size_t i = 0; i < pretrain.size(); ++i) {
    const std::string at = absl::StrCat("pretrain[", i, "]");
    if (pretrain[i].size() < 2) return absl::InvalidArgumentError(at + " has < 2 tokens");
    if (static_cast<int64_t>(pretrain[i].size()) > max_len) {
      return absl::InvalidArgumentError(at + " is longer than max_seq_len");
    }
    RLHF_RETURN_IF_ERROR(check_ids(pretrain[i], at));
  }
  return absl::OkStatus();
}

double Trainer::LearningRate() const {
  const int64_t s = optimizer_steps_;  // 0-based index of the next optimizer step
  if (s < options_.warmup_steps) {
    return options_.lr * static_cast<double>(s + 1) / static_cast<double>(options_.warmup_steps);
  }
  if (options_.decay_steps <= 0) return options_.lr;
  const double progress =
      std::min(1.0, static_cast<double>(s - options_.warmup_steps) / options_.decay_steps);
  return options_.lr * (0.1 + 0.9 * 0.5 * (1.0 + std::cos(kPi * progress)));
}

absl::StatusOr<std::vector<std::vector<float>>> Trainer::ResponseLogProbsOf(
    const std::vector<Trajectory>& batch) {
  std::vector<std::vector<int32_t>> prompts, responses;
  for (const Trajectory& t : batch) {
    prompts.push_back(t.prompt);
    responses.push_back(t.response);
  }
  SequenceBatchOptions sbo;
  sbo.pad_id = options_.pad_id;
  sbo.max_len = policy_->config().max_seq_len;
  RLHF_ASSIGN_OR_RETURN(SequenceBatch sb, MakeSequenceBatch(prompts, responses, sbo));
  return TorchCall([&] {
    torch::NoGradGuard no_grad;
    const SequenceBatch dev = SequenceBatchToDevice(sb, device_);
    torch::Tensor logp;
    {
      compat::AutocastGuard autocast(device_, options_.train_dtype);
      const torch::Tensor hidden =
          policy_->forward_hidden(dev.ids, dev.attention_mask, dev.position_ids).hidden;
      logp = ResponseLogProbsFromHidden(hidden, policy_->unembedding(), dev, options_.temperature,
                                        /*with_entropy=*/false)
                 .logp;
    }
    return PerSequenceResponseValues(logp, dev);
  });
}

// What Step() derives from the batch before touching the models.
struct Trainer::PackedBatch {
  int64_t n = 0;                             // trajectories
  SequenceBatch sb;                          // prompt+response rows
  torch::Tensor blogp, rlogp;                // [B, T] behaviour / reference log-probs
  torch::Tensor exact_kl;                    // [B, T] when kl_estimator is kExact
  std::vector<float> scores;                 // [B] reward-model scores
  std::vector<std::vector<int64_t>> groups;  // rows sharing a group_id, first-appearance order
  double staleness = 0;                      // mean policy_version - trajectory version
  std::optional<SequenceBatch> ptx;          // pretraining texts when PPO-ptx is on
};

// The per-token targets of the update, fixed before the first optimizer step.
struct Trainer::Targets {
  double beta = 0;              // β of this batch
  torch::Tensor advantages;     // [B, T]
  torch::Tensor old_values;     // [B, T] PPO: V of the behaviour-time states
  torch::Tensor value_targets;  // [B, T] PPO: GAE returns
};

// Sums over the optimizer steps (and micro-batches) of one Step(); TrainStats holds
// their means.
struct Trainer::UpdateTotals {
  int64_t optimizer_steps = 0;
  double policy_loss = 0, value_loss = 0, ptx_loss = 0, clip = 0, value_clip = 0, approx_kl = 0,
         grad_norm = 0, entropy = 0;
  int64_t entropy_tokens = 0;
  int64_t tokens_processed = 0;
  int64_t nonfinite_updates_skipped = 0;  // optimizer steps skipped: non-finite loss/gradient
  double lr = 0;  // at the last optimizer step
};

absl::StatusOr<TrainStats> Trainer::Step(const std::vector<Trajectory>& batch,
                                         const std::vector<std::vector<int32_t>>& pretrain) {
  RLHF_RETURN_IF_ERROR(ValidateBatch(batch, pretrain));
  const absl::Time start = absl::Now();
  RLHF_ASSIGN_OR_RETURN(const PackedBatch packed, Pack(batch, pretrain));
  TrainStats stats;
  // A refused batch leaves the trainer as it was: the REINFORCE baseline is the only
  // state ComputeTargets() moves before the update.
  const MovingMeanBaseline baseline_before = baseline_;
  absl::StatusOr<Targets> targets =
      TorchCall([&] { return ComputeTargets(packed, &stats); }, "trainer step");
  if (!targets.ok()) {
    baseline_ = baseline_before;
    return targets.status();
  }
  RLHF_ASSIGN_OR_RETURN(const UpdateTotals totals,
                        TorchCall([&] { return Update(packed, *targets); }, "trainer step"));
  const double k = std::max<int64_t>(1, totals.optimizer_steps);
  stats.tokens_processed = totals.tokens_processed;
  stats.optimizer_steps = totals.optimizer_steps;
  stats.policy_loss = totals.policy_loss / k;
  stats.value_loss = totals.value_loss / k;
  stats.ptx_loss = totals.ptx_loss / k;
  stats.clip_fraction = totals.clip / k;
  stats.value_clip_fraction = totals.value_clip / k;
  stats.approx_kl = totals.approx_kl / k;
  stats.grad_norm = totals.grad_norm / k;
  stats.lr = totals.lr;
  stats.nonfinite_updates_skipped = totals.nonfinite_updates_skipped;
  stats.entropy = totals.entropy_tokens > 0 ? totals.entropy / totals.entropy_tokens : 0.0;
  stats.next_beta = kl_.Update(stats.kl_mean, packed.n);
  ++step_;
  ++policy_version_;
  stats.step = step_;
  stats.policy_version = policy_version_;
  stats.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return stats;
}

absl::StatusOr<Trainer::PackedBatch> Trainer::Pack(
    const std::vector<Trajectory>& batch, const std::vector<std::vector<int32_t>>& pretrain) const {
  PackedBatch p;
  p.n = static_cast<int64_t>(batch.size());
  std::vector<std::vector<int32_t>> prompts, responses;
  std::vector<std::vector<float>> blogp_v, rlogp_v, exact_v;
  for (const Trajectory& t : batch) {
    prompts.push_back(t.prompt);
    responses.push_back(t.response);
    blogp_v.push_back(t.behaviour_logprobs);
    rlogp_v.push_back(t.reference_logprobs);
    if (options_.kl_estimator == KlEstimator::kExact) exact_v.push_back(t.exact_kl);
    p.scores.push_back(t.reward);
    p.staleness += static_cast<double>(policy_version_ - t.policy_version) / p.n;
  }
  SequenceBatchOptions sbo;
  sbo.pad_id = options_.pad_id;
  sbo.max_len = policy_->config().max_seq_len;
  RLHF_ASSIGN_OR_RETURN(p.sb, MakeSequenceBatch(prompts, responses, sbo));
  RLHF_ASSIGN_OR_RETURN(p.blogp, ScatterResponseValues(blogp_v, p.sb));
  RLHF_ASSIGN_OR_RETURN(p.rlogp, ScatterResponseValues(rlogp_v, p.sb));
  if (!exact_v.empty()) {
    RLHF_ASSIGN_OR_RETURN(p.exact_kl, ScatterResponseValues(exact_v, p.sb));
  }

  std::map<int64_t, size_t> index;
  for (int64_t i = 0; i < p.n; ++i) {
    auto [it, inserted] = index.emplace(batch[i].group_id, p.groups.size());
    if (inserted) p.groups.emplace_back();
    p.groups[it->second].push_back(i);
  }

  // Pretraining batch (prompt = first token, "response" = the rest: every next-token
  // prediction of the text is scored).
  if (options_.ptx_coef > 0 && !pretrain.empty()) {
    std::vector<std::vector<int32_t>> heads, tails;
    for (const auto& text : pretrain) {
      heads.emplace_back(text.begin(), text.begin() + 1);
      tails.emplace_back(text.begin() + 1, text.end());
    }
    RLHF_ASSIGN_OR_RETURN(p.ptx, MakeSequenceBatch(heads, tails, sbo));
  }
  return p;
}

absl::StatusOr<Trainer::Targets> Trainer::ComputeTargets(const PackedBatch& p, TrainStats* stats) {
  const torch::Tensor& mask = p.sb.response_mask;
  const torch::Tensor score = torch::tensor(p.scores, torch::kFloat32);
  const torch::Tensor kl = at::where(
      mask > 0,
      p.exact_kl.defined() ? p.exact_kl : PerTokenKl(p.blogp, p.rlogp, options_.kl_estimator),
      torch::zeros_like(p.blogp));
  const torch::Tensor kl_seq = kl.sum(1);
  Targets t;
  t.beta = kl_.beta();
  const bool kl_in_reward = options_.kl_placement == KlPlacementMode::kInReward;
  const torch::Tensor token_rewards =
      KlPenalizedTokenRewards(score, kl, mask, kl_in_reward ? t.beta : 0.0);
  const torch::Tensor seq_returns = SequenceReturns(token_rewards, mask, options_.gamma);
  // Finite but extreme inputs (rewards near float max) overflow these sums; refusing the
  // batch here keeps the baseline, β and the weights finite (issue 23).
  if (!std::isfinite(seq_returns.sum().item<double>()) ||
      !std::isfinite(kl_seq.sum().item<double>())) {
    return absl::InvalidArgumentError(
        "batch: non-finite returns or KL (rewards or log-probs too large for float32)");
  }

  switch (options_.algorithm) {
    case RlAlgorithm::kReinforce: {
      if (!baseline_.initialized()) baseline_.Update(seq_returns);
      t.advantages = ReinforceAdvantages(seq_returns, baseline_.value()).unsqueeze(1) * mask;
      baseline_.Update(seq_returns);
      break;
    }
    case RlAlgorithm::kRloo:
    case RlAlgorithm::kGrpo: {
      torch::Tensor seq_adv = torch::zeros({p.n});
      for (const auto& g : p.groups) {
        const torch::Tensor idx = torch::tensor(g, torch::kLong);
        const torch::Tensor r = seq_returns.index_select(0, idx).unsqueeze(0);
        RLHF_ASSIGN_OR_RETURN(const torch::Tensor a, options_.algorithm == RlAlgorithm::kRloo
                                                         ? RlooAdvantages(r)
                                                         : GrpoAdvantages(r, options_.grpo_eps));
        seq_adv.index_copy_(0, idx, a.squeeze(0));
      }
      t.advantages = seq_adv.unsqueeze(1) * mask;
      break;
    }
    case RlAlgorithm::kPpo: {
      torch::NoGradGuard no_grad;
      const SequenceBatch dev = SequenceBatchToDevice(p.sb, device_);
      ForwardOutput vo;
      {
        compat::AutocastGuard autocast(device_, options_.train_dtype);
        vo = value_->forward(dev.ids, dev.attention_mask, dev.position_ids);
      }
      // Targets are computed on the host (once per batch, cheap next to the update).
      t.old_values = ShiftRight(vo.scalar.to(torch::kCPU, torch::kFloat32)) * mask;
      GaeResult gae = Gae(token_rewards, t.old_values, mask, options_.gamma, options_.lam);
      t.advantages = gae.advantages;
      t.value_targets = gae.returns;
      stats->explained_variance = ExplainedVariance(t.old_values, t.value_targets, mask);
      break;
    }
  }
  if (options_.whiten_advantages) t.advantages = MaskedWhiten(t.advantages, mask);
  if (!torch::isfinite(t.advantages).all().item<bool>()) {
    return absl::InvalidArgumentError("batch: non-finite advantages");
  }

  stats->beta = t.beta;
  stats->num_sequences = p.n;
  stats->response_tokens = mask.sum().item<int64_t>();
  stats->kl_mean = kl_seq.mean().item<double>();
  stats->kl_max = kl_seq.max().item<double>();
  stats->reward_mean = score.mean().item<double>();
  stats->reward_std = p.n > 1 ? score.std().item<double>() : 0.0;
  stats->advantage_mean = MaskedMean(t.advantages, mask).item<double>();
  stats->return_mean = seq_returns.mean().item<double>();
  stats->mean_staleness = p.staleness;
  return t;
}

Trainer::UpdateTotals Trainer::Update(const PackedBatch& p, const Targets& t) {
  UpdateTotals totals;
  const torch::Tensor& mask = p.sb.response_mask;
  for (int epoch = 0; epoch < options_.epochs; ++epoch) {
    const torch::Tensor perm = at::randperm(p.n, shuffle_gen_, torch::kLong);
    for (int64_t mb_start = 0; mb_start < p.n; mb_start += options_.minibatch_size) {
      const int64_t mb_end = std::min<int64_t>(p.n, mb_start + options_.minibatch_size);
      const torch::Tensor mb_rows = perm.slice(0, mb_start, mb_end);
      const torch::Tensor mb_mask = mask.index_select(0, mb_rows);
      MinibatchScale scale;
      scale.tokens = std::max(1.0, mb_mask.sum().item<double>());
      scale.sequences = std::max(1.0, (mb_mask.sum(1) > 0).sum().item<double>());
      policy_opt_->zero_grad();
      if (value_opt_) value_opt_->zero_grad();
      const int64_t mb_n = mb_end - mb_start;
      const int64_t micro = (mb_n + options_.grad_accum - 1) / options_.grad_accum;
      MinibatchLosses losses;
      for (int64_t m_start = 0; m_start < mb_n; m_start += micro) {
        const torch::Tensor rows = mb_rows.slice(0, m_start, std::min(mb_n, m_start + micro));
        AccumulateMicroBatch(p, t, rows, scale, /*first_epoch=*/epoch == 0, &losses, &totals);
      }
      if (p.ptx) AccumulatePtx(*p.ptx, &totals);
      if (!OptimizerStep(losses, &totals)) continue;
      totals.policy_loss += losses.policy;
      totals.value_loss += losses.value;
    }
  }
  return totals;
}

void Trainer::AccumulateMicroBatch(const PackedBatch& p, const Targets& t,
                                   const torch::Tensor& rows, const MinibatchScale& scale,
                                   bool first_epoch, MinibatchLosses* losses,
                                   UpdateTotals* totals) {
  // Packed on the host; the micro-batch's slice moves to the models' device.
  const SequenceBatch sub = SequenceBatchToDevice(SliceBatch(p.sb, rows), device_);
  const int64_t len = sub.ids.size(1);
  const torch::Tensor m = sub.response_mask;
  auto rows_of = [&](const torch::Tensor& x) { return Rows(x, rows, len).to(device_); };
  // Share of this micro-batch in the minibatch's aggregate, so that accumulated
  // gradients equal the full-minibatch gradient.
  const double weight = options_.aggregation == LossAggregation::kTokenMean
                            ? m.sum().item<double>() / scale.tokens
                            : (m.sum(1) > 0).sum().item<double>() / scale.sequences;
  if (weight == 0) return;
  const double temp = options_.temperature;
  const torch::Tensor b_c = rows_of(p.blogp);
  const torch::Tensor a_c = rows_of(t.advantages);
  ChunkedLogProbs tokens;
  {
    // Only the forward runs under autocast; backward follows the recorded dtypes, and the
    // losses below read fp32 log-probs. Only the response rows are unembedded, a block
    // at a time (chunked_unembedding.h): the same log-probs and entropies as ResponseLogProbs
    // and EntropyFromLogits over whole logits, without the [rows, vocab] tensors.
    compat::AutocastGuard autocast(device_, options_.train_dtype);
    const torch::Tensor hidden =
        policy_->forward_hidden(sub.ids, sub.attention_mask, sub.position_ids).hidden;
    tokens = ResponseLogProbsFromHidden(hidden, policy_->unembedding(), sub, temp,
                                        /*with_entropy=*/options_.entropy_coef > 0 || first_epoch);
  }
  const torch::Tensor& logp = tokens.logp;
  PolicyLossOutput pl =
      options_.algorithm == RlAlgorithm::kPpo
          ? PpoClipLoss(logp, b_c, a_c, m, options_.clip_eps, options_.aggregation)
          : TruncatedIsPolicyLoss(logp, b_c, a_c, m, options_.is_truncation, options_.aggregation);
  torch::Tensor loss = pl.loss;
  if (options_.kl_placement == KlPlacementMode::kInLoss && t.beta > 0) {
    loss = loss + t.beta * KlPenaltyLoss(logp, rows_of(p.rlogp), m, options_.aggregation);
  }
  // Entropy of the distribution each response token was drawn from.
  if (options_.entropy_coef > 0) {
    loss = loss - options_.entropy_coef * AggregateLoss(tokens.entropy, m, options_.aggregation);
  }
  if (first_epoch) {
    totals->entropy += (tokens.entropy.detach() * m).sum().item<double>();
    totals->entropy_tokens += m.sum().item<int64_t>();
  }
  (loss * weight).backward();
  totals->tokens_processed += sub.ids.numel();
  losses->policy += pl.loss.item<double>() * weight;
  totals->clip += pl.clip_fraction.item<double>() * weight;
  totals->approx_kl += pl.approx_kl.item<double>() * weight;
  if (options_.algorithm == RlAlgorithm::kPpo) {
    ForwardOutput vo;
    {
      compat::AutocastGuard autocast(device_, options_.train_dtype);
      vo = value_->forward(sub.ids, sub.attention_mask, sub.position_ids);
    }
    const torch::Tensor values = ShiftRight(vo.scalar.to(torch::kFloat32));
    ValueLossOutput vl = ClippedValueLoss(values, rows_of(t.old_values), rows_of(t.value_targets),
                                          m, options_.value_clip_eps, options_.aggregation);
    (vl.loss * (options_.value_coef * weight)).backward();
    totals->tokens_processed += sub.ids.numel();
    losses->value += vl.loss.item<double>() * weight;
    totals->value_clip += vl.clip_fraction.item<double>() * weight;
  }
}

void Trainer::AccumulatePtx(const SequenceBatch& host_ptx, UpdateTotals* totals) {
  const SequenceBatch ptx = SequenceBatchToDevice(host_ptx, device_);
  torch::Tensor nll;  // the mean next-token loss of the pretraining texts
  {
    compat::AutocastGuard autocast(device_, options_.train_dtype);
    const torch::Tensor hidden =
        policy_->forward_hidden(ptx.ids, ptx.attention_mask, ptx.position_ids).hidden;
    // Without the [rows, vocab] logits (chunked_unembedding.h); the same loss as
    // PtxLoss(ResponseLogProbs(logits, ptx, 1.0), response_mask, ptx_coef).
    nll = MaskedNextTokenNll(hidden, policy_->unembedding(), ptx.ids, ptx.response_mask);
  }
  (nll * options_.ptx_coef).backward();
  totals->tokens_processed += ptx.ids.numel();
  totals->ptx_loss += nll.item<double>();
}

bool Trainer::OptimizerStep(const MinibatchLosses& losses, UpdateTotals* totals) {
  const double lr = LearningRate();
  for (auto& group : policy_opt_->param_groups()) group.options().set_lr(lr);
  const double max_norm =
      options_.grad_clip > 0 ? options_.grad_clip : std::numeric_limits<double>::infinity();
  const double grad_norm = torch::nn::utils::clip_grad_norm_(policy_->parameters(), max_norm);
  const double value_norm =
      value_opt_ ? torch::nn::utils::clip_grad_norm_(value_->parameters(), max_norm) : 0.0;
  // A non-finite loss or gradient would make every weight NaN: skip the update (counted;
  // the learner alerts on it), never let it reach the weights.
  if (!std::isfinite(grad_norm) || !std::isfinite(value_norm) || !std::isfinite(losses.policy) ||
      !std::isfinite(losses.value)) {
    policy_opt_->zero_grad();
    if (value_opt_) value_opt_->zero_grad();
    ++totals->nonfinite_updates_skipped;
    return false;
  }
  policy_opt_->step();
  if (value_opt_) {
    for (auto& group : value_opt_->param_groups()) group.options().set_lr(lr);
    value_opt_->step();
  }
  ++optimizer_steps_;
  ++totals->optimizer_steps;
  totals->grad_norm += grad_norm;
  totals->lr = lr;
  return true;
}

TrainerState Trainer::ExportState() const {
  TrainerState state;
  state.step = step_;
  state.policy_version = policy_version_;
  state.optimizer_steps = optimizer_steps_;
  state.beta = kl_.beta();
  state.baseline = baseline_.value();
  state.baseline_initialized = baseline_.initialized();
  state.shuffle_rng_state = GeneratorStateHex(shuffle_gen_);
  ExportOptimizer("policy", policy_, *policy_opt_, &state);
  if (value_opt_) ExportOptimizer("value", value_, *value_opt_, &state);
  return state;
}

absl::Status Trainer::RestoreState(const TrainerState& state) {
  // Check everything first: nothing changes unless all of it fits.
  std::map<std::string, torch::Tensor> tensors(state.optimizer_tensors.begin(),
                                               state.optimizer_tensors.end());
  std::map<std::string, int64_t> steps(state.optimizer_steps_by_param.begin(),
                                       state.optimizer_steps_by_param.end());
  struct Pending {
    torch::optim::AdamW* opt;
    torch::Tensor param;
    torch::Tensor exp_avg, exp_avg_sq;
    int64_t step;
  };
  std::vector<Pending> pending;
  auto collect = [&](const std::string& prefix, TransformerLM& model,
                     torch::optim::AdamW* opt) -> absl::Status {
    for (const auto& item : model->named_parameters()) {
      const std::string name = absl::StrCat(prefix, "/", item.key());
      auto s = steps.find(name);
      if (s == steps.end()) continue;  // never stepped: no moments
      auto a = tensors.find(name + "/exp_avg");
      auto b = tensors.find(name + "/exp_avg_sq");
      if (a == tensors.end() || b == tensors.end()) {
        return absl::InvalidArgumentError(absl::StrCat("optimizer state: missing moments of ", name));
      }
      if (!a->second.sizes().equals(item.value().sizes()) ||
          !b->second.sizes().equals(item.value().sizes())) {
        return absl::InvalidArgumentError(absl::StrCat("optimizer state: shape mismatch for ", name));
      }
      pending.push_back({opt, item.value(), a->second, b->second, s->second});
      steps.erase(s);
    }
    return absl::OkStatus();
  };
  RLHF_RETURN_IF_ERROR(collect("policy", policy_, policy_opt_.get()));
  if (value_opt_) RLHF_RETURN_IF_ERROR(collect("value", value_, value_opt_.get()));
  if (!steps.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("optimizer state: parameter ", steps.begin()->first, " is not in the model"));
  }
  RLHF_ASSIGN_OR_RETURN(torch::Tensor rng, FromHex(state.shuffle_rng_state));
  at::Generator gen = at::detail::createCPUGenerator(options_.seed);
  RLHF_RETURN_IF_ERROR(TorchCall([&] { gen.set_state(rng); }, "shuffle rng state"));

  policy_opt_->state().clear();
  if (value_opt_) value_opt_->state().clear();
  for (Pending& p : pending) {
    auto s = std::make_unique<torch::optim::AdamWParamState>();
    s->step(p.step);
    // Moments live where the parameter does (a CPU checkpoint restored on a GPU).
    s->exp_avg(p.exp_avg.to(p.param.device(), torch::kFloat32).clone());
    s->exp_avg_sq(p.exp_avg_sq.to(p.param.device(), torch::kFloat32).clone());
    p.opt->state()[ParamStateKey(p.param)] = std::move(s);
  }
  shuffle_gen_ = gen;
  step_ = state.step;
  policy_version_ = state.policy_version;
  optimizer_steps_ = state.optimizer_steps;
  kl_.set_beta(state.beta);
  baseline_.Restore(state.baseline, state.baseline_initialized);
  return absl::OkStatus();
}

}  // namespace rlhf
