#include "tools/launcher/paired_gain.h"

#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"

namespace rlhf::launcher {

absl::StatusOr<PairedGain> PairedPromptGain(
    const std::vector<std::pair<std::string, double>>& before,
    const std::vector<std::pair<std::string, double>>& after) {
  struct Sums {
    double before = 0, after = 0;
    int n_before = 0, n_after = 0;
  };
  std::map<std::string, Sums> by_prompt;
  for (const auto& [prompt, score] : before) {
    by_prompt[prompt].before += score;
    ++by_prompt[prompt].n_before;
  }
  for (const auto& [prompt, score] : after) {
    by_prompt[prompt].after += score;
    ++by_prompt[prompt].n_after;
  }
  std::vector<double> diffs;
  for (const auto& [prompt, s] : by_prompt) {
    if (s.n_before > 0 && s.n_after > 0) {
      diffs.push_back(s.after / s.n_after - s.before / s.n_before);
    }
  }
  if (diffs.size() < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "paired gain needs >= 2 prompts evaluated by both policies, got ", diffs.size()));
  }
  PairedGain g;
  g.prompts = static_cast<int>(diffs.size());
  for (double d : diffs) g.mean += d / diffs.size();
  double sq = 0;
  for (double d : diffs) sq += (d - g.mean) * (d - g.mean);
  g.half_width = 1.96 * std::sqrt(sq / (diffs.size() - 1)) / std::sqrt(diffs.size());
  return g;
}

absl::StatusOr<WinRate> PairedWinRate(const std::vector<std::pair<std::string, double>>& before,
                                      const std::vector<std::pair<std::string, double>>& after) {
  std::map<std::string, std::pair<std::vector<double>, std::vector<double>>> by_prompt;
  for (const auto& [prompt, score] : before) by_prompt[prompt].first.push_back(score);
  for (const auto& [prompt, score] : after) by_prompt[prompt].second.push_back(score);
  std::vector<double> rates;
  for (const auto& [prompt, scores] : by_prompt) {
    const auto& [b, a] = scores;
    if (b.empty() || a.empty()) continue;
    double wins = 0;
    for (double x : a) {
      for (double y : b) wins += x > y ? 1.0 : x == y ? 0.5 : 0.0;
    }
    rates.push_back(wins / (a.size() * b.size()));
  }
  if (rates.size() < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "win rate needs >= 2 prompts evaluated by both policies, got ", rates.size()));
  }
  WinRate w;
  w.prompts = static_cast<int>(rates.size());
  for (double r : rates) w.rate += r / rates.size();
  double sq = 0;
  for (double r : rates) sq += (r - w.rate) * (r - w.rate);
  w.half_width = 1.96 * std::sqrt(sq / (rates.size() - 1)) / std::sqrt(rates.size());
  return w;
}

}  // namespace rlhf::launcher
