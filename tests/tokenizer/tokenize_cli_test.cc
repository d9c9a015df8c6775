// `rlhf tokenize` (the real binary) against the JavaScript oracle on GPT-2's real files:
// text lines and JSONL in, one JSON array of ids per line out; --decode reverses it.
// And a SentencePiece model trained here, against Debian's spm_encode / spm_decode.
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/tokenizer/oracle_util.h"

namespace rlhf {
namespace {

using ::testing::HasSubstr;
using testing_tok::RunCommand;
using testing_tok::SplitLines;

std::string RlhfBin() {
  const char* dir = std::getenv("RLHF_BIN_DIR");
  return std::string(dir != nullptr ? dir : "bin") + "/rlhf";
}

std::string TempFile(const std::string& name, const std::string& text) {
  std::string path = ::testing::TempDir() + "/tokcli_" + std::to_string(getpid()) + "_" + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

TEST(TokenizeCliTest, EncodesLikeTheOracleAndDecodesBack) {
  const std::vector<std::string> texts = {
      "Hello world", "It's 2026 -- the year's tokens: 12345678!", "  tabs\tand  spaces  ",
      "日本語とemoji 👨‍👩‍👧‍👦", "ends with <|endoftext|> special"};
  std::string text_lines, jsonl, oracle_in;
  for (size_t i = 0; i < texts.size(); ++i) {
    text_lines += texts[i] + "\n";
    jsonl += nlohmann::json{{"text", texts[i]}, {"id", i}}.dump() + "\n";
    oracle_in += nlohmann::json{{"text", texts[i]}}.dump() + "\n";
  }
  auto oracle = testing_tok::RunOracle("encode gpt2 < '" + TempFile("oracle.jsonl", oracle_in) + "'");
  ASSERT_EQ(oracle.exit_code, 0);
  std::vector<std::string> expected;
  for (const std::string& line : SplitLines(oracle.output))
    expected.push_back(nlohmann::json::parse(line)["ids"].dump());
  ASSERT_EQ(expected.size(), texts.size());
  EXPECT_EQ(expected[0], "[15496,995]");

  const std::string cmd = RlhfBin() + " tokenize --model='" + testing_tok::ModelFilesDir("gpt2") + "'";
  for (const std::string& input : {text_lines, jsonl}) {
    auto r = RunCommand(cmd + " < '" + TempFile("in.txt", input) + "'");
    ASSERT_EQ(r.exit_code, 0);
    EXPECT_EQ(SplitLines(r.output), expected);
  }

  std::string ids_in;
  for (const std::string& e : expected) ids_in += e + "\n";
  auto back = RunCommand(cmd + " --decode --special < '" + TempFile("ids.txt", ids_in) + "'");
  ASSERT_EQ(back.exit_code, 0);
  std::vector<std::string> decoded = SplitLines(back.output);
  ASSERT_EQ(decoded.size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(nlohmann::json::parse(decoded[i]).get<std::string>(), texts[i]);
  }
  // Without --special, <|endoftext|> (BOS/EOS/PAD of GPT-2) is dropped.
  auto plain = RunCommand(cmd + " --decode < '" + TempFile("ids2.txt", expected[4] + "\n") + "'");
  EXPECT_EQ(nlohmann::json::parse(SplitLines(plain.output).at(0)).get<std::string>(),
            "ends with  special");
}

// A SentencePiece tokenizer.model in the `rlhf` binary, which links LibTorch and gRPC
// (whose protobuf and Abseil clash with libsentencepiece's: we read the model ourselves).
TEST(TokenizeCliTest, SentencePieceModelMatchesSpmEncodeAndDecode) {
  const std::string dir = ::testing::TempDir() + "/tokcli_" + std::to_string(getpid()) + "_spm";
  mkdir(dir.c_str(), 0755);
  const std::vector<std::string> words = {"reward", "model", "policy", "learns", "from",
                                          "human",  "über",  "数据",   "2026",   "it's"};
  std::string train;
  for (int i = 0; i < 600; ++i) {
    for (int k = 0; k < 8; ++k) train += (k ? " " : "") + words[(i * 7 + k * 3 + i / 5) % 10];
    train += "\n";
  }
  std::ofstream(dir + "/train.txt", std::ios::binary) << train;
  auto trained = RunCommand("spm_train --input=" + dir + "/train.txt --model_prefix=" + dir +
                            "/tokenizer --model_type=unigram --vocab_size=300 --byte_fallback=true "
                            "--hard_vocab_limit=false --num_threads=1 --minloglevel=2 > " +
                            dir + "/train.log 2>&1");
  ASSERT_EQ(trained.exit_code, 0) << "spm_train failed (Debian package sentencepiece)";
  const std::vector<std::string> texts = {"the reward model learns", "ｆｕｌｌ-width ﬁ 数据 😀",
                                          "  runs   of\tspace  ", "unseen Ω and 2026"};
  std::string text_lines, jsonl;
  for (const std::string& t : texts) {
    text_lines += t + "\n";
    jsonl += nlohmann::json{{"text", t}}.dump() + "\n";
  }
  const std::string texts_file = TempFile("spm_texts.txt", text_lines);
  auto spm = RunCommand("spm_encode --model=" + dir + "/tokenizer.model --output_format=id < '" +
                        texts_file + "'");
  ASSERT_EQ(spm.exit_code, 0);
  std::vector<std::string> expected;
  for (const std::string& line : SplitLines(spm.output)) {
    nlohmann::json ids = nlohmann::json::array();
    for (size_t p = 0; p < line.size();) {
      size_t q = line.find(' ', p);
      if (q == std::string::npos) q = line.size();
      ids.push_back(std::stoi(line.substr(p, q - p)));
      p = q + 1;
    }
    expected.push_back(ids.dump());
  }
  ASSERT_EQ(expected.size(), texts.size());

  const std::string cmd = RlhfBin() + " tokenize --model='" + dir + "'";
  const std::string log = dir + "/stderr.txt";
  auto r = RunCommand(cmd + " < '" + TempFile("spm_in.jsonl", jsonl) + "' 2> '" + log + "'");
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_EQ(SplitLines(r.output), expected);
  std::ifstream log_in(log);
  std::string first_line;
  std::getline(log_in, first_line);
  EXPECT_THAT(first_line, HasSubstr("sentencepiece tokenizer"));

  std::string ids_in;
  for (const std::string& e : expected) ids_in += e + "\n";
  auto spm_text = RunCommand(
      "spm_encode --model=" + dir + "/tokenizer.model --output_format=id < '" + texts_file +
      "' | spm_decode --model=" + dir + "/tokenizer.model --input_format=id");
  ASSERT_EQ(spm_text.exit_code, 0);
  const std::vector<std::string> want_text = SplitLines(spm_text.output);
  auto back = RunCommand(cmd + " --decode < '" + TempFile("spm_ids.txt", ids_in) + "'");
  ASSERT_EQ(back.exit_code, 0);
  const std::vector<std::string> decoded = SplitLines(back.output);
  ASSERT_EQ(decoded.size(), want_text.size());
  for (size_t i = 0; i < decoded.size(); ++i) {
    EXPECT_EQ(nlohmann::json::parse(decoded[i]).get<std::string>(), want_text[i]);
  }
}

TEST(TokenizeCliTest, BadInputIsAnErrorNamingTheLine) {
  auto no_model = RunCommand(RlhfBin() + " tokenize < /dev/null 2>&1");
  EXPECT_EQ(no_model.exit_code, 1);
  EXPECT_THAT(no_model.output, HasSubstr("--model"));

  auto missing = RunCommand(RlhfBin() + " tokenize --model=/nonexistent < /dev/null 2>&1");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.output, HasSubstr("/nonexistent"));

  const std::string cmd = RlhfBin() + " tokenize --model='" + testing_tok::ModelFilesDir("gpt2") + "'";
  auto bad = RunCommand(cmd + " --decode < '" + TempFile("bad.txt", "[1,2]\nnot json\n") + "' 2>&1");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.output, HasSubstr("line 2"));
  auto range = RunCommand(cmd + " --decode < '" + TempFile("range.txt", "[99999999]\n") + "' 2>&1");
  EXPECT_EQ(range.exit_code, 1);
  EXPECT_THAT(range.output, HasSubstr("outside the vocabulary"));
  auto field = RunCommand(cmd + " < '" + TempFile("field.txt", "{\"prompt\": \"x\"}\n") + "' 2>&1");
  EXPECT_EQ(field.exit_code, 1);
  EXPECT_THAT(field.output, HasSubstr("\"text\""));
}

}  // namespace
}  // namespace rlhf
