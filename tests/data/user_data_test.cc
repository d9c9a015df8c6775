// User data formats (core/data/jsonl.h, prompt_template.h, user_data.h): every format
// reads into the same records as its plain equivalent, the template renders prompts the
// documented way, malformed records give the documented errors or counted skips, and
// the materialised data directory splits held-out records by prompt, deterministically.
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/data/jsonl.h"
#include "core/data/prompt_template.h"
#include "core/data/user_data.h"

namespace rlhf {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string Dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/user_data_" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string Write(const std::string& path, const std::string& content) {
  std::ofstream(path) << content;
  return path;
}

PromptTemplate Chat() {
  auto t = PromptTemplate::Parse("User: {prompt}\nAssistant: ");
  EXPECT_TRUE(t.ok()) << t.status();
  return *t;
}

void ExpectSameRanked(const std::vector<RankedRecord>& a, const std::vector<RankedRecord>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(a[i].prompt, b[i].prompt);
    EXPECT_EQ(a[i].responses, b[i].responses);
    EXPECT_EQ(a[i].ranking, b[i].ranking);
  }
}

TEST(PromptTemplateTest, RendersAndValidates) {
  EXPECT_EQ(Chat().Render("Name two red fruits."),
            "User: Name two red fruits.\nAssistant: ");
  EXPECT_EQ(PromptTemplate().Render("as is"), "as is");
  EXPECT_TRUE(PromptTemplate().identity());
  EXPECT_EQ(Chat().text(), "User: {prompt}\nAssistant: ");
  // Other braces are literal.
  auto braces = PromptTemplate::Parse("{x} {prompt} {}");
  ASSERT_TRUE(braces.ok());
  EXPECT_EQ(braces->Render("p"), "{x} p {}");
  auto none = PromptTemplate::Parse("User: {promt}");
  EXPECT_FALSE(none.ok());
  EXPECT_THAT(none.status().message(), HasSubstr("prompt_template: 'User: {promt}' has no {prompt}"));
  auto two = PromptTemplate::Parse("{prompt}{prompt}");
  EXPECT_THAT(two.status().message(), HasSubstr("more than one {prompt}"));
}

TEST(PromptTemplateTest, ChatRendersTurnByTurn) {
  auto prompt = Chat().RenderChatPrompt({{"system", "Be brief."},
                                         {"user", "Hi"},
                                         {"assistant", "Hello"},
                                         {"user", "Bye"}});
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  EXPECT_EQ(*prompt, "Be brief.\n\nUser: Hi\nAssistant: Hello\nUser: Bye\nAssistant: ");
  auto example = Chat().RenderChatExample({{"user", "Hi"}, {"assistant", "Hello"}});
  ASSERT_TRUE(example.ok());
  EXPECT_EQ(example->first, "User: Hi\nAssistant: ");
  EXPECT_EQ(example->second, "Hello");
  EXPECT_THAT(Chat().RenderChatPrompt({{"user", "a"}, {"user", "b"}}).status().message(),
              HasSubstr("messages[1]: two 'user' turns in a row"));
  EXPECT_THAT(Chat().RenderChatPrompt({{"user", "a"}, {"system", "b"}, {"user", "c"}})
                  .status().message(),
              HasSubstr("messages[1]: a system message must be the first message"));
  EXPECT_THAT(Chat().RenderChatPrompt({{"tool", "a"}}).status().message(),
              HasSubstr("messages[0]: role 'tool' is not one of system, user, assistant"));
  EXPECT_THAT(Chat().RenderChatPrompt({{"user", "a"}, {"assistant", "b"}}).status().message(),
              HasSubstr("must end with a user turn"));
  EXPECT_THAT(Chat().RenderChatExample({{"user", "a"}}).status().message(),
              HasSubstr("must end with an assistant turn"));
}

TEST(UserFormatsTest, HhTranscriptsReadLikePromptChosenRejected) {
  const std::string d = Dir("hh");
  // Anthropic HH: the shared prefix through the last "\n\nAssistant:" is the prompt
  // (multi-turn: the earlier assistant turn is part of it).
  const std::string hh = Write(d + "/hh.jsonl",
      R"({"chosen":"\n\nHuman: What is ice?\n\nAssistant: Frozen water.","rejected":"\n\nHuman: What is ice?\n\nAssistant: A drink."})" "\n"
      R"({"chosen":"\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Name a fruit.\n\nAssistant: Apple.","rejected":"\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Name a fruit.\n\nAssistant: A rock."})" "\n");
  const std::string pcr = Write(d + "/pcr.jsonl",
      R"({"prompt":"\n\nHuman: What is ice?\n\nAssistant:","chosen":" Frozen water.","rejected":" A drink."})" "\n"
      R"({"prompt":"\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Name a fruit.\n\nAssistant:","chosen":" Apple.","rejected":" A rock."})" "\n");
  auto a = ReadPreferenceJsonl(hh);
  auto b = ReadPreferenceJsonl(pcr);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  ExpectSameRanked(*a, *b);
  EXPECT_EQ((*a)[0].prompt, "\n\nHuman: What is ice?\n\nAssistant:");
  EXPECT_EQ((*a)[0].responses, (std::vector<std::string>{" Frozen water.", " A drink."}));
  EXPECT_EQ((*a)[0].ranking, (std::vector<int>{0, 1}));
  // The template renders string prompts; HH transcripts are rendered text already.
  JsonlReadOptions templated;
  templated.prompt_template = Chat();
  auto c = ReadPreferenceJsonl(hh, templated);
  ASSERT_TRUE(c.ok());
  ExpectSameRanked(*c, *a);
}

TEST(UserFormatsTest, TrlConversationalPreferencesReadLikeStrings) {
  const std::string d = Dir("trl");
  const std::string conv = Write(d + "/conv.jsonl",
      R"({"prompt":[{"role":"user","content":"Name a fruit."}],"chosen":[{"role":"assistant","content":"Apple."}],"rejected":[{"role":"assistant","content":"Rock."}]})" "\n"
      // Implicit prompt: two whole conversations differing in the last turn.
      R"({"chosen":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello"},{"role":"user","content":"Name a fruit."},{"role":"assistant","content":"Pear."}],"rejected":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello"},{"role":"user","content":"Name a fruit."},{"role":"assistant","content":"Stone."}]})" "\n");
  const std::string plain = Write(d + "/plain.jsonl",
      R"({"prompt":"Name a fruit.","chosen":"Apple.","rejected":"Rock."})" "\n"
      R"({"prompt":"Hi\nAssistant: Hello\nUser: Name a fruit.","chosen":"Pear.","rejected":"Stone."})" "\n");
  JsonlReadOptions read;
  read.prompt_template = Chat();
  auto a = ReadPreferenceJsonl(conv, read);
  auto b = ReadPreferenceJsonl(plain, read);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  ExpectSameRanked(*a, *b);
  EXPECT_EQ((*a)[1].prompt, "User: Hi\nAssistant: Hello\nUser: Name a fruit.\nAssistant: ");
}

TEST(UserFormatsTest, ChatSftAndPromptsReadLikeStrings) {
  const std::string d = Dir("chat");
  JsonlReadOptions read;
  read.prompt_template = Chat();
  auto chat = ReadSftJsonl(Write(d + "/chat.jsonl",
      R"({"messages":[{"role":"user","content":"Name a fruit."},{"role":"assistant","content":"Apple."}]})" "\n"), read);
  auto plain = ReadSftJsonl(Write(d + "/plain.jsonl",
      R"({"prompt":"Name a fruit.","response":"Apple."})" "\n"), read);
  ASSERT_TRUE(chat.ok()) << chat.status();
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_EQ(chat->size(), 1u);
  EXPECT_EQ((*chat)[0].prompt, (*plain)[0].prompt);
  EXPECT_EQ((*chat)[0].response, (*plain)[0].response);
  EXPECT_EQ((*chat)[0].prompt, "User: Name a fruit.\nAssistant: ");

  auto prompts = ReadPromptJsonl(Write(d + "/prompts.jsonl",
      R"({"messages":[{"role":"user","content":"What is 2+2?"}],"reference":"4"})" "\n"
      R"({"prompt":"What is 2+2?","reference":"4","id":7})" "\n"
      R"({"prompt":[{"role":"user","content":"What is 2+2?"}]})" "\n"), read);
  ASSERT_TRUE(prompts.ok()) << prompts.status();
  ASSERT_EQ(prompts->size(), 3u);
  for (const PromptRecord& p : *prompts) EXPECT_EQ(p.prompt, "User: What is 2+2?\nAssistant: ");
  EXPECT_EQ((*prompts)[0].reference, "4");
  EXPECT_EQ((*prompts)[1].reference, "4");
  EXPECT_EQ((*prompts)[2].reference, "");
}

TEST(UserFormatsTest, MalformedRecordsNameFileLineAndField) {
  const std::string d = Dir("bad");
  struct Case {
    std::string line, expected;
  };
  const std::vector<Case> preference_cases = {
      {R"({"chosen":"\n\nHuman: a\n\nAssistant: x","rejected":"\n\nHuman: b\n\nAssistant: y"})",
       "field 'chosen': no shared prompt"},
      {R"({"chosen":"x"})", "missing field 'rejected'"},
      {R"({"prompt":"p","chosen":[{"role":"user","content":"x"}],"rejected":"y"})",
       "field 'chosen': with a 'prompt', expected exactly one assistant message"},
      {R"({"prompt":[{"role":"user"}],"chosen":"a","rejected":"b"})",
       "field 'prompt[0].content': expected string"},
      {R"({"prompt":[{"role":"user","content":"a"},{"role":"user","content":"b"}],"chosen":"a","rejected":"b"})",
       "field 'prompt[1]': two 'user' turns in a row"},
      {R"({"chosen":[{"role":"user","content":"a"},{"role":"assistant","content":"x"}],"rejected":[{"role":"user","content":"b"},{"role":"assistant","content":"y"}]})",
       "field 'rejected[0]': differs from 'chosen' before the final assistant turn"},
      {R"({"prompt":"p","chosen":"same","rejected":"same"})",
       "field 'rejected': identical to 'chosen'"},
  };
  for (const Case& c : preference_cases) {
    SCOPED_TRACE(c.line);
    const std::string path = Write(d + "/p.jsonl", "\n" + c.line + "\n");
    auto r = ReadPreferenceJsonl(path);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr(path + ":2: " + c.expected));
  }
  const std::string sft = Write(d + "/s.jsonl",
      R"({"messages":[{"role":"user","content":"a"}]})" "\n");
  EXPECT_THAT(ReadSftJsonl(sft).status().message(),
              HasSubstr(sft + ":1: field 'messages[0]': an SFT conversation must end with an "
                              "assistant turn"));
  const std::string prompt = Write(d + "/q.jsonl", R"({"prompt":"a","reference":4})" "\n");
  EXPECT_THAT(ReadPromptJsonl(prompt).status().message(),
              HasSubstr(prompt + ":1: field 'reference': expected string"));
}

TEST(UserFormatsTest, SkippedRecordsAreCountedByReason) {
  const std::string d = Dir("skip");
  const std::string path = Write(d + "/mixed.jsonl",
      R"({"prompt":"a","response":"b"})" "\n"
      "not json\n"
      R"({"prompt":1,"response":"b"})" "\n"
      R"({"prompt":2,"response":"b"})" "\n"
      R"({"prompt":"c","response":""})" "\n"
      R"({"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]})" "\n");
  JsonlReadOptions read;
  read.skip_malformed = true;
  JsonlStats stats;
  auto r = ReadSftJsonl(path, read, &stats);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->size(), 2u);
  EXPECT_EQ(stats.lines, 6);
  EXPECT_EQ(stats.records, 2);
  EXPECT_EQ(stats.malformed, 3);
  EXPECT_EQ(stats.empty_responses, 1);
  ASSERT_EQ(stats.skip_reasons.size(), 2u);
  EXPECT_EQ(stats.skip_reasons["field 'prompt': expected string or message list"], 2);
  const std::string summary = FormatJsonlSummary(path, stats);
  EXPECT_THAT(summary, HasSubstr(path + ": 2 records, 3 skipped (2x field 'prompt': expected "
                                        "string or message list; 1x invalid JSON)"));
  EXPECT_THAT(summary, HasSubstr(", 1 empty response dropped"));
}

TEST(UserFormatsTest, KRankedReadsLikePromptChosenRejected) {
  const std::string d = Dir("ranked");
  // K = 2 in either order of the responses is the same preference as the pair; K = 3
  // expands to the pairs a pairwise file would list.
  const std::string ranked = Write(d + "/ranked.jsonl",
      R"({"prompt":"p","responses":["good","bad"],"ranking":[0,1]})" "\n"
      R"({"prompt":"q","responses":["worse","better"],"ranking":[1,0]})" "\n");
  const std::string pairs = Write(d + "/pairs.jsonl",
      R"({"prompt":"p","chosen":"good","rejected":"bad"})" "\n"
      R"({"prompt":"q","chosen":"better","rejected":"worse"})" "\n");
  JsonlReadOptions read;
  read.prompt_template = Chat();
  auto a = ReadPreferenceJsonl(ranked, read);
  auto b = ReadPreferenceJsonl(pairs, read);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(a->size(), 2u);
  ExpectSameRanked({(*a)[0]}, {(*b)[0]});
  EXPECT_EQ((*a)[1].prompt, (*b)[1].prompt);
  EXPECT_EQ((*a)[1].prompt, "User: q\nAssistant: ");
  for (int i = 0; i < 2; ++i) {
    SCOPED_TRACE(i);
    const std::vector<IndexPair> pa = ExpandPairs((*a)[i]), pb = ExpandPairs((*b)[i]);
    ASSERT_EQ(pa.size(), 1u);
    ASSERT_EQ(pb.size(), 1u);
    EXPECT_EQ((*a)[i].responses[pa[0].winner], (*b)[i].responses[pb[0].winner]);
    EXPECT_EQ((*a)[i].responses[pa[0].loser], (*b)[i].responses[pb[0].loser]);
  }
}

TEST(UserFormatsTest, PreferenceAndTextSkipsAreCountedByReason) {
  const std::string d = Dir("pref_skip");
  const std::string prefs = Write(d + "/prefs.jsonl",
      R"({"chosen":"\n\nHuman: a\n\nAssistant: x","rejected":"\n\nHuman: a\n\nAssistant: y"})" "\n"
      R"({"chosen":"\n\nHuman: a\n\nAssistant: x","rejected":"\n\nHuman: b\n\nAssistant: y"})" "\n"
      R"({"prompt":"p","responses":["a","b"],"ranking":[0,0]})" "\n"
      R"({"prompt":"p","chosen":"same","rejected":"same"})" "\n"
      R"({"prompt":"p","chosen":"c","rejected":"r"})" "\n"
      "[1, 2]\n");
  JsonlReadOptions read;
  read.skip_malformed = true;
  JsonlStats stats;
  auto r = ReadPreferenceJsonl(prefs, read, &stats);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->size(), 2u);
  EXPECT_EQ(stats.lines, 6);
  EXPECT_EQ(stats.records, 2);
  EXPECT_EQ(stats.malformed, 4);
  EXPECT_EQ(stats.skip_reasons.size(), 4u);  // one reason each
  const std::string summary = FormatJsonlSummary(prefs, stats);
  EXPECT_THAT(summary, HasSubstr(prefs + ": 2 records, 4 skipped ("));
  EXPECT_THAT(summary, HasSubstr("1x field 'chosen': no shared prompt"));
  EXPECT_THAT(summary, HasSubstr("1x field 'ranking': not a permutation"));
  EXPECT_THAT(summary, HasSubstr("1x field 'rejected': identical to 'chosen'"));
  EXPECT_THAT(summary, HasSubstr("1x expected a JSON object"));
  // Without skip_malformed the first bad record is the error, file:line: field.
  EXPECT_THAT(ReadPreferenceJsonl(prefs).status().message(),
              HasSubstr(prefs + ":2: field 'chosen': no shared prompt"));

  const std::string text = Write(d + "/text.jsonl",
      "{\"text\":\"a b c\"}\n{\"text\":5}\n{\"txt\":\"x\"}\n{\"text\":\"d\"}\n");
  JsonlStats text_stats;
  auto t = ReadTextJsonl(text, read, &text_stats);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->size(), 2u);
  EXPECT_EQ((*t)[1].text, "d");
  EXPECT_EQ(text_stats.malformed, 2);
  EXPECT_EQ(text_stats.skip_reasons["missing field 'text'"], 1);
  EXPECT_THAT(ReadTextJsonl(text).status().message(),
              HasSubstr(text + ":2: field 'text': expected string"));
}

TEST(UserDataTest, SplitIsSeededByPromptAndNearTheFraction) {
  int held = 0;
  for (int i = 0; i < 10000; ++i) held += InHeldoutSplit("prompt " + std::to_string(i), 7, 0.2);
  EXPECT_NEAR(held / 10000.0, 0.2, 0.015);
  int same = 0;
  for (int i = 0; i < 1000; ++i) {
    const std::string p = "prompt " + std::to_string(i);
    same += InHeldoutSplit(p, 7, 0.2) == InHeldoutSplit(p, 7, 0.2);
  }
  EXPECT_EQ(same, 1000);
  int differ = 0;
  for (int i = 0; i < 1000; ++i) {
    const std::string p = "prompt " + std::to_string(i);
    differ += InHeldoutSplit(p, 7, 0.5) != InHeldoutSplit(p, 8, 0.5);
  }
  EXPECT_GT(differ, 300);  // another seed, another split
}

std::vector<std::string> Lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

TEST(UserDataTest, MaterialisesEveryFormatIntoTheCanonicalFiles) {
  const std::string d = Dir("materialise");
  fs::create_directories(d + "/prefs");
  std::string sft, prompts;
  for (int i = 0; i < 200; ++i) {
    // Each prompt twice: both copies must land on the same side.
    for (int copy = 0; copy < 2; ++copy) {
      sft += "{\"messages\":[{\"role\":\"user\",\"content\":\"q" + std::to_string(i) +
             "\"},{\"role\":\"assistant\",\"content\":\"a" + std::to_string(copy) + "\"}]}\n";
    }
    prompts += "{\"prompt\":\"q" + std::to_string(i) + "\",\"reference\":\"r" +
               std::to_string(i) + "\"}\n";
  }
  Write(d + "/sft.jsonl", sft);
  Write(d + "/prompts.jsonl", prompts);
  Write(d + "/prompts_eval.jsonl", "{\"prompt\":\"held\"}\n");
  Write(d + "/prefs/a.jsonl", R"({"prompt":"x","chosen":"good","rejected":"bad"})" "\n");
  Write(d + "/prefs/b.jsonl",
        R"({"chosen":"\n\nHuman: y\n\nAssistant: good","rejected":"\n\nHuman: y\n\nAssistant: bad"})" "\n");
  Write(d + "/prefs/notes.txt", "ignored");
  Write(d + "/prefs_eval.jsonl", R"({"prompt":"z","responses":["a","b","c"],"ranking":[1,0,2]})" "\n");
  Write(d + "/text.jsonl", "{\"text\":\"Cherry is a red fruit.\"}\n");

  UserDataOptions o;
  o.sft.files = {d + "/sft.jsonl"};
  o.preferences = {{d + "/prefs"}, {d + "/prefs_eval.jsonl"}};
  o.prompts = {{d + "/prompts.jsonl"}, {d + "/prompts_eval.jsonl"}};
  o.pretrain.files = {d + "/text.jsonl"};
  o.heldout_fraction = 0.25;
  o.seed = 3;
  o.prompt_template = Chat();
  o.out_dir = d + "/out";
  auto report = MaterializeUserData(o);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->sft + report->sft_heldout, 400);
  EXPECT_GT(report->sft_heldout, 40);
  EXPECT_LT(report->sft_heldout, 160);
  EXPECT_EQ(report->rank, 2);
  EXPECT_EQ(report->rank_heldout, 1);
  EXPECT_EQ(report->rl_train, 200);
  EXPECT_EQ(report->rl_heldout, 1);
  EXPECT_EQ(report->pretrain, 1);
  ASSERT_EQ(report->summaries.size(), 7u);  // sft, 2 prefs, 1 prefs held-out, 2 prompts, text
  EXPECT_THAT(report->summaries[0], HasSubstr("sft " + d + "/sft.jsonl: 400 records"));

  // No prompt on both sides; both copies of a prompt on the same side.
  auto train = ReadSftJsonl(d + "/out/sft.jsonl");
  auto held = ReadSftJsonl(d + "/out/sft_heldout.jsonl");
  ASSERT_TRUE(train.ok() && held.ok());
  std::set<std::string> train_prompts, held_prompts;
  for (const auto& r : *train) train_prompts.insert(r.prompt);
  for (const auto& r : *held) held_prompts.insert(r.prompt);
  for (const auto& p : held_prompts) EXPECT_EQ(train_prompts.count(p), 0u) << p;
  EXPECT_EQ(train->size(), 2 * train_prompts.size());
  EXPECT_EQ((*train)[0].prompt.rfind("User: q", 0), 0u);  // rendered once, here

  // Canonical lines, references kept, HH prompt untouched by the template.
  EXPECT_EQ(Lines(d + "/out/rl_heldout.jsonl"),
            (std::vector<std::string>{R"({"prompt":"User: held\nAssistant: "})"}));
  EXPECT_EQ(Lines(d + "/out/rl_train.jsonl")[0],
            R"({"prompt":"User: q0\nAssistant: ","reference":"r0"})");
  EXPECT_EQ(Lines(d + "/out/rank.jsonl"),
            (std::vector<std::string>{
                R"({"prompt":"User: x\nAssistant: ","ranking":[0,1],"responses":["good","bad"]})",
                R"({"prompt":"\n\nHuman: y\n\nAssistant:","ranking":[0,1],"responses":[" good"," bad"]})"}));

  // Same inputs, same seed: byte-identical output.
  const auto before = Lines(d + "/out/sft_heldout.jsonl");
  ASSERT_TRUE(MaterializeUserData(o).ok());
  EXPECT_EQ(Lines(d + "/out/sft_heldout.jsonl"), before);
}

TEST(UserDataTest, FailuresNameTheProblemAndLeaveNoFiles) {
  const std::string d = Dir("fail");
  Write(d + "/prompts.jsonl", "{\"prompt\":\"only one\"}\n");
  UserDataOptions o;
  o.prompts.files = {d + "/prompts.jsonl"};
  o.heldout_fraction = 1e-9;  // the one prompt stays in training
  o.out_dir = d + "/out";
  auto r = MaterializeUserData(o);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("data.prompts: the held-out set is empty"));
  EXPECT_FALSE(fs::exists(d + "/out/rl_train.jsonl"));
  EXPECT_FALSE(fs::exists(d + "/out/rl_train.jsonl.tmp"));

  o.prompts.files = {d + "/missing.jsonl"};
  EXPECT_EQ(MaterializeUserData(o).status().code(), absl::StatusCode::kNotFound);
  fs::create_directories(d + "/empty");
  o.prompts.files = {d + "/empty"};
  EXPECT_THAT(MaterializeUserData(o).status().message(), HasSubstr("no *.jsonl files"));
  o.prompts.files = {};
  EXPECT_THAT(MaterializeUserData(o).status().message(), HasSubstr("data.prompts: no files"));
  o.prompts.files = {d + "/prompts.jsonl"};
  o.heldout_fraction = 1.0;
  EXPECT_THAT(MaterializeUserData(o).status().message(),
              HasSubstr("data.heldout_fraction: must be in (0, 1)"));

  // A malformed record stops the stage (or is skipped and counted with skip_malformed).
  Write(d + "/p2.jsonl", "{\"prompt\":\"a\"}\n{\"prompt\":3}\n{\"prompt\":\"b\"}\n");
  o.heldout_fraction = 0.1;
  o.prompts = {{d + "/p2.jsonl"}, {d + "/prompts.jsonl"}};
  auto bad = MaterializeUserData(o);
  EXPECT_THAT(bad.status().message(), HasSubstr(d + "/p2.jsonl:2: field 'prompt'"));
  o.skip_malformed = true;
  auto skipped = MaterializeUserData(o);
  ASSERT_TRUE(skipped.ok()) << skipped.status();
  EXPECT_EQ(skipped->rl_train, 2);
  EXPECT_THAT(skipped->summaries[0], HasSubstr("2 records, 1 skipped (1x field 'prompt'"));
}

}  // namespace
}  // namespace rlhf
