#include "core/data/gold_labeler.h"

#include <string>

#include <gtest/gtest.h>

#include "core/data/builtin_task.h"

namespace rlhf {
namespace {

TEST(ParseTaskPromptTest, ParsesCountCategoryAttribute) {
  TaskRequest r;
  ASSERT_TRUE(ParseTaskPrompt("Name two red fruits.", &r));
  EXPECT_EQ(r.category, "fruit");
  EXPECT_EQ(r.attribute, "red");
  EXPECT_EQ(r.count, 2);
  ASSERT_TRUE(ParseTaskPrompt("Can you name an animal that can swim?", &r));
  EXPECT_EQ(r.category, "animal");
  EXPECT_EQ(r.attribute, "swim");
  EXPECT_EQ(r.count, 1);
  ASSERT_TRUE(ParseTaskPrompt("List three vegetables.", &r));
  EXPECT_EQ(r.attribute, "");
  EXPECT_EQ(r.count, 3);
  EXPECT_FALSE(ParseTaskPrompt("What is ice?", &r));
}

TEST(GoldScoreTest, HandComputedValues) {
  const std::string p = "Name two red fruits.";
  EXPECT_DOUBLE_EQ(GoldScore(p, "Apple and cherry."), 1.0);
  // One valid of two (0.6 * 0.5), count ok (0.2), capital + period (0.2); one wrong
  // item: x exp(-0.5).
  EXPECT_NEAR(GoldScore(p, "Apple and banana."), 0.7 * std::exp(-0.5), 1e-12);
  // One valid item, wrong count: 0.3 + 0.2.
  EXPECT_NEAR(GoldScore(p, "Cherry."), 0.5, 1e-12);
  // No capital, no period: 0.8.
  EXPECT_NEAR(GoldScore(p, "apple and cherry"), 0.8, 1e-12);
  // Two filler words: x exp(-0.3).
  EXPECT_NEAR(GoldScore(p, "I think apple and cherry."), std::exp(-0.3), 1e-12);
}

TEST(GoldDominatesTest, WorseInSomePartAndBetterInNone) {
  const std::string p = "Name two red fruits.";
  auto parts = [&](const char* response) { return GoldScoreBreakdown(p, response); };
  // More flaws of the same kinds: dominated.
  EXPECT_TRUE(GoldDominates(parts("Cherry and apple."), parts("cherry and apple")));
  EXPECT_TRUE(GoldDominates(parts("Sure, cherry and apple."),
                            parts("Sure, cherry, apple and apple.")));
  EXPECT_FALSE(GoldDominates(parts("cherry and apple"), parts("Cherry and apple.")));
  // A trade-off either way: a missing item against a lower-case start (0.5 vs 0.9 in
  // gold score, but neither has all the other's flaws).
  EXPECT_FALSE(GoldDominates(parts("cherry and apple."), parts("Cherry.")));
  EXPECT_FALSE(GoldDominates(parts("Cherry."), parts("cherry and apple.")));
  // A filler word against a repeated item.
  EXPECT_FALSE(GoldDominates(parts("Well, cherry and apple."), parts("Cherry, apple and apple.")));
  // Equal parts dominate each other; a worthless answer is below any answer with merit.
  EXPECT_TRUE(GoldDominates(parts("Cherry and apple."), parts("Apple and cherry.")));
  EXPECT_TRUE(GoldDominates(parts("Well, cherry."), parts("")));
  EXPECT_FALSE(GoldDominates(parts(""), parts("Well, cherry.")));
}

TEST(GoldScoreTest, GoodBeatsMediocreBeatsBad) {
  struct Case {
    const char* prompt;
    const char* good;
    const char* mediocre;
    const char* bad;
  };
  const Case cases[] = {
      {"Name two red fruits.", "Cherry and strawberry.", "Cherry and lemon.", "Dog and owl."},
      {"List three animals that can swim.", "Fish, whale and seal.", "fish, whale and seal",
       "Fish, fish, fish, fish."},
      {"Give me a green vegetable.", "Kale.", "Kale and leek.", "I do not know."},
      {"Say two fruits.", "Pear and plum.", "Sure, pear and plum.", ""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.prompt);
    EXPECT_GT(GoldScore(c.prompt, c.good), GoldScore(c.prompt, c.mediocre));
    EXPECT_GT(GoldScore(c.prompt, c.mediocre), GoldScore(c.prompt, c.bad));
  }
}

TEST(GoldScoreTest, DegenerateRepetitionScoresLow) {
  const std::string p = "Name two red fruits.";
  // Full of on-topic words, but repetitive: what a naive reward model may like.
  EXPECT_LT(GoldScore(p, "Apple, cherry, apple, cherry, apple, cherry."), 0.1);
  EXPECT_LT(GoldScore(p, "Cherry cherry cherry cherry cherry cherry cherry cherry."), 0.01);
  EXPECT_LT(GoldScore(p, "Apple and cherry. Apple and cherry."), 0.3);
  EXPECT_LT(GoldScore(p, "Apple and and and and and and cherry."), 0.1);
}

TEST(GoldScoreTest, OverLengthIsPenalised) {
  const std::string p = "Name a fruit.";
  std::string long_response = "Apple";
  for (int i = 0; i < 100; ++i) long_response += " ";
  long_response += ".";
  EXPECT_DOUBLE_EQ(GoldScore(p, "Apple."), 1.0);
  EXPECT_DOUBLE_EQ(GoldScore(p, long_response), 0.0);
}

TEST(GoldScoreTest, InRangeAndDeterministicOnArbitraryBytes) {
  const std::string p = "Name a fruit.";
  const std::string weird("\x00\xff\x80 Apple\n.", 11);
  const double s = GoldScore(p, weird);
  EXPECT_GE(s, 0.0);
  EXPECT_LE(s, 1.0);
  EXPECT_EQ(s, GoldScore(p, weird));
  EXPECT_EQ(GoldScore(p, ""), 0.0);
}

TEST(GoldScoreTest, NonTaskPromptScoresFormOnly) {
  EXPECT_DOUBLE_EQ(GoldScore("What is ice?", "Frozen water."), 1.0);
  EXPECT_DOUBLE_EQ(GoldScore("What is ice?", "frozen water"), 0.0);
}

TEST(GoldScoreTest, IdealResponseScoresOneForEveryPrompt) {
  for (const std::string& p : AllTaskPrompts()) {
    SCOPED_TRACE(p);
    EXPECT_LE(p.size(), 44u);
    const std::string ideal = IdealResponse(p);
    EXPECT_LE(ideal.size(), 40u);
    EXPECT_DOUBLE_EQ(GoldScore(p, ideal), 1.0);
  }
}

}  // namespace
}  // namespace rlhf
