#include "tools/label_command.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "core/data/jsonl.h"
#include "core/model/checkpoint.h"
#include "core/tokenizer/tokenizer.h"
#include "core/train/policy_labeling.h"
#include "tools/common_flags.h"

ABSL_DECLARE_FLAG(std::string, policy);
ABSL_DECLARE_FLAG(std::string, prompts);
ABSL_DECLARE_FLAG(double, temperature);
ABSL_DECLARE_FLAG(int64_t, max_new_tokens);
ABSL_DECLARE_FLAG(int64_t, max_prompts);
ABSL_FLAG(int64_t, label_samples, 8, "label: responses sampled (and ranked) per prompt");
ABSL_FLAG(double, min_gold_gap, 0.02,
          "label: of responses closer than this in gold score only the first is kept");
ABSL_FLAG(bool, comparable_only, false,
          "label: keep a response only if, against every kept one, one of the two has every "
          "flaw of the other (no pair that trades one defect for another; the built-in "
          "task's synthetic rankings are made so)");

namespace rlhf::tools {

int RunLabelCommand(const std::vector<std::string>& args) {
  if (!args.empty()) {
    return Fail("label", absl::InvalidArgumentError("unexpected argument " + args[0]));
  }
  ApplyThreads();
  if (absl::GetFlag(FLAGS_policy).empty()) {
    return Fail("label", absl::InvalidArgumentError("--policy is required"));
  }
  if (absl::GetFlag(FLAGS_prompts).empty()) {
    return Fail("label", absl::InvalidArgumentError("--prompts is required"));
  }
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) return Fail("label", absl::InvalidArgumentError("--out (a .jsonl file) is required"));
  auto policy = LoadForInference(absl::GetFlag(FLAGS_policy));
  if (!policy.ok()) return Fail("label", policy.status());
  // --prompts may list several files, read in order until --max_prompts.
  std::vector<std::string> prompts;
  const int64_t max_prompts = absl::GetFlag(FLAGS_max_prompts);
  for (absl::string_view path : absl::StrSplit(absl::GetFlag(FLAGS_prompts), ',', absl::SkipEmpty())) {
    auto records = ReadPromptJsonl(std::string(path));
    if (!records.ok()) return Fail("label", records.status());
    for (const PromptRecord& r : *records) {
      if (max_prompts >= 0 && static_cast<int64_t>(prompts.size()) >= max_prompts) break;
      prompts.push_back(r.prompt);
    }
  }
  PolicyLabelOptions options;
  options.samples_per_prompt = absl::GetFlag(FLAGS_label_samples);
  options.temperature = absl::GetFlag(FLAGS_temperature);
  options.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  options.min_gold_gap = absl::GetFlag(FLAGS_min_gold_gap);
  options.comparable_only = absl::GetFlag(FLAGS_comparable_only);
  options.seed = absl::GetFlag(FLAGS_seed);
  std::fprintf(stderr, "label: sampling %zu prompts x %lld responses from %s\n", prompts.size(),
               static_cast<long long>(options.samples_per_prompt),
               absl::GetFlag(FLAGS_policy).c_str());
  const auto t0 = std::chrono::steady_clock::now();
  // Sampling thousands of responses takes minutes: a line per ~10% (and the last batch)
  // with the rate and ETA, so `rlhf run` shows the label stage moving.
  int64_t next_report = 0;
  options.on_progress = [&](int64_t done, int64_t total) {
    if (done < next_report && done < total) return;
    next_report = done + std::max<int64_t>(1, total / 10);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double rate = secs > 0 ? done / secs : 0.0;
    std::fprintf(stderr, "label: %lld/%lld samples, %.1f samples/s, ETA %.0fs\n",
                 static_cast<long long>(done), static_cast<long long>(total), rate,
                 rate > 0 ? (total - done) / rate : 0.0);
    std::fflush(stderr);
  };
  auto tokenizer = TokenizerForModel(absl::GetFlag(FLAGS_policy), policy->model);
  if (!tokenizer.ok()) return Fail("label", tokenizer.status());
  PolicyLabelStats stats;
  auto ranked = RankPolicySamples(policy->model, **tokenizer, prompts, options, &stats);
  if (!ranked.ok()) return Fail("label", ranked.status());
  absl::Status st = WriteRankedJsonl(out, *ranked);
  if (!st.ok()) return Fail("label", st);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf(
      "label done: %lld prompts, %lld samples (policy gold %.4f) -> %lld ranked records, "
      "%.2f responses each after the %.2f gold-gap%s filter, %.1fs, %s\n",
      static_cast<long long>(stats.prompts), static_cast<long long>(stats.samples),
      stats.mean_gold, static_cast<long long>(stats.records),
      stats.records > 0 ? static_cast<double>(stats.kept) / stats.records : 0.0,
      options.min_gold_gap, options.comparable_only ? " and comparability" : "", seconds,
      out.c_str());
  if (!absl::GetFlag(FLAGS_json_out).empty()) {
    nlohmann::json j = {{"policy", absl::GetFlag(FLAGS_policy)}, {"prompts", stats.prompts},
                        {"samples", stats.samples},          {"policy_gold", stats.mean_gold},
                        {"records", stats.records},          {"responses_kept", stats.kept},
                        {"seconds", seconds},                {"out", out}};
    st = WriteText(absl::GetFlag(FLAGS_json_out), j.dump(2) + "\n");
    if (!st.ok()) return Fail("label", st);
  }
  return 0;
}

}  // namespace rlhf::tools
