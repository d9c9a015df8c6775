#include "core/train/training_common.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/model/torch_compat.h"
#include "core/status_macros.h"

namespace rlhf {

std::vector<int32_t> EncodePrompt(const Tokenizer& tokenizer, absl::string_view prompt) {
  // Models without a BOS token (Qwen: bos_id() == -1) start with the text itself.
  std::vector<int32_t> ids;
  if (tokenizer.bos_id() >= 0) ids.push_back(tokenizer.bos_id());
  const std::vector<int32_t> body = tokenizer.Encode(prompt);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

std::vector<int32_t> EncodeResponse(const Tokenizer& tokenizer, absl::string_view response) {
  std::vector<int32_t> ids = tokenizer.Encode(response);
  ids.push_back(tokenizer.eos_id());
  return ids;
}

std::vector<std::vector<int32_t>> EncodePretrainTexts(const Tokenizer& tokenizer,
                                                      const std::vector<std::string>& texts,
                                                      int64_t max_len) {
  std::vector<std::vector<int32_t>> out;
  for (const std::string& text : texts) {
    std::vector<int32_t> ids = EncodePrompt(tokenizer, text);
    ids.push_back(tokenizer.eos_id());
    if (max_len <= 0 || static_cast<int64_t>(ids.size()) <= max_len) out.push_back(std::move(ids));
  }
  return out;
}

bool TruncateToFit(int64_t max_len, std::vector<int32_t>* prompt, std::vector<int32_t>* response) {
  if (max_len <= 0) return !response->empty();
  int64_t excess = static_cast<int64_t>(prompt->size() + response->size()) - max_len;
  if (excess > 0 && prompt->size() > 1) {
    // Keep BOS (index 0) and the most recent prompt tokens: the end of a prompt is what
    // the response answers.
    const int64_t drop = std::min<int64_t>(excess, static_cast<int64_t>(prompt->size()) - 1);
    prompt->erase(prompt->begin() + 1, prompt->begin() + 1 + drop);
    excess -= drop;
  }
  if (excess > 0) {
    const int64_t keep = std::max<int64_t>(0, static_cast<int64_t>(response->size()) - excess);
    response->resize(keep);
  }
  return !response->empty();
}

PackedBatch PackBatch(const std::vector<std::vector<int32_t>>& prompts,
                      const std::vector<std::vector<int32_t>>& responses, int32_t pad_id,
                      bool include_prompt) {
  SequenceBatchOptions options;
  options.pad_id = pad_id;
  absl::StatusOr<SequenceBatch> batch = MakeSequenceBatch(prompts, responses, options);
  // Only a broken precondition fails here (no max_len: nothing is ever too long).
  TORCH_CHECK(batch.ok(), "PackBatch: ", batch.status().ToString());
  if (include_prompt) {
    // Every real token but the first: position 0 has no predecessor to predict it from.
    batch->target_mask = batch->attention_mask.to(torch::kFloat32);
    batch->target_mask.select(1, 0).zero_();
  }
  return *std::move(batch);
}

double LearningRate(int64_t step, int64_t total_steps, int64_t warmup_steps, double peak_lr,
                    double min_lr_ratio) {
  if (warmup_steps > 0 && step < warmup_steps) return peak_lr * (step + 1) / warmup_steps;
  const int64_t decay_steps = std::max<int64_t>(1, total_steps - warmup_steps);
  const double progress =
      std::min(1.0, static_cast<double>(step - warmup_steps) / static_cast<double>(decay_steps));
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
  return peak_lr * (min_lr_ratio + (1.0 - min_lr_ratio) * cosine);
}

void SetLearningRate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) {
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
  }
}

double ClipGradNorm(const std::vector<torch::Tensor>& params, double max_norm) {
  torch::NoGradGuard no_grad;
  double total_sq = 0;
  for (const auto& p : params) {
    if (p.grad().defined()) total_sq += p.grad().pow(2).sum().item<double>();
  }
  const double norm = std::sqrt(total_sq);
  if (max_norm > 0 && norm > max_norm) {
    const double scale = max_norm / (norm + 1e-6);
    for (const auto& p : params) {
      if (p.grad().defined()) p.grad().mul_(scale);
    }
  }
  return norm;
}

namespace {
compat::OptimizerStateKeyType StateKey(const torch::Tensor& p) {
  return compat::OptimizerStateKey(p);
}
}  // namespace

NamedTensors AdamWStateTensors(torch::optim::AdamW& optimizer, const TransformerLM& model) {
  NamedTensors out;
  auto& state = optimizer.state();
  for (const auto& item : model->named_parameters(/*recurse=*/true)) {
    auto it = state.find(StateKey(item.value()));
    if (it == state.end()) continue;  // no step taken yet for this parameter
    auto& s = static_cast<torch::optim::AdamWParamState&>(*it->second);
    out.emplace_back("adamw.exp_avg." + item.key(), s.exp_avg().detach().clone());
    out.emplace_back("adamw.exp_avg_sq." + item.key(), s.exp_avg_sq().detach().clone());
    out.emplace_back("adamw.step." + item.key(), torch::tensor({s.step()}, torch::kInt64));
  }
  return out;
}

absl::Status LoadAdamWState(torch::optim::AdamW& optimizer, const TransformerLM& model,
                            const NamedTensors& tensors) {
  std::map<std::string, torch::Tensor> by_name(tensors.begin(), tensors.end());
  // Check everything first, so a bad file leaves the optimizer unchanged.
  std::vector<std::string> problems;
  for (const auto& item : model->named_parameters(true)) {
    for (const char* kind : {"exp_avg", "exp_avg_sq"}) {
      const std::string name = absl::StrCat("adamw.", kind, ".", item.key());
      auto it = by_name.find(name);
      if (it == by_name.end()) {
        problems.push_back(absl::StrCat("missing ", name));
      } else if (it->second.sizes() != item.value().sizes()) {
        problems.push_back(absl::StrCat("shape mismatch ", name));
      }
    }
    if (by_name.count("adamw.step." + item.key()) == 0) {
      problems.push_back("missing adamw.step." + item.key());
    }
  }
  if (!problems.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("optimizer state: ", problems.front(),
                     problems.size() > 1 ? absl::StrCat(" (and ", problems.size() - 1, " more)")
                                         : ""));
  }
  auto& state = optimizer.state();
  for (const auto& item : model->named_parameters(true)) {
    auto s = std::make_unique<torch::optim::AdamWParamState>();
    s->exp_avg(by_name["adamw.exp_avg." + item.key()].to(item.value().dtype()).clone());
    s->exp_avg_sq(by_name["adamw.exp_avg_sq." + item.key()].to(item.value().dtype()).clone());
    s->step(by_name["adamw.step." + item.key()].item<int64_t>());
    state[StateKey(item.value())] = std::move(s);
  }
  return absl::OkStatus();
}

absl::Status SaveTrainerState(const std::string& dir, torch::optim::AdamW& optimizer,
                              const TransformerLM& model, int64_t step, const std::string& stage) {
  return WriteSafetensors(absl::StrCat(dir, "/trainer_state.safetensors"),
                          AdamWStateTensors(optimizer, model),
                          {{"step", absl::StrCat(step)}, {"stage", stage}});
}

absl::StatusOr<int64_t> LoadTrainerState(const std::string& dir, torch::optim::AdamW& optimizer,
                                         const TransformerLM& model, const std::string& stage) {
  const std::string path = absl::StrCat(dir, "/trainer_state.safetensors");
  RLHF_ASSIGN_OR_RETURN(SafetensorsContents contents, ReadSafetensors(path));
  auto stage_it = contents.metadata.find("stage");
  if (stage_it == contents.metadata.end() || stage_it->second != stage) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": metadata 'stage' is not \"", stage, "\""));
  }
  int64_t step = 0;
  auto step_it = contents.metadata.find("step");
  if (step_it == contents.metadata.end() || !absl::SimpleAtoi(step_it->second, &step) ||
      step < 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": metadata 'step' missing or invalid"));
  }
  if (step > 0) RLHF_RETURN_IF_ERROR(LoadAdamWState(optimizer, model, contents.tensors));
  return step;
}

namespace {
std::string Duration(double sec) {
  const int64_t s = static_cast<int64_t>(std::llround(std::max(0.0, sec)));
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}
}  // namespace

std::string FormatProgress(const TrainProgress& p) {
  std::string line = absl::StrFormat("%s step %d/%d loss %.4f lr %.2e tok/s %.0f", p.stage, p.step,
                                     p.total_steps, p.loss, p.lr, p.tokens_per_sec);
  if (p.extra >= 0) absl::StrAppendFormat(&line, " acc %.3f", p.extra);
  if (p.heldout >= 0) absl::StrAppendFormat(&line, " heldout %.4f", p.heldout);
  absl::StrAppend(&line, " elapsed ", Duration(p.elapsed_sec), " eta ", Duration(p.eta_sec));
  return line;
}

BatchSampler::BatchSampler(int64_t n, int64_t batch_size, uint64_t seed)
    : n_(n), batch_size_(batch_size), seed_(seed) {}

const std::vector<int64_t>& BatchSampler::Pass(int64_t pass) {
  if (pass != cached_pass_) {
    order_.resize(n_);
    for (int64_t i = 0; i < n_; ++i) order_[i] = i;
    // mt19937_64 output is fully specified by the standard; the shuffle is ours.
    std::mt19937_64 rng(seed_ * 1000003ULL + static_cast<uint64_t>(pass));
    for (int64_t i = n_ - 1; i > 0; --i) {
      std::swap(order_[i], order_[static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1))]);
    }
    cached_pass_ = pass;
  }
  return order_;
}

std::vector<int64_t> BatchSampler::Batch(int64_t step) {
  std::vector<int64_t> out;
  if (n_ <= 0) return out;
  for (int64_t k = 0; k < batch_size_; ++k) {
    const int64_t pos = step * batch_size_ + k;
    out.push_back(Pass(pos / n_)[pos % n_]);
  }
  return out;
}

}  // namespace rlhf
