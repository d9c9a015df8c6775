// HuggingFace directories in and out, checked against an independent Python forward
// pass (tests/model/hf_reference.py, written from transformers' modeling code):
//  - parity: for GPT-2 (prefixed and bare keys, F16, tied), LLaMA (GQA, untied,
//    rope_theta 5e5; biases + explicit head_dim + sharded), Qwen2 (q/k/v biases, tied,
//    BF16), Mistral (GQA, rope_parameters, F16, sharded) and two *ForSequenceClassification
//    reward models, our logits/scores equal the reference's to <= 1e-4 on a left-padded
//    batch of different lengths, with and without the KV cache;
//  - round trip: import -> export -> import is bitwise; the Python reference reading our
//    export (sharded, F32/F16) reproduces our logits/scores;
//  - bad files and configs: each a clear error naming the file/tensor/field.
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/model/checkpoint.h"
#include "core/model/hf.h"
#include "core/model/model.h"

namespace rlhf {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;

std::string Message(const absl::Status& s) { return std::string(s.message()); }

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
void WriteText(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

std::string Python() { return "/usr/bin/python3"; }
std::string ReferenceScript() {
  const char* src = std::getenv("RLHF_SOURCE_DIR");
  return std::string(src != nullptr ? src : ".") + "/tests/model/hf_reference.py";
}

int RunCommand(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

class HfTest : public ::testing::Test {
 protected:
  // The reference cases are generated once per process (every suite shares them) and
  // removed at exit.
  static void SetUpTestSuite() {
    if (!root_.empty()) return;
    root_ = (fs::temp_directory_path() / ("rlhf_hf_test_" + std::to_string(::getpid()))).string();
    fs::remove_all(root_);
    fs::create_directories(root_);
    gen_rc_ = RunCommand(Python() + " " + ReferenceScript() + " gen " + root_ + "/ref > " + root_ +
                         "/gen.log 2>&1");
    std::atexit([] { fs::remove_all(root_); });
  }
  void SetUp() override { ASSERT_EQ(gen_rc_, 0) << ReadText(root_ + "/gen.log"); }

  static std::string Case(const std::string& name) { return root_ + "/ref/" + name; }
  static std::string Dir(const std::string& name) {
    const std::string d = root_ + "/" + name;
    fs::remove_all(d);
    return d;
  }

  static std::string root_;
  static int gen_rc_;
};
std::string HfTest::root_;
int HfTest::gen_rc_ = -1;

struct Expected {
  torch::Tensor ids, mask, logits, scores;
};
Expected ReadExpected(const std::string& path) {
  auto c = ReadSafetensors(path);
  EXPECT_TRUE(c.ok()) << c.status();
  Expected e;
  for (auto& [name, t] : c->tensors) {
    if (name == "ids") e.ids = t;
    if (name == "mask") e.mask = t;
    if (name == "logits") e.logits = t;
    if (name == "scores") e.scores = t;
  }
  return e;
}

// Scores at each row's last real token (rows are left padded: the last column).
torch::Tensor LastScores(const ForwardOutput& out) { return out.scalar.select(1, -1); }

double MaxDiffAtReal(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& mask) {
  const auto real = mask.to(torch::kBool);
  return (a.index({real}) - b.index({real})).abs().max().item<double>();
}

class HfParityTest : public HfTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(HfParityTest, LogitsMatchReferenceWithAndWithoutCache) {
  auto loaded = LoadCheckpoint(Case(GetParam()));  // the common entry point
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const Expected e = ReadExpected(Case(GetParam()) + "/expected.safetensors");
  torch::NoGradGuard no_grad;
  TransformerLM& m = loaded->model;
  m->eval();
  const auto full = m->forward(e.ids, e.mask);
  const int64_t T = e.ids.size(1), split = 6;
  KVCache cache;
  const auto first = m->forward(e.ids.narrow(1, 0, split), e.mask.narrow(1, 0, split), {}, &cache);
  const auto rest = m->forward(e.ids.narrow(1, split, T - split), e.mask, {}, &cache);
  if (e.logits.defined()) {
    ASSERT_TRUE(full.logits.defined());
    EXPECT_LE(MaxDiffAtReal(full.logits, e.logits, e.mask), 1e-4);
    const auto cached = torch::cat({first.logits, rest.logits}, 1);
    EXPECT_LE(MaxDiffAtReal(cached, e.logits, e.mask), 1e-4);
    // Not vacuous: the logits vary across the vocabulary.
    EXPECT_GT(e.logits.std().item<double>(), 0.1);
  } else {
    ASSERT_TRUE(full.scalar.defined());
    EXPECT_LE((LastScores(full) - e.scores).abs().max().item<double>(), 1e-4);
    EXPECT_LE((LastScores(rest) - e.scores).abs().max().item<double>(), 1e-4);
  }
}

TEST_P(HfParityTest, ExportImportIsBitwiseAndReferenceReadsOurExport) {
  auto a = LoadCheckpoint(Case(GetParam()));
  ASSERT_TRUE(a.ok()) << a.status();
  const std::string out = Dir("export_" + GetParam());
  HfExportOptions opts;
  opts.max_shard_bytes = 20000;  // several shards + index for every case
  ASSERT_TRUE(ExportHfDirectory(a->model, a->metadata, out, opts).ok());
  EXPECT_TRUE(fs::exists(out + "/model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(out + "/generation_config.json"));
  // Tokenizer files copied unchanged from the source directory.
  EXPECT_EQ(ReadText(out + "/tokenizer_config.json"), ReadText(Case(GetParam()) + "/tokenizer_config.json"));
  EXPECT_EQ(ReadText(out + "/generation_config.json"), ReadText(Case(GetParam()) + "/generation_config.json"));
  const auto cfg = nlohmann::json::parse(ReadText(out + "/config.json"));
  EXPECT_EQ(cfg["torch_dtype"], "float32");
  EXPECT_TRUE(cfg["architectures"].is_array());
  auto src = nlohmann::json::parse(ReadText(Case(GetParam()) + "/config.json"));
  EXPECT_EQ(cfg["architectures"], src["architectures"]);
  if (src.contains("some_unrelated_field")) {
    EXPECT_EQ(cfg["some_unrelated_field"], src["some_unrelated_field"]);  // original fields kept
  }

  auto b = LoadCheckpoint(out);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(ModelConfigToJson(b->config), ModelConfigToJson(a->config));
  const auto ta = ModelTensors(a->model), tb = ModelTensors(b->model);
  ASSERT_EQ(ta.size(), tb.size());
  for (size_t i = 0; i < ta.size(); ++i) {
    EXPECT_EQ(ta[i].first, tb[i].first);
    EXPECT_TRUE(torch::equal(ta[i].second, tb[i].second)) << ta[i].first;
  }

  // Our logits on the export, recomputed by the Python reference from the exported files.
  const Expected e = ReadExpected(Case(GetParam()) + "/expected.safetensors");
  torch::NoGradGuard no_grad;
  const auto y = b->model->forward(e.ids, e.mask);
  NamedTensors ours = {{"ids", e.ids}, {"mask", e.mask}};
  if (y.logits.defined()) {
    ours.emplace_back("logits", y.logits.contiguous());
  } else {
    ours.emplace_back("scores", LastScores(y).contiguous());
  }
  ASSERT_TRUE(WriteSafetensors(out + ".ours.safetensors", ours).ok());
  EXPECT_EQ(RunCommand(Python() + " " + ReferenceScript() + " check " + out + " " + out +
                       ".ours.safetensors"),
            0);
}

INSTANTIATE_TEST_SUITE_P(Cases, HfParityTest,
                         ::testing::Values("gpt2_prefix", "gpt2_noprefix_f16", "gpt2_rm",
                                           "llama_gqa_untied", "llama_bias_headdim_sharded",
                                           "qwen2_tied_bf16", "mistral_gqa_f16", "llama_rm"));

TEST_F(HfTest, ImportedConfigsHaveTheHfFeatures) {
  auto q = LoadCheckpoint(Case("qwen2_tied_bf16"));
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_TRUE(q->config.qkv_bias);
  EXPECT_FALSE(q->config.out_bias);
  EXPECT_TRUE(q->config.tie_embeddings);
  EXPECT_EQ(q->config.n_kv_heads, 1);
  EXPECT_EQ(q->config.rope_theta, 1e6);
  auto l = LoadCheckpoint(Case("llama_bias_headdim_sharded"));
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->config.head_dim(), 16);
  EXPECT_TRUE(l->config.mlp_bias && l->config.out_bias);
  auto m = LoadCheckpoint(Case("mistral_gqa_f16"));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->config.rope_theta, 20000.0);
  auto rm = LoadCheckpoint(Case("gpt2_rm"));
  ASSERT_TRUE(rm.ok()) << rm.status();
  EXPECT_TRUE(rm->config.scalar_head);
  EXPECT_FALSE(rm->config.lm_head);
  EXPECT_FALSE(rm->config.scalar_head_bias);
  EXPECT_EQ(rm->metadata["hf_config"]["model_type"], "gpt2");
}

TEST_F(HfTest, ExportInHalfPrecisionReimportsTheSameHalfValues) {
  auto a = LoadCheckpoint(Case("qwen2_tied_bf16"));
  ASSERT_TRUE(a.ok()) << a.status();
  const std::string out = Dir("bf16_export");
  HfExportOptions opts;
  opts.dtype = "BF16";
  ASSERT_TRUE(ExportHfDirectory(a->model, a->metadata, out, opts).ok());
  EXPECT_EQ(nlohmann::json::parse(ReadText(out + "/config.json"))["torch_dtype"], "bfloat16");
  EXPECT_TRUE(fs::exists(out + "/model.safetensors"));  // one shard under the 5 GB default
  auto b = LoadCheckpoint(out);
  ASSERT_TRUE(b.ok()) << b.status();
  const auto ta = ModelTensors(a->model), tb = ModelTensors(b->model);
  for (size_t i = 0; i < ta.size(); ++i) EXPECT_TRUE(torch::equal(ta[i].second, tb[i].second));
  opts.dtype = "F8";
  EXPECT_THAT(Message(ExportHfDirectory(a->model, a->metadata, out, opts)), HasSubstr("F8"));
}

TEST_F(HfTest, NativeModelsExportAndReimport) {
  // A native preset (never seen by HF) exports to a directory the reference reads.
  for (const char* preset : {"tiny", "llama-tiny"}) {
    ModelConfig c = *ModelConfigPreset(preset);
    c.n_layers = 2;
    c.max_seq_len = 32;
    torch::manual_seed(3);
    TransformerLM model(c);
    const std::string out = Dir(std::string("native_") + preset);
    ASSERT_TRUE(ExportHfDirectory(model, nlohmann::json{{"tokenizer", "byte"}}, out).ok());
    auto b = LoadCheckpoint(out);
    ASSERT_TRUE(b.ok()) << b.status();
    ModelConfig expected = c;
    expected.scalar_head_bias = false;  // HF's score layer has none
    EXPECT_EQ(ModelConfigToJson(b->config), ModelConfigToJson(expected));
    EXPECT_EQ(b->metadata["tokenizer"], "byte");
    const auto cfg = nlohmann::json::parse(ReadText(out + "/config.json"));
    EXPECT_EQ(cfg["eos_token_id"], 257);
    auto ids = torch::randint(0, 256, {2, 9}, torch::kLong);
    auto mask = torch::ones({2, 9}, torch::kLong);
    mask.index_put_({1, torch::indexing::Slice(0, 4)}, 0);
    torch::NoGradGuard no_grad;
    const auto y = model->forward(ids, mask);
    EXPECT_TRUE(torch::equal(y.logits, b->model->forward(ids, mask).logits));
    ASSERT_TRUE(WriteSafetensors(out + ".ours.safetensors",
                                 {{"ids", ids}, {"mask", mask}, {"logits", y.logits.contiguous()}})
                    .ok());
    EXPECT_EQ(RunCommand(Python() + " " + ReferenceScript() + " check " + out + " " + out +
                         ".ours.safetensors"),
              0)
        << preset;
  }
}

TEST_F(HfTest, RewardModelWithBiasCannotBeExportedSilently) {
  ModelConfig c = *ModelConfigPreset("tiny");
  c.n_layers = 1;
  c.lm_head = false;
  c.scalar_head = true;
  TransformerLM rm(c);
  {
    torch::NoGradGuard g;
    rm->named_parameters()["scalar_head.bias"].fill_(0.5);
  }
  EXPECT_THAT(Message(ExportHfDirectory(rm, {}, Dir("rm_bias"))), HasSubstr("bias"));
  {
    torch::NoGradGuard g;
    rm->named_parameters()["scalar_head.bias"].zero_();
  }
  const std::string out = Dir("rm_zero_bias");
  ASSERT_TRUE(ExportHfDirectory(rm, nlohmann::json{{"reward_mean", 0.5}}, out).ok());
  auto b = LoadCheckpoint(out);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(nlohmann::json::parse(ReadText(out + "/config.json"))["architectures"][0],
            "GPT2ForSequenceClassification");
  EXPECT_EQ(b->metadata["reward_mean"], 0.5);
  auto ids = torch::randint(0, 256, {3, 7}, torch::kLong);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose(rm->forward(ids).scalar, b->model->forward(ids).scalar, 0, 0));
}

// ---- bad directories ----

class HfBadFileTest : public HfTest {
 protected:
  // A fresh copy of a reference case to corrupt.
  std::string Copy(const std::string& name) {
    const std::string d = Dir("bad_" + name + "_" +
                              ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::copy(Case(name), d, fs::copy_options::recursive);
    return d;
  }
  // Rewrites d/model.safetensors from its tensors after `edit`.
  template <typename Fn>
  void EditTensors(const std::string& d, Fn edit) {
    auto c = ReadSafetensors(d + "/model.safetensors");
    ASSERT_TRUE(c.ok()) << c.status();
    edit(c->tensors);
    ASSERT_TRUE(WriteSafetensors(d + "/model.safetensors", c->tensors).ok());
  }
  std::string LoadError(const std::string& d) {
    auto r = LoadCheckpoint(d);
    EXPECT_FALSE(r.ok());
    return r.ok() ? "" : Message(r.status());
  }
};

TEST_F(HfBadFileTest, TruncatedFile) {
  const std::string d = Copy("gpt2_prefix");
  const std::string bytes = ReadText(d + "/model.safetensors");
  WriteText(d + "/model.safetensors", bytes.substr(0, bytes.size() - 100));
  EXPECT_THAT(LoadError(d), AllOf(HasSubstr("model.safetensors"), HasSubstr("truncated")));
  WriteText(d + "/model.safetensors", bytes.substr(0, 5));
  EXPECT_THAT(LoadError(d), AllOf(HasSubstr("model.safetensors"), HasSubstr("fewer than")));
}

TEST_F(HfBadFileTest, HeaderLengthPastTheEnd) {
  const std::string d = Copy("gpt2_prefix");
  std::string bytes = ReadText(d + "/model.safetensors");
  bytes[5] = 0x01;  // header length ~ 2^40
  WriteText(d + "/model.safetensors", bytes);
  EXPECT_THAT(LoadError(d), AllOf(HasSubstr("model.safetensors"), HasSubstr("header length")));
  bytes = ReadText(Case("gpt2_prefix") + "/model.safetensors");
  bytes[2] = 0x7f;  // still under the 100 MB cap, beyond the file
  WriteText(d + "/model.safetensors", bytes);
  EXPECT_THAT(LoadError(d), HasSubstr("beyond the end of the file"));
}

// Replaces the header JSON (keeping the data) with `header`.
void RewriteHeader(const std::string& path, const std::string& old_bytes, const nlohmann::json& header) {
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(old_bytes[i])) << (8 * i);
  std::string json = header.dump();
  std::string out;
  const uint64_t m = json.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((m >> (8 * i)) & 0xff));
  out += json;
  out += old_bytes.substr(8 + n);
  WriteText(path, out);
}

nlohmann::json HeaderOf(const std::string& bytes) {
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  return nlohmann::json::parse(bytes.substr(8, n));
}

TEST_F(HfBadFileTest, OverlappingAndOutOfRangeOffsets) {
  const std::string d = Copy("gpt2_prefix");
  const std::string bytes = ReadText(d + "/model.safetensors");
  nlohmann::json h = HeaderOf(bytes);
  const std::string a = "transformer.h.0.ln_1.weight", b = "transformer.h.0.ln_1.bias";
  nlohmann::json overl = h;
  overl[b]["data_offsets"] = {h[a]["data_offsets"][0].get<uint64_t>() + 4,
                              h[a]["data_offsets"][1].get<uint64_t>() + 4};
  RewriteHeader(d + "/model.safetensors", bytes, overl);
  EXPECT_THAT(LoadError(d), AllOf(HasSubstr("model.safetensors"), HasSubstr("overlapping"),
                                  HasSubstr("ln_1")));
  nlohmann::json range = h;
  range[b]["data_offsets"] = {1u << 30, (1u << 30) + 128};
  RewriteHeader(d + "/model.safetensors", bytes, range);
  EXPECT_THAT(LoadError(d), AllOf(HasSubstr(b), HasSubstr("beyond the data section")));
}

TEST_F(HfBadFileTest, DtypeOrShapeDisagreeingWithConfig) {
  const std::string d = Copy("llama_gqa_untied");
  EditTensors(d, [](NamedTensors& t) {
    for (auto& [name, x] : t) {
      if (name == "model.layers.1.mlp.up_proj.weight") x = x.to(torch::kInt32);
    }
  });
  EXPECT_THAT(LoadError(d), AllOf(HasSubstr("model.safetensors"), HasSubstr("model.layers.1.mlp.up_proj.weight"),
                                  HasSubstr("I32")));
  const std::string d2 = Copy("llama_gqa_untied");
  auto cfg = nlohmann::json::parse(ReadText(d2 + "/config.json"));
  cfg["num_key_value_heads"] = 4;  // k/v would be [32, 32]; the file has [16, 32]
  WriteText(d2 + "/config.json", cfg.dump());
  EXPECT_THAT(LoadError(d2), AllOf(HasSubstr("model.layers.0.self_attn.k_proj.weight"),
                                   HasSubstr("[16, 32]"), HasSubstr("config.json implies [32, 32]")));
}

TEST_F(HfBadFileTest, MissingAndUnexpectedTensors) {
  const std::string d = Copy("gpt2_prefix");
  EditTensors(d, [](NamedTensors& t) {
    t.erase(std::remove_if(t.begin(), t.end(), [](auto& p) { return p.first == "transformer.h.1.mlp.c_fc.bias"; }),
            t.end());
    t.emplace_back("transformer.h.0.attn.rogue", torch::zeros({2}));
  });
  const std::string err = LoadError(d);
  EXPECT_THAT(err, HasSubstr("missing tensor \"transformer.h.1.mlp.c_fc.bias\""));
  EXPECT_THAT(err, HasSubstr("unexpected tensor \"transformer.h.0.attn.rogue\""));
}

TEST_F(HfBadFileTest, IndexNamingAMissingShard) {
  const std::string d = Copy("llama_bias_headdim_sharded");
  fs::remove(d + "/model-00002-of-00003.safetensors");
  EXPECT_THAT(LoadError(d), AllOf(HasSubstr("model.safetensors.index.json"),
                                  HasSubstr("model-00002-of-00003.safetensors"), HasSubstr("does not exist")));
  const std::string d2 = Copy("llama_bias_headdim_sharded");
  auto index = nlohmann::json::parse(ReadText(d2 + "/model.safetensors.index.json"));
  index["weight_map"]["model.norm.weight"] = "model-00001-of-00003.safetensors";  // wrong shard
  WriteText(d2 + "/model.safetensors.index.json", index.dump());
  EXPECT_THAT(LoadError(d2), HasSubstr("model.norm.weight"));
  const std::string d3 = Copy("gpt2_prefix");
  fs::remove(d3 + "/model.safetensors");
  auto r = LoadCheckpoint(d3);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(HfBadFileTest, UnsupportedConfigFieldsAreNamed) {
  auto with = [&](const std::string& name, auto edit) {
    const std::string d = Copy(name);
    auto cfg = nlohmann::json::parse(ReadText(d + "/config.json"));
    edit(cfg);
    WriteText(d + "/config.json", cfg.dump());
    return LoadError(d);
  };
  EXPECT_THAT(with("gpt2_prefix", [](auto& c) { c["model_type"] = "falcon"; }),
              AllOf(HasSubstr("model_type"), HasSubstr("falcon")));
  EXPECT_THAT(with("llama_gqa_untied", [](auto& c) { c["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}}; }),
              AllOf(HasSubstr("rope_scaling"), HasSubstr("llama3")));
  EXPECT_THAT(with("llama_gqa_untied", [](auto& c) { c["hidden_act"] = "gelu"; }), HasSubstr("hidden_act"));
  EXPECT_THAT(with("gpt2_prefix", [](auto& c) { c["activation_function"] = "relu"; }),
              HasSubstr("activation_function"));
  EXPECT_THAT(with("gpt2_rm", [](auto& c) {
                c["id2label"] = {{"0", "A"}, {"1", "B"}};
              }),
              HasSubstr("num_labels"));
  EXPECT_THAT(with("gpt2_prefix", [](auto& c) { c["architectures"] = {"GPT2ForTokenClassification"}; }),
              HasSubstr("architectures"));
  EXPECT_THAT(with("gpt2_prefix", [](auto& c) { c["n_embd"] = "wide"; }), HasSubstr("n_embd"));
}

TEST_F(HfBadFileTest, SlidingWindowCapsTheSequenceLength) {
  const std::string d = Copy("mistral_gqa_f16");
  auto cfg = nlohmann::json::parse(ReadText(d + "/config.json"));
  cfg["sliding_window"] = 8;
  WriteText(d + "/config.json", cfg.dump());
  auto r = LoadCheckpoint(d);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->config.max_seq_len, 8);  // the window can never apply
  torch::NoGradGuard no_grad;
  EXPECT_ANY_THROW(r->model->forward(torch::zeros({1, 9}, torch::kLong)));
}

}  // namespace
}  // namespace rlhf
