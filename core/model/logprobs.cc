#include "core/model/logprobs.h"

#include <algorithm>

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace rlhf {

absl::StatusOr<SequenceBatch> MakeSequenceBatch(const std::vector<std::vector<int32_t>>& prompts,
                                                const std::vector<std::vector<int32_t>>& responses,
                                                const SequenceBatchOptions& options) {
  if (prompts.empty()) return absl::InvalidArgumentError("prompts is empty");
  if (responses.size() != prompts.size()) {
    return absl::InvalidArgumentError(absl::StrCat("responses has ", responses.size(),
                                                   " entries but prompts has ", prompts.size()));
  }
  if (options.max_len < 0) return absl::InvalidArgumentError("max_len must be >= 0");
  const int64_t B = static_cast<int64_t>(prompts.size());
  SequenceBatch batch;
  std::vector<int64_t> prompt_begin(B, 0);  // first kept prompt token
  int64_t T = std::max<int64_t>(options.pad_to, 1);
  for (int64_t b = 0; b < B; ++b) {
    if (prompts[b].empty()) return absl::InvalidArgumentError(absl::StrCat("prompts[", b, "] is empty"));
    int64_t p = static_cast<int64_t>(prompts[b].size());
    int64_t r = static_cast<int64_t>(responses[b].size());
    if (options.max_len > 0 && p + r > options.max_len) {
      switch (options.truncation) {
        case TruncationPolicy::kError:
          return absl::InvalidArgumentError(absl::StrCat("sequence ", b, ": length ", p + r,
                                                         " (prompt ", p, " + response ", r,
                                                         ") > max_len ", options.max_len));
        case TruncationPolicy::kTruncateResponse:
          if (p >= options.max_len) {
            return absl::InvalidArgumentError(absl::StrCat(
                "sequence ", b, ": prompt length ", p, " leaves no room under max_len ",
                options.max_len, " for truncation kTruncateResponse"));
          }
          r = options.max_len - p;
          break;
        case TruncationPolicy::kTruncatePromptLeft: {
          const int64_t keep_prompt = std::max<int64_t>(1, options.max_len - r);
          prompt_begin[b] = p - std::min(p, keep_prompt);
          p -= prompt_begin[b];
          r = std::min(r, options.max_len - p);
          break;
        }
      }
    }
    batch.prompt_lengths.push_back(p);
    batch.response_lengths.push_back(r);
    T = std::max(T, p + r);
  }
  auto ids = torch::full({B, T}, static_cast<int64_t>(options.pad_id), torch::kLong);
  auto attn = torch::zeros({B, T}, torch::kLong);
  auto resp = torch::zeros({B, T}, torch::kFloat32);
  auto pos = torch::zeros({B, T}, torch::kLong);
  auto last = torch::zeros({B}, torch::kLong);
  auto ids_a = ids.accessor<int64_t, 2>();
  auto attn_a = attn.accessor<int64_t, 2>();
  auto resp_a = resp.accessor<float, 2>();
  auto pos_a = pos.accessor<int64_t, 2>();
  auto last_a = last.accessor<int64_t, 1>();
  for (int64_t b = 0; b < B; ++b) {
    const int64_t p = batch.prompt_lengths[b], r = batch.response_lengths[b];
    for (int64_t t = 0; t < p; ++t) ids_a[b][t] = prompts[b][prompt_begin[b] + t];
    for (int64_t t = 0; t < r; ++t) {
      ids_a[b][p + t] = responses[b][t];
      resp_a[b][p + t] = 1.0f;
    }
    for (int64_t t = 0; t < p + r; ++t) {
      attn_a[b][t] = 1;
      pos_a[b][t] = t;
    }
    last_a[b] = p + r - 1;
    batch.real_tokens += p + r;
  }
  batch.ids = ids;
  batch.attention_mask = attn;
  batch.response_mask = resp;
  batch.target_mask = resp;
  batch.position_ids = pos;
  batch.last_index = last;
  return batch;
}

namespace {
torch::Tensor ScaledFloat(const torch::Tensor& logits, double temperature) {
  TORCH_CHECK(temperature > 0, "temperature must be > 0, got ", temperature);
  auto l = logits.scalar_type() == torch::kFloat64 ? logits : logits.to(torch::kFloat32);
  return temperature == 1.0 ? l : l / temperature;
}
}  // namespace

torch::Tensor ResponseLogProbs(const torch::Tensor& logits, const SequenceBatch& batch,
                               double temperature) {
  TORCH_CHECK(logits.dim() == 3 && logits.size(0) == batch.ids.size(0) &&
                  logits.size(1) == batch.ids.size(1),
              "logits must be [B, T, V] matching the batch ", batch.ids.sizes(), ", got ",
              logits.sizes());
  const int64_t B = logits.size(0), T = logits.size(1);
  const auto scaled = ScaledFloat(logits, temperature);
  const auto mask = batch.response_mask.to(scaled.device(), scaled.scalar_type());
  if (T < 2) return at::zeros({B, T}, scaled.options());
  const auto prev = scaled.narrow(1, 0, T - 1);
  const auto targets = batch.ids.narrow(1, 1, T - 1).to(scaled.device()).unsqueeze(-1);
  const auto lp = prev.gather(-1, targets).squeeze(-1) - prev.logsumexp(-1);
  return at::cat({at::zeros({B, 1}, scaled.options()), lp}, 1) * mask;
}

torch::Tensor ResponseLogProbRows(const torch::Tensor& logits, const SequenceBatch& batch,
                                  double temperature) {
  TORCH_CHECK(logits.dim() == 3 && logits.size(0) == batch.ids.size(0) &&
                  logits.size(1) == batch.ids.size(1),
              "logits must be [B, T, V] matching the batch ", batch.ids.sizes(), ", got ",
              logits.sizes());
  const int64_t T = logits.size(1), V = logits.size(2);
  const auto scaled = ScaledFloat(logits, temperature);
  if (T < 2) return at::zeros({0, V}, scaled.options());
  // Response token at (b, t) is predicted by row (b, t-1); nonzero() is row-major.
  const auto sel = batch.response_mask.narrow(1, 1, T - 1).gt(0).nonzero();  // [N, 2]
  const auto flat = (sel.select(1, 0) * (T - 1) + sel.select(1, 1)).to(scaled.device());
  const auto rows = scaled.narrow(1, 0, T - 1).reshape({-1, V}).index_select(0, flat);
  return at::log_softmax(rows, -1);
}

std::vector<std::vector<float>> PerSequenceResponseValues(const torch::Tensor& values,
                                                          const SequenceBatch& batch) {
  const auto v = values.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  const auto a = v.accessor<float, 2>();
  std::vector<std::vector<float>> out(batch.prompt_lengths.size());
  for (size_t b = 0; b < out.size(); ++b) {
    const int64_t p = batch.prompt_lengths[b];
    for (int64_t t = 0; t < batch.response_lengths[b]; ++t) out[b].push_back(a[b][p + t]);
  }
  return out;
}

absl::StatusOr<torch::Tensor> ScatterResponseValues(const std::vector<std::vector<float>>& values,
                                                    const SequenceBatch& batch) {
  if (values.size() != batch.response_lengths.size()) {
    return absl::InvalidArgumentError(absl::StrCat("values has ", values.size(),
                                                   " sequences but the batch has ",
                                                   batch.response_lengths.size()));
  }
  auto out = torch::zeros(batch.ids.sizes(), torch::kFloat32);
  auto a = out.accessor<float, 2>();
  for (size_t b = 0; b < values.size(); ++b) {
    if (static_cast<int64_t>(values[b].size()) != batch.response_lengths[b]) {
      return absl::InvalidArgumentError(absl::StrCat("values[", b, "] has ", values[b].size(),
                                                     " entries but response ", b, " has ",
                                                     batch.response_lengths[b], " tokens"));
    }
    const int64_t p = batch.prompt_lengths[b];
    for (size_t t = 0; t < values[b].size(); ++t) a[b][p + t] = values[b][t];
  }
  return out;
}

torch::Tensor ScoreAtLastToken(const torch::Tensor& scalar, const torch::Tensor& attention_mask) {
  const torch::Tensor last = (attention_mask.sum(1) - 1).clamp_min(0).to(torch::kLong).unsqueeze(1);
  return scalar.to(torch::kFloat32).gather(1, last).squeeze(1);
}

}  // namespace rlhf
