#include "core/model/generation.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "core/util/splitmix.h"

namespace rlhf {
namespace {

// Counter-based uniform in (0, 1] for (seed, step): no generator state, so a row's draws
// depend on nothing but its own seed and position. Never 0, so the inverse-CDF draw below
// can never land on a zero-probability token.
double Uniform(uint64_t seed, int64_t step) {
  const uint64_t r = SplitMix64(SplitMix64(seed) + static_cast<uint64_t>(step));
  return static_cast<double>((r >> 11) + 1) * (1.0 / 9007199254740992.0);
}

struct StepSample {
  torch::Tensor tokens;    // [Ba] int64
  torch::Tensor logprobs;  // [Ba] float32 (reported distribution)
  torch::Tensor topk_ids, topk_logprobs;  // [Ba, K] when requested
  torch::Tensor sampling_logp;  // [Ba, V] truncated + renormalised; undefined = no truncation
};

// logits [Ba, V] -> one token per row. `uniforms` has one entry per row.
StepSample SampleStep(const torch::Tensor& logits, const std::vector<double>& uniforms,
                      const SamplingOptions& o) {
  StepSample s;
  const auto l = logits.to(torch::kFloat32);
  const int64_t Ba = l.size(0), V = l.size(1);
  const auto logp =
      at::log_softmax(o.temperature > 0 && o.temperature != 1.0 ? l / o.temperature : l, -1);
  if (o.temperature == 0) {
    s.tokens = logp.argmax(-1);
  } else {
    torch::Tensor filtered = logp;
    torch::Tensor removed;  // [Ba, V] bool: truncated away (undefined = none)
    if (o.top_k > 0 && o.top_k < V) {
      const auto kth = std::get<0>(logp.topk(o.top_k, -1)).narrow(1, o.top_k - 1, 1);
      removed = filtered < kth;
      filtered = filtered.masked_fill(removed, -std::numeric_limits<float>::infinity());
    }
    // Unnormalised sampling weights; truncated tokens get exactly 0.
    torch::Tensor weights = filtered.exp();
    if (o.top_p < 1.0) {
      // Keep the smallest most-likely prefix whose (renormalised) mass reaches top_p: a
      // token stays iff the mass strictly before it is < top_p. The top token always stays.
      auto sorted = weights.sort(-1, /*descending=*/true);
      const auto sp = std::get<0>(sorted).to(torch::kFloat64);
      const auto before = (sp.cumsum(-1) - sp) / sp.sum(-1, /*keepdim=*/true);
      const auto remove = before >= o.top_p;
      const auto remove_orig = at::zeros_like(remove).scatter(1, std::get<1>(sorted), remove);
      weights = weights.masked_fill(remove_orig, 0.0f);
      removed = removed.defined() ? (removed | remove_orig) : remove_orig;
    }
    // The distribution actually sampled from: the truncated one, renormalised (see the
    // convention in generation.h). Kept as a mask, not from `weights`, so a kept token
    // whose weight underflows to 0 still gets its (finite) log-prob.
    if (removed.defined()) {
      s.sampling_logp =
          at::log_softmax(logp.masked_fill(removed, -std::numeric_limits<float>::infinity()), -1);
    }
    // Inverse-CDF draw per row in one sequential pass (double accumulation): the result
    // depends on the row's own values and uniform only, never on the batch. The chosen
    // token always has weight > 0 because u > 0.
    weights = weights.to(torch::kCPU).contiguous();
    auto tokens = torch::empty({Ba}, torch::kLong);
    auto tok = tokens.accessor<int64_t, 1>();
    const float* w = weights.data_ptr<float>();
    for (int64_t r = 0; r < Ba; ++r) {
      const float* row = w + r * V;
      double total = 0;
      for (int64_t i = 0; i < V; ++i) total += row[i];
      const double target = uniforms[r] * total;
      double cum = 0;
      int64_t chosen = -1;
      for (int64_t i = 0; i < V; ++i) {
        if (row[i] <= 0) continue;
        cum += row[i];
        chosen = i;
        if (cum >= target) break;
      }
      tok[r] = chosen < 0 ? 0 : chosen;  // chosen < 0 only for an all-zero (NaN) row
    }
    s.tokens = tokens.to(logp.device());
  }
  const torch::Tensor& reported = s.sampling_logp.defined() ? s.sampling_logp : logp;
  s.logprobs = reported.gather(1, s.tokens.unsqueeze(1)).squeeze(1);
  if (o.return_top_k_distributions > 0) {
    auto top = reported.topk(std::min<int64_t>(o.return_top_k_distributions, V), -1);
    s.topk_logprobs = std::get<0>(top);
    s.topk_ids = std::get<1>(top);
  }
  return s;
}

}  // namespace

absl::Status ValidateSamplingOptions(const SamplingOptions& o) {
  if (!std::isfinite(o.temperature) || o.temperature < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be finite and >= 0, got ", o.temperature));
  }
  if (o.top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", o.top_k));
  if (!(o.top_p > 0 && o.top_p <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", o.top_p));
  }
  if (o.max_new_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens must be >= 1, got ", o.max_new_tokens));
  }
  if (o.return_top_k_distributions < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "return_top_k_distributions must be >= 0, got ", o.return_top_k_distributions));
  }
  return absl::OkStatus();
}

double LogProbTemperature(const SamplingOptions& options) {
  return options.temperature > 0 ? options.temperature : 1.0;
}

absl::StatusOr<GenerationResult> Generate(TransformerLM& model,
                                          const std::vector<std::vector<int32_t>>& prompts,
                                          const std::vector<uint64_t>& seeds,
                                          const SamplingOptions& options) {
  RLHF_RETURN_IF_ERROR(ValidateSamplingOptions(options));
  const ModelConfig& config = model->config();
  if (!config.lm_head) return absl::InvalidArgumentError("model has no lm_head: cannot generate");
  if (prompts.empty()) return absl::InvalidArgumentError("prompts is empty");
  if (seeds.size() != prompts.size()) {
    return absl::InvalidArgumentError(absl::StrCat("seeds has ", seeds.size(),
                                                   " entries but prompts has ", prompts.size()));
  }
  for (int32_t stop : options.stop_tokens) {
    if (stop < 0 || stop >= config.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("stop_tokens: ", stop, " outside [0, ",
                                                     config.vocab_size, ")"));
    }
  }
  const int64_t B = static_cast<int64_t>(prompts.size());
  int64_t max_prompt = 0;
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[b];
    if (p.empty()) return absl::InvalidArgumentError(absl::StrCat("prompts[", b, "] is empty"));
    for (size_t j = 0; j < p.size(); ++j) {
      if (p[j] < 0 || p[j] >= config.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("prompts[", b, "][", j, "] = ", p[j],
                                                       " outside [0, ", config.vocab_size, ")"));
      }
    }
    const int64_t len = static_cast<int64_t>(p.size());
    if (len + options.max_new_tokens > config.max_seq_len) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompts[", b, "]: length ", len, " + max_new_tokens ", options.max_new_tokens,
          " > max_seq_len ", config.max_seq_len));
    }
    max_prompt = std::max(max_prompt, len);
  }

  return TorchCall(
      [&]() -> GenerationResult {
        c10::InferenceMode inference;
        GenerationResult result;
        result.responses.resize(B);
        result.logprobs.resize(B);
        result.finished.assign(B, false);
        if (options.return_top_k_distributions > 0) result.top_k.resize(B);
        const auto device = model->parameters().front().device();
        const int64_t capacity = max_prompt + options.max_new_tokens;

        // Left-padded prompt batch; the mask buffer covers every position we may decode.
        auto ids = torch::zeros({B, max_prompt}, torch::kLong);
        auto mask = torch::ones({B, capacity}, torch::kLong);
        auto next_pos = torch::empty({B}, torch::kLong);
        {
          auto ids_a = ids.accessor<int64_t, 2>();
          auto mask_a = mask.accessor<int64_t, 2>();
          auto pos_a = next_pos.accessor<int64_t, 1>();
          for (int64_t b = 0; b < B; ++b) {
            const int64_t pad = max_prompt - static_cast<int64_t>(prompts[b].size());
            for (int64_t t = 0; t < pad; ++t) mask_a[b][t] = 0;
            for (size_t t = 0; t < prompts[b].size(); ++t) ids_a[b][pad + t] = prompts[b][t];
            pos_a[b] = static_cast<int64_t>(prompts[b].size());
          }
        }
        ids = ids.to(device);
        mask = mask.to(device);
        next_pos = next_pos.to(device);

        KVCache cache;
        cache.Reserve(capacity);
        auto logits = model->forward_last(ids, mask.narrow(1, 0, max_prompt), {}, &cache)
                          .logits.select(1, 0);
        std::vector<int64_t> active(B);  // batch row -> original index
        for (int64_t b = 0; b < B; ++b) active[b] = b;
        int64_t length = max_prompt;
        std::vector<double> uniforms;
        for (int64_t step = 0; step < options.max_new_tokens; ++step) {
          uniforms.clear();
          for (int64_t idx : active) uniforms.push_back(Uniform(seeds[idx], step));
          StepSample s = SampleStep(logits, uniforms, options);
          const auto tokens = s.tokens.to(torch::kCPU);
          const auto lps = s.logprobs.to(torch::kCPU);
          const auto tok_a = tokens.accessor<int64_t, 1>();
          const auto lp_a = lps.accessor<float, 1>();
          torch::Tensor topk_ids, topk_lp;
          if (options.return_top_k_distributions > 0) {
            topk_ids = s.topk_ids.to(torch::kCPU);
            topk_lp = s.topk_logprobs.to(torch::kCPU);
          }
          std::vector<int64_t> keep;
          for (size_t r = 0; r < active.size(); ++r) {
            const int64_t idx = active[r];
            const int32_t token = static_cast<int32_t>(tok_a[r]);
            result.responses[idx].push_back(token);
            result.logprobs[idx].push_back(lp_a[r]);
            if (topk_ids.defined()) {
              TopKDistribution d;
              const auto ia = topk_ids.accessor<int64_t, 2>();
              const auto la = topk_lp.accessor<float, 2>();
              for (int64_t k = 0; k < topk_ids.size(1); ++k) {
                d.ids.push_back(static_cast<int32_t>(ia[r][k]));
                d.logprobs.push_back(la[r][k]);
              }
              result.top_k[idx].push_back(std::move(d));
            }
            const bool stop = std::find(options.stop_tokens.begin(), options.stop_tokens.end(),
                                        token) != options.stop_tokens.end();
            if (stop) {
              result.finished[idx] = true;
            } else {
              keep.push_back(static_cast<int64_t>(r));
            }
          }
          if (step + 1 == options.max_new_tokens || keep.empty()) break;
          torch::Tensor next_tokens = s.tokens;
          if (keep.size() != active.size()) {
            // Drop finished rows from everything that is batched.
            const auto rows = torch::tensor(keep, torch::kLong).to(device);
            cache.SelectRows(rows);
            mask = mask.index_select(0, rows);
            next_pos = next_pos.index_select(0, rows);
            next_tokens = next_tokens.index_select(0, rows);
            std::vector<int64_t> still;
            for (int64_t r : keep) still.push_back(active[r]);
            active.swap(still);
          }
          ++length;
          logits = model
                       ->forward_last(next_tokens.unsqueeze(1), mask.narrow(1, 0, length),
                                      next_pos.unsqueeze(1), &cache)
                       .logits.select(1, 0);
          next_pos = next_pos + 1;
          ++result.decode_steps;
        }
        return result;
      },
      "Generate");
}

}  // namespace rlhf
