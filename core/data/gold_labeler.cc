#include "core/data/gold_labeler.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"

namespace rlhf {
namespace {

// Lower-cased alphabetic words of `text`, in order.
std::vector<std::string> Words(absl::string_view text) {
  std::vector<std::string> words;
  std::string current;
  for (char c : text) {
    if (absl::ascii_isalpha(static_cast<unsigned char>(c))) {
      current.push_back(absl::ascii_tolower(static_cast<unsigned char>(c)));
    } else if (!current.empty()) {
      words.push_back(std::move(current));
      current.clear();
    }
  }
  if (!current.empty()) words.push_back(std::move(current));
  return words;
}

// Every word the labeler scores and every item the generator draws is looked up here,
// hundreds of thousands of times per generated data set: a hash lookup, not a scan
// with a strlen per item.
const TaskItem* FindItem(absl::string_view name) {
  static const auto* by_name = [] {
    auto* index = new absl::flat_hash_map<absl::string_view, const TaskItem*>();
    for (const TaskItem& item : TaskItems()) index->emplace(item.name, &item);
    return index;
  }();
  const auto it = by_name->find(name);
  return it == by_name->end() ? nullptr : it->second;
}

// Category word (singular or plural) -> category.
const char* CategoryOf(absl::string_view word) {
  if (word == "fruit" || word == "fruits") return "fruit";
  if (word == "vegetable" || word == "vegetables") return "vegetable";
  if (word == "animal" || word == "animals") return "animal";
  return nullptr;
}

double Clamp01(double x) { return std::min(1.0, std::max(0.0, x)); }

}  // namespace

const std::vector<TaskItem>& TaskItems() {
  // Attributes chosen so every (category, attribute) used in prompts has >= 3 items and
  // some items have two attributes (apple is red and green), so the labels are not a
  // pure lookup of one colour per word.
  static const auto* items = new std::vector<TaskItem>{
      {"apple", "fruit", {"red", "green"}},
      {"cherry", "fruit", {"red"}},
      {"strawberry", "fruit", {"red"}},
      {"raspberry", "fruit", {"red"}},
      {"banana", "fruit", {"yellow"}},
      {"lemon", "fruit", {"yellow"}},
      {"mango", "fruit", {"yellow", "orange"}},
      {"lime", "fruit", {"green"}},
      {"pear", "fruit", {"green"}},
      {"kiwi", "fruit", {"green"}},
      {"grape", "fruit", {"purple", "green"}},
      {"plum", "fruit", {"purple"}},
      {"fig", "fruit", {"purple"}},
      {"orange", "fruit", {"orange"}},
      {"peach", "fruit", {"orange"}},
      {"apricot", "fruit", {"orange"}},
      {"pea", "vegetable", {"green"}},
      {"kale", "vegetable", {"green"}},
      {"leek", "vegetable", {"green"}},
      {"celery", "vegetable", {"green"}},
      {"cabbage", "vegetable", {"green"}},
      {"carrot", "vegetable", {"orange"}},
      {"pumpkin", "vegetable", {"orange"}},
      {"yam", "vegetable", {"orange"}},
      {"beet", "vegetable", {"red"}},
      {"radish", "vegetable", {"red"}},
      {"pepper", "vegetable", {"red", "green"}},
      {"eagle", "animal", {"fly"}},
      {"owl", "animal", {"fly"}},
      {"crow", "animal", {"fly"}},
      {"bat", "animal", {"fly"}},
      {"bee", "animal", {"fly"}},
      {"duck", "animal", {"fly", "swim"}},
      {"swan", "animal", {"fly", "swim"}},
      {"fish", "animal", {"swim"}},
      {"shark", "animal", {"swim"}},
      {"whale", "animal", {"swim"}},
      {"seal", "animal", {"swim"}},
      {"otter", "animal", {"swim"}},
      {"horse", "animal", {"run"}},
      {"dog", "animal", {"run", "swim"}},
      {"fox", "animal", {"run"}},
      {"deer", "animal", {"run"}},
      {"wolf", "animal", {"run"}},
      {"hare", "animal", {"run"}},
  };
  return *items;
}

std::vector<std::string> TaskAttributes(absl::string_view category) {
  if (category == "fruit") return {"red", "yellow", "green", "purple", "orange"};
  if (category == "vegetable") return {"green", "orange", "red"};
  if (category == "animal") return {"fly", "swim", "run"};
  return {};
}

bool ItemMatches(absl::string_view name, absl::string_view category,
                 absl::string_view attribute) {
  const TaskItem* item = FindItem(name);
  if (item == nullptr || category != item->category) return false;
  if (attribute.empty()) return true;
  return std::find(item->attributes.begin(), item->attributes.end(), attribute) !=
         item->attributes.end();
}

bool ParseTaskPrompt(absl::string_view prompt, TaskRequest* request) {
  // Keyword parse rather than a grammar, so every phrasing the generator uses (and
  // reasonable new ones) parses: the first count word, the first category word, and an
  // attribute word of that category.
  std::vector<std::string> words = Words(prompt);
  int count = 0;
  const char* category = nullptr;
  for (const std::string& w : words) {
    if (count == 0) {
      if (w == "a" || w == "an" || w == "one") count = 1;
      if (w == "two") count = 2;
      if (w == "three") count = 3;
    }
    if (category == nullptr) category = CategoryOf(w);
  }
  if (count == 0 || category == nullptr) return false;
  std::string attribute;
  const std::vector<std::string> attributes = TaskAttributes(category);
  for (const std::string& w : words) {
    // "orange" is both a colour and a fruit; in a prompt it is always the colour.
    if (std::find(attributes.begin(), attributes.end(), w) != attributes.end()) {
      attribute = w;
      break;
    }
  }
  request->category = category;
  request->attribute = attribute;
  request->count = count;
  return true;
}

GoldBreakdown GoldScoreBreakdown(absl::string_view prompt, absl::string_view response) {
  GoldBreakdown b;
  TaskRequest request;
  b.task_prompt = ParseTaskPrompt(prompt, &request);

  for (char c : response) {
    const bool ok = absl::ascii_isalpha(static_cast<unsigned char>(c)) || c == ' ' ||
                    c == ',' || c == '.';
    if (!ok) ++b.garbage;
  }
  b.capital = !response.empty() && absl::ascii_isupper(static_cast<unsigned char>(response[0]));
  b.period = !response.empty() && response.back() == '.' &&
             std::count(response.begin(), response.end(), '.') == 1;
  const int n = static_cast<int>(response.size());
  b.length_factor = n <= 48 ? 1.0 : Clamp01(1.0 - (n - 48) / 48.0);

  std::set<std::string> seen_items, seen_words, valid;
  int distinct_items = 0;
  for (const std::string& w : Words(response)) {
    const TaskItem* item = FindItem(w);
    if (item != nullptr) {
      if (!seen_items.insert(w).second) {
        ++b.repeats;
        continue;
      }
      ++distinct_items;
      if (b.task_prompt && ItemMatches(w, request.category, request.attribute)) {
        valid.insert(w);
      } else {
        ++b.wrong;
      }
      continue;
    }
    if (w != "and") ++b.filler;
    if (!seen_words.insert(w).second) ++b.repeats;
  }

  double base;
  if (b.task_prompt) {
    b.content = std::min<double>(valid.size(), request.count) / request.count;
    b.count_ok = distinct_items == request.count;
    base = 0.6 * b.content + 0.2 * (b.count_ok ? 1 : 0) + 0.1 * (b.capital ? 1 : 0) +
           0.1 * (b.period ? 1 : 0);
  } else {
    // Not a task prompt: items are neither right nor wrong, only the form counts.
    b.wrong = 0;
    b.filler = 0;
    base = 0.5 * (b.capital ? 1 : 0) + 0.5 * (b.period ? 1 : 0);
  }
  const double penalty = std::exp(-0.5 * b.wrong) * std::exp(-0.7 * b.repeats) *
                         std::exp(-0.15 * b.filler) * std::exp(-0.5 * b.garbage) *
                         b.length_factor;
  b.score = Clamp01(base * penalty);
  return b;
}

bool GoldDominates(const GoldBreakdown& better, const GoldBreakdown& worse) {
  if (worse.score == 0 && better.score > 0) return true;
  return worse.content <= better.content && worse.count_ok <= better.count_ok &&
         worse.capital <= better.capital && worse.period <= better.period &&
         worse.wrong >= better.wrong && worse.repeats >= better.repeats &&
         worse.filler >= better.filler && worse.garbage >= better.garbage &&
         worse.length_factor <= better.length_factor;
}

double GoldScore(absl::string_view prompt, absl::string_view response) {
  return GoldScoreBreakdown(prompt, response).score;
}

}  // namespace rlhf
