#include "core/data/jsonl.h"

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace rlhf {
namespace {

std::string WriteTemp(const std::string& name, const std::string& content) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << content;
  return path;
}

std::string SourceDir() {
  const char* dir = std::getenv("RLHF_SOURCE_DIR");
  return dir != nullptr ? dir : ".";
}

TEST(PairExpansionTest, SeedIceExampleGivesSixPairs) {
  auto records = ReadPreferenceJsonl(SourceDir() + "/core/data/fixtures/ice.jsonl");
  ASSERT_TRUE(records.ok()) << records.status();
  ASSERT_EQ(records->size(), 1u);
  const RankedRecord& ice = (*records)[0];
  EXPECT_EQ(ice.prompt, "What is ice?");
  ASSERT_EQ(ice.responses.size(), 4u);
  // Ranking C > D > A > B: consistent with the seed's "A over B" and "C over A".
  const std::vector<IndexPair> pairs = ExpandPairs(ice);
  ASSERT_EQ(pairs.size(), 6u);
  // The seed's order (A,B), (A,C), (A,D), (B,C), (B,D), (C,D), each oriented.
  const int A = 0, B = 1, C = 2, D = 3;
  const std::vector<std::pair<int, int>> expected = {{A, B}, {C, A}, {D, A},
                                                     {C, B}, {D, B}, {C, D}};
  for (size_t i = 0; i < pairs.size(); ++i) {
    EXPECT_EQ(pairs[i].winner, expected[i].first) << i;
    EXPECT_EQ(pairs[i].loser, expected[i].second) << i;
  }
}

TEST(PairExpansionTest, KChooseTwo) {
  for (int k : {2, 4, 9}) {
    RankedRecord r;
    for (int i = 0; i < k; ++i) {
      r.responses.push_back(std::string(1, static_cast<char>('a' + i)));
      r.ranking.push_back(k - 1 - i);
    }
    EXPECT_EQ(ExpandPairs(r).size(), static_cast<size_t>(k * (k - 1) / 2));
    EXPECT_EQ(CountPairs(r), k * (k - 1) / 2);
  }
}

TEST(PairExpansionTest, IdenticalResponsesFormNoPair) {
  RankedRecord r{"p", {"x", "y", "x", "z"}, {0, 1, 2, 3}};
  // 6 pairs minus (x, x).
  const std::vector<IndexPair> pairs = ExpandPairs(r);
  EXPECT_EQ(pairs.size(), 5u);
  for (const IndexPair& p : pairs) EXPECT_NE(r.responses[p.winner], r.responses[p.loser]);
  JsonlStats stats;
  auto read = ReadPreferenceJsonl(
      WriteTemp("dup.jsonl", R"({"prompt":"p","responses":["x","y","x","z"],"ranking":[0,1,2,3]})"
                             "\n"),
      {}, &stats);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(stats.duplicate_pairs, 1);
}

TEST(JsonlTest, ChosenRejectedBecomesKEqualsTwo) {
  auto read = ReadPreferenceJsonl(WriteTemp(
      "pair.jsonl", "{\"prompt\":\"p\",\"chosen\":\"good\",\"rejected\":\"bad\"}\n\n"
                    "{\"prompt\":\"q\",\"responses\":[\"a\",\"b\",\"c\"],\"ranking\":[2,0,1]}\n"));
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->size(), 2u);
  EXPECT_EQ((*read)[0].responses, (std::vector<std::string>{"good", "bad"}));
  EXPECT_EQ((*read)[0].ranking, (std::vector<int>{0, 1}));
  const std::vector<IndexPair> pairs = ExpandPairs((*read)[1]);
  ASSERT_EQ(pairs.size(), 3u);
  // b (rank 0) beats a and c; c (rank 1) beats a.
  EXPECT_EQ(pairs[0].winner, 1);  // (a,b)
  EXPECT_EQ(pairs[1].winner, 2);  // (a,c)
  EXPECT_EQ(pairs[2].winner, 1);  // (b,c)
}

struct BadCase {
  const char* line;
  const char* message;  // expected after "<path>:2: "
};

TEST(JsonlTest, MalformedPreferenceRecordsNameFileLineAndField) {
  const BadCase cases[] = {
      {R"({"prompt":"p","responses":["a","b"],"ranking":"01"})",
       "field 'ranking': expected array of integers"},
      {R"({"prompt":"p","responses":["a","b"],"ranking":[0,1.5]})",
       "field 'ranking': expected array of integers"},
      {R"({"prompt":"p","responses":["a","b"],"ranking":[0,0]})",
       "field 'ranking': not a permutation of 0..1: rank 0 appears twice"},
      {R"({"prompt":"p","responses":["a","b"],"ranking":[0,2]})",
       "field 'ranking': rank 2 out of range [0, 2)"},
      {R"({"prompt":"p","responses":["a","b","c"],"ranking":[0,1]})",
       "field 'ranking': has 2 entries but 'responses' has 3"},
      {R"({"prompt":"p","responses":["a"],"ranking":[0]})",
       "field 'responses': needs at least 2 responses, got 1"},
      {R"({"prompt":"p","responses":["a",3],"ranking":[0,1]})",
       "field 'responses[1]': expected string"},
      {R"({"prompt":"p","responses":"a","ranking":[0,1]})",
       "field 'responses': expected array of strings"},
      {R"({"prompt":"p","responses":["a","b"]})", "missing field 'ranking'"},
      {R"({"prompt":"p"})", "missing field 'responses' (or 'chosen' and 'rejected')"},
      {R"({"responses":["a","b"],"ranking":[0,1]})", "missing field 'prompt'"},
      {R"({"prompt":7,"responses":["a","b"],"ranking":[0,1]})",
       "field 'prompt': expected string"},
      {R"({"prompt":"p","chosen":"a"})", "missing field 'rejected'"},
      {R"({"prompt":"p","chosen":"a","rejected":"a"})",
       "field 'rejected': identical to 'chosen' (no preference)"},
      {R"(["prompt"])", "expected a JSON object"},
      {R"({"prompt":"p",)", "invalid JSON"},
  };
  const std::string good = R"({"prompt":"ok","responses":["a","b"],"ranking":[1,0]})";
  int i = 0;
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.line);
    const std::string path = WriteTemp("bad" + std::to_string(i++) + ".jsonl",
                                       good + "\n" + c.line + "\n" + good + "\n");
    auto read = ReadPreferenceJsonl(path);
    ASSERT_FALSE(read.ok());
    EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string want = path + ":2: " + c.message;
    EXPECT_EQ(std::string(read.status().message()).substr(0, want.size()), want)
        << read.status().message();

    // Skip-and-count mode delivers the two good records.
    JsonlStats stats;
    JsonlReadOptions skip;
    skip.skip_malformed = true;
    auto skipped = ReadPreferenceJsonl(path, skip, &stats);
    ASSERT_TRUE(skipped.ok());
    EXPECT_EQ(skipped->size(), 2u);
    EXPECT_EQ(stats.malformed, 1);
    EXPECT_EQ(stats.records, 2);
    ASSERT_EQ(stats.first_errors.size(), 1u);
  }
}

TEST(JsonlTest, MalformedSftAndTextRecords) {
  auto sft = ReadSftJsonl(WriteTemp("sft_bad.jsonl", "{\"prompt\":\"p\",\"response\":[1]}\n"));
  ASSERT_FALSE(sft.ok());
  EXPECT_NE(sft.status().message().find("sft_bad.jsonl:1: field 'response': expected string"),
            std::string::npos);
  auto text = ReadTextJsonl(WriteTemp("text_bad.jsonl", "\n{\"txt\":\"p\"}\n"));
  ASSERT_FALSE(text.ok());
  EXPECT_NE(text.status().message().find("text_bad.jsonl:2: missing field 'text'"),
            std::string::npos);
  auto prompts = ReadPromptJsonl(::testing::TempDir() + "/does_not_exist.jsonl");
  EXPECT_EQ(prompts.status().code(), absl::StatusCode::kNotFound);
}

TEST(JsonlTest, EmptySftResponsesAreDroppedAndCounted) {
  JsonlStats stats;
  auto sft = ReadSftJsonl(WriteTemp("sft_empty.jsonl",
                                    "{\"prompt\":\"p\",\"response\":\"\"}\n"
                                    "{\"prompt\":\"q\",\"response\":\"R.\",\"id\":3}\n"),
                          {}, &stats);
  ASSERT_TRUE(sft.ok());
  ASSERT_EQ(sft->size(), 1u);
  EXPECT_EQ((*sft)[0].prompt, "q");
  EXPECT_EQ(stats.empty_responses, 1);
  EXPECT_EQ(stats.records, 1);
}

TEST(JsonlTest, RoundTripsEveryRecordType) {
  const std::string dir = ::testing::TempDir() + "/roundtrip/a/b";
  ASSERT_TRUE(MakeDirs(dir).ok());
  std::vector<SftRecord> sft = {{"p\"1\n", "r\\1"}, {"p2", "r2"}};
  ASSERT_TRUE(WriteSftJsonl(dir + "/sft.jsonl", sft).ok());
  auto back = ReadSftJsonl(dir + "/sft.jsonl");
  ASSERT_TRUE(back.ok());
  ASSERT_EQ(back->size(), 2u);
  EXPECT_EQ((*back)[0].prompt, "p\"1\n");
  EXPECT_EQ((*back)[0].response, "r\\1");
  ASSERT_TRUE(WritePairJsonl(dir + "/pairs.jsonl", {{"p", "c", "r"}}).ok());
  auto pairs = ReadPreferenceJsonl(dir + "/pairs.jsonl");
  ASSERT_TRUE(pairs.ok());
  EXPECT_EQ((*pairs)[0].responses[0], "c");
  JsonlReadOptions first_only;
  first_only.max_records = 1;
  back = ReadSftJsonl(dir + "/sft.jsonl", first_only);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->size(), 1u);
}

}  // namespace
}  // namespace rlhf
