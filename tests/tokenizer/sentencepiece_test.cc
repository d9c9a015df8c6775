// SentencePiece `.model` files through our own reader and encoder
// (core/tokenizer/sentencepiece_model.h), against Debian's SentencePiece tools: models
// are trained here by `spm_train` (UNIGRAM, BPE, CHAR, WORD; nmt_nfkc, nfkc_cf and
// identity normalization; byte fallback; split digits; user-defined symbols; whitespace
// options) and every line of a 1,200-line corpus must give spm_encode's ids and
// spm_decode's text. Hand-built models check the merge order and Viterbi by hand, and
// malformed files must be errors naming the file and what is wrong.
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_split.h"
#include "core/tokenizer/model_dir.h"
#include "core/tokenizer/sentencepiece_model.h"
#include "core/tokenizer/tokenizer.h"
#include "tests/tokenizer/oracle_util.h"

#include "tests/testing/temp_dir.h"

namespace rlhf {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

std::string NewDir(const std::string& name) {
  return rlhf::testing::MakeTempDir("spm_" + name + "_");
}

using rlhf::testing::WriteFile;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Lines of a tool's output, empty ones kept (an input line that normalizes to nothing
// encodes to an empty line).
std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

std::string Join(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t k = 0; k < ids.size(); ++k) s += (k ? " " : "") + std::to_string(ids[k]);
  return s;
}

// Varied text: prose, digits, CJK, emoji (with ZWJ and skin tones), accents and
// characters NFKC changes (full-width, ligatures, circled digits, compatibility
// symbols, NBSP, ideographic space, combining marks), whitespace runs and tabs,
// special-looking strings, and (unless `seen_only`) characters no training line has.
std::vector<std::string> Corpus(int n, uint32_t seed, bool seen_only) {
  const std::vector<std::string> prose = {
      "the",       "model",     "learns", "from",   "human",        "feedback",
      "reward",    "policy",    "token",  "value",  "actor",        "learner",
      "batch",     "gradient",  "The",    "Model",  "don't",        "it's",
      "we'll",     "(x)",       "a+b=c",  "x_1",    "end.",         "why?",
      "über",      "naïve",     "café",   "résumé", "Ångström",     "piñata",
      "straße",    "coöperate", "hello",  "world",  "tokenization", "sentencepiece",
      "unigram",   "merges",    "READ",   "ME",     "e-mail",       "https://example.com/a?b=c",
      "foo.bar()", "#include",  "->"};
  const std::vector<std::string> digits = {"0",       "7",         "42",          "2026",
                                           "3.14159", "1,000,000", "2026-12-07",  "x2y3",
                                           "007",     "99.5%",     "+1-555-0100", "1e-9"};
  const std::vector<std::string> cjk = {"日本語", "テキスト", "数据集", "和模型", "한국어",
                                        "문장",   "東京",     "の",     "が",     "中文"};
  const std::vector<std::string> emoji = {"😀",  "👍🏽", "👨‍👩‍👧",
                                          "🇯🇵", "❤️",   "🎉"};
  const std::vector<std::string> nfkc = {
      "ｆｕｌｌ", "ﬁne", "ﬂow",     "①②③",      "™",          "ｶﾀｶﾅ",   "Å",      "x²", "…",
      "㎏",       "Ⅻ",   "e\u0301", "A\u00a0B", "左\u3000右", "ＡＢＣ", "１２３", "½"};
  const std::vector<std::string> specials = {"<s>",   "</s>",   "<sep>", "[MASK]",
                                             "<unk>", "<0x41>", "▁"};
  const std::vector<std::string> unseen = {"Ω≈ç",     "ʃʒ",    "ᚠᛇᚻ", "ꙮ",    "∮",
                                           "ქართული", "हिन्दी", "𝔘𝔫𝔦", "🦜", "Ꮳ"};
  const std::vector<std::string> seps = {" ", " ", " ", " ", "  ", "   ", "\t", "", " \t "};
  std::mt19937 rng(seed);
  auto pick = [&](const std::vector<std::string>& v) { return v[rng() % v.size()]; };
  std::vector<std::string> lines;
  for (int i = 0; i < n; ++i) {
    std::string line;
    if (i % 17 == 0) line += pick({" ", "   ", "\t"});  // leading whitespace
    const int words = 1 + static_cast<int>(rng() % 14);
    for (int w = 0; w < words; ++w) {
      if (w > 0) line += pick(seps);
      const uint32_t kind = rng() % 100;
      if (kind < 55) {
        line += pick(prose);
      } else if (kind < 67) {
        line += pick(digits);
      } else if (kind < 75) {
        line += pick(cjk);
      } else if (kind < 80) {
        line += pick(emoji);
      } else if (kind < 90) {
        line += pick(nfkc);
      } else if (kind < 95) {
        line += pick(specials);
      } else if (!seen_only) {
        line += pick(unseen);
      } else {
        line += pick(prose);
      }
    }
    if (i % 13 == 0) line += pick({" ", "   ", "\t"});  // trailing whitespace
    if (i % 101 == 0) line = pick({"   ", "\t", "①"});  // whitespace only / one char
    // Invalid UTF-8 (a stray byte, a cut character, a surrogate) reads as U+FFFD per byte.
    if (!seen_only && i % 97 == 5) line += pick({"\xff", " \xc3", "\xe2\x96", "\xed\xa0\x80z"});
    lines.push_back(line);
  }
  return lines;
}

std::string JoinLines(const std::vector<std::string>& lines) {
  std::string s;
  for (const std::string& l : lines) s += l + "\n";
  return s;
}

struct Trained {
  std::string dir;
  std::string error;
};

// Trains `<dir>/tokenizer.model` with spm_train and `flags` on a corpus without the
// unseen characters.
Trained Train(const std::string& name, const std::string& flags) {
  Trained t{NewDir(name), ""};
  WriteFile(t.dir + "/train.txt", JoinLines(Corpus(2500, 11, /*seen_only=*/true)));
  auto r = testing_tok::RunCommand(
      "spm_train --input=" + t.dir + "/train.txt --model_prefix=" + t.dir +
      "/tokenizer --num_threads=1 --minloglevel=2 " + "--hard_vocab_limit=false " + flags + " > " +
      t.dir + "/train.log 2>&1");
  if (r.exit_code != 0) {
    t.error = "spm_train " + flags + " failed (Debian package sentencepiece):\n" +
              ReadAll(t.dir + "/train.log");
  }
  return t;
}

// Encodes the test corpus with ours and with spm_encode, decodes spm's ids with ours
// and with spm_decode; every line must agree (the first 5 differences are logged).
void ExpectMatchesSpm(const std::string& name, const std::string& flags) {
  SCOPED_TRACE(name + ": " + flags);
  Trained t = Train(name, flags);
  ASSERT_TRUE(t.error.empty()) << t.error;
  const std::vector<std::string> lines = Corpus(1200, 29, /*seen_only=*/false);
  WriteFile(t.dir + "/input.txt", JoinLines(lines));
  const std::string model = t.dir + "/tokenizer.model";
  auto encoded = testing_tok::RunCommand("spm_encode --model=" + model + " --output_format=id < " +
                                         t.dir + "/input.txt");
  ASSERT_EQ(encoded.exit_code, 0);
  WriteFile(t.dir + "/ids.txt", encoded.output);
  auto decoded = testing_tok::RunCommand("spm_decode --model=" + model + " --input_format=id < " +
                                         t.dir + "/ids.txt");
  ASSERT_EQ(decoded.exit_code, 0);
  const std::vector<std::string> want_ids = Lines(encoded.output);
  const std::vector<std::string> want_text = Lines(decoded.output);
  ASSERT_EQ(want_ids.size(), lines.size());
  ASSERT_EQ(want_text.size(), lines.size());

  auto tok = LoadTokenizerFromModelDir(t.dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->name(), "sentencepiece");
  // spm_train writes one .vocab line per piece.
  EXPECT_EQ((*tok)->vocab_size(),
            static_cast<int64_t>(Lines(ReadAll(t.dir + "/tokenizer.vocab")).size()));
  int id_mismatches = 0, text_mismatches = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::vector<int32_t> ids = (*tok)->Encode(lines[i]);
    const std::string got = Join(ids);
    if (got != want_ids[i] && ++id_mismatches <= 5) {
      ADD_FAILURE() << "line " << i << " [" << lines[i] << "]\n  ours: " << got
                    << "\n  spm:  " << want_ids[i];
    }
    std::vector<int32_t> spm_ids;
    for (absl::string_view s : absl::StrSplit(want_ids[i], ' ', absl::SkipEmpty()))
      spm_ids.push_back(std::stoi(std::string(s)));
    const std::string text = (*tok)->Decode(spm_ids);
    if (text != want_text[i] && ++text_mismatches <= 5) {
      ADD_FAILURE() << "decode line " << i << " [" << want_ids[i] << "]\n  ours: [" << text
                    << "]\n  spm:  [" << want_text[i] << "]";
    }
  }
  EXPECT_EQ(id_mismatches, 0);
  EXPECT_EQ(text_mismatches, 0);

  // Arbitrary id sequences (half of them byte pieces' range: split and invalid UTF-8,
  // <unk>, control pieces) decode as spm_decode decodes them.
  // Not the byte pieces of '\n' and '\r', which would split spm_decode's output lines.
  auto spm_model = spm::Model::Load(model);
  ASSERT_TRUE(spm_model.ok()) << spm_model.status();
  auto line_break = [&](int32_t id) {
    return (*spm_model)->piece(id) == "<0x0A>" || (*spm_model)->piece(id) == "<0x0D>";
  };
  std::mt19937 rng(3);
  std::string random_ids;
  std::vector<std::vector<int32_t>> sequences;
  for (int i = 0; i < 300; ++i) {
    std::vector<int32_t> ids;
    for (int k = static_cast<int>(rng() % 12); k > 0; --k) {
      const int32_t id =
          rng() % 2 ? static_cast<int32_t>(rng() % (*tok)->vocab_size())
                    : static_cast<int32_t>(rng() % std::min<int64_t>(259, (*tok)->vocab_size()));
      if (!line_break(id)) ids.push_back(id);
    }
    random_ids += Join(ids) + "\n";
    sequences.push_back(ids);
  }
  WriteFile(t.dir + "/random_ids.txt", random_ids);
  auto random_text = testing_tok::RunCommand("spm_decode --model=" + model +
                                             " --input_format=id < " + t.dir + "/random_ids.txt");
  ASSERT_EQ(random_text.exit_code, 0);
  const std::vector<std::string> want_random = Lines(random_text.output);
  ASSERT_EQ(want_random.size(), sequences.size());
  int random_mismatches = 0;
  for (size_t i = 0; i < sequences.size(); ++i) {
    const std::string text = (*tok)->Decode(sequences[i]);
    if (text != want_random[i] && ++random_mismatches <= 5) {
      ADD_FAILURE() << "decode [" << Join(sequences[i]) << "]\n  ours: [" << text << "]\n  spm:  ["
                    << want_random[i] << "]";
    }
  }
  EXPECT_EQ(random_mismatches, 0);
}

TEST(SentencePieceSpmTest, UnigramNmtNfkc) {
  ExpectMatchesSpm("unigram", "--model_type=unigram --vocab_size=400");
}

TEST(SentencePieceSpmTest, BpeNmtNfkc) {
  ExpectMatchesSpm("bpe", "--model_type=bpe --vocab_size=400");
}

TEST(SentencePieceSpmTest, UnigramByteFallback) {
  ExpectMatchesSpm("unigram_bytes",
                   "--model_type=unigram --vocab_size=500 --byte_fallback=true "
                   "--character_coverage=0.995");
}

TEST(SentencePieceSpmTest, BpeByteFallbackSplitDigitsUserSymbols) {
  // "ﬁ" as a user-defined symbol is matched before NFKC would turn it into "fi".
  ExpectMatchesSpm("bpe_bytes_user",
                   "--model_type=bpe --vocab_size=500 --byte_fallback=true --split_digits=true "
                   "'--user_defined_symbols=<sep>,[MASK],ﬁ' --character_coverage=0.995");
}

// Llama-2's trainer flags: BPE, identity normalization, whitespace kept (runs of "▁"
// become whitespace-only pieces), byte fallback, digits split.
TEST(SentencePieceSpmTest, BpeLlama2Flags) {
  ExpectMatchesSpm("bpe_llama2",
                   "--model_type=bpe --vocab_size=500 --normalization_rule_name=identity "
                   "--remove_extra_whitespaces=false --byte_fallback=true --split_digits=true "
                   "--allow_whitespace_only_pieces=true --character_coverage=0.99995");
}

TEST(SentencePieceSpmTest, UnigramIdentityKeepWhitespaceUserSymbols) {
  ExpectMatchesSpm("unigram_identity",
                   "--model_type=unigram --vocab_size=400 --normalization_rule_name=identity "
                   "--remove_extra_whitespaces=false --add_dummy_prefix=false "
                   "'--user_defined_symbols=<sep>,[MASK]' --split_digits=true");
}

TEST(SentencePieceSpmTest, BpeNfkcCaseFoldWhitespaceSuffix) {
  ExpectMatchesSpm("bpe_cf_suffix",
                   "--model_type=bpe --vocab_size=300 --normalization_rule_name=nfkc_cf "
                   "--treat_whitespace_as_suffix=true");
}

// A denormalization rule set (applied to decoded text): "a" -> "A", "th" -> "TH".
TEST(SentencePieceSpmTest, UnigramDenormalizationRules) {
  const std::string rules = NewDir("denorm_rules") + "/rules.tsv";
  WriteFile(rules, "61\t41\n74 68\t54 48\n");
  ExpectMatchesSpm("denorm",
                   "--model_type=unigram --vocab_size=400 --denormalization_rule_tsv=" + rules);
}

TEST(SentencePieceSpmTest, CharAndWordModels) {
  ExpectMatchesSpm("char", "--model_type=char --vocab_size=150");
  ExpectMatchesSpm("word", "--model_type=word --vocab_size=150");
}

TEST(SentencePieceSpmTest, SpecialIdsAndSpec) {
  Trained t = Train("ids", "--model_type=unigram --vocab_size=300 --pad_id=3");
  ASSERT_TRUE(t.error.empty()) << t.error;
  auto tok = LoadTokenizerFromModelDir(t.dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  // spm_train's defaults are unk 0, bos 1, eos 2; --pad_id=3 adds <pad>.
  EXPECT_EQ((*tok)->bos_id(), 1);
  EXPECT_EQ((*tok)->eos_id(), 2);
  EXPECT_EQ((*tok)->pad_id(), 3);
  EXPECT_TRUE((*tok)->IsSpecial(1));
  EXPECT_TRUE((*tok)->IsSpecial(3));
  EXPECT_FALSE((*tok)->IsSpecial(0));  // <unk> is not a control piece
  const std::vector<int32_t> ids = (*tok)->Encode("the model");
  std::vector<int32_t> framed = {1};
  framed.insert(framed.end(), ids.begin(), ids.end());
  framed.push_back(2);
  framed.push_back(3);
  EXPECT_EQ((*tok)->Decode(framed), "the model");
  EXPECT_EQ((*tok)->DecodeWithSpecial(framed), "<s> the model</s><pad>");

  auto again = MakeTokenizer((*tok)->Spec());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->Encode("the model"), ids);
  // A checkpoint carries the .model file and rebuilds the tokenizer from it.
  const std::string ckpt = NewDir("ckpt");
  auto saved = SaveTokenizerFiles(**tok, ckpt);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(*saved, (json{{"type", "sentencepiece"}, {"dir", "."}}));
  auto carried = MakeTokenizer(*saved, ckpt);
  ASSERT_TRUE(carried.ok()) << carried.status();
  EXPECT_EQ((*carried)->Encode("the model"), ids);

  // Without --pad_id there is no pad: pad with EOS.
  Trained d = Train("ids_default", "--model_type=bpe --vocab_size=300");
  ASSERT_TRUE(d.error.empty()) << d.error;
  auto def = LoadTokenizerFromModelDir(d.dir);
  ASSERT_TRUE(def.ok()) << def.status();
  EXPECT_EQ((*def)->pad_id(), 2);
}

// ---------------------------------------------------------------------------------------
// Hand-built models (protobuf wire format written here) with hand-computed results.

std::string Varint(uint64_t v) {
  std::string s;
  do {
    uint8_t b = v & 0x7f;
    v >>= 7;
    if (v != 0) b |= 0x80;
    s += static_cast<char>(b);
  } while (v != 0);
  return s;
}
std::string Tag(int field, int wire_type) { return Varint((field << 3) | wire_type); }
std::string Bytes(int field, const std::string& s) { return Tag(field, 2) + Varint(s.size()) + s; }
std::string Int(int field, int64_t v) { return Tag(field, 0) + Varint(static_cast<uint64_t>(v)); }
std::string Float(int field, float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  std::string s = Tag(field, 5);
  for (int i = 0; i < 4; ++i) s += static_cast<char>((bits >> (8 * i)) & 0xff);
  return s;
}
std::string PieceMsg(const std::string& piece, float score, int type = 1) {
  return Bytes(1, Bytes(1, piece) + Float(2, score) + Int(3, type));
}

// <unk> <s> </s> ▁ a b ab ▁ab ba; identity normalization, dummy prefix.
std::string TinyBpeModel() {
  std::string m = PieceMsg("<unk>", 0, 2) + PieceMsg("<s>", 0, 3) + PieceMsg("</s>", 0, 3) +
                  PieceMsg("▁", -1) + PieceMsg("a", -2) + PieceMsg("b", -3) +
                  PieceMsg("ab", -0.5f) + PieceMsg("▁ab", -0.1f) + PieceMsg("ba", -0.2f);
  m += Bytes(2, Int(3, 2) + Int(4, 9));  // trainer_spec: BPE, vocab 9
  m += Bytes(3, Bytes(1, "identity"));   // normalizer_spec
  return m;
}

TEST(SentencePieceModelTest, BpeMergesByScoreNotPosition) {
  auto proto = spm::ParseModelProto(TinyBpeModel(), "tiny.model");
  ASSERT_TRUE(proto.ok()) << proto.status();
  auto model = spm::Model::Create(*std::move(proto), "tiny.model");
  ASSERT_TRUE(model.ok()) << model.status();
  // "▁abab": pairs ▁a (none), ab -0.5 @1, ba -0.2 @2, ab -0.5 @3. "ba" scores highest:
  // ▁ a ba b; then a+ba, ba+b are no pieces, and both "ab" pairs are stale.
  EXPECT_EQ((*model)->Normalize("abab"), "▁abab");
  EXPECT_EQ((*model)->Encode("abab"), (std::vector<int32_t>{3, 4, 8, 5}));
  // "▁abcc": ab, then ▁ab; the two unknown c's are one <unk>.
  EXPECT_EQ((*model)->Encode("abcc"), (std::vector<int32_t>{7, 0}));
  EXPECT_EQ((*model)->Decode({7, 0}), "ab ⁇ ");
  // Equal scores: leftmost first. "▁ab ab" -> ▁ab ▁ab.
  EXPECT_EQ((*model)->Encode("  ab   ab "), (std::vector<int32_t>{7, 7}));
  EXPECT_EQ((*model)->Decode({7, 7}), "ab ab");
  EXPECT_EQ((*model)->bos_id(), 1);
  EXPECT_EQ((*model)->eos_id(), 2);
  EXPECT_EQ((*model)->pad_id(), -1);
  EXPECT_EQ((*model)->unk_id(), 0);
}

TEST(SentencePieceModelTest, UnigramViterbiByHand) {
  std::string m = PieceMsg("<unk>", 0, 2) + PieceMsg("▁", -1) + PieceMsg("a", -2) +
                  PieceMsg("b", -2) + PieceMsg("ab", -3) + PieceMsg("▁a", -2.5f);
  m += Bytes(2, Int(3, 1));  // UNIGRAM
  auto proto = spm::ParseModelProto(m, "uni.model");
  ASSERT_TRUE(proto.ok()) << proto.status();
  auto model = spm::Model::Create(*std::move(proto), "uni.model");
  ASSERT_TRUE(model.ok()) << model.status();
  // "▁ab": ▁ a b = -5, ▁ ab = -4, ▁a b = -4.5 -> ▁ ab.
  EXPECT_EQ((*model)->Encode("ab"), (std::vector<int32_t>{1, 4}));
  // "▁a": ▁ a = -3, ▁a = -2.5 -> ▁a.
  EXPECT_EQ((*model)->Encode("a"), (std::vector<int32_t>{5}));
  // z is unknown (score min -3 - 10); "zz" is one <unk>.
  EXPECT_EQ((*model)->Encode("zz b"), (std::vector<int32_t>{1, 0, 1, 3}));
}

TEST(SentencePieceModelTest, MalformedFilesAreClearErrors) {
  const std::string dir = NewDir("bad");
  // Text: 'n' (0x6e) is field 13 with wire type 6, which does not exist.
  WriteFile(dir + "/tokenizer.model", "not a model\n");
  auto text = LoadTokenizerFromModelDir(dir);
  ASSERT_FALSE(text.ok());
  EXPECT_THAT(std::string(text.status().message()), HasSubstr(dir + "/tokenizer.model"));
  EXPECT_THAT(std::string(text.status().message()), HasSubstr("wire type 6"));
  EXPECT_THAT(std::string(text.status().message()), HasSubstr("at byte 0"));

  // Truncated inside the third piece's string: its length runs past the end.
  const std::string full = TinyBpeModel();
  const size_t cut = PieceMsg("<unk>", 0, 2).size() + PieceMsg("<s>", 0, 3).size() + 5;
  WriteFile(dir + "/tokenizer.model", full.substr(0, cut));
  auto truncated = LoadTokenizerFromModelDir(dir);
  ASSERT_FALSE(truncated.ok());
  EXPECT_THAT(std::string(truncated.status().message()), HasSubstr("tokenizer.model"));
  EXPECT_THAT(std::string(truncated.status().message()), HasSubstr("truncated"));

  // A real model cut in half.
  Trained t = Train("cut", "--model_type=bpe --vocab_size=300");
  ASSERT_TRUE(t.error.empty()) << t.error;
  const std::string real = ReadAll(t.dir + "/tokenizer.model");
  WriteFile(dir + "/tokenizer.model", real.substr(0, real.size() / 2));
  auto half = LoadTokenizerFromModelDir(dir);
  ASSERT_FALSE(half.ok());
  EXPECT_THAT(std::string(half.status().message()), HasSubstr("tokenizer.model"));
  EXPECT_THAT(std::string(half.status().message()), HasSubstr("truncated"));

  WriteFile(dir + "/tokenizer.model", "");
  auto empty = LoadTokenizerFromModelDir(dir);
  ASSERT_FALSE(empty.ok());
  EXPECT_THAT(std::string(empty.status().message()), HasSubstr("no pieces"));

  // Wire-valid but not a usable model: no <unk>; a byte piece without byte_fallback;
  // a score with the wrong wire type.
  auto no_unk = spm::ParseModelProto(PieceMsg("a", -1), "x.model");
  ASSERT_TRUE(no_unk.ok());
  EXPECT_THAT(std::string(spm::Model::Create(*no_unk, "x.model").status().message()),
              HasSubstr("no UNKNOWN piece"));
  auto bytes = spm::ParseModelProto(PieceMsg("<unk>", 0, 2) + PieceMsg("<0x41>", 0, 6), "y.model");
  ASSERT_TRUE(bytes.ok());
  EXPECT_THAT(std::string(spm::Model::Create(*bytes, "y.model").status().message()),
              HasSubstr("pieces[1]"));
  auto wrong = spm::ParseModelProto(Bytes(1, Bytes(1, "a") + Int(2, 5)), "z.model");
  ASSERT_FALSE(wrong.ok());
  EXPECT_THAT(std::string(wrong.status().message()), HasSubstr("ModelProto.pieces[0]"));
  EXPECT_THAT(std::string(wrong.status().message()), HasSubstr("score"));

  std::remove((dir + "/tokenizer.model").c_str());
  auto missing = LoadTokenizerFromModelDir(dir);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace rlhf
