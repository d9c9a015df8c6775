#include "tools/launcher/eval_report.h"

#include <algorithm>
#include <fstream>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
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

std::optional<Json> StepWinRateFields(const Json& sft_eval, const Json& step_eval) {
  const Scores before = Collect(sft_eval, "rm"), after = Collect(step_eval, "rm");
  absl::StatusOr<WinRate> w = PairedWinRate(before, after);
  if (!w.ok()) return std::nullopt;
  double sum = 0;
  for (const auto& s : after) sum += s.second;
  return Json{{"rm_win_rate", w->rate},
              {"rm_win_rate_ci95", Ci(w->rate, w->half_width)},
              {"eval_rm_score", sum / static_cast<double>(after.size())},
              {"eval_prompts", w->prompts}};
}

std::vector<Json> MergeStepFields(std::vector<Json> records,
                                  const std::map<int64_t, Json>& fields) {
  auto step_of = [](const Json& r) -> std::optional<int64_t> {
    if (r.is_object() && r.contains("step") && r["step"].is_number_integer()) {
      return r["step"].get<int64_t>();
    }
    return std::nullopt;
  };
  for (const auto& [step, f] : fields) {
    auto it = records.begin();
    for (; it != records.end(); ++it) {
      const std::optional<int64_t> s = step_of(*it);
      if (s && *s >= step) break;
    }
    if (it != records.end() && step_of(*it) == step) {
      it->update(f);
    } else {
      Json r = {{"step", step}};
      r.update(f);
      records.insert(it, std::move(r));
    }
  }
  return records;
}

std::string MetricsPlotHtml(const std::vector<Json>& records,
                            const std::vector<std::string>& series, const Json& summary) {
  constexpr double kW = 480, kH = 200, kPad = 40;
  std::string title = "RL training";
  if (summary.contains("rl") && summary["rl"].contains("rm_win_rate")) {
    absl::StrAppend(&title, " — final RM win rate RL over SFT ",
                    Num(summary["rl"]["rm_win_rate"]), " ",
                    Num(summary["rl"].value("rm_win_rate_ci95", Json())));
  }
  std::string html = absl::StrCat(
      "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>", title,
      "</title></head>\n<body style=\"font-family:sans-serif\">\n<h2>", title, "</h2>\n");
  for (const std::string& name : series) {
    std::vector<std::pair<double, double>> points;
    std::vector<std::pair<double, Json>> intervals;  // step -> [lo, hi]
    const std::string ci_key = name + "_ci95";
    for (const Json& r : records) {
      if (r.contains("step") && r["step"].is_number() && r.contains(name) && r[name].is_number()) {
        points.emplace_back(r["step"].get<double>(), r[name].get<double>());
        if (r.contains(ci_key) && r[ci_key].is_array() && r[ci_key].size() == 2 &&
            r[ci_key][0].is_number() && r[ci_key][1].is_number()) {
          intervals.emplace_back(r["step"].get<double>(), r[ci_key]);
        }
      }
    }
    if (points.empty()) continue;
    // Records are appended as they come (evaluations finish after later learner steps).
    std::sort(points.begin(), points.end());
    const bool rate = absl::EndsWith(name, "win_rate");
    double x0 = points.front().first, x1 = x0, y0 = points.front().second, y1 = y0;
    for (const auto& [x, y] : points) {
      x0 = std::min(x0, x); x1 = std::max(x1, x);
      y0 = std::min(y0, y); y1 = std::max(y1, y);
    }
    if (rate) { y0 = 0; y1 = 1; }
    if (x1 == x0) x1 = x0 + 1;
    if (y1 == y0) { y0 -= 0.5; y1 += 0.5; }
    auto px = [&](double x) { return kPad + (x - x0) / (x1 - x0) * (kW - 2 * kPad); };
    auto py = [&](double y) {
      return kH - kPad - (std::clamp(y, y0, y1) - y0) / (y1 - y0) * (kH - 2 * kPad);
    };
    std::string poly;
    for (const auto& [x, y] : points) {
      absl::StrAppend(&poly, poly.empty() ? "" : " ", absl::StrFormat("%.1f,%.1f", px(x), py(y)));
    }
    std::string extra;
    if (rate) {
      absl::StrAppend(&extra, absl::StrFormat("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                                              "stroke=\"#999\" stroke-dasharray=\"4 3\"/>\n",
                                              kPad, py(0.5), kW - kPad, py(0.5)));
    }
    for (const auto& [x, ci] : intervals) {
      absl::StrAppend(&extra, absl::StrFormat("<line data-ci=\"%s\" x1=\"%.1f\" y1=\"%.1f\" "
                                              "x2=\"%.1f\" y2=\"%.1f\" stroke=\"#1f77b4\"/>\n",
                                              name, px(x), py(ci[0].get<double>()), px(x),
                                              py(ci[1].get<double>())));
    }
    absl::StrAppend(
        &html, "<h3>", name, " over RL steps</h3>\n",
        absl::StrFormat("<svg width=\"%.0f\" height=\"%.0f\" xmlns=\"http://www.w3.org/2000/svg\">\n", kW, kH),
        absl::StrFormat("<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#999\"/>\n",
                        kPad, kPad, kW - 2 * kPad, kH - 2 * kPad),
        "<polyline data-series=\"", name, "\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"",
        poly, "\"/>\n", extra,
        absl::StrFormat("<text x=\"2\" y=\"%.0f\" font-size=\"11\">%.4g</text>\n", kPad, y1),
        absl::StrFormat("<text x=\"2\" y=\"%.0f\" font-size=\"11\">%.4g</text>\n", kH - kPad, y0),
        absl::StrFormat("<text x=\"%.0f\" y=\"%.0f\" font-size=\"11\">step %.0f</text>\n", kPad, kH - 8, x0),
        absl::StrFormat("<text x=\"%.0f\" y=\"%.0f\" font-size=\"11\">step %.0f</text>\n", kW - kPad - 40, kH - 8, x1),
        "</svg>\n");
  }
  absl::StrAppend(&html, "</body></html>\n");
  return html;
}

bool WriteMetricsPlot(const std::string& run_dir, const Json& summary) {
  std::ifstream in(run_dir + "/metrics.jsonl");
  if (!in) return false;
  std::vector<Json> records;
  for (std::string line; std::getline(in, line);) {
    Json j = Json::parse(line, nullptr, false);
    if (!j.is_discarded() && (j.contains("reward_mean") || j.contains("rm_win_rate"))) {
      records.push_back(std::move(j));
    }
  }
  if (records.empty()) return false;
  std::ofstream(run_dir + "/plot.html")
      << MetricsPlotHtml(records, {"reward_mean", "kl_mean", "rm_win_rate", "beta"}, summary);
  return true;
}

}  // namespace rlhf::launcher
