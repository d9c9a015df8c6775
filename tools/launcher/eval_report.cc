#include "tools/launcher/eval_report.h"

#include <algorithm>
#include <fstream>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tools/launcher/paired_gain.h"

namespace rlhf::launcher {
namespace {

using Json = nlohmann::json;
using Scores = std::vector<std::pair<std::string, double>>;

std::optional<Json> ReadJson(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  Json j = Json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  return j;
}

Scores Collect(const Json& eval, const char* key) {
  Scores out;
  for (const Json& s : eval.value("samples", Json::array())) {
    if (s.contains("prompt") && s["prompt"].is_string() && s.contains(key) && s[key].is_number()) {
      out.emplace_back(s["prompt"].get<std::string>(), s[key].get<double>());
    }
  }
  return out;
}

Json Ci(double mean, double half) { return Json::array({mean - half, mean + half}); }

std::string Num(const Json& v, int digits = 3) {
  if (v.is_number()) return absl::StrFormat("%.*f", digits, v.get<double>());
  if (v.is_array() && v.size() == 2 && v[0].is_number()) {
    return absl::StrCat("[", Num(v[0], digits), ", ", Num(v[1], digits), "]");
  }
  return "-";
}

}  // namespace

void AddPolicyComparison(const std::string& run_dir, int num_examples, Json* summary) {
  std::optional<Json> sft = ReadJson(run_dir + "/eval_sft.json");
  std::optional<Json> rl = ReadJson(run_dir + "/eval_rl.json");
  for (auto& [name, e] : {std::pair<const char*, std::optional<Json>*>{"sft", &sft},
                          std::pair<const char*, std::optional<Json>*>{"rl", &rl}}) {
    if (!e->has_value()) continue;
    const Json& j = **e;
    auto num = [&](const char* key) -> std::optional<double> {
      if (!j.contains(key) || !j[key].is_number()) return std::nullopt;
      return j[key].get<double>();
    };
    Json& out = (*summary)[name];
    if (auto m = num("rm_mean"); m && num("rm_ci95")) out["rm_score_ci95"] = Ci(*m, *num("rm_ci95"));
    if (auto m = num("rm2_mean")) {
      out["heldout_rm_score"] = *m;
      if (auto h = num("rm2_ci95")) out["heldout_rm_score_ci95"] = Ci(*m, *h);
    }
    if (auto t = num("mean_response_tokens")) out["response_tokens"] = *t;
    if (auto b = num("mean_response_bytes")) out["response_bytes"] = *b;
  }
  if (!sft || !rl) return;
  Json& r = (*summary)["rl"];
  for (const auto& [key, prefix] : {std::pair<const char*, std::string>{"rm", "rm"},
                                    std::pair<const char*, std::string>{"rm2", "heldout_rm"}}) {
    const Scores before = Collect(*sft, key), after = Collect(*rl, key);
    if (auto g = PairedPromptGain(before, after); g.ok()) {
      r[prefix + "_gain_over_sft"] = g->mean;
      r[prefix + "_gain_over_sft_ci95"] = Ci(g->mean, g->half_width);
      r["comparison_prompts"] = g->prompts;
    }
    if (auto w = PairedWinRate(before, after); w.ok()) {
      r[prefix + "_win_rate"] = w->rate;
      r[prefix + "_win_rate_ci95"] = Ci(w->rate, w->half_width);
    }
  }
  // Side by side: the first sample of each of the first prompts both policies answered.
  Json pairs = Json::array();
  const Json& a = (*sft)["samples"];
  const Json& b = (*rl)["samples"];
  std::vector<std::string> seen;
  for (size_t i = 0; i < a.size() && static_cast<int>(pairs.size()) < num_examples; ++i) {
    const std::string prompt = a[i].value("prompt", "");
    if (std::find(seen.begin(), seen.end(), prompt) != seen.end()) continue;
    for (const Json& other : b) {
      if (other.value("prompt", "") != prompt) continue;
      seen.push_back(prompt);
      pairs.push_back({{"prompt", prompt},
                       {"sft", a[i].value("response", "")},
                       {"rl", other.value("response", "")},
                       {"sft_rm", a[i].contains("rm") ? a[i]["rm"] : Json()},
                       {"rl_rm", other.contains("rm") ? other["rm"] : Json()}});
      break;
    }
  }
  if (!pairs.empty()) (*summary)["sample_pairs"] = pairs;
}

std::string PolicyComparisonTable(const Json& summary) {
  auto get = [&](const char* who, const std::string& key) -> Json {
    if (!summary.contains(who) || !summary[who].contains(key)) return Json();
    return summary[who][key];
  };
  std::string out;
  auto row = [&](const std::string& label, const std::string& key) {
    const Json s = get("sft", key), r = get("rl", key);
    if (s.is_null() && r.is_null()) return;
    absl::StrAppend(&out, absl::StrFormat("%-22s %-26s %-26s\n", label, Num(s), Num(r)));
  };
  row("  RM 95% interval", "rm_score_ci95");
  row("held-out RM score", "heldout_rm_score");
  row("  95% interval", "heldout_rm_score_ci95");
  row("response tokens", "response_tokens");
  row("response bytes", "response_bytes");
  auto comparison = [&](const std::string& label, const std::string& key, bool rate) {
    const Json v = get("rl", key);
    if (v.is_null()) return;
    const Json ci = get("rl", key + "_ci95");
    const double lo = ci.is_array() ? ci[0].get<double>() : 0;
    const double hi = ci.is_array() ? ci[1].get<double>() : 0;
    const double null_value = rate ? 0.5 : 0.0;
    const char* verdict = lo > null_value   ? " (RL better)"
                          : hi < null_value ? " (SFT better)"
                                            : " (not significant)";
    absl::StrAppend(&out, absl::StrFormat("%-22s %-26s %s%s\n", label, "",
                                          absl::StrCat(rate ? "" : (v.get<double>() >= 0 ? "+" : ""),
                                                       Num(v), " ", Num(ci)),
                                          verdict));
  };
  comparison("RM gain RL - SFT", "rm_gain_over_sft", false);
  comparison("RM win rate RL > SFT", "rm_win_rate", true);
  comparison("held-out RM gain", "heldout_rm_gain_over_sft", false);
  comparison("held-out RM win rate", "heldout_rm_win_rate", true);
  if (!get("rl", "comparison_prompts").is_null()) {
    absl::StrAppend(&out, "  (paired by prompt over ", get("rl", "comparison_prompts").dump(),
                    " held-out prompts)\n");
  }
  if (summary.contains("sample_pairs")) {
    absl::StrAppend(&out, "\nside by side (held-out prompts, RM score in brackets):\n");
    for (const Json& p : summary["sample_pairs"]) {
      absl::StrAppend(&out, "  prompt: ", p.value("prompt", ""), "\n");
      absl::StrAppend(&out, "    SFT [", Num(p["sft_rm"], 2), "]: ", p.value("sft", ""), "\n");
      absl::StrAppend(&out, "    RL  [", Num(p["rl_rm"], 2), "]: ", p.value("rl", ""), "\n");
    }
  }
  return out;
}

}  // namespace rlhf::launcher
