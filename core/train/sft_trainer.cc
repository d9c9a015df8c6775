#include "core/train/sft_trainer.h"

#include <chrono>
#include <cmath>
#include <fstream>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/functional.h>

#include "absl/strings/str_cat.h"
#include "core/model/checkpoint.h"
#include "core/model/chunked_unembedding.h"
#include "core/status_macros.h"
#include "core/tokenizer/model_dir.h"

namespace rlhf {

torch::Tensor SftLoss(const torch::Tensor& hidden, const torch::Tensor& unembedding,
                      const PackedBatch& batch) {
  return MaskedNextTokenNll(hidden, unembedding, batch.ids, batch.target_mask);
}

SftTrainer::SftTrainer(TransformerLM model, const Tokenizer& tokenizer, const SftOptions& options)
    : model_(std::move(model)), tokenizer_(tokenizer), options_(options) {}

absl::StatusOr<std::unique_ptr<SftTrainer>> SftTrainer::Create(
    TransformerLM model, const Tokenizer& tokenizer, const SftOptions& options,
    const std::vector<SftRecord>& train, const std::vector<SftRecord>& heldout) {
  if (options.steps < 0) return absl::InvalidArgumentError("steps must be >= 0");
  if (options.batch_size < 1) return absl::InvalidArgumentError("batch_size must be >= 1");
  if (!(options.lr > 0)) return absl::InvalidArgumentError("lr must be > 0");
  if (!model->config().lm_head) {
    return absl::InvalidArgumentError("SFT needs a model with an LM head (lm_head = true)");
  }
  std::unique_ptr<SftTrainer> t(new SftTrainer(std::move(model), tokenizer, options));
  const int64_t max_len = t->model_->config().max_seq_len;
  auto tokenize = [&](const std::vector<SftRecord>& records, std::vector<Example>* out,
                      int64_t limit) {
    for (const SftRecord& r : records) {
      if (limit >= 0 && static_cast<int64_t>(out->size()) >= limit) break;
      Example e{EncodePrompt(tokenizer, r.prompt), EncodeResponse(tokenizer, r.response)};
      if (!TruncateToFit(max_len, &e.prompt, &e.response)) {
        ++t->dropped_;
        continue;
      }
      out->push_back(std::move(e));
    }
  };
  tokenize(train, &t->train_, -1);
  tokenize(heldout, &t->heldout_, options.max_heldout);
  if (t->train_.empty()) return absl::InvalidArgumentError("no SFT training records");
  t->optimizer_ = std::make_unique<torch::optim::AdamW>(
      t->model_->parameters(),
      torch::optim::AdamWOptions(options.lr).weight_decay(options.weight_decay));
  return t;
}

PackedBatch SftTrainer::Pack(const std::vector<const Example*>& rows) const {
  std::vector<std::vector<int32_t>> prompts, responses;
  for (const Example* e : rows) {
    prompts.push_back(e->prompt);
    responses.push_back(e->response);
  }
  return PackBatch(prompts, responses, tokenizer_.pad_id(), options_.train_on_prompt);
}

double SftTrainer::HeldoutLoss() {
  if (heldout_.empty()) return std::numeric_limits<double>::quiet_NaN();
  torch::NoGradGuard no_grad;
  model_->eval();
  double total = 0, count = 0;
  constexpr size_t kChunk = 64;
  for (size_t i = 0; i < heldout_.size(); i += kChunk) {
    std::vector<const Example*> rows;
    for (size_t j = i; j < std::min(heldout_.size(), i + kChunk); ++j) rows.push_back(&heldout_[j]);
    PackedBatch batch = Pack(rows);
    const torch::Tensor hidden = model_->forward_hidden(batch.ids, batch.attention_mask).hidden;
    const double n = batch.target_mask.narrow(1, 1, batch.ids.size(1) - 1).sum().item<double>();
    total += SftLoss(hidden, model_->unembedding(), batch).item<double>() * n;
    count += n;
  }
  model_->train();
  return total / std::max(1.0, count);
}

absl::Status SftTrainer::Save(int64_t step, double heldout_loss) {
  if (options_.out_dir.empty()) return absl::OkStatus();
  // The checkpoint carries its tokenizer (files copied next to the weights).
  RLHF_ASSIGN_OR_RETURN(nlohmann::json tokenizer_spec,
                        SaveTokenizerFiles(tokenizer_, options_.out_dir));
  nlohmann::json meta = {{"stage", "sft"},
                         {"step", step},
                         {"tokenizer", tokenizer_spec},
                         {"train_on_prompt", options_.train_on_prompt}};
  if (std::isfinite(heldout_loss)) meta["heldout_loss"] = heldout_loss;
  RLHF_RETURN_IF_ERROR(SaveCheckpoint(options_.out_dir, model_, meta));
  return SaveTrainerState(options_.out_dir, *optimizer_, model_, step, "sft");
}

absl::StatusOr<SftResult> SftTrainer::Train(const ProgressFn& progress) {
  int64_t start = 0;
  if (options_.resume && !options_.out_dir.empty() &&
      std::ifstream(options_.out_dir + "/trainer_state.safetensors").good()) {
    RLHF_ASSIGN_OR_RETURN(LoadedCheckpoint ckpt, LoadCheckpoint(options_.out_dir));
    RLHF_RETURN_IF_ERROR(LoadWeightsInto(model_, ModelTensors(ckpt.model)));
    RLHF_ASSIGN_OR_RETURN(start, LoadTrainerState(options_.out_dir, *optimizer_, model_, "sft"));
  }
  SftResult result;
  result.dropped_records = dropped_;
  BatchSampler sampler(static_cast<int64_t>(train_.size()), options_.batch_size, options_.seed);
  const std::vector<torch::Tensor> params = model_->parameters();
  model_->train();
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  double window_loss = 0, total_tokens = 0;
  int64_t window_steps = 0;
  double heldout = std::numeric_limits<double>::quiet_NaN();
  const int64_t end_step = options_.stop_at_step >= 0
                               ? std::min(options_.steps, options_.stop_at_step)
                               : options_.steps;
  for (int64_t step = start; step < end_step; ++step) {
    const double lr = LearningRate(step, options_.steps, options_.warmup_steps, options_.lr,
                                   options_.min_lr_ratio);
    SetLearningRate(*optimizer_, lr);
    std::vector<const Example*> rows;
    for (int64_t i : sampler.Batch(step)) rows.push_back(&train_[i]);
    PackedBatch batch = Pack(rows);
    RLHF_ASSIGN_OR_RETURN(double loss_value, TorchCall([&] {
                            optimizer_->zero_grad();
                            const torch::Tensor hidden =
                                model_->forward_hidden(batch.ids, batch.attention_mask).hidden;
                            torch::Tensor loss = SftLoss(hidden, model_->unembedding(), batch);
                            loss.backward();
                            ClipGradNorm(params, options_.grad_clip);
                            optimizer_->step();
                            return loss.item<double>();
                          }, "sft step"));
    if (!std::isfinite(loss_value)) {
      return absl::InternalError(absl::StrCat("sft: loss is not finite at step ", step + 1));
    }
    window_loss += loss_value;
    ++window_steps;
    total_tokens += batch.real_tokens;
    const int64_t done = step + 1;
    const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    result.final_train_loss = window_loss / window_steps;
    const bool eval_now =
        options_.eval_every > 0 && done % options_.eval_every == 0 && done != options_.steps;
    if (eval_now) heldout = HeldoutLoss();
    if (progress &&
        (eval_now || done % std::max<int64_t>(1, options_.log_every) == 0 || done == end_step)) {
      TrainProgress p;
      p.stage = "sft";
      p.step = done;
      p.total_steps = options_.steps;
      p.loss = window_loss / window_steps;
      p.lr = lr;
      p.tokens_per_sec = total_tokens / std::max(1e-9, elapsed);
      p.elapsed_sec = elapsed;
      p.eta_sec = elapsed / (done - start) * (options_.steps - done);
      if (eval_now) p.heldout = heldout;
      progress(p);
      window_loss = 0;
      window_steps = 0;
    }
    if (options_.checkpoint_every > 0 && done % options_.checkpoint_every == 0 &&
        done != options_.steps) {
      RLHF_RETURN_IF_ERROR(Save(done, heldout));
    }
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  result.steps = end_step;
  result.seconds = elapsed;
  result.tokens_per_sec = total_tokens / std::max(1e-9, elapsed);
  result.heldout_loss = HeldoutLoss();
  RLHF_RETURN_IF_ERROR(Save(end_step, result.heldout_loss));
  return result;
}

}  // namespace rlhf
