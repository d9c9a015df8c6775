// The hidden "human" of the built-in alignment task: a deterministic, pure-text scorer
// in [0, 1]. Reward models are trained on rankings it produces; `rlhf eval` and the
// "gold" rule scorer of the reward server report it directly. Thread-safe (no state).
//
// The task: prompts ask for N in {1, 2, 3} items of a category (fruit, vegetable,
// animal), optionally with an attribute (a colour for fruits and vegetables, an ability
// for animals), e.g. "Name two red fruits." or "List three animals that can swim.".
// The ideal response lists exactly N distinct matching items, capitalised, comma/"and"
// separated, ending with one period: "Cherry and apple." / "Owl, bat and duck.".
//
// Score = content * (0.6) + count (0.2) + capital (0.1) + final period (0.1), then
// multiplied by penalties:
//   content   min(#distinct valid items, N) / N          (valid = in category, has attr)
//   count     1 if #distinct items mentioned == N
//   capital   1 if the first byte is an upper-case letter
//   period    1 if the response ends with '.' and has no other '.'
//   x exp(-0.5 * wrong)      wrong  = distinct items mentioned that are not valid
//   x exp(-0.7 * repeats)    repeats = item mentions beyond the first of each item, plus
//                            repeated non-item words ("and and")
//   x exp(-0.15 * filler)    filler = words that are neither items nor "and"
//   x exp(-0.5 * garbage)    garbage = bytes outside [A-Za-z ,.]
//   x length factor          1 up to 48 bytes, falling linearly to 0 at 96 bytes
// So degenerate repetition ("Apple, apple, apple, cherry.") scores low even though it is
// full of on-topic words, which a naive reward model tends to like.
//
// Prompts that are not from the task get a format-only score (capital, period, the
// repetition/garbage/length penalties), so the function is total.
#pragma once

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace rlhf {

// Gold score of `response` to `prompt`, in [0, 1]. Deterministic.
double GoldScore(absl::string_view prompt, absl::string_view response);

// The parsed request of a task prompt.
struct TaskRequest {
  std::string category;   // "fruit" | "vegetable" | "animal"
  std::string attribute;  // "" (any), a colour, or "fly" / "swim" / "run"
  int count = 0;          // 1..3
};

// Parses a task prompt; false if the prompt is not one of the task's phrasings.
bool ParseTaskPrompt(absl::string_view prompt, TaskRequest* request);

// The parts of the score, for debugging and tests.
struct GoldBreakdown {
  bool task_prompt = false;  // prompt parsed as a task request
  double content = 0;        // [0,1]
  bool count_ok = false;
  bool capital = false;
  bool period = false;
  int wrong = 0;
  int repeats = 0;
  int filler = 0;
  int garbage = 0;
  double length_factor = 1;
  double score = 0;
};
GoldBreakdown GoldScoreBreakdown(absl::string_view prompt, absl::string_view response);

// Whether `worse` has every flaw of `better` and possibly more: it is no better in any
// part of the score (content, count, capital, period; no fewer wrong items, repeats,
// filler words or garbage bytes; no larger length factor), or it is worthless (score 0)
// while `better` is not. Such a pair can be ranked without weighing one defect against
// another ("a repeated item or a filler word, which is worse?"), which is what the
// built-in task's rankings are made of (builtin_task.h). Reflexive on equal parts.
bool GoldDominates(const GoldBreakdown& better, const GoldBreakdown& worse);

// --- The task's closed vocabulary (used by the generator and tests). ---
struct TaskItem {
  const char* name;        // lower case, singular
  const char* category;    // "fruit" | "vegetable" | "animal"
  std::vector<std::string> attributes;
};
// All items of all categories, in a fixed order.
const std::vector<TaskItem>& TaskItems();
// Attributes usable in prompts for `category` (each has >= 3 items).
std::vector<std::string> TaskAttributes(absl::string_view category);
// Whether item `name` is a valid answer for (category, attribute); attribute "" = any.
bool ItemMatches(absl::string_view name, absl::string_view category,
                 absl::string_view attribute);

}  // namespace rlhf
