// Tokenizer loading, hand-computed BPE merges, errors and specs. SentencePiece models
// are tested in sentencepiece_test.cc.
#include "core/tokenizer/tokenizer.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/tokenizer/model_dir.h"

#include "tests/testing/temp_dir.h"

namespace rlhf {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

std::string NewDir(const std::string& name) {
  return rlhf::testing::MakeTempDir("tok_" + name + "_");
}

using rlhf::testing::WriteFile;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

// Byte-level BPE with hand-picked merges. Ids: a=0 b=1 c=2 Ġ=3 ab=4 abc=5 Ġa=6, <|eot|>=7.
json TinyByteLevel() {
  return json{
      {"model",
       {{"type", "BPE"},
        {"vocab", {{"a", 0}, {"b", 1}, {"c", 2}, {"Ġ", 3}, {"ab", 4}, {"abc", 5}, {"Ġa", 6}}},
        {"merges", {"a b", "ab c", "Ġ a"}}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"added_tokens", {{{"id", 7}, {"content", "<|eot|>"}, {"special", true}}}}};
}

TEST(BpeTokenizerTest, MergesByRankLeftmostFirst) {
  std::string dir = NewDir("tiny_bl");
  WriteFile(dir + "/tokenizer.json", TinyByteLevel().dump());
  WriteFile(dir + "/tokenizer_config.json", R"({"eos_token": "<|eot|>", "bos_token": null})");
  auto tok = LoadTokenizerFromModelDir(dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  // "abcab" -> a b c a b -> (a,b)@0 -> (a,b)@3 [rank 0 before rank 1] -> (ab,c) => abc ab.
  // " abc" -> Ġ a b c -> (a,b) rank 0 beats (Ġ,a) rank 2 -> (ab,c) => Ġ abc.
  EXPECT_EQ((*tok)->Encode("abcab abc"), (std::vector<int32_t>{5, 4, 3, 5}));
  EXPECT_EQ((*tok)->Encode("ab<|eot|> a"), (std::vector<int32_t>{4, 7, 6}));
  EXPECT_EQ((*tok)->Decode({5, 4, 3, 5, 7}), "abcab abc");
  EXPECT_EQ((*tok)->DecodeWithSpecial({4, 7, 6}), "ab<|eot|> a");
  EXPECT_EQ((*tok)->eos_id(), 7);
  EXPECT_EQ((*tok)->pad_id(), 7);  // no pad token: pad with EOS
  EXPECT_EQ((*tok)->bos_id(), -1);
  EXPECT_EQ((*tok)->vocab_size(), 8);
  EXPECT_EQ((*tok)->name(), "hf");
  // The spec rebuilds an equivalent tokenizer.
  auto again = MakeTokenizer((*tok)->Spec());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->Encode("abcab abc"), (std::vector<int32_t>{5, 4, 3, 5}));
}

// Llama-2 style: `▁` normalizer, byte fallback, Strip decoder.
json TinySentencePieceStyle() {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  char buf[8];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
    vocab[buf] = 3 + b;
  }
  vocab["▁"] = 259;
  vocab["h"] = 260;
  vocab["i"] = 261;
  vocab["▁h"] = 262;
  vocab["▁hi"] = 263;
  return json{
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", "▁"}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}}}}},
      {"pre_tokenizer", nullptr},
      {"model",
       {{"type", "BPE"}, {"byte_fallback", true}, {"unk_token", "<unk>"}, {"fuse_unk", true},
        {"vocab", vocab}, {"merges", {"▁ h", "▁h i"}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}},
          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"added_tokens",
       {{{"id", 0}, {"content", "<unk>"}, {"special", true}},
        {{"id", 1}, {"content", "<s>"}, {"special", true}},
        {{"id", 2}, {"content", "</s>"}, {"special", true}}}}};
}

TEST(BpeTokenizerTest, SentencePieceStyleWithByteFallback) {
  std::string dir = NewDir("tiny_sp");
  WriteFile(dir + "/tokenizer.json", TinySentencePieceStyle().dump());
  auto tok = LoadTokenizerFromModelDir(dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  // "hi é" -> "▁hi▁é": ▁hi, ▁, then é (not in the vocabulary) as bytes C3 A9 -> 3 + byte.
  EXPECT_EQ((*tok)->Encode("hi é"), (std::vector<int32_t>{263, 259, 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ((*tok)->Decode({263, 259, 3 + 0xC3, 3 + 0xA9}), "hi é");
  // Added tokens are matched before normalization; each section gets its own "▁".
  EXPECT_EQ((*tok)->Encode("hi<s>hi"), (std::vector<int32_t>{263, 1, 263}));
  // No config files: the usual names.
  EXPECT_EQ((*tok)->bos_id(), 1);
  EXPECT_EQ((*tok)->eos_id(), 2);
  EXPECT_TRUE((*tok)->IsSpecial(1));
  EXPECT_FALSE((*tok)->IsSpecial(263));
}

TEST(BpeTokenizerTest, ByteLevelRoundTripsInvalidUtf8AndSplitCharacters) {
  std::string dir = NewDir("tiny_bytes");
  json j = TinyByteLevel();
  // Every byte as its own token (ids 100 + byte) so any input is encodable.
  std::array<int, 256> alphabet{};
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    alphabet[b] = printable ? b : 256 + n++;
  }
  for (int b = 0; b < 256; ++b) {
    std::string s;
    int cp = alphabet[b];
    if (cp < 0x80) s.push_back(static_cast<char>(cp));
    else {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    if (!j["model"]["vocab"].contains(s)) j["model"]["vocab"][s] = 100 + b;
  }
  WriteFile(dir + "/tokenizer.json", j.dump());
  auto tok = LoadTokenizerFromModelDir(dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::string bad = std::string("ok \xff\xfe mid \xe2\x82 end \xc3\xa9", 20);
  std::vector<int32_t> ids = (*tok)->Encode(bad);
  EXPECT_EQ((*tok)->Decode(ids), bad);
  // "é" is two byte tokens; decoding them together gives the character back.
  std::vector<int32_t> e = (*tok)->Encode("\xc3\xa9");
  ASSERT_EQ(e.size(), 2u);
  EXPECT_EQ((*tok)->Decode(e), "\xc3\xa9");
}

TEST(LoadTokenizerTest, ErrorsNameTheFileAndField) {
  auto missing = LoadTokenizerFromModelDir("/nonexistent/model");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(missing.status()), HasSubstr("/nonexistent/model"));

  std::string empty = NewDir("empty");
  auto none = LoadTokenizerFromModelDir(empty);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(none.status()), HasSubstr("tokenizer.json"));

  std::string bad_json = NewDir("bad_json");
  WriteFile(bad_json + "/tokenizer.json", "{\"model\": {\"type\": ");
  auto parse = LoadTokenizerFromModelDir(bad_json);
  EXPECT_EQ(parse.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(parse.status()), HasSubstr(bad_json + "/tokenizer.json"));
  EXPECT_THAT(Msg(parse.status()), HasSubstr("malformed JSON"));

  std::string unigram = NewDir("unigram");
  WriteFile(unigram + "/tokenizer.json", R"({"model": {"type": "Unigram", "vocab": []}})");
  auto uni = LoadTokenizerFromModelDir(unigram);
  EXPECT_EQ(uni.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(Msg(uni.status()), HasSubstr("model.type"));

  std::string no_vocab = NewDir("no_vocab");
  WriteFile(no_vocab + "/tokenizer.json", R"({"model": {"type": "BPE", "merges": []}})");
  EXPECT_THAT(Msg(LoadTokenizerFromModelDir(no_vocab).status()), HasSubstr("\"model.vocab\""));

  std::string bad_norm = NewDir("bad_norm");
  json j = TinyByteLevel();
  j["normalizer"] = {{"type", "Precompiled"}};
  WriteFile(bad_norm + "/tokenizer.json", j.dump());
  EXPECT_THAT(Msg(LoadTokenizerFromModelDir(bad_norm).status()),
              HasSubstr("\"normalizer.type\""));

  std::string bad_regex = NewDir("bad_regex");
  j = TinyByteLevel();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}},
                        {"behavior", "Isolated"}};
  WriteFile(bad_regex + "/tokenizer.json", j.dump());
  EXPECT_THAT(Msg(LoadTokenizerFromModelDir(bad_regex).status()),
              HasSubstr("pre_tokenizer.pattern"));

  std::string bad_eos = NewDir("bad_eos");
  WriteFile(bad_eos + "/tokenizer.json", TinyByteLevel().dump());
  WriteFile(bad_eos + "/tokenizer_config.json", R"({"eos_token": "<nope>"})");
  auto eos = LoadTokenizerFromModelDir(bad_eos);
  EXPECT_EQ(eos.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(eos.status()), HasSubstr("<nope>"));

  std::string eos_type = NewDir("eos_type");
  WriteFile(eos_type + "/tokenizer.json", TinyByteLevel().dump());
  WriteFile(eos_type + "/special_tokens_map.json", R"({"eos_token": 5})");
  auto eos2 = LoadTokenizerFromModelDir(eos_type);
  EXPECT_THAT(Msg(eos2.status()), HasSubstr("special_tokens_map.json"));
  EXPECT_THAT(Msg(eos2.status()), HasSubstr("\"eos_token\""));

  std::string half_gpt2 = NewDir("half_gpt2");
  WriteFile(half_gpt2 + "/vocab.json", R"({"a": 0})");
  auto half = LoadTokenizerFromModelDir(half_gpt2);
  EXPECT_EQ(half.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(half.status()), HasSubstr("merges.txt"));

  std::string bad_merges = NewDir("bad_merges");
  WriteFile(bad_merges + "/vocab.json", R"({"a": 0, "b": 1, "ab": 2})");
  WriteFile(bad_merges + "/merges.txt", "#version: 0.2\na b\nnospace\n");
  auto merges = LoadTokenizerFromModelDir(bad_merges);
  EXPECT_THAT(Msg(merges.status()), HasSubstr("merges.txt: line 3"));
}

TEST(MakeTokenizerTest, SpecsAndErrors) {
  auto byte = MakeTokenizer(json{{"type", "byte"}});
  ASSERT_TRUE(byte.ok());
  EXPECT_EQ((*byte)->vocab_size(), 259);
  EXPECT_THAT(Msg(MakeTokenizer(json{{"type", "hf"}}).status()), HasSubstr("\"dir\""));
  EXPECT_THAT(Msg(MakeTokenizer(json{{"type", "hf"}, {"dir", "x"}, {"path", "y"}}).status()),
              HasSubstr("\"path\""));
  EXPECT_THAT(Msg(MakeTokenizer(json{{"type", "wordpiece"}}).status()), HasSubstr("wordpiece"));
  EXPECT_EQ(MakeTokenizerByName("hf").status().code(), absl::StatusCode::kInvalidArgument);

  // A relative dir resolves against base_dir; a type that disagrees with the files fails.
  std::string dir = NewDir("spec");
  WriteFile(dir + "/tokenizer.json", TinyByteLevel().dump());
  const std::string base = dir.substr(0, dir.rfind('/'));
  const std::string rel = dir.substr(dir.rfind('/') + 1);
  auto rel_tok = MakeTokenizer(json{{"type", "model_dir"}, {"dir", rel}}, base);
  ASSERT_TRUE(rel_tok.ok()) << rel_tok.status();
  EXPECT_EQ((*rel_tok)->Encode("abc"), std::vector<int32_t>{5});
  // Flags such as the servers' --tokenizer take a directory as well as "byte".
  auto by_path = MakeTokenizerByName(dir);
  ASSERT_TRUE(by_path.ok()) << by_path.status();
  EXPECT_EQ((*by_path)->Encode("abc"), std::vector<int32_t>{5});
  EXPECT_THAT(Msg(MakeTokenizer(json{{"type", "sentencepiece"}, {"dir", dir}}).status()),
              HasSubstr("\"hf\""));
}

// A checkpoint carries its tokenizer: the files are copied next to the weights and the
// recorded spec points at them.
TEST(ModelTokenizerTest, CheckpointsCarryTheirTokenizer) {
  std::string src = NewDir("hf_src");
  WriteFile(src + "/tokenizer.json", TinyByteLevel().dump());
  WriteFile(src + "/tokenizer_config.json", R"({"eos_token": "<|eot|>"})");
  auto tok = LoadTokenizerFromModelDir(src);
  ASSERT_TRUE(tok.ok()) << tok.status();

  std::string ckpt = NewDir("ckpt");
  auto spec = SaveTokenizerFiles(**tok, ckpt);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(*spec, (json{{"type", "hf"}, {"dir", "."}}));
  EXPECT_EQ(TokenizerFilesInDir(ckpt),
            (std::vector<std::string>{"tokenizer.json", "tokenizer_config.json"}));
  WriteFile(ckpt + "/config.json", json{{"format", "rlhf-checkpoint-v1"},
                                    {"metadata", {{"tokenizer", *spec}}}}.dump());
  // Remove the source: the checkpoint must not depend on it.
  std::remove((src + "/tokenizer.json").c_str());
  auto carried = LoadTokenizerForModel(ckpt);
  ASSERT_TRUE(carried.ok()) << carried.status();
  EXPECT_EQ((*carried)->Encode("abcab abc<|eot|>"), (std::vector<int32_t>{5, 4, 3, 5, 7}));
  EXPECT_EQ((*carried)->eos_id(), 7);

  // Old checkpoints without a recorded tokenizer and without files: the byte tokenizer.
  std::string old = NewDir("old_ckpt");
  WriteFile(old + "/config.json", R"({"format": "rlhf-checkpoint-v1", "metadata": {}})");
  auto byte = LoadTokenizerForModel(old);
  ASSERT_TRUE(byte.ok());
  EXPECT_EQ((*byte)->name(), "byte");
  auto byte_spec = SaveTokenizerFiles(**byte, NewDir("byte_ckpt"));
  ASSERT_TRUE(byte_spec.ok());
  EXPECT_EQ(*byte_spec, (json{{"type", "byte"}}));

  std::string bad = NewDir("bad_ckpt");
  WriteFile(bad + "/config.json", R"({"metadata": {"tokenizer": {"type": "hf", "dir": "."}}})");
  auto missing = LoadTokenizerForModel(bad);
  EXPECT_FALSE(missing.ok());
  EXPECT_THAT(Msg(missing.status()), HasSubstr("metadata.tokenizer"));
  EXPECT_THAT(Msg(missing.status()), HasSubstr("config.json"));
}

}  // namespace
}  // namespace rlhf
