#include "reference_server/reference_handler.h"

#include <algorithm>
#include <cmath>
#include <map>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "core/model/chunked_unembedding.h"
#include "core/model/device.h"
#include "core/model/logprobs.h"
#include "core/status_macros.h"
#include "services/validation.h"

namespace rlhf::reference {

// Log-probs may round to slightly above 0 in float32.
constexpr float kMaxLogProb = 1e-3f;
// A sampled token's log-prob below this (p < 2e-35) cannot come from sampling, and k3 =
// exp(-d) - 1 + d (d = policy - reference) overflows float32 past exp(88): refusing it
// keeps every returned KL finite (issue 23).
constexpr float kMinPolicyLogProb = -80.0f;

absl::StatusOr<KlEstimator> FromProto(rlhf::v1::KlEstimator estimator) {
  switch (estimator) {
    case rlhf::v1::KL_ESTIMATOR_UNSPECIFIED:
    case rlhf::v1::KL_ESTIMATOR_K1: return KlEstimator::kK1;
    case rlhf::v1::KL_ESTIMATOR_K2: return KlEstimator::kK2;
    case rlhf::v1::KL_ESTIMATOR_K3: return KlEstimator::kK3;
    case rlhf::v1::KL_ESTIMATOR_EXACT: return KlEstimator::kExact;
    default: break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("kl_estimator: unknown value ", static_cast<int>(estimator)));
}

absl::StatusOr<std::unique_ptr<ReferenceHandler>> ReferenceHandler::Create(
    const ReferenceHandlerOptions& options, TransformerLM model, prometheus::Registry* registry) {
  if (!model) return absl::InvalidArgumentError("reference model: null");
  if (!model->config().lm_head) {
    return absl::InvalidArgumentError("reference model: config.lm_head is false (no logits)");
  }
  if (options.max_sequences_per_request < 1) {
    return absl::InvalidArgumentError("max_sequences_per_request: must be >= 1");
  }
  if (options.max_seq_len < 0 || options.max_seq_len > model->config().max_seq_len) {
    return absl::InvalidArgumentError(absl::StrCat("max_seq_len: ", options.max_seq_len,
                                                   " not in [0, model max_seq_len ",
                                                   model->config().max_seq_len, "]"));
  }
  if (options.pad_id < 0 || options.pad_id >= model->config().vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("pad_id: ", options.pad_id,
                                                   " outside the vocabulary"));
  }
  if (options.max_logits_mb < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_logits_mb: ", options.max_logits_mb, " must be >= 1"));
  }
  if (auto s = services::ValidateBatcherOptions(options.batcher); !s.ok()) return s;
  return std::unique_ptr<ReferenceHandler>(
      new ReferenceHandler(options, std::move(model), registry));
}

int64_t EffectiveMaxBatchTokens(const ReferenceHandlerOptions& options, int64_t vocab_size,
                                int64_t max_seq_len) {
  const int64_t logits_tokens =
      (options.max_logits_mb << 20) / (static_cast<int64_t>(sizeof(float)) * vocab_size);
  return std::min(options.batcher.max_batch_tokens, std::max(logits_tokens, max_seq_len));
}

ReferenceHandler::ReferenceHandler(ReferenceHandlerOptions options, TransformerLM model,
                                   prometheus::Registry* registry)
    : options_(std::move(options)), model_(std::move(model)) {
  model_->eval();
  max_seq_len_ = options_.max_seq_len > 0 ? options_.max_seq_len : model_->config().max_seq_len;
  services::BatcherOptions batcher = options_.batcher;
  batcher.max_batch_tokens =
      EffectiveMaxBatchTokens(options_, model_->config().vocab_size, max_seq_len_);
  services::BatcherHooks hooks;
  if (registry != nullptr) {
    metrics_ = std::make_unique<services::BatchMetrics>(*registry, "reference_server");
    const ModelConfig& c = model_->config();
    metrics_->SetModelInfo({{"arch", c.arch == Architecture::kLlama ? "llama" : "gpt2"},
                            {"vocab_size", absl::StrCat(c.vocab_size)},
                            {"max_seq_len", absl::StrCat(max_seq_len_)},
                            {"max_batch_tokens", absl::StrCat(batcher.max_batch_tokens)},
                            {"parameters", absl::StrCat(CountParameters(c))}});
    hooks = metrics_->Hooks();
  }
  batcher_ = std::make_unique<Batcher>(
      batcher, [](const ReferenceItem& item) { return item.length(); },
      [this](const std::vector<const ReferenceItem*>& batch) { return RunBatch(batch); },
      std::move(hooks));
}

namespace {

absl::Status ValidateDistribution(const rlhf::v1::StepDistribution& step,
                                  const std::string& field, int64_t vocab) {
  if (step.token_ids().empty()) {
    if (step.logprobs_size() != vocab) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".logprobs: ", step.logprobs_size(),
          " values; a full distribution needs vocab size ", vocab, " (or send token_ids)"));
    }
  } else {
    if (step.logprobs_size() != step.token_ids_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".logprobs: ", step.logprobs_size(), " values for ",
                       step.token_ids_size(), " token_ids"));
    }
    if (step.token_ids_size() > vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".token_ids: ", step.token_ids_size(), " ids > vocab size ", vocab));
    }
    std::vector<int32_t> seen(step.token_ids().begin(), step.token_ids().end());
    for (int i = 0; i < step.token_ids_size(); ++i) {
      const int32_t id = step.token_ids(i);
      if (id < 0 || id >= vocab) {
        return absl::InvalidArgumentError(absl::StrCat(field, ".token_ids[", i, "]: token id ",
                                                       id, " not in [0, ", vocab, ")"));
      }
    }
    std::sort(seen.begin(), seen.end());
    if (std::adjacent_find(seen.begin(), seen.end()) != seen.end()) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".token_ids: duplicate ids"));
    }
    const float tail = step.tail_logprob();
    if (std::isnan(tail) || tail > kMaxLogProb) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".tail_logprob: ", tail, " is not a log-prob (NaN or > 0)"));
    }
  }
  return services::ValidateFloats(step.logprobs(), absl::StrCat(field, ".logprobs"),
                                  /*allow_neg_inf=*/true, kMaxLogProb);
}

}  // namespace

absl::Status ReferenceHandler::Validate(const rlhf::v1::ReferenceScoreRequest& request) const {
  if (auto s = FromProto(request.kl_estimator()); !s.ok()) return s.status();
  if (auto s = services::ValidateCount(request.sequences_size(), "sequences",
                                       options_.max_sequences_per_request);
      !s.ok()) {
    return s;
  }
  services::SequenceLimits limits;
  limits.vocab_size = model_->config().vocab_size;
  limits.max_length = max_seq_len_;
  for (int i = 0; i < request.sequences_size(); ++i) {
    const auto& seq = request.sequences(i);
    const std::string field = absl::StrCat("sequences[", i, "]");
    if (auto s = services::ValidateTokenSequence(seq.tokens(), field + ".tokens", limits);
        !s.ok()) {
      return s;
    }
    const int n = seq.tokens().response_size();
    if (seq.policy_logprobs_size() != n) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".policy_logprobs: ",
                                                     seq.policy_logprobs_size(), " values for ",
                                                     n, " response tokens"));
    }
    if (auto s = services::ValidateFloats(seq.policy_logprobs(), field + ".policy_logprobs",
                                          /*allow_neg_inf=*/false, kMaxLogProb);
        !s.ok()) {
      return s;
    }
    if (request.kl_estimator() == rlhf::v1::KL_ESTIMATOR_EXACT &&
        seq.policy_distributions_size() == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".policy_distributions: kl_estimator EXACT needs one per response token"));
    }
    for (int t = 0; t < n; ++t) {
      if (seq.policy_logprobs(t) < kMinPolicyLogProb) {
        return absl::InvalidArgumentError(absl::StrCat(field, ".policy_logprobs[", t, "]: ",
                                                       seq.policy_logprobs(t), " < ",
                                                       kMinPolicyLogProb,
                                                       " (not a sampled token's log-prob)"));
      }
    }
    if (seq.policy_distributions_size() != 0 && seq.policy_distributions_size() != n) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".policy_distributions: ", seq.policy_distributions_size(),
          " steps for ", n, " response tokens (send none or one per token)"));
    }
    for (int t = 0; t < seq.policy_distributions_size(); ++t) {
      if (auto s = ValidateDistribution(seq.policy_distributions(t),
                                        absl::StrCat(field, ".policy_distributions[", t, "]"),
                                        limits.vocab_size);
          !s.ok()) {
        return s;
      }
    }
  }
  return absl::OkStatus();
}

namespace {

std::vector<float> ToVector(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kFloat).contiguous();
  const float* p = c.data_ptr<float>();
  return std::vector<float>(p, p + c.numel());
}

// Exact KL per response step of one sequence. ref_rows: [R, V] reference log-probs.
std::vector<float> ExactKl(const rlhf::v1::ReferenceSequence& seq, const torch::Tensor& ref_rows) {
  const int64_t R = ref_rows.size(0), V = ref_rows.size(1);
  std::vector<float> out(R);
  // Group steps by how they were sent (0 = full row, else top-k size) so each group is
  // one tensor op.
  std::map<int, std::vector<int64_t>> groups;
  for (int64_t t = 0; t < R; ++t) groups[seq.policy_distributions(t).token_ids_size()].push_back(t);
  for (const auto& [k, steps] : groups) {
    const int64_t n = static_cast<int64_t>(steps.size());
    torch::Tensor rows = ref_rows.index_select(0, torch::tensor(steps, torch::kLong));
    torch::Tensor kl;
    if (k == 0) {
      torch::Tensor policy = torch::empty({n, V}, torch::kFloat);
      for (int64_t i = 0; i < n; ++i) {
        const auto& lp = seq.policy_distributions(steps[i]).logprobs();
        std::copy(lp.begin(), lp.end(), policy[i].data_ptr<float>());
      }
      kl = ExactKlFull(policy, rows);
    } else {
      torch::Tensor policy = torch::empty({n, k}, torch::kFloat);
      torch::Tensor ids = torch::empty({n, k}, torch::kLong);
      torch::Tensor tail = torch::empty({n}, torch::kFloat);
      for (int64_t i = 0; i < n; ++i) {
        const auto& step = seq.policy_distributions(steps[i]);
        std::copy(step.logprobs().begin(), step.logprobs().end(), policy[i].data_ptr<float>());
        int64_t* id = ids[i].data_ptr<int64_t>();
        for (int j = 0; j < k; ++j) id[j] = step.token_ids(j);
        tail[i] = step.tail_logprob();
      }
      kl = ExactKlTopK(policy, ids, tail, rows);
    }
    const std::vector<float> values = ToVector(kl);
    for (int64_t i = 0; i < n; ++i) out[steps[i]] = values[i];
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<ReferenceItemResult>> ReferenceHandler::RunBatch(
    const std::vector<const ReferenceItem*>& batch) {
  std::vector<std::vector<int32_t>> prompts, responses;
  for (const ReferenceItem* item : batch) {
    prompts.push_back(item->prompt);
    responses.push_back(item->response);
  }
  SequenceBatchOptions options;
  options.pad_id = options_.pad_id;
  options.max_len = max_seq_len_;
  RLHF_ASSIGN_OR_RETURN(SequenceBatch host, MakeSequenceBatch(prompts, responses, options));
  return TorchCall(
      [&]() {
        c10::InferenceMode guard;
        // Packed on the host, run on the model's device; PerSequenceResponseValues and
        // the exact-KL rows below copy back to the host only what is answered.
        const SequenceBatch packed = SequenceBatchToDevice(host, ModelDevice(model_));
        // Hidden states only: the response rows are unembedded a block at a time
        // (chunked_unembedding.h), and a row of logits is made again only where exact KL asks.
        const torch::Tensor hidden =
            model_->forward_hidden(packed.ids, packed.attention_mask, packed.position_ids).hidden;
        const torch::Tensor logp = ResponseLogProbsFromHidden(hidden, model_->unembedding(), packed,
                                                              1.0, /*with_entropy=*/false)
                                       .logp;
        std::vector<std::vector<float>> ref = PerSequenceResponseValues(logp, packed);
        std::vector<ReferenceItemResult> results(batch.size());
        for (size_t b = 0; b < batch.size(); ++b) {
          const ReferenceItem& item = *batch[b];
          ReferenceItemResult& r = results[b];
          r.ref_logprobs = std::move(ref[b]);
          const int64_t n = static_cast<int64_t>(r.ref_logprobs.size());
          const torch::Tensor policy =
              torch::from_blob(const_cast<float*>(item.policy_logprobs.data()), {n},
                               torch::kFloat);
          const torch::Tensor reference =
              torch::from_blob(r.ref_logprobs.data(), {n}, torch::kFloat);
          r.kl = ToVector(PerTokenKl(policy, reference, item.estimator));
          if (item.source != nullptr && item.source->policy_distributions_size() > 0) {
            // Row t of the response is predicted at position prompt_len + t - 1.
            const torch::Tensor rows =
                at::log_softmax(
                    model_->Unembed(hidden[b].narrow(0, packed.prompt_lengths[b] - 1, n))
                        .to(torch::kFloat),
                    -1)
                    .to(torch::kCPU);
            r.exact_kl = ExactKl(*item.source, rows);
            if (item.estimator == KlEstimator::kExact) r.kl = r.exact_kl;
          }
        }
        return results;
      },
      "reference forward");
}

void ReferenceHandler::Score(const rlhf::v1::ReferenceScoreRequest& request, absl::Time deadline,
                             services::CancelFlag cancelled, Done done) {
  if (absl::Status s = Validate(request); !s.ok()) {
    done(s);
    return;
  }
  const KlEstimator estimator = *FromProto(request.kl_estimator());
  std::vector<ReferenceItem> items(request.sequences_size());
  for (int i = 0; i < request.sequences_size(); ++i) {
    const auto& seq = request.sequences(i);
    items[i].prompt.assign(seq.tokens().prompt().begin(), seq.tokens().prompt().end());
    items[i].response.assign(seq.tokens().response().begin(), seq.tokens().response().end());
    items[i].policy_logprobs.assign(seq.policy_logprobs().begin(), seq.policy_logprobs().end());
    items[i].estimator = estimator;
    items[i].source = &seq;
  }
  auto callback = [done](absl::StatusOr<std::vector<ReferenceItemResult>> results) {
    if (!results.ok()) {
      done(results.status());
      return;
    }
    rlhf::v1::ReferenceScoreResponse response;
    for (ReferenceItemResult& r : *results) {
      auto* out = response.add_results();
      out->mutable_ref_logprobs()->Add(r.ref_logprobs.begin(), r.ref_logprobs.end());
      out->mutable_kl()->Add(r.kl.begin(), r.kl.end());
      out->mutable_exact_kl()->Add(r.exact_kl.begin(), r.exact_kl.end());
    }
    done(std::move(response));
  };
  absl::Status queued =
      batcher_->Submit(std::move(items), deadline, std::move(cancelled), std::move(callback));
  if (!queued.ok()) done(queued);
}

absl::StatusOr<rlhf::v1::ReferenceScoreResponse> ReferenceHandler::ScoreBlocking(
    const rlhf::v1::ReferenceScoreRequest& request, absl::Time deadline) {
  absl::Notification notification;
  absl::StatusOr<rlhf::v1::ReferenceScoreResponse> result;
  Score(request, deadline, nullptr, [&](absl::StatusOr<rlhf::v1::ReferenceScoreResponse> r) {
    result = std::move(r);
    notification.Notify();
  });
  notification.WaitForNotification();
  return result;
}

void ReferenceHandler::Shutdown() {
  if (batcher_) batcher_->Shutdown();
}

}  // namespace rlhf::reference
