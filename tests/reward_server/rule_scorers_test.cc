// The rule scorers a user configures without C++ (reward_server/scorers.h): length,
// regex, exact match against a prompt's reference answer, a remote RewardService, the
// --scorers_json spec, and their weighted sum with a reward model in one real server.
#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/utils.h>

#include "core/tokenizer/tokenizer.h"
#include "core/train/training_common.h"
#include "reward_server/reward_client.h"
#include "reward_server/reward_server.h"
#include "reward_server/scorers.h"

namespace rlhf::reward {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::shared_ptr<const Tokenizer> Bytes() { return std::make_shared<ByteTokenizer>(); }

// [BOS] prompt, response bytes (+ EOS), as an actor sends them.
ScoringSequence Seq(const std::string& prompt, const std::string& response, bool eos = true) {
  ByteTokenizer t;
  ScoringSequence s{EncodePrompt(t, prompt), t.Encode(response)};
  if (eos) s.response.push_back(t.eos_id());
  return s;
}

std::vector<float> ScoreAll(RewardScorer& scorer, const std::vector<ScoringSequence>& seqs) {
  std::vector<const ScoringSequence*> batch;
  for (const auto& s : seqs) batch.push_back(&s);
  auto out = scorer.Score(batch);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? *out : std::vector<float>{};
}

TEST(RuleScorersTest, LengthPenaltyByHand) {
  // target 10 bytes, tolerance 2: -max(0, |len - 10| - 2) / 10 (EOS is not a byte).
  auto s = LengthRewardScorer::Create(Bytes(), 10, 2);
  ASSERT_TRUE(s.ok());
  EXPECT_THAT(ScoreAll(**s, {Seq("p", "0123456789"), Seq("p", "012345678901"),
                             Seq("p", "0123"), Seq("p", std::string(30, 'x'), false)}),
              ElementsAre(0.0f, 0.0f, -0.4f, -1.8f));
  EXPECT_THAT(LengthRewardScorer::Create(Bytes(), 0, 0).status().message(),
              HasSubstr("target_length must be >= 1"));
}

TEST(RuleScorersTest, RegexRequiredAndForbidden) {
  auto required = RegexRewardScorer::Create(Bytes(), R"(\d+\.$)", false);
  auto forbidden = RegexRewardScorer::Create(Bytes(), "(?i)as an ai", true);
  ASSERT_TRUE(required.ok() && forbidden.ok());
  const std::vector<ScoringSequence> seqs = {Seq("p", "The answer is 42."),
                                             Seq("p", "As an AI, I think 4."),
                                             Seq("p", "No number")};
  EXPECT_THAT(ScoreAll(**required, seqs), ElementsAre(1.0f, 1.0f, 0.0f));
  EXPECT_THAT(ScoreAll(**forbidden, seqs), ElementsAre(0.0f, -1.0f, 0.0f));
  auto bad = RegexRewardScorer::Create(Bytes(), "(unclosed", false);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("pattern '(unclosed'"));
}

TEST(RuleScorersTest, ExactMatchFindsTheReferenceByPromptTokens) {
  const std::string dir = ::testing::TempDir() + "/exact_match_test";
  std::filesystem::create_directories(dir);
  // The rendered prompts the learner leases, with their references.
  std::ofstream(dir + "/rl.jsonl")
      << R"({"prompt":"User: 2+2?\nAssistant: ","reference":"4"})" "\n"
      << R"({"prompt":"User: Capital of France?\nAssistant: ","reference":" Paris "})" "\n"
      << R"({"prompt":"User: no reference\nAssistant: "})" "\n";
  auto s = ExactMatchRewardScorer::FromPromptFiles(Bytes(), {dir + "/rl.jsonl"}, false);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ((*s)->references(), 2);
  EXPECT_THAT(ScoreAll(**s, {Seq("User: 2+2?\nAssistant: ", " 4"),
                             Seq("User: 2+2?\nAssistant: ", "5"),
                             Seq("User: Capital of France?\nAssistant: ", "Paris\n", false),
                             Seq("User: Capital of France?\nAssistant: ", "paris"),
                             Seq("User: unknown\nAssistant: ", "4")}),
              ElementsAre(1.0f, 0.0f, 1.0f, 0.0f, 0.0f));
  EXPECT_EQ((*s)->missing(), 1);
  auto folded = ExactMatchRewardScorer::FromPromptFiles(Bytes(), {dir + "/rl.jsonl"}, true);
  ASSERT_TRUE(folded.ok());
  EXPECT_THAT(ScoreAll(**folded, {Seq("User: Capital of France?\nAssistant: ", "PARIS")}),
              ElementsAre(1.0f));

  std::ofstream(dir + "/conflict.jsonl") << R"({"prompt":"q","reference":"a"})" "\n"
                                         << R"({"prompt":"q","reference":"b"})" "\n";
  EXPECT_THAT(ExactMatchRewardScorer::FromPromptFiles(Bytes(), {dir + "/conflict.jsonl"}, false)
                  .status().message(),
              HasSubstr("prompt 'q' has two different references"));
  std::ofstream(dir + "/none.jsonl") << R"({"prompt":"q"})" "\n";
  EXPECT_THAT(ExactMatchRewardScorer::FromPromptFiles(Bytes(), {dir + "/none.jsonl"}, false)
                  .status().message(),
              HasSubstr("no prompt record with a \"reference\""));
  std::filesystem::remove_all(dir);
}

TEST(RuleScorersTest, ScorersJsonSpec) {
  auto specs = ParseScorerSpecsJson(
      R"([{"type":"rm","checkpoint":"/ckpt","weight":1},
          {"type":"length","target_length":40,"length_tolerance":5,"weight":0.5},
          {"type":"regex","pattern":"a,b:c","forbidden":true,"name":"no_abc"},
          {"type":"exact_match","references":["/r.jsonl"],"ignore_case":true},
          {"type":"remote","address":"127.0.0.1:5","timeout_ms":250,"weight":0}])");
  ASSERT_TRUE(specs.ok()) << specs.status();
  ASSERT_EQ(specs->size(), 5u);
  EXPECT_EQ((*specs)[0].kind, ScorerSpec::Kind::kModel);
  EXPECT_EQ((*specs)[0].checkpoint, "/ckpt");
  EXPECT_EQ((*specs)[1].target_length, 40);
  EXPECT_EQ((*specs)[1].length_tolerance, 5);
  EXPECT_DOUBLE_EQ((*specs)[1].weight, 0.5);
  EXPECT_EQ((*specs)[2].pattern, "a,b:c");  // commas and colons survive (unlike --scorers)
  EXPECT_TRUE((*specs)[2].forbidden);
  EXPECT_EQ((*specs)[2].name, "no_abc");
  EXPECT_THAT((*specs)[3].references, ElementsAre("/r.jsonl"));
  EXPECT_TRUE((*specs)[3].ignore_case);
  EXPECT_EQ((*specs)[4].timeout_ms, 250);
  EXPECT_DOUBLE_EQ((*specs)[4].weight, 0.0);
  for (const auto& [text, error] : std::vector<std::pair<std::string, std::string>>{
           {R"([{"type":"regex"}])", "scorers[0].pattern: required"},
           {R"([{"type":"length","target_length":"40"}])", "scorers[0].target_length: expected number"},
           {R"([{"type":"remote"}])", "scorers[0].address: required"},
           {R"([{"type":"gold"},{"type":"bleu"}])", "scorers[1].type: 'bleu' is not one of"},
           {R"([{"type":"gold","wieght":2}])", "scorers[0].wieght: unknown field"},
           {R"({"type":"gold"})", "expected a JSON array"}}) {
    EXPECT_THAT(ParseScorerSpecsJson(text).status().message(), HasSubstr(error)) << text;
  }
}

// A real reward server (length rule + a reward model) scores through a real socket; a
// second server reaches it through RemoteRewardScorer and adds a regex rule.
TEST(RuleScorersTest, RemoteScorerAndWeightedSumOverRealServers) {
  ModelConfig c;
  c.d_model = 32;
  c.n_layers = 1;
  c.n_heads = 4;
  c.n_kv_heads = 4;
  c.d_ff = 64;
  c.max_seq_len = 64;
  c.lm_head = false;
  c.scalar_head = true;
  torch::manual_seed(3);
  auto rm = ModelRewardScorer::Create("rm", TransformerLM(c), ByteTokenizer::kPad, {});
  ASSERT_TRUE(rm.ok());
  ModelRewardScorer* rm_ptr = rm->get();
  auto length = LengthRewardScorer::Create(Bytes(), 4, 0);
  ASSERT_TRUE(length.ok());
  RewardServerOptions o;
  o.grpc.host = "127.0.0.1";
  o.grpc.port = 0;
  o.handler.max_seq_len = 64;
  o.handler.batcher.max_wait = absl::Milliseconds(1);
  RewardServerDeps deps;
  deps.scorers.push_back({*std::move(rm), 1.0});
  deps.scorers.push_back({*std::move(length), 2.0});
  auto inner = RewardServer::Create(o, std::move(deps));
  ASSERT_TRUE(inner.ok()) << inner.status();
  ASSERT_TRUE((*inner)->Start().ok());

  const std::vector<ScoringSequence> seqs = {Seq("Q: a", "abcd."), Seq("Q: b", "ab")};
  // The independent expectation: the RM's own score plus 2 x the length rule by hand
  // (-|5-4|/4 and -|2-4|/4; EOS is no byte).
  const std::vector<float> rm_scores = ScoreAll(*rm_ptr, seqs);
  const std::vector<float> want = {rm_scores[0] + 2 * -0.25f, rm_scores[1] + 2 * -0.5f};

  ScorerSpec remote_spec;
  remote_spec.kind = ScorerSpec::Kind::kRemote;
  remote_spec.address = "127.0.0.1:" + std::to_string((*inner)->port());
  remote_spec.name = "python";
  remote_spec.timeout_ms = 500;
  auto remote = MakeRuleScorer(remote_spec, Bytes());
  ASSERT_TRUE(remote.ok()) << remote.status();
  EXPECT_EQ((*remote)->name(), "python");
  const std::vector<float> got = ScoreAll(**remote, seqs);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_NEAR(got[0], want[0], 1e-5);
  EXPECT_NEAR(got[1], want[1], 1e-5);

  // Outer server: 0.5 x remote + 1 x regex("\\.$").
  auto regex = RegexRewardScorer::Create(Bytes(), R"(\.$)", false);
  ASSERT_TRUE(regex.ok());
  RewardServerDeps outer_deps;
  outer_deps.scorers.push_back({*std::move(remote), 0.5});
  outer_deps.scorers.push_back({*std::move(regex), 1.0});
  auto outer = RewardServer::Create(o, std::move(outer_deps));
  ASSERT_TRUE(outer.ok()) << outer.status();
  ASSERT_TRUE((*outer)->Start().ok());
  services::ChannelOptions channel;
  channel.target = "127.0.0.1:" + std::to_string((*outer)->port());
  auto client = GrpcRewardClient::Create(channel);
  ASSERT_TRUE(client.ok());
  v1::RewardScoreRequest request;
  for (const auto& s : seqs) {
    auto* q = request.add_sequences();
    q->mutable_prompt()->Add(s.prompt.begin(), s.prompt.end());
    q->mutable_response()->Add(s.response.begin(), s.response.end());
  }
  auto response = (*client)->Score(request, absl::Now() + absl::Seconds(30));
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_EQ(response->rewards_size(), 2);
  EXPECT_NEAR(response->rewards(0), 0.5 * want[0] + 1.0, 1e-5);
  EXPECT_NEAR(response->rewards(1), 0.5 * want[1] + 0.0, 1e-5);
  EXPECT_EQ(response->components().at("python").values_size(), 2);
  EXPECT_EQ(response->components().at("regex").values(0), 1.0f);

  // The remote server gone: the batch fails with a status naming the scorer.
  (*inner)->Shutdown(absl::Now());
  auto failed = (*client)->Score(request, absl::Now() + absl::Seconds(3));
  EXPECT_FALSE(failed.ok());
  (*outer)->Shutdown(absl::Now());
}

}  // namespace
}  // namespace rlhf::reward
