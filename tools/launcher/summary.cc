#include "tools/launcher/summary.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "tools/launcher/eval_report.h"
#include "tools/launcher/paired_gain.h"

namespace rlhf::launcher {
namespace {

using Json = nlohmann::json;

std::string Fmt(double v, int digits = 3) { return absl::StrFormat("%.*f", digits, v); }

std::optional<Json> ReadJson(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  Json j = Json::parse(in, nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

}  // namespace

void AddStageResults(const std::string& run_dir, int samples_per_prompt, Json* summary) {
  Json& s = *summary;
  if (auto sft = ReadJson(run_dir + "/sft.json")) s["sft"]["train"] = *sft;
  if (auto rm = ReadJson(run_dir + "/rm.json")) {
    s["rm"]["train"] = *rm;
    if (rm->contains("heldout_accuracy")) {
      s["rm"]["heldout_pair_accuracy"] = (*rm)["heldout_accuracy"];
    }
  }
  if (auto label = ReadJson(run_dir + "/label.json")) s["rm"]["policy_rankings"] = *label;
  std::map<std::string, std::vector<std::pair<std::string, double>>> gold_samples;
  for (const char* name : {"sft", "rl"}) {
    auto e = ReadJson(absl::StrCat(run_dir, "/eval_", name, ".json"));
    if (!e) continue;
    Json samples = e->value("samples", Json::array());
    for (const Json& sample : samples) {
      if (sample.contains("prompt") && sample.contains("gold") && sample["gold"].is_number()) {
        gold_samples[name].emplace_back(sample["prompt"].get<std::string>(),
                                        sample["gold"].get<double>());
      }
    }
    e->erase("samples");
    s[name]["eval"] = *e;
    if (samples.is_array() && !samples.empty()) {
      // One sample from each of the first prompts, so the table shows different prompts.
      const size_t stride = std::max(1, samples_per_prompt);
      Json few = Json::array();
      for (size_t i = 0; i * stride < samples.size() && i < 5; ++i) {
        few.push_back(samples[i * stride]);
      }
      s[name]["samples"] = few;
    }
    auto num = [&](const char* key) -> std::optional<double> {
      if (!e->contains(key) || !(*e)[key].is_number()) return std::nullopt;
      return (*e)[key].get<double>();
    };
    if (auto g = num("gold_mean")) {
      s[name]["gold_score"] = *g;
      if (auto hw = num("gold_ci95")) s[name]["gold_score_ci95"] = {*g - *hw, *g + *hw};
    }
    if (auto r = num("rm_mean")) s[name]["rm_score"] = *r;
    if (auto k = num("kl_mean")) s[name]["kl_to_sft"] = *k;
    if (auto k = num("kl_per_token")) s[name]["kl_per_token"] = *k;
    if (auto n = num("n")) s[name]["eval_samples"] = *n;
  }
  // RL minus SFT on the same prompts, with the interval of the paired difference.
  if (auto gain = PairedPromptGain(gold_samples["sft"], gold_samples["rl"]); gain.ok()) {
    s["rl"]["gold_gain_over_sft"] = gain->mean;
    s["rl"]["gold_gain_over_sft_ci95"] = {gain->mean - gain->half_width,
                                          gain->mean + gain->half_width};
    s["rl"]["gold_gain_prompts"] = gain->prompts;
  }
}

std::string FormatSummaryTable(const Json& summary, int num_examples, bool gold) {
  auto get = [&](const char* who, const char* key) -> std::string {
    if (!summary.contains(who) || !summary[who].contains(key)) return "-";
    const Json& v = summary[who][key];
    if (v.is_number()) return Fmt(v.get<double>());
    if (v.is_array() && v.size() == 2 && v[0].is_number()) {
      return absl::StrCat("[", Fmt(v[0].get<double>()), ", ", Fmt(v[1].get<double>()), "]");
    }
    return v.dump();
  };
  std::string out = "\n";
  absl::StrAppend(&out, absl::StrFormat("%-22s %-26s %-26s\n", "", "SFT policy", "RL policy"));
  for (const auto& [label, key] :
       std::vector<std::pair<std::string, std::string>>{{"gold score", "gold_score"},
                                                        {"  95% interval", "gold_score_ci95"},
                                                        {"reward-model score", "rm_score"},
                                                        {"KL to SFT (nats)", "kl_to_sft"}}) {
    if (!gold && absl::StartsWith(key, "gold")) continue;  // user data: no gold labeler
    absl::StrAppend(&out, absl::StrFormat("%-22s %-26s %-26s\n", label, get("sft", key.c_str()),
                                          get("rl", key.c_str())));
  }
  // Exact KL per token (eval always computes it over the vocabulary) next to the
  // estimator RL trained with, when the summary has them.
  const auto has = [&](const char* who, const char* key) {
    return summary.contains(who) && summary[who].contains(key);
  };
  if (has("sft", "kl_per_token") || has("rl", "kl_per_token")) {
    absl::StrAppend(&out, absl::StrFormat("%-22s %-26s %-26s\n", "  exact, per token",
                                          get("sft", "kl_per_token"), get("rl", "kl_per_token")));
  }
  if (has("rl", "kl_estimator") && summary["rl"]["kl_estimator"].is_string()) {
    absl::StrAppend(&out, absl::StrFormat("%-22s %-26s %-26s\n", "  RL trained with KL", "",
                                          summary["rl"]["kl_estimator"].get<std::string>() +
                                              " (kl.estimator)"));
  }
  if (summary.contains("rl") && summary["rl"].contains("gold_gain_over_sft")) {
    const double gain = summary["rl"]["gold_gain_over_sft"].get<double>();
    const Json& ci = summary["rl"]["gold_gain_over_sft_ci95"];
    const bool clear = ci[0].get<double>() > 0;
    absl::StrAppend(&out,
                    absl::StrFormat("%-22s %-26s %s\n", "gold gain RL - SFT", "",
                                    absl::StrCat(gain >= 0 ? "+" : "", Fmt(gain), " ",
                                                 get("rl", "gold_gain_over_sft_ci95"),
                                                 clear ? " (RL better)" : " (not significant)")));
    absl::StrAppend(&out, "  (paired by prompt over ", summary["rl"].value("gold_gain_prompts", 0),
                    " held-out prompts)\n");
  }
  absl::StrAppend(&out, PolicyComparisonTable(summary));
  if (gold && summary.contains("sft") && summary["sft"].contains("samples")) {
    const Json& before = summary["sft"]["samples"];
    const Json* after = summary.contains("rl") && summary["rl"].contains("samples")
                            ? &summary["rl"]["samples"]
                            : nullptr;
    absl::StrAppend(&out, "\nsample responses (held-out prompts):\n");
    const size_t n = std::min<size_t>(before.size(), std::max(0, num_examples));
    for (size_t i = 0; i < n; ++i) {
      absl::StrAppend(&out, "  prompt: ", before[i].value("prompt", ""), "\n");
      absl::StrAppend(&out, "    SFT [gold ", Fmt(before[i].value("gold", 0.0), 2),
                      "]: ", before[i].value("response", ""), "\n");
      if (after != nullptr && i < after->size() &&
          (*after)[i].value("prompt", "") == before[i].value("prompt", "")) {
        absl::StrAppend(&out, "    RL  [gold ", Fmt((*after)[i].value("gold", 0.0), 2),
                        "]: ", (*after)[i].value("response", ""), "\n");
      }
    }
  }
  if (summary.contains("rm") && summary["rm"].contains("heldout_pair_accuracy")) {
    absl::StrAppend(&out, "reward model held-out pair accuracy: ",
                    Fmt(summary["rm"]["heldout_pair_accuracy"].get<double>()), "\n");
  }
  if (summary.contains("wall_seconds")) {
    std::vector<std::string> parts;
    for (auto it = summary["wall_seconds"].begin(); it != summary["wall_seconds"].end(); ++it) {
      parts.push_back(absl::StrCat(it.key(), " ", Fmt(it.value().get<double>(), 1), "s"));
    }
    absl::StrAppend(&out, "wall time: ", absl::StrJoin(parts, ", "), "\n");
  }
  return out;
}

}  // namespace rlhf::launcher
