#include "core/train/reward_trainer.h"

#include <chrono>
#include <cmath>
#include <fstream>
#include <limits>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/model/logprobs.h"
#include "core/status_macros.h"
#include "core/tokenizer/model_dir.h"

namespace rlhf {

torch::Tensor RewardPairLoss(const torch::Tensor& scores, const std::vector<IndexPair>& pairs) {
  std::vector<int64_t> w, l;
  for (const IndexPair& p : pairs) {
    w.push_back(p.winner);
    l.push_back(p.loser);
  }
  const auto wi = torch::tensor(w, torch::kInt64), li = torch::tensor(l, torch::kInt64);
  return -torch::log_sigmoid(scores.index_select(0, wi) - scores.index_select(0, li)).mean();
}

torch::Tensor LastTokenScores(TransformerLM& model, const PackedBatch& batch) {
  auto out = model->forward(batch.ids, batch.attention_mask);
  return ScoreAtLastToken(out.scalar, batch.attention_mask);
}

absl::StatusOr<TransformerLM> RewardModelFromSft(const LoadedCheckpoint& sft, uint64_t seed) {
  ModelConfig config = sft.config;
  config.lm_head = false;
  config.scalar_head = true;
  torch::manual_seed(seed);
  RLHF_ASSIGN_OR_RETURN(TransformerLM model,
                        TorchCall([&] { return TransformerLM(config); }, "building reward model"));
  LoadWeightsOptions load;
  load.allow_missing_scalar_head = true;
  load.ignore_unexpected_lm_head = true;
  RLHF_RETURN_IF_ERROR(LoadWeightsInto(model, ModelTensors(sft.model), load));
  return model;
}

std::vector<double> ScoreTexts(TransformerLM& model, const Tokenizer& tokenizer,
                               const std::vector<std::string>& prompts,
                               const std::vector<std::string>& responses) {
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  std::vector<double> out;
  const int64_t max_len = model->config().max_seq_len;
  constexpr size_t kChunk = 64;
  for (size_t i = 0; i < prompts.size(); i += kChunk) {
    std::vector<std::vector<int32_t>> ps, rs;
    for (size_t j = i; j < std::min(prompts.size(), i + kChunk); ++j) {
      auto p = EncodePrompt(tokenizer, prompts[j]);
      auto r = EncodeResponse(tokenizer, responses[j]);
      TruncateToFit(max_len, &p, &r);
      ps.push_back(std::move(p));
      rs.push_back(std::move(r));
    }
    PackedBatch batch = PackBatch(ps, rs, tokenizer.pad_id(), false);
    auto scores = LastTokenScores(model, batch).to(torch::kFloat64).contiguous();
    for (int64_t k = 0; k < scores.size(0); ++k) out.push_back(scores[k].item<double>());
  }
  if (was_training) model->train();
  return out;
}

RewardTrainer::RewardTrainer(TransformerLM model, const Tokenizer& tokenizer,
                             const RewardOptions& options)
    : model_(std::move(model)), tokenizer_(tokenizer), options_(options) {}

absl::StatusOr<std::unique_ptr<RewardTrainer>> RewardTrainer::Create(
    TransformerLM model, const Tokenizer& tokenizer, const RewardOptions& options,
    const std::vector<RankedRecord>& train, const std::vector<RankedRecord>& heldout) {
  if (options.steps < 0) return absl::InvalidArgumentError("steps must be >= 0");
  if (options.prompts_per_batch < 1) {
    return absl::InvalidArgumentError("prompts_per_batch must be >= 1");
  }
  if (!(options.lr > 0)) return absl::InvalidArgumentError("lr must be > 0");
  if (!model->config().scalar_head) {
    return absl::InvalidArgumentError("reward model needs scalar_head = true");
  }
  std::unique_ptr<RewardTrainer> t(new RewardTrainer(std::move(model), tokenizer, options));
  const int64_t max_len = t->model_->config().max_seq_len;
  auto tokenize = [&](const std::vector<RankedRecord>& records, std::vector<Example>* out,
                      int64_t limit) {
    for (const RankedRecord& r : records) {
      if (limit >= 0 && static_cast<int64_t>(out->size()) >= limit) break;
      Example e;
      e.pairs = ExpandPairs(r);
      bool ok = !e.pairs.empty();
      for (const std::string& response : r.responses) {
        auto p = EncodePrompt(tokenizer, r.prompt);
        auto s = EncodeResponse(tokenizer, response);
        ok = ok && TruncateToFit(max_len, &p, &s);
        e.prompts.push_back(std::move(p));
        e.responses.push_back(std::move(s));
      }
      if (!ok) {
        ++t->dropped_;
        continue;
      }
      out->push_back(std::move(e));
    }
  };
  tokenize(train, &t->train_, -1);
  tokenize(heldout, &t->heldout_, options.max_heldout);
  if (t->train_.empty()) return absl::InvalidArgumentError("no ranked training records");
  std::set<std::pair<std::string, std::string>> seen;
  for (const auto* records : {&heldout, &train}) {
    for (const RankedRecord& r : *records) {
      for (const std::string& response : r.responses) {
        if (static_cast<int64_t>(seen.size()) >= options.max_reference) break;
        if (seen.insert({r.prompt, response}).second) {
          t->reference_prompts_.push_back(r.prompt);
          t->reference_responses_.push_back(response);
        }
      }
    }
    if (!t->reference_prompts_.empty()) break;  // held-out only, when there is any
  }
  // The pairwise loss is invariant to a constant shift of the scores, so the scalar
  // head's bias gets no signal, only rounding noise that Adam's normalisation turns into
  // lr-sized steps. Its gradient is zeroed (it stays in the optimizer, so saved trainer
  // states keep their layout): at 0 for a fresh head, the trained RM stays exportable as
  // an HF *ForSequenceClassification model, whose `score` has no bias (core/model/hf.h).
  auto named = t->model_->named_parameters();
  if (torch::Tensor* bias = named.find("scalar_head.bias")) {
    bias->register_hook([](const torch::Tensor& grad) { return torch::zeros_like(grad); });
  }
  t->optimizer_ = std::make_unique<torch::optim::AdamW>(
      t->model_->parameters(),
      torch::optim::AdamWOptions(options.lr).weight_decay(options.weight_decay));
  return t;
}

PackedBatch RewardTrainer::Pack(const std::vector<const Example*>& rows,
                                std::vector<IndexPair>* pairs) const {
  std::vector<std::vector<int32_t>> prompts, responses;
  for (const Example* e : rows) {
    const int offset = static_cast<int>(prompts.size());
    for (const IndexPair& p : e->pairs) pairs->push_back({p.winner + offset, p.loser + offset});
    prompts.insert(prompts.end(), e->prompts.begin(), e->prompts.end());
    responses.insert(responses.end(), e->responses.begin(), e->responses.end());
  }
  return PackBatch(prompts, responses, tokenizer_.pad_id(), false);
}

RewardTrainer::Eval RewardTrainer::Evaluate() {
  Eval eval;
  if (heldout_.empty()) {
    eval.accuracy = eval.loss = std::numeric_limits<double>::quiet_NaN();
    return eval;
  }
  torch::NoGradGuard no_grad;
  model_->eval();
  double correct = 0, loss = 0;
  constexpr size_t kChunk = 8;
  for (size_t i = 0; i < heldout_.size(); i += kChunk) {
    std::vector<const Example*> rows;
    for (size_t j = i; j < std::min(heldout_.size(), i + kChunk); ++j) rows.push_back(&heldout_[j]);
    std::vector<IndexPair> pairs;
    PackedBatch batch = Pack(rows, &pairs);
    auto scores = LastTokenScores(model_, batch).to(torch::kFloat64);
    auto acc = scores.accessor<double, 1>();
    for (const IndexPair& p : pairs) {
      const double d = acc[p.winner] - acc[p.loser];
      correct += d > 0 ? 1.0 : d == 0 ? 0.5 : 0.0;
    }
    loss += RewardPairLoss(scores, pairs).item<double>() * pairs.size();
    eval.pairs += pairs.size();
  }
  model_->train();
  eval.accuracy = correct / std::max<int64_t>(1, eval.pairs);
  eval.loss = loss / std::max<int64_t>(1, eval.pairs);
  return eval;
}

absl::Status RewardTrainer::Save(int64_t step, const Eval& eval, double mean, double std) {
  if (options_.out_dir.empty()) return absl::OkStatus();
  // The checkpoint carries its tokenizer (files copied next to the weights).
  RLHF_ASSIGN_OR_RETURN(nlohmann::json tokenizer_spec,
                        SaveTokenizerFiles(tokenizer_, options_.out_dir));
  nlohmann::json meta = {{"stage", "rm"},
                         {"step", step},
                         {"tokenizer", tokenizer_spec},
                         {"reward_mean", mean},
                         {"reward_std", std}};
  if (std::isfinite(eval.accuracy)) {
    meta["heldout_accuracy"] = eval.accuracy;
    meta["heldout_pairs"] = eval.pairs;
  }
  RLHF_RETURN_IF_ERROR(SaveCheckpoint(options_.out_dir, model_, meta));
  return SaveTrainerState(options_.out_dir, *optimizer_, model_, step, "rm");
}

absl::StatusOr<RewardResult> RewardTrainer::Train(const ProgressFn& progress) {
  int64_t start = 0;
  if (options_.resume && !options_.out_dir.empty() &&
      std::ifstream(options_.out_dir + "/trainer_state.safetensors").good()) {
    RLHF_ASSIGN_OR_RETURN(LoadedCheckpoint ckpt, LoadCheckpoint(options_.out_dir));
    RLHF_RETURN_IF_ERROR(LoadWeightsInto(model_, ModelTensors(ckpt.model)));
    RLHF_ASSIGN_OR_RETURN(start, LoadTrainerState(options_.out_dir, *optimizer_, model_, "rm"));
  }
  RewardResult result;
  result.dropped_records = dropped_;
  BatchSampler sampler(static_cast<int64_t>(train_.size()), options_.prompts_per_batch,
                       options_.seed);
  const std::vector<torch::Tensor> params = model_->parameters();
  model_->train();
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  double window_loss = 0, window_correct = 0, window_pairs = 0, total_tokens = 0;
  int64_t window_steps = 0;
  Eval eval;
  eval.accuracy = std::numeric_limits<double>::quiet_NaN();
  const int64_t end_step = options_.stop_at_step >= 0
                               ? std::min(options_.steps, options_.stop_at_step)
                               : options_.steps;
  for (int64_t step = start; step < end_step; ++step) {
    const double lr = LearningRate(step, options_.steps, options_.warmup_steps, options_.lr,
                                   options_.min_lr_ratio);
    SetLearningRate(*optimizer_, lr);
    std::vector<const Example*> rows;
    for (int64_t i : sampler.Batch(step)) rows.push_back(&train_[i]);
    std::vector<IndexPair> pairs;
    PackedBatch batch = Pack(rows, &pairs);
    double correct = 0;
    RLHF_ASSIGN_OR_RETURN(double loss_value, TorchCall([&] {
                            optimizer_->zero_grad();
                            torch::Tensor scores = LastTokenScores(model_, batch);
                            torch::Tensor loss = RewardPairLoss(scores, pairs);
                            loss.backward();
                            ClipGradNorm(params, options_.grad_clip);
                            optimizer_->step();
                            auto s = scores.detach().to(torch::kFloat64);
                            auto acc = s.accessor<double, 1>();
                            for (const IndexPair& p : pairs) {
                              correct += acc[p.winner] > acc[p.loser] ? 1.0 : 0.0;
                            }
                            return loss.item<double>();
                          }, "rm step"));
    if (!std::isfinite(loss_value)) {
      return absl::InternalError(absl::StrCat("rm: loss is not finite at step ", step + 1));
    }
    window_loss += loss_value;
    window_correct += correct;
    window_pairs += pairs.size();
    ++window_steps;
    total_tokens += batch.real_tokens;
    const int64_t done = step + 1;
    const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    result.final_train_loss = window_loss / window_steps;
    const bool eval_now =
        options_.eval_every > 0 && done % options_.eval_every == 0 && done != options_.steps;
    if (eval_now) eval = Evaluate();
    if (progress &&
        (eval_now || done % std::max<int64_t>(1, options_.log_every) == 0 || done == end_step)) {
      TrainProgress p;
      p.stage = "rm";
      p.step = done;
      p.total_steps = options_.steps;
      p.loss = window_loss / window_steps;
      p.lr = lr;
      p.extra = window_correct / std::max(1.0, window_pairs);
      p.tokens_per_sec = total_tokens / std::max(1e-9, elapsed);
      p.elapsed_sec = elapsed;
      p.eta_sec = elapsed / (done - start) * (options_.steps - done);
      if (eval_now && std::isfinite(eval.accuracy)) p.heldout = eval.accuracy;
      progress(p);
      window_loss = window_correct = window_pairs = 0;
      window_steps = 0;
    }
    if (options_.checkpoint_every > 0 && done % options_.checkpoint_every == 0 &&
        done != options_.steps) {
      RLHF_RETURN_IF_ERROR(Save(done, eval, 0.0, 1.0));
    }
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  result.steps = end_step;
  result.seconds = elapsed;
  result.tokens_per_sec = total_tokens / std::max(1e-9, elapsed);
  eval = Evaluate();
  result.heldout_accuracy = eval.accuracy;
  result.heldout_loss = eval.loss;
  result.heldout_pairs = eval.pairs;
  const std::vector<double> ref =
      ScoreTexts(model_, tokenizer_, reference_prompts_, reference_responses_);
  double sum = 0, sq = 0;
  for (double r : ref) sum += r;
  result.reward_mean = ref.empty() ? 0.0 : sum / ref.size();
  for (double r : ref) sq += (r - result.reward_mean) * (r - result.reward_mean);
  result.reward_std = ref.size() > 1 ? std::sqrt(sq / (ref.size() - 1)) : 1.0;
  if (!(result.reward_std > 1e-8)) result.reward_std = 1.0;
  RLHF_RETURN_IF_ERROR(Save(end_step, eval, result.reward_mean, result.reward_std));
  return result;
}

}  // namespace rlhf
