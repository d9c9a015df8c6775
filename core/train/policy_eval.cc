#include "core/train/policy_eval.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/data/gold_labeler.h"
#include "core/model/chunked_unembedding.h"
#include "core/model/generation.h"
#include "core/model/logprobs.h"
#include "core/status_macros.h"
#include "core/train/training_common.h"

namespace rlhf {

Interval MeanInterval(const std::vector<double>& values) {
  Interval out;
  if (values.empty()) {
    out.mean = std::numeric_limits<double>::quiet_NaN();
    return out;
  }
  double sum = 0;
  for (double v : values) sum += v;
  out.mean = sum / values.size();
  if (values.size() > 1) {
    double sq = 0;
    for (double v : values) sq += (v - out.mean) * (v - out.mean);
    out.half_width = 1.96 * std::sqrt(sq / (values.size() - 1)) / std::sqrt(values.size());
  }
  return out;
}

absl::StatusOr<PolicyEvalReport> EvaluatePolicy(TransformerLM& policy, TransformerLM* reference,
                                                TransformerLM* reward_model,
                                                const Tokenizer& tokenizer,
                                                const std::vector<std::string>& prompts_in,
                                                const PolicyEvalOptions& options,
                                                TransformerLM* heldout_reward_model) {
  if (!policy->config().lm_head) return absl::InvalidArgumentError("policy has no LM head");
  if (reward_model != nullptr && !(*reward_model)->config().scalar_head) {
    return absl::InvalidArgumentError("reward model has no scalar head");
  }
  if (heldout_reward_model != nullptr && !(*heldout_reward_model)->config().scalar_head) {
    return absl::InvalidArgumentError("held-out reward model has no scalar head");
  }
  std::vector<std::string> prompts;
  for (const std::string& p : prompts_in) {
    if (options.max_prompts >= 0 && static_cast<int64_t>(prompts.size()) >=
                                        options.max_prompts * options.samples_per_prompt) {
      break;
    }
    for (int64_t s = 0; s < options.samples_per_prompt; ++s) prompts.push_back(p);
  }
  if (prompts.empty()) return absl::InvalidArgumentError("no prompts to evaluate");
  torch::NoGradGuard no_grad;
  policy->eval();
  if (reference != nullptr) (*reference)->eval();
  if (reward_model != nullptr) (*reward_model)->eval();
  if (heldout_reward_model != nullptr) (*heldout_reward_model)->eval();
  constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

  SamplingOptions sampling;
  sampling.temperature = options.temperature;
  sampling.max_new_tokens = options.max_new_tokens;
  sampling.stop_tokens = {tokenizer.eos_id()};

  PolicyEvalReport report;
  std::vector<double> golds, kls, rms, rm2s;
  double kl_total = 0, kl_tokens = 0, bytes = 0, tokens = 0, finished = 0;
  for (size_t start = 0; start < prompts.size(); start += options.batch_size) {
    const size_t end = std::min(prompts.size(), start + static_cast<size_t>(options.batch_size));
    std::vector<std::vector<int32_t>> prompt_ids;
    std::vector<uint64_t> seeds;
    for (size_t i = start; i < end; ++i) {
      prompt_ids.push_back(EncodePrompt(tokenizer, prompts[i]));
      seeds.push_back(options.seed * 1000003ULL + i);
    }
    RLHF_ASSIGN_OR_RETURN(GenerationResult gen, Generate(policy, prompt_ids, seeds, sampling));
    std::vector<double> batch_kl(end - start, std::numeric_limits<double>::quiet_NaN());
    std::vector<double> batch_rm(end - start, kNaN), batch_rm2(end - start, kNaN);
    if (reference != nullptr || reward_model != nullptr || heldout_reward_model != nullptr) {
      SequenceBatchOptions pack;
      pack.pad_id = tokenizer.pad_id();
      RLHF_ASSIGN_OR_RETURN(SequenceBatch batch,
                            MakeSequenceBatch(prompt_ids, gen.responses, pack));
      if (reference != nullptr) {
        RLHF_ASSIGN_OR_RETURN(
            auto kl_rows,
            TorchCall(
                [&] {
                  // Full rows at the response positions only: the prompt's are never unembedded.
                  auto response_rows = [&](TransformerLM& model) {
                    const torch::Tensor hidden =
                        model->forward_hidden(batch.ids, batch.attention_mask, batch.position_ids)
                            .hidden;
                    return at::log_softmax(model->Unembed(ResponseHiddenRows(hidden, batch)), -1);
                  };
                  auto lp = response_rows(policy);
                  auto lq = response_rows(*reference);
                  return (lp.exp() * (lp - lq)).sum(-1).to(torch::kFloat64).contiguous();
                },
                "eval kl"));
        auto acc = kl_rows.accessor<double, 1>();
        int64_t row = 0;
        for (size_t b = 0; b < end - start; ++b) {
          double s = 0;
          for (int64_t t = 0; t < batch.response_lengths[b]; ++t) s += acc[row++];
          batch_kl[b] = s;
          kl_total += s;
          kl_tokens += batch.response_lengths[b];
        }
      }
      // The scalar head at the last real token, normalised.
      auto score = [&](TransformerLM& rm, double mean, double stdev,
                       std::vector<double>* out) -> absl::Status {
        RLHF_ASSIGN_OR_RETURN(auto scores, TorchCall([&] {
                                auto o = rm->forward(batch.ids, batch.attention_mask,
                                                     batch.position_ids);
                                return ScoreAtLastToken(o.scalar, batch.attention_mask)
                                    .to(torch::kFloat64)
                                    .contiguous();
                              }, "eval rm"));
        auto acc = scores.accessor<double, 1>();
        for (size_t b = 0; b < end - start; ++b) (*out)[b] = (acc[b] - mean) / stdev;
        return absl::OkStatus();
      };
      if (reward_model != nullptr) {
        RLHF_RETURN_IF_ERROR(score(*reward_model, options.rm_mean, options.rm_std, &batch_rm));
      }
      if (heldout_reward_model != nullptr) {
        RLHF_RETURN_IF_ERROR(
            score(*heldout_reward_model, options.rm2_mean, options.rm2_std, &batch_rm2));
      }
    }
    for (size_t b = 0; b < end - start; ++b) {
      PolicyEvalSample s;
      s.prompt = prompts[start + b];
      s.response = tokenizer.Decode(gen.responses[b]);
      s.finished = gen.finished[b];
      s.gold = options.gold ? GoldScore(s.prompt, s.response) : kNaN;
      s.kl = batch_kl[b];
      s.rm = batch_rm[b];
      s.rm2 = batch_rm2[b];
      s.tokens = static_cast<int64_t>(gen.responses[b].size());
      s.response_ids = gen.responses[b];
      if (options.gold) golds.push_back(s.gold);
      if (reference != nullptr) kls.push_back(s.kl);
      if (reward_model != nullptr) rms.push_back(s.rm);
      if (heldout_reward_model != nullptr) rm2s.push_back(s.rm2);
      bytes += s.response.size();
      tokens += s.tokens;
      finished += s.finished;
      report.samples.push_back(std::move(s));
    }
    if (options.on_progress) {
      options.on_progress(static_cast<int64_t>(end), static_cast<int64_t>(prompts.size()));
    }
  }
  report.n = static_cast<int64_t>(report.samples.size());
  report.gold = MeanInterval(golds);
  report.kl = MeanInterval(kls);
  report.rm = MeanInterval(rms);
  report.rm2 = MeanInterval(rm2s);
  report.kl_per_token = kl_tokens > 0 ? kl_total / kl_tokens : std::numeric_limits<double>::quiet_NaN();
  report.mean_response_bytes = bytes / report.n;
  report.mean_response_tokens = tokens / report.n;
  report.finished_fraction = finished / report.n;
  return report;
}

}  // namespace rlhf
