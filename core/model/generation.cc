#include "core/model/generation.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/strings/str_cat.h"
#include "core/model/threads.h"
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
    // Rows are independent (each reads its own weights and uniform): split them across
    // the intra-op threads; the result is the same whatever the split.
    ParallelFor(0, Ba, /*work_per_item=*/V, [&](int64_t row_begin, int64_t row_end) {
      for (int64_t r = row_begin; r < row_end; ++r) {
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
    });
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

// Appends row r of a step's sample to sequence idx of `result`; true if it was a stop token.
bool Record(const torch::Tensor& tokens, const torch::Tensor& lps, const torch::Tensor& topk_ids,
            const torch::Tensor& topk_lp, int64_t r, int64_t idx, const SamplingOptions& options,
            GenerationResult& result) {
  const int32_t token = static_cast<int32_t>(tokens.accessor<int64_t, 1>()[r]);
  result.responses[idx].push_back(token);
  result.logprobs[idx].push_back(lps.accessor<float, 1>()[r]);
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
  const bool stop = std::find(options.stop_tokens.begin(), options.stop_tokens.end(), token) !=
                    options.stop_tokens.end();
  if (stop) result.finished[idx] = true;
  return stop;
}

// The checks Generate and GenerateContinuous share; sets *max_prompt.
absl::Status ValidateGenerateArgs(const ModelConfig& config,
                                  const std::vector<std::vector<int32_t>>& prompts,
                                  const std::vector<uint64_t>& seeds,
                                  const SamplingOptions& options, int64_t* max_prompt_out) {
  RLHF_RETURN_IF_ERROR(ValidateSamplingOptions(options));
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
  *max_prompt_out = max_prompt;
  return absl::OkStatus();
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
  int64_t max_prompt = 0;
  RLHF_RETURN_IF_ERROR(ValidateGenerateArgs(model->config(), prompts, seeds, options, &max_prompt));
  const int64_t B = static_cast<int64_t>(prompts.size());

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

absl::StatusOr<GenerationResult> GenerateContinuous(
    TransformerLM& model, const std::vector<std::vector<int32_t>>& prompts,
    const std::vector<uint64_t>& seeds, const SamplingOptions& options, int64_t max_batch,
    ContinuousBatchingStats* stats) {
  if (max_batch < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_batch must be >= 1, got ", max_batch));
  }
  int64_t max_prompt = 0;
  RLHF_RETURN_IF_ERROR(ValidateGenerateArgs(model->config(), prompts, seeds, options, &max_prompt));
  const int64_t N = static_cast<int64_t>(prompts.size());
  const ModelConfig& config = model->config();

  return TorchCall(
      [&]() -> GenerationResult {
        c10::InferenceMode inference;
        GenerationResult result;
        result.responses.resize(N);
        result.logprobs.resize(N);
        result.finished.assign(N, false);
        if (options.return_top_k_distributions > 0) result.top_k.resize(N);
        ContinuousBatchingStats st;
        st.max_batch = std::min(max_batch, N);
        const auto device = model->parameters().front().device();
        const auto long_opts = torch::TensorOptions().dtype(torch::kLong);
        const size_t n_layers = static_cast<size_t>(config.n_layers);
        const int64_t KV = config.n_kv_heads, D = config.head_dim();
        // Longest live span of a row: its prompt + responses, minus the token fed next.
        const int64_t span_max = max_prompt + options.max_new_tokens;
        const int64_t capacity = std::min<int64_t>(config.max_seq_len, 2 * span_max);
        // The shared time axis never drops below max_prompt - 1 so that any prompt's
        // prefix (all but its last token) fits right-aligned before the next position.
        const int64_t min_length = max_prompt - 1;

        // Row state (row = batch position). seq: prompt index, or -1 once finished.
        std::vector<int64_t> seq, start, pos;  // start: first live key; pos: next position
        std::vector<int64_t> feed;              // token each row feeds the next decode step
        int64_t length = min_length;            // keys on the shared axis
        int64_t next_prompt = 0;
        auto dtype = model->parameters().front().scalar_type();
        std::vector<torch::Tensor> key_storage(n_layers), value_storage(n_layers);
        torch::Tensor mask;  // [rows, capacity] int64: 1 = live key
        auto alloc = [&](int64_t rows) {
          for (size_t l = 0; l < n_layers; ++l) {
            key_storage[l] = at::zeros({rows, KV, capacity, D}, torch::TensorOptions().dtype(dtype).device(device));
            value_storage[l] = at::zeros({rows, KV, capacity, D}, torch::TensorOptions().dtype(dtype).device(device));
          }
          mask = at::zeros({rows, capacity}, long_opts);
        };
        const int64_t rows0 = st.max_batch;
        alloc(rows0);
        seq.assign(rows0, -1);
        start.assign(rows0, length);
        pos.assign(rows0, 0);
        feed.assign(rows0, 0);

        // Fills the rows in `slots` with the next prompts: prefix prefilled as one
        // left-padded batch, keys/values copied right-aligned to end at `length`.
        auto refill = [&](const std::vector<int64_t>& slots) {
          std::vector<int64_t> idx;
          int64_t longest = 0;  // longest prefix
          for (size_t i = 0; i < slots.size(); ++i) {
            idx.push_back(next_prompt++);
            longest = std::max<int64_t>(longest, static_cast<int64_t>(prompts[idx.back()].size()) - 1);
          }
          auto mask_a = mask.accessor<int64_t, 2>();
          for (size_t i = 0; i < slots.size(); ++i) {
            const int64_t r = slots[i];
            const int64_t prefix = static_cast<int64_t>(prompts[idx[i]].size()) - 1;
            seq[r] = idx[i];
            start[r] = length - prefix;
            pos[r] = prefix;
            feed[r] = prompts[idx[i]].back();
            for (int64_t t = 0; t < capacity; ++t) mask_a[r][t] = t >= start[r] && t < length;
          }
          if (longest == 0) return;
          const int64_t R = static_cast<int64_t>(slots.size());
          auto ids = torch::zeros({R, longest}, long_opts);
          auto pmask = torch::ones({R, longest}, long_opts);
          {
            auto ids_a = ids.accessor<int64_t, 2>();
            auto pm_a = pmask.accessor<int64_t, 2>();
            for (int64_t i = 0; i < R; ++i) {
              const auto& p = prompts[idx[i]];
              const int64_t prefix = static_cast<int64_t>(p.size()) - 1;
              const int64_t pad = longest - prefix;
              for (int64_t t = 0; t < pad; ++t) pm_a[i][t] = 0;
              for (int64_t t = 0; t < prefix; ++t) ids_a[i][pad + t] = p[t];
            }
          }
          KVCache prefill;
          prefill.Reserve(longest);
          // Only the cache is wanted; forward_last keeps the unembedding to one column.
          model->forward_last(ids.to(device), pmask.to(device), {}, &prefill);
          ++st.prefill_calls;
          for (int64_t i = 0; i < R; ++i) {
            const int64_t r = slots[i];
            const int64_t prefix = static_cast<int64_t>(prompts[idx[i]].size()) - 1;
            if (prefix == 0) continue;
            for (size_t l = 0; l < n_layers; ++l) {
              key_storage[l][r].narrow(1, length - prefix, prefix)
                  .copy_(prefill.keys[l][i].narrow(1, longest - prefix, prefix));
              value_storage[l][r].narrow(1, length - prefix, prefix)
                  .copy_(prefill.values[l][i].narrow(1, longest - prefix, prefix));
            }
          }
        };

        // Moves every row's live keys right-aligned to end at the smallest length that
        // holds them (at least min_length), freeing the axis for more steps.
        auto compact = [&]() {
          const int64_t rows = static_cast<int64_t>(seq.size());
          int64_t target = min_length;
          for (int64_t r = 0; r < rows; ++r) target = std::max(target, length - start[r]);
          if (target >= length) return;
          auto src = torch::empty({rows, target}, long_opts);
          auto src_a = src.accessor<int64_t, 2>();
          auto mask_a = mask.accessor<int64_t, 2>();
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t span = length - start[r];
            for (int64_t t = 0; t < target; ++t) {
              const int64_t from = t - (target - span) + start[r];
              src_a[r][t] = std::max<int64_t>(from, 0);  // t before the span: masked anyway
              mask_a[r][t] = t >= target - span;
            }
            for (int64_t t = target; t < capacity; ++t) mask_a[r][t] = 0;
            start[r] = target - span;
          }
          const auto index = src.to(device).view({rows, 1, target, 1}).expand({rows, KV, target, D});
          for (size_t l = 0; l < n_layers; ++l) {
            key_storage[l].narrow(2, 0, target).copy_(key_storage[l].gather(2, index));
            value_storage[l].narrow(2, 0, target).copy_(value_storage[l].gather(2, index));
          }
          length = target;
          ++st.compactions;
        };

        {
          std::vector<int64_t> all(rows0);
          for (int64_t r = 0; r < rows0; ++r) all[r] = r;
          refill(all);
        }
        std::vector<double> uniforms;
        while (!seq.empty()) {
          if (length + 1 > capacity) compact();
          const int64_t rows = static_cast<int64_t>(seq.size());
          auto ids = torch::empty({rows, 1}, long_opts);
          auto positions = torch::empty({rows, 1}, long_opts);
          {
            auto ids_a = ids.accessor<int64_t, 2>();
            auto pos_a = positions.accessor<int64_t, 2>();
            auto mask_a = mask.accessor<int64_t, 2>();
            for (int64_t r = 0; r < rows; ++r) {
              ids_a[r][0] = feed[r];
              pos_a[r][0] = pos[r];
              mask_a[r][length] = 1;
            }
          }
          KVCache cache;
          cache.capacity = capacity;
          cache.key_storage = key_storage;
          cache.value_storage = value_storage;
          cache.keys.resize(n_layers);
          cache.values.resize(n_layers);
          for (size_t l = 0; l < n_layers; ++l) {
            cache.keys[l] = key_storage[l].narrow(2, 0, length);
            cache.values[l] = value_storage[l].narrow(2, 0, length);
          }
          const auto logits = model
                                  ->forward_last(ids.to(device), mask.narrow(1, 0, length + 1).to(device),
                                                 positions.to(device), &cache)
                                  .logits.select(1, 0);
          ++length;
          ++st.decode_steps;
          st.row_steps += rows;
          for (int64_t r = 0; r < rows; ++r) ++pos[r];

          uniforms.clear();
          for (int64_t r = 0; r < rows; ++r) {
            uniforms.push_back(Uniform(seeds[seq[r]], static_cast<int64_t>(result.responses[seq[r]].size())));
          }
          StepSample s = SampleStep(logits, uniforms, options);
          const auto tokens = s.tokens.to(torch::kCPU);
          const auto lps = s.logprobs.to(torch::kCPU);
          torch::Tensor topk_ids, topk_lp;
          if (options.return_top_k_distributions > 0) {
            topk_ids = s.topk_ids.to(torch::kCPU);
            topk_lp = s.topk_logprobs.to(torch::kCPU);
          }
          std::vector<int64_t> free_rows;
          const auto tok_a = tokens.accessor<int64_t, 1>();
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t idx = seq[r];
            const bool stop = Record(tokens, lps, topk_ids, topk_lp, r, idx, options, result);
            if (stop || static_cast<int64_t>(result.responses[idx].size()) >= options.max_new_tokens) {
              seq[r] = -1;
              free_rows.push_back(r);
            } else {
              feed[r] = tok_a[r];
            }
          }
          if (free_rows.empty()) continue;
          const int64_t waiting = N - next_prompt;
          std::vector<int64_t> refill_rows(free_rows.begin(),
                                           free_rows.begin() + std::min<int64_t>(waiting, free_rows.size()));
          if (!refill_rows.empty()) refill(refill_rows);
          if (static_cast<int64_t>(refill_rows.size()) < static_cast<int64_t>(free_rows.size())) {
            // No prompts left for some rows: drop them so they stop costing compute.
            std::vector<int64_t> keep;
            for (int64_t r = 0; r < rows; ++r) {
              if (seq[r] >= 0) keep.push_back(r);
            }
            if (keep.empty()) break;
            const auto sel = torch::tensor(keep, long_opts);
            const auto sel_dev = sel.to(device);
            for (size_t l = 0; l < n_layers; ++l) {
              key_storage[l] = key_storage[l].index_select(0, sel_dev);
              value_storage[l] = value_storage[l].index_select(0, sel_dev);
            }
            mask = mask.index_select(0, sel);
            auto pick = [&](std::vector<int64_t>& v) {
              std::vector<int64_t> out;
              for (int64_t r : keep) out.push_back(v[r]);
              v.swap(out);
            };
            pick(seq);
            pick(start);
            pick(pos);
            pick(feed);
          }
        }
        result.decode_steps = st.decode_steps;
        if (stats != nullptr) *stats = st;
        return result;
      },
      "GenerateContinuous");
}

}  // namespace rlhf
