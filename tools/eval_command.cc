#include "tools/eval_command.h"

#include <cmath>
#include <cstdio>
#include <optional>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "core/data/jsonl.h"
#include "core/model/checkpoint.h"
#include "core/tokenizer/tokenizer.h"
#include "core/train/policy_eval.h"
#include "tools/common_flags.h"

ABSL_FLAG(std::string, policy, "", "eval: policy checkpoint");
ABSL_FLAG(std::string, reference, "", "eval: reference checkpoint for KL (e.g. the SFT model)");
ABSL_FLAG(std::string, rm, "", "eval: reward-model checkpoint (score normalised by its "
                               "reward_mean/reward_std)");
ABSL_FLAG(std::string, prompts, "", "eval: prompts JSONL ({\"prompt\": ...} per line)");
ABSL_FLAG(double, temperature, 1.0, "eval: sampling temperature (0 = greedy)");
ABSL_FLAG(int64_t, max_new_tokens, 48, "eval: response length limit in tokens");
ABSL_FLAG(int64_t, samples_per_prompt, 1, "eval: responses sampled per prompt");
ABSL_FLAG(int64_t, max_prompts, -1, "eval: evaluate at most this many prompts (-1 = all)");
ABSL_FLAG(int32_t, show, 5, "eval: sample responses to print");

namespace rlhf::tools {
namespace {

double JsonNumberOr(const nlohmann::json& meta, const char* key, double fallback) {
  if (meta.is_object() && meta.contains(key) && meta[key].is_number()) return meta[key].get<double>();
  return fallback;
}

nlohmann::json Num(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); }

}  // namespace

int RunEvalCommand(const std::vector<std::string>& args) {
  if (!args.empty()) return Fail("eval", absl::InvalidArgumentError("unexpected argument " + args[0]));
  ApplyThreads();
  if (absl::GetFlag(FLAGS_policy).empty()) {
    return Fail("eval", absl::InvalidArgumentError("--policy is required"));
  }
  if (absl::GetFlag(FLAGS_prompts).empty()) {
    return Fail("eval", absl::InvalidArgumentError("--prompts is required"));
  }
  auto policy = LoadCheckpoint(absl::GetFlag(FLAGS_policy));
  if (!policy.ok()) return Fail("eval", policy.status());
  std::optional<LoadedCheckpoint> reference, rm;
  if (!absl::GetFlag(FLAGS_reference).empty()) {
    auto r = LoadCheckpoint(absl::GetFlag(FLAGS_reference));
    if (!r.ok()) return Fail("eval", r.status());
    reference = std::move(*r);
  }
  PolicyEvalOptions options;
  if (!absl::GetFlag(FLAGS_rm).empty()) {
    auto r = LoadCheckpoint(absl::GetFlag(FLAGS_rm));
    if (!r.ok()) return Fail("eval", r.status());
    rm = std::move(*r);
    options.rm_mean = JsonNumberOr(rm->metadata, "reward_mean", 0.0);
    options.rm_std = JsonNumberOr(rm->metadata, "reward_std", 1.0);
  }
  auto prompt_records = ReadPromptJsonl(absl::GetFlag(FLAGS_prompts));
  if (!prompt_records.ok()) return Fail("eval", prompt_records.status());
  std::vector<std::string> prompts;
  for (auto& r : *prompt_records) prompts.push_back(std::move(r.prompt));

  options.temperature = absl::GetFlag(FLAGS_temperature);
  options.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  options.samples_per_prompt = absl::GetFlag(FLAGS_samples_per_prompt);
  options.max_prompts = absl::GetFlag(FLAGS_max_prompts);
  options.seed = absl::GetFlag(FLAGS_seed);
  auto tokenizer = TokenizerForModel(absl::GetFlag(FLAGS_policy), policy->model);
  if (!tokenizer.ok()) return Fail("eval", tokenizer.status());
  auto report = EvaluatePolicy(policy->model, reference ? &reference->model : nullptr,
                               rm ? &rm->model : nullptr, **tokenizer, prompts, options);
  if (!report.ok()) return Fail("eval", report.status());

  const int show = std::min<int>(absl::GetFlag(FLAGS_show), report->samples.size());
  for (int i = 0; i < show; ++i) {
    const PolicyEvalSample& s = report->samples[i];
    std::printf("  [gold %.2f] %s -> %s%s\n", s.gold, s.prompt.c_str(), s.response.c_str(),
                s.finished ? "" : " (unfinished)");
  }
  std::printf("eval %s on %lld samples: gold %.4f ± %.4f", absl::GetFlag(FLAGS_policy).c_str(),
              static_cast<long long>(report->n), report->gold.mean, report->gold.half_width);
  if (reference) {
    std::printf(", KL %.4f ± %.4f nats/seq (%.4f/token)", report->kl.mean, report->kl.half_width,
                report->kl_per_token);
  }
  if (rm) std::printf(", RM %.4f ± %.4f", report->rm.mean, report->rm.half_width);
  std::printf(", %.1f bytes/response, %.0f%% finished\n", report->mean_response_bytes,
              100 * report->finished_fraction);

  if (!absl::GetFlag(FLAGS_json_out).empty()) {
    nlohmann::json samples = nlohmann::json::array();
    for (const PolicyEvalSample& s : report->samples) {
      samples.push_back({{"prompt", s.prompt},
                         {"response", s.response},
                         {"finished", s.finished},
                         {"gold", s.gold},
                         {"kl", Num(s.kl)},
                         {"rm", Num(s.rm)}});
    }
    nlohmann::json j = {{"policy", absl::GetFlag(FLAGS_policy)},
                        {"n", report->n},
                        {"gold_mean", report->gold.mean},
                        {"gold_ci95", report->gold.half_width},
                        {"kl_mean", Num(report->kl.mean)},
                        {"kl_ci95", Num(report->kl.half_width)},
                        {"kl_per_token", Num(report->kl_per_token)},
                        {"rm_mean", Num(report->rm.mean)},
                        {"rm_ci95", Num(report->rm.half_width)},
                        {"mean_response_bytes", report->mean_response_bytes},
                        {"finished_fraction", report->finished_fraction},
                        {"samples", samples}};
    absl::Status st = WriteText(absl::GetFlag(FLAGS_json_out),
                                j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
    if (!st.ok()) return Fail("eval", st);
  }
  return 0;
}

}  // namespace rlhf::tools
