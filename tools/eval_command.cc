#include "tools/eval_command.h"

#include <cmath>
#include <cstdio>
#include <optional>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "core/data/jsonl.h"
#include "core/model/checkpoint.h"
#include "core/tokenizer/tokenizer.h"
#include "core/train/policy_eval.h"
#include "tools/common_flags.h"

ABSL_FLAG(std::string, policy, "", "eval: policy checkpoint");
ABSL_FLAG(std::string, reference, "", "eval: reference checkpoint for KL (e.g. the SFT model)");
ABSL_FLAG(std::string, rm, "", "eval: reward-model checkpoint (score normalised by its "
                               "reward_mean/reward_std)");
ABSL_FLAG(std::string, heldout_rm, "",
          "eval: a second reward model not used in training, also scoring every sample "
          "(normalised by its reward_mean/reward_std)");
ABSL_FLAG(bool, gold, true,
          "eval: score with the built-in task's gold labeler (false for user data)");
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
  auto policy = LoadForInference(absl::GetFlag(FLAGS_policy));
  if (!policy.ok()) return Fail("eval", policy.status());
  std::optional<LoadedCheckpoint> reference, rm, rm2;
  if (!absl::GetFlag(FLAGS_reference).empty()) {
    auto r = LoadForInference(absl::GetFlag(FLAGS_reference));
    if (!r.ok()) return Fail("eval", r.status());
    reference = std::move(*r);
  }
  PolicyEvalOptions options;
  if (!absl::GetFlag(FLAGS_rm).empty()) {
    auto r = LoadForInference(absl::GetFlag(FLAGS_rm));
    if (!r.ok()) return Fail("eval", r.status());
    rm = std::move(*r);
    options.rm_mean = JsonNumberOr(rm->metadata, "reward_mean", 0.0);
    options.rm_std = JsonNumberOr(rm->metadata, "reward_std", 1.0);
  }
  if (!absl::GetFlag(FLAGS_heldout_rm).empty()) {
    auto r = LoadForInference(absl::GetFlag(FLAGS_heldout_rm));
    if (!r.ok()) return Fail("eval", r.status());
    rm2 = std::move(*r);
    options.rm2_mean = JsonNumberOr(rm2->metadata, "reward_mean", 0.0);
    options.rm2_std = JsonNumberOr(rm2->metadata, "reward_std", 1.0);
  }
  options.gold = absl::GetFlag(FLAGS_gold);
  JsonlReadOptions read;
  {
    auto tmpl = PromptTemplateFromFlag();
    if (!tmpl.ok()) return Fail("eval", tmpl.status());
    read.prompt_template = *tmpl;
  }
  auto prompt_records = ReadPromptJsonl(absl::GetFlag(FLAGS_prompts), read);
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
                               rm ? &rm->model : nullptr, **tokenizer, prompts, options,
                               rm2 ? &rm2->model : nullptr);
  if (!report.ok()) return Fail("eval", report.status());

  const int show = std::min<int>(absl::GetFlag(FLAGS_show), report->samples.size());
  for (int i = 0; i < show; ++i) {
    const PolicyEvalSample& s = report->samples[i];
    std::string scores;
    if (options.gold) scores += absl::StrFormat("[gold %.2f] ", s.gold);
    if (rm) scores += absl::StrFormat("[rm %.2f] ", s.rm);
    std::printf("  %s%s -> %s%s\n", scores.c_str(), s.prompt.c_str(), s.response.c_str(),
                s.finished ? "" : " (unfinished)");
  }
  std::printf("eval %s on %lld samples:", absl::GetFlag(FLAGS_policy).c_str(),
              static_cast<long long>(report->n));
  if (options.gold) std::printf(" gold %.4f ± %.4f,", report->gold.mean, report->gold.half_width);
  if (reference) {
    std::printf(" KL %.4f ± %.4f nats/seq (%.4f/token),", report->kl.mean, report->kl.half_width,
                report->kl_per_token);
  }
  if (rm) std::printf(" RM %.4f ± %.4f,", report->rm.mean, report->rm.half_width);
  if (rm2) std::printf(" held-out RM %.4f ± %.4f,", report->rm2.mean, report->rm2.half_width);
  std::printf(" %.1f bytes (%.1f tokens)/response, %.0f%% finished\n",
              report->mean_response_bytes, report->mean_response_tokens,
              100 * report->finished_fraction);

  if (!absl::GetFlag(FLAGS_json_out).empty()) {
    nlohmann::json samples = nlohmann::json::array();
    for (const PolicyEvalSample& s : report->samples) {
      samples.push_back({{"prompt", s.prompt},
                         {"response", s.response},
                         {"finished", s.finished},
                         {"gold", Num(s.gold)},
                         {"kl", Num(s.kl)},
                         {"rm", Num(s.rm)},
                         {"rm2", Num(s.rm2)},
                         {"tokens", s.tokens},
                         {"response_ids", s.response_ids}});
    }
    nlohmann::json j = {{"policy", absl::GetFlag(FLAGS_policy)},
                        {"n", report->n},
                        {"gold_mean", Num(report->gold.mean)},
                        {"gold_ci95", options.gold ? Num(report->gold.half_width) : nlohmann::json()},
                        {"kl_mean", Num(report->kl.mean)},
                        {"kl_ci95", Num(report->kl.half_width)},
                        {"kl_per_token", Num(report->kl_per_token)},
                        {"rm_mean", Num(report->rm.mean)},
                        {"rm_ci95", rm ? Num(report->rm.half_width) : nlohmann::json()},
                        {"rm2_mean", Num(report->rm2.mean)},
                        {"rm2_ci95", rm2 ? Num(report->rm2.half_width) : nlohmann::json()},
                        {"mean_response_tokens", report->mean_response_tokens},
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
