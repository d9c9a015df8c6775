#include "core/data/builtin_task.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/data/gold_labeler.h"
#include "core/data/jsonl.h"
#include "core/status_macros.h"
#include "core/util/splitmix.h"

namespace rlhf {
namespace {

// splitmix64 (core/util/splitmix.h): identical on every platform (std distributions
// are not).
class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  uint64_t Next() { return gen_.Next(); }
  int Uniform(int n) { return static_cast<int>(Next() % static_cast<uint64_t>(n)); }
  double Unit() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  bool Bernoulli(double p) { return Unit() < p; }
  template <typename T>
  const T& Pick(const std::vector<T>& v) { return v[Uniform(static_cast<int>(v.size()))]; }
  template <typename T>
  void Shuffle(std::vector<T>* v) {
    for (int i = static_cast<int>(v->size()) - 1; i > 0; --i) std::swap((*v)[i], (*v)[Uniform(i + 1)]);
  }

 private:
  SplitMix64Rng gen_;
};

const std::vector<std::string>& Categories() {
  static const auto* c = new std::vector<std::string>{"fruit", "vegetable", "animal"};
  return *c;
}

std::string Plural(const std::string& category) { return category + "s"; }

bool StartsWithVowel(const std::string& w) {
  return !w.empty() && std::string("aeiou").find(w[0]) != std::string::npos;
}

std::string CountWord(int n) { return n == 1 ? "one" : n == 2 ? "two" : "three"; }

// "a red fruit", "two red fruits", "an animal that can fly", "three animals".
std::string NounPhrase(const std::string& category, const std::string& attribute, int n) {
  const bool ability = category == "animal";
  std::string head = (!attribute.empty() && !ability) ? absl::StrCat(attribute, " ") : "";
  head += n == 1 ? category : Plural(category);
  std::string phrase =
      n == 1 ? absl::StrCat(StartsWithVowel(head) ? "an " : "a ", head) : absl::StrCat(CountWord(n), " ", head);
  if (ability && !attribute.empty()) absl::StrAppend(&phrase, " that can ", attribute);
  return phrase;
}

std::vector<std::string> MatchingItems(const std::string& category, const std::string& attribute) {
  std::vector<std::string> out;
  for (const TaskItem& item : TaskItems()) {
    if (ItemMatches(item.name, category, attribute)) out.push_back(item.name);
  }
  return out;
}

std::vector<std::string> NonMatchingItems(const std::string& category,
                                          const std::string& attribute) {
  std::vector<std::string> out;
  for (const TaskItem& item : TaskItems()) {
    const bool same_category = category == item.category;
    // With an attribute: same category, other attribute. Without: another category.
    if (attribute.empty() ? !same_category
                          : same_category && !ItemMatches(item.name, category, attribute)) {
      out.push_back(item.name);
    }
  }
  return out;
}

std::vector<std::string> ItemsOfOtherCategory(const std::string& category, Rng* rng) {
  std::vector<std::string> others;
  for (const std::string& c : Categories()) {
    if (c != category) others.push_back(c);
  }
  return MatchingItems(rng->Pick(others), "");
}

// `n` distinct items drawn from `pool` (fewer if the pool is smaller).
std::vector<std::string> Draw(std::vector<std::string> pool, int n, Rng* rng) {
  rng->Shuffle(&pool);
  if (static_cast<int>(pool.size()) > n) pool.resize(n);
  return pool;
}

std::string Capitalize(std::string s) {
  if (!s.empty()) s[0] = absl::ascii_toupper(static_cast<unsigned char>(s[0]));
  return s;
}

// "cherry, apple and plum" (lower case, no period).
std::string JoinList(const std::vector<std::string>& items) {
  if (items.empty()) return "";
  if (items.size() == 1) return items[0];
  std::vector<std::string> head(items.begin(), items.end() - 1);
  return absl::StrCat(absl::StrJoin(head, ", "), " and ", items.back());
}

std::string Sentence(const std::vector<std::string>& items) {
  return absl::StrCat(Capitalize(JoinList(items)), ".");
}

struct Request {
  std::string category, attribute;
  int count = 1;
};

Request ParseOrDie(const std::string& prompt) {
  TaskRequest r;
  const bool ok = ParseTaskPrompt(prompt, &r);
  // Invariant: the generator only builds prompts the labeler parses.
  if (!ok) std::abort();
  return Request{r.category, r.attribute, r.count};
}

std::vector<std::string> GoodItems(const Request& r, Rng* rng) {
  return Draw(MatchingItems(r.category, r.attribute), r.count, rng);
}

enum class Flaw { kWrongItem, kCount, kLowercase, kNoPeriod, kFiller, kOffTopic, kNumFlaws };

// A response with exactly one flaw (the human-demonstration kind of mistake).
std::string FlawedResponse(const Request& r, Flaw flaw, Rng* rng) {
  std::vector<std::string> items = GoodItems(r, rng);
  switch (flaw) {
    case Flaw::kWrongItem: {
      std::vector<std::string> wrong = NonMatchingItems(r.category, r.attribute);
      items[rng->Uniform(static_cast<int>(items.size()))] = rng->Pick(wrong);
      return Sentence(items);
    }
    case Flaw::kCount: {
      const int n = r.count == 1 ? 2 : (rng->Bernoulli(0.5) ? r.count - 1 : r.count + 1);
      return Sentence(Draw(MatchingItems(r.category, r.attribute), n, rng));
    }
    case Flaw::kLowercase:
      return absl::StrCat(JoinList(items), ".");
    case Flaw::kNoPeriod:
      return Capitalize(JoinList(items));
    case Flaw::kFiller: {
      static const auto* prefixes =
          new std::vector<std::string>{"Sure, ", "I think ", "Well, ", "Okay, ", "Maybe "};
      return absl::StrCat(rng->Pick(*prefixes), JoinList(items), ".");
    }
    case Flaw::kOffTopic:
    case Flaw::kNumFlaws:
      break;
  }
  return Sentence(Draw(ItemsOfOtherCategory(r.category, rng), r.count, rng));
}

Flaw RandomFlaw(Rng* rng) {
  // The demonstrators know their facts but are sloppy with the instructions: most of
  // their mistakes are the wrong number of items and surface form, which is also what a
  // small reward model can learn to see and RL can then fix. A wrong item is rarer,
  // an off-topic answer rarest.
  const int k = rng->Uniform(14);
  if (k < 5) return Flaw::kCount;
  if (k < 8) return Flaw::kFiller;
  if (k < 10) return Flaw::kLowercase;
  if (k < 12) return Flaw::kNoPeriod;
  if (k < 13) return Flaw::kWrongItem;
  return Flaw::kOffTopic;
}

bool IsTaskItem(const std::string& w) {
  for (const TaskItem& item : TaskItems()) {
    if (w == item.name) return true;
  }
  return false;
}

// A response under construction for the ranking data: the items plus the surface
// flaws applied so far. Ranked responses of a prompt form a DEGRADATION CHAIN: each one
// is the previous one with one more flaw, so most pairs differ by clear, nameable
// defects (what a labeller can rank reliably) instead of arbitrary trade-offs, and the
// chain runs all the way down to what a reward-hacking policy drifts to: repeated
// on-topic words, repeated sentences, garbage, empty answers.
struct Draft {
  std::vector<std::string> items;
  std::string prefix;      // filler ("Sure, ")
  bool lower = false;      // first letter not capitalised
  bool no_period = false;
  std::string garbage;     // "!!" after the sentence
  bool doubled = false;    // the sentence twice
  bool empty = false;      // the empty response
  bool ramble = false;     // "I do not know." instead of an answer
  double cut = 1.0;        // < 1: the text stops after this fraction of its bytes
};

std::string Render(const Draft& d) {
  if (d.empty) return "";
  if (d.ramble) return "I do not know.";
  std::string body = JoinList(d.items);
  if (d.prefix.empty() && !d.lower) body = Capitalize(body);
  std::string s = absl::StrCat(d.prefix.empty() || d.lower ? d.prefix : Capitalize(d.prefix), body,
                               d.no_period ? "" : ".", d.garbage);
  if (d.doubled) s = absl::StrCat(s, " ", s);
  if (d.cut < 1.0) s.resize(std::max<size_t>(1, static_cast<size_t>(s.size() * d.cut)));
  return s;
}

// Flaw kinds of the ranking data, with the weights they are drawn with. The weights are
// set so that the better response of a pair is the shorter one about half the time
// (builtin_task_test), so that length alone does not predict the rank: otherwise a
// reward model learns "shorter is better" and RL exploits it by answering one item
// whatever N the prompt asks for. Flaws that SHORTEN an answer (a missing item, a lost
// period, a cut) are drawn far more often than ones that lengthen it (filler, repeats,
// garbage) because a chain only takes a flaw that adds a defect and removes none
// (RankedAttempt), and a cut or a dropped item usually removes one (the garbage at the end,
// an item too many); lengthening flaws nearly always pass, and a chain then grows
// longer as it gets worse.
enum class RankFlaw {
  kWrongItem, kMissingItem, kExtraItem, kLowercase, kNoPeriod, kFiller, kGarbage,
  kRepeatedItem, kDoubled, kOffTopic, kMisspelled, kTruncated, kNothing, kNumKinds
};
constexpr int kRankFlawWeights[] = {
    /*kWrongItem=*/2, /*kMissingItem=*/12, /*kExtraItem=*/1, /*kLowercase=*/2, /*kNoPeriod=*/4,
    /*kFiller=*/1,    /*kGarbage=*/1,     /*kRepeatedItem=*/1, /*kDoubled=*/1, /*kOffTopic=*/1,
    /*kMisspelled=*/2, /*kTruncated=*/8,  /*kNothing=*/1};
static_assert(sizeof(kRankFlawWeights) / sizeof(int) == static_cast<int>(RankFlaw::kNumKinds),
              "one weight per flaw kind");

RankFlaw PickRankFlaw(Rng* rng) {
  int total = 0;
  for (int w : kRankFlawWeights) total += w;
  int x = rng->Uniform(total);
  for (int i = 0;; ++i) {
    if (x < kRankFlawWeights[i]) return static_cast<RankFlaw>(i);
    x -= kRankFlawWeights[i];
  }
}

// Applies one random applicable flaw; false if none applies.
bool Degrade(const Request& r, Draft* d, Rng* rng) {
  if (d->empty || d->ramble) return false;
  const std::vector<std::string> good = MatchingItems(r.category, r.attribute);
  for (int attempt = 0; attempt < 32; ++attempt) {
    switch (PickRankFlaw(rng)) {
      case RankFlaw::kWrongItem: {  // a valid item becomes a wrong one
        std::vector<int> valid;
        for (int i = 0; i < static_cast<int>(d->items.size()); ++i) {
          if (ItemMatches(d->items[i], r.category, r.attribute)) valid.push_back(i);
        }
        if (valid.empty()) break;
        d->items[valid[rng->Uniform(static_cast<int>(valid.size()))]] =
            rng->Pick(NonMatchingItems(r.category, r.attribute));
        return true;
      }
      case RankFlaw::kMissingItem:
        if (d->items.size() < 2) break;
        d->items.erase(d->items.begin() + rng->Uniform(static_cast<int>(d->items.size())));
        return true;
      case RankFlaw::kExtraItem: {
        std::vector<std::string> unused;
        for (const std::string& g : good) {
          if (std::find(d->items.begin(), d->items.end(), g) == d->items.end()) unused.push_back(g);
        }
        if (unused.empty() || d->items.size() >= 5) break;
        d->items.push_back(rng->Pick(unused));
        return true;
      }
      case RankFlaw::kLowercase:
        if (d->lower) break;
        d->lower = true;
        return true;
      case RankFlaw::kNoPeriod:
        if (d->no_period) break;
        d->no_period = true;
        return true;
      case RankFlaw::kFiller: {
        if (!d->prefix.empty()) break;
        static const auto* prefixes =
            new std::vector<std::string>{"sure, ", "i think ", "well, ", "okay, ", "maybe "};
        d->prefix = rng->Pick(*prefixes);
        return true;
      }
      case RankFlaw::kGarbage:
        if (!d->garbage.empty()) break;
        d->garbage = "!!";
        return true;
      case RankFlaw::kRepeatedItem:  // the reward hacker's favourite
        if (d->items.empty() || d->items.size() >= 7) break;
        d->items.push_back(rng->Pick(d->items));
        return true;
      case RankFlaw::kDoubled:
        if (d->doubled) break;
        d->doubled = true;
        return true;
      case RankFlaw::kOffTopic:
        d->items = Draw(ItemsOfOtherCategory(r.category, rng), r.count, rng);
        return true;
      case RankFlaw::kMisspelled: {  // what an undertrained policy writes
        std::vector<int> real;
        for (int i = 0; i < static_cast<int>(d->items.size()); ++i) {
          if (d->items[i].size() >= 3 && ItemMatches(d->items[i], r.category, r.attribute)) {
            real.push_back(i);
          }
        }
        if (real.empty()) break;
        std::string& w = d->items[real[rng->Uniform(static_cast<int>(real.size()))]];
        const std::string before = w;
        const int pos = 1 + rng->Uniform(static_cast<int>(w.size()) - 1);
        if (rng->Bernoulli(0.5)) {
          w.erase(pos, 1);  // "chery"
        } else {
          w.insert(pos, 1, w[pos - 1]);  // "cheerry"
        }
        if (IsTaskItem(w)) {  // became another real word
          w = before;
          break;
        }
        return true;
      }
      case RankFlaw::kTruncated:  // stopped mid-answer ("Cherry and ap")
        if (d->cut < 1.0) break;
        d->cut = 0.3 + 0.6 * rng->Unit();
        return true;
      case RankFlaw::kNothing:
      case RankFlaw::kNumKinds:
        if (rng->Bernoulli(0.5)) {
          d->empty = true;
        } else {
          d->ramble = true;
        }
        return true;
    }
  }
  return false;
}

// One attempt at a ranked record of up to K responses whose gold scores are pairwise at
// least `min_gap` apart, ranked by gold score.
//
// The responses form a DEGRADATION CHAIN: from an ideal answer (60%) or one with a flaw
// or two, each next draft is the previous one with one more flaw. So of any two
// responses the worse one has every flaw of the better one and more: each pair is a
// clean "these extra defects are bad" contrast that a small reward model can attribute,
// never a judgement of which of two unrelated defects is worse (with those, a reward
// model learns spurious associations such as "lower case ranks high" because the
// mildest flaw sits near the top of most rankings). The builder enforces it for every
// pair, ladders and refills included: before it did, 40% of the held-out pairs traded
// one defect for another, and a test-sized reward model ranked those at 0.60. A draft
// is kept only when its gold score is at least `min_gap` from every kept one: near-ties
// (two nearly worthless answers a few thousandths apart) would teach noise.
RankedRecord RankedAttempt(const std::string& prompt, int k, const BuiltinTaskOptions& o,
                           Rng* rng) {
  const Request r = ParseOrDie(prompt);
  GoldRankingBuilder ranking(prompt, o.rank_min_gold_gap);
  // Some rankings open with a LADDER that varies one thing only. A COUNT LADDER: the
  // same well-formed answer with 1, 2, 3 and 4 valid items. Counting against the
  // prompt's N is what a reward model does not learn from chains alone (it learns "two
  // items is good" instead, and RL then answers two items to every prompt). A CONTENT
  // LADDER: the ideal answer with 0, 1, ..., N of its items swapped for wrong ones, so
  // that item knowledge ("lime is not red") is the only difference.
  // A ladder's worst rung (lowest gold score) is where the first degradation chain
  // starts, so that the chain's responses rank below every rung.
  std::vector<std::string> worst_rung;
  double worst_rung_score = 2;
  auto offer_rung = [&](const std::vector<std::string>& items) {
    const std::string text = Sentence(items);
    if (!ranking.Offer(text)) return;
    const double score = GoldScore(prompt, text);
    if (score < worst_rung_score) {
      worst_rung_score = score;
      worst_rung = items;
    }
  };
  const double u = rng->Unit();
  if (u < o.rank_count_ladder_fraction) {
    const std::vector<std::string> pool = Draw(MatchingItems(r.category, r.attribute), 4, rng);
    for (size_t n = 1; n <= pool.size() && ranking.size() < k; ++n) {
      offer_rung(std::vector<std::string>(pool.begin(), pool.begin() + n));
    }
  } else if (u < o.rank_count_ladder_fraction + o.rank_content_ladder_fraction) {
    std::vector<std::string> items = GoodItems(r, rng);
    const std::vector<std::string> wrong =
        Draw(NonMatchingItems(r.category, r.attribute), static_cast<int>(items.size()), rng);
    offer_rung(items);
    for (size_t i = 0; i < wrong.size() && ranking.size() < k; ++i) {
      items[i] = wrong[i];
      offer_rung(items);
    }
  }
  // The DEGRADATION CHAIN. When one runs dry before K, another from a fresh answer fills
  // the ranking (GoldRankingBuilder keeps only what is comparable with every kept one).
  for (int chain = 0; ranking.size() < k && chain < 16; ++chain) {
    Draft d;
    if (chain == 0 && !worst_rung.empty()) {
      d.items = worst_rung;
    } else {
      d.items = GoodItems(r, rng);
      if (chain == 0 && !rng->Bernoulli(0.6)) {
        Degrade(r, &d, rng);
        if (rng->Bernoulli(0.3)) Degrade(r, &d, rng);
      }
    }
    std::string text = Render(d);
    GoldBreakdown parts = GoldScoreBreakdown(prompt, text);
    ranking.Offer(text);
    for (int step = 0; ranking.size() < k && step < 64; ++step) {
      Draft next = d;
      if (!Degrade(r, &next, rng)) break;
      const std::string next_text = Render(next);
      const GoldBreakdown next_parts = GoldScoreBreakdown(prompt, next_text);
      // Only a flaw that makes the answer worse in some part and better in none extends
      // the chain (removing an item from an over-long list fixes its count; a cut can
      // drop the garbage at the end) ...
      if (next_text == text || !GoldDominates(parts, next_parts)) continue;
      // ... and one that leaves gold-score room for the responses still to come (a
      // doubled sentence takes an answer from 1.0 to 0.1 in one step).
      const int still_to_come = k - ranking.size() - 1;
      if (next_parts.score < o.rank_min_gold_gap * still_to_come) continue;
      if ((next.empty || next.ramble) && still_to_come > 0) continue;  // chain enders
      d = std::move(next);
      text = next_text;
      parts = next_parts;
      ranking.Offer(text);
    }
  }
  return ranking.Build();
}

RankedRecord MakeRanked(const std::string& prompt, int k, const BuiltinTaskOptions& o, Rng* rng) {
  // Comparability and the gap rule can leave an attempt short of K (a content ladder
  // of three wrong items ends at 0.09, leaving little room below it); a few fresh
  // attempts, keeping the largest, reach K or come near it.
  RankedRecord ordered;
  for (int attempt = 0; attempt < 8 && static_cast<int>(ordered.responses.size()) < k;
       ++attempt) {
    RankedRecord candidate = RankedAttempt(prompt, k, o, rng);
    if (candidate.responses.size() > ordered.responses.size()) ordered = std::move(candidate);
  }
  // Present in random order: the offer order (ladder first, chains best-first) would
  // leak the rank.
  std::vector<int> order(ordered.responses.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  rng->Shuffle(&order);
  RankedRecord rec;
  rec.prompt = prompt;
  for (int i : order) {
    rec.responses.push_back(ordered.responses[i]);
    rec.ranking.push_back(ordered.ranking[i]);
  }
  return rec;
}

SftRecord MakeSft(const std::string& prompt, double imperfect, Rng* rng) {
  const Request r = ParseOrDie(prompt);
  if (rng->Bernoulli(imperfect)) return {prompt, FlawedResponse(r, RandomFlaw(rng), rng)};
  return {prompt, Sentence(GoodItems(r, rng))};
}

std::string PretrainSentence(Rng* rng) {
  const std::vector<TaskItem>& items = TaskItems();
  const TaskItem& item = items[rng->Uniform(static_cast<int>(items.size()))];
  const std::string name = item.name;
  const std::string category = item.category;
  const std::string attribute = rng->Pick(item.attributes);
  const std::string article = StartsWithVowel(name) ? "An " : "A ";
  switch (rng->Uniform(4)) {
    case 0:
      if (category == "animal") return absl::StrCat(article, name, " can ", attribute, ".");
      return absl::StrCat(Capitalize(name), " is ", StartsWithVowel(attribute) ? "an " : "a ",
                          attribute, " ", category, ".");
    case 1:
      return absl::StrCat(article, name, " is ", StartsWithVowel(category) ? "an " : "a ",
                          category, ".");
    case 2: {
      std::vector<std::string> pair = Draw(MatchingItems(category, attribute), 2, rng);
      if (category == "animal") {
        return absl::StrCat(Capitalize(JoinList(pair)), " can ", attribute, ".");
      }
      return absl::StrCat(Capitalize(JoinList(pair)), " are ", attribute, " ", Plural(category), ".");
    }
    default: {
      std::vector<std::string> three = Draw(MatchingItems(category, ""), 3, rng);
      return absl::StrCat(Capitalize(JoinList(three)), " are ", Plural(category), ".");
    }
  }
}

}  // namespace

bool GoldRankingBuilder::Offer(const std::string& response) {
  const GoldBreakdown parts = GoldScoreBreakdown(prompt_, response);
  for (size_t i = 0; i < responses_.size(); ++i) {
    if (response == responses_[i] || std::fabs(parts.score - parts_[i].score) < min_gap_) {
      return false;
    }
    if (comparable_only_ && !GoldDominates(parts_[i], parts) &&
        !GoldDominates(parts, parts_[i])) {
      return false;
    }
  }
  responses_.push_back(response);
  parts_.push_back(parts);
  return true;
}

RankedRecord GoldRankingBuilder::Build() const {
  std::vector<int> order(responses_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  // Stable: with min_gap == 0, exact ties keep the offer order.
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return parts_[a].score > parts_[b].score; });
  RankedRecord rec;
  rec.prompt = prompt_;
  rec.responses = responses_;
  rec.ranking.assign(responses_.size(), 0);
  for (size_t rank = 0; rank < order.size(); ++rank) rec.ranking[order[rank]] = static_cast<int>(rank);
  return rec;
}

std::vector<std::string> AllTaskPrompts() {
  static const auto* kTemplates = new std::vector<std::pair<std::string, std::string>>{
      {"Name ", "."},          {"List ", "."},          {"Give me ", "."},
      {"Tell me ", "."},       {"Please name ", "."},   {"Can you name ", "?"},
      {"I need ", "."},        {"Write ", "."},         {"Suggest ", "."},
      {"Think of ", "."},      {"Mention ", "."},       {"Quickly name ", "."},
      {"Could you list ", "?"}, {"Say ", "."},
  };
  std::vector<std::string> prompts;
  for (const std::string& category : Categories()) {
    std::vector<std::string> attributes = TaskAttributes(category);
    attributes.insert(attributes.begin(), "");
    for (const std::string& attribute : attributes) {
      for (int n = 1; n <= 3; ++n) {
        const std::string np = NounPhrase(category, attribute, n);
        for (const auto& [head, tail] : *kTemplates) prompts.push_back(absl::StrCat(head, np, tail));
      }
    }
  }
  return prompts;
}

std::string IdealResponse(const std::string& prompt) {
  TaskRequest r;
  if (!ParseTaskPrompt(prompt, &r)) return "";
  std::vector<std::string> items = MatchingItems(r.category, r.attribute);
  items.resize(std::min<size_t>(items.size(), r.count));
  return Sentence(items);
}

absl::StatusOr<BuiltinTask> GenerateBuiltinTask(const BuiltinTaskOptions& o) {
  auto nonneg = [](int v, const char* field) -> absl::Status {
    if (v < 0) return absl::InvalidArgumentError(absl::StrCat(field, " must be >= 0, got ", v));
    return absl::OkStatus();
  };
  RLHF_RETURN_IF_ERROR(nonneg(o.num_sft, "num_sft"));
  RLHF_RETURN_IF_ERROR(nonneg(o.num_sft_heldout, "num_sft_heldout"));
  RLHF_RETURN_IF_ERROR(nonneg(o.num_rank, "num_rank"));
  RLHF_RETURN_IF_ERROR(nonneg(o.num_rank_heldout, "num_rank_heldout"));
  RLHF_RETURN_IF_ERROR(nonneg(o.num_rl_train, "num_rl_train"));
  RLHF_RETURN_IF_ERROR(nonneg(o.num_rl_heldout, "num_rl_heldout"));
  RLHF_RETURN_IF_ERROR(nonneg(o.num_pretrain, "num_pretrain"));
  if (o.min_k < 2 || o.max_k < o.min_k || o.max_k > 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_k/max_k must satisfy 2 <= min_k <= max_k <= 16, got ", o.min_k, "/",
                     o.max_k));
  }
  if (!(o.sft_imperfect_fraction >= 0 && o.sft_imperfect_fraction <= 1)) {
    return absl::InvalidArgumentError("sft_imperfect_fraction must be in [0, 1]");
  }
  if (!(o.rank_min_gold_gap >= 0 && o.rank_min_gold_gap <= 0.1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rank_min_gold_gap must be in [0, 0.1] (larger gaps cannot fit max_k responses "
        "into the gold range), got ", o.rank_min_gold_gap));
  }
  if (!(o.rank_count_ladder_fraction >= 0 && o.rank_content_ladder_fraction >= 0 &&
        o.rank_count_ladder_fraction + o.rank_content_ladder_fraction <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rank_count_ladder_fraction and rank_content_ladder_fraction must be >= 0 with a sum "
        "<= 1, got ", o.rank_count_ladder_fraction, " and ", o.rank_content_ladder_fraction));
  }
  if (!(o.heldout_prompt_fraction > 0 && o.heldout_prompt_fraction < 1)) {
    return absl::InvalidArgumentError("heldout_prompt_fraction must be in (0, 1)");
  }

  // Independent streams per output, so changing one count leaves the others unchanged.
  auto stream = [&](uint64_t salt) { return Rng(o.seed * 0x2545F4914F6CDD1DULL + salt); };
  Rng split_rng = stream(1);
  std::vector<std::string> prompts = AllTaskPrompts();
  split_rng.Shuffle(&prompts);
  const int num_heldout = static_cast<int>(std::lround(prompts.size() * o.heldout_prompt_fraction));
  const std::vector<std::string> heldout(prompts.begin(), prompts.begin() + num_heldout);
  const std::vector<std::string> train(prompts.begin() + num_heldout, prompts.end());
  if (o.num_rl_heldout > num_heldout) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_rl_heldout ", o.num_rl_heldout, " exceeds the ", num_heldout,
        " distinct held-out prompts (raise heldout_prompt_fraction)"));
  }

  BuiltinTask task;
  Rng sft_rng = stream(2);
  for (int i = 0; i < o.num_sft; ++i) {
    task.sft.push_back(MakeSft(sft_rng.Pick(train), o.sft_imperfect_fraction, &sft_rng));
  }
  Rng sft_h_rng = stream(3);
  for (int i = 0; i < o.num_sft_heldout; ++i) {
    task.sft_heldout.push_back(
        MakeSft(sft_h_rng.Pick(heldout), o.sft_imperfect_fraction, &sft_h_rng));
  }
  Rng rank_rng = stream(4);
  for (int i = 0; i < o.num_rank; ++i) {
    const int k = o.min_k + rank_rng.Uniform(o.max_k - o.min_k + 1);
    task.rank.push_back(MakeRanked(rank_rng.Pick(train), k, o, &rank_rng));
  }
  Rng rank_h_rng = stream(5);
  for (int i = 0; i < o.num_rank_heldout; ++i) {
    const int k = o.min_k + rank_h_rng.Uniform(o.max_k - o.min_k + 1);
    task.rank_heldout.push_back(
        MakeRanked(rank_h_rng.Pick(heldout), k, o, &rank_h_rng));
  }
  // RL train: each train prompt once per pass, in shuffled passes.
  Rng rl_rng = stream(6);
  while (static_cast<int>(task.rl_train.size()) < o.num_rl_train) {
    std::vector<std::string> pass = train;
    rl_rng.Shuffle(&pass);
    for (const std::string& p : pass) {
      if (static_cast<int>(task.rl_train.size()) == o.num_rl_train) break;
      task.rl_train.push_back({p});
    }
  }
  for (int i = 0; i < o.num_rl_heldout; ++i) task.rl_heldout.push_back({heldout[i]});
  Rng pre_rng = stream(7);
  for (int i = 0; i < o.num_pretrain; ++i) task.pretrain.push_back({PretrainSentence(&pre_rng)});
  return task;
}

absl::Status WriteBuiltinTask(const BuiltinTask& task, const std::string& dir) {
  RLHF_RETURN_IF_ERROR(MakeDirs(dir));
  RLHF_RETURN_IF_ERROR(WriteSftJsonl(absl::StrCat(dir, "/sft.jsonl"), task.sft));
  RLHF_RETURN_IF_ERROR(WriteSftJsonl(absl::StrCat(dir, "/sft_heldout.jsonl"), task.sft_heldout));
  RLHF_RETURN_IF_ERROR(WriteRankedJsonl(absl::StrCat(dir, "/rank.jsonl"), task.rank));
  RLHF_RETURN_IF_ERROR(
      WriteRankedJsonl(absl::StrCat(dir, "/rank_heldout.jsonl"), task.rank_heldout));
  RLHF_RETURN_IF_ERROR(WritePromptJsonl(absl::StrCat(dir, "/rl_train.jsonl"), task.rl_train));
  RLHF_RETURN_IF_ERROR(WritePromptJsonl(absl::StrCat(dir, "/rl_heldout.jsonl"), task.rl_heldout));
  RLHF_RETURN_IF_ERROR(WriteTextJsonl(absl::StrCat(dir, "/pretrain.jsonl"), task.pretrain));
  return absl::OkStatus();
}

}  // namespace rlhf
