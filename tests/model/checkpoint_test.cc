// Safetensors + checkpoint directories: bitwise round trip; every corruption is an
// error naming the problem; a failed load leaves the model unchanged.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/model/checkpoint.h"
#include "core/model/model.h"

namespace rlhf {
namespace {

using ::testing::HasSubstr;

std::string TempDir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("rlhf_ckpt_test_" + std::to_string(::getpid()) + "_" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

ModelConfig Preset(const std::string& name) { return *ModelConfigPreset(name); }

std::string Message(const absl::Status& s) { return std::string(s.message()); }

class CheckpointArchTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CheckpointArchTest, RoundTripIsBitwise) {
  ModelConfig c = Preset(GetParam());
  c.scalar_head = true;
  torch::manual_seed(1);
  TransformerLM model(c);
  const std::string dir = TempDir("roundtrip_" + GetParam());
  ASSERT_TRUE(SaveCheckpoint(dir, model, {{"tokenizer", "byte"}, {"reward_mean", 0.25}}).ok());
  auto loaded = LoadCheckpoint(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(ModelConfigToJson(loaded->config), ModelConfigToJson(c));
  EXPECT_EQ(loaded->metadata["tokenizer"], "byte");
  EXPECT_EQ(loaded->metadata["reward_mean"], 0.25);
  const auto a = ModelTensors(model);
  const auto b = ModelTensors(loaded->model);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_TRUE(torch::equal(a[i].second, b[i].second)) << a[i].first;
  }
  // No temporary files left behind.
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 2);
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(BothArchitectures, CheckpointArchTest,
                         ::testing::Values("tiny", "llama-tiny"));

TEST(SafetensorsTest, AllDtypesAndMetadataRoundTrip) {
  NamedTensors t = {
      {"f32", torch::randn({3, 4})},
      {"f16", torch::randn({5}).to(torch::kFloat16)},
      {"bf16", torch::randn({2, 2}).to(torch::kBFloat16)},
      {"i64", torch::arange(7, torch::kLong)},
      {"i32", torch::arange(6, torch::kInt).view({2, 3})},
      {"empty", torch::zeros({0, 3})},
      {"scalar", torch::scalar_tensor(3.5)},
      {"noncontig", torch::randn({4, 3}).t()},
  };
  auto bytes = SerializeSafetensors(t, {{"k", "v"}});
  ASSERT_TRUE(bytes.ok());
  // Header length is little-endian and the data section is 8-byte aligned.
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(uint8_t((*bytes)[i])) << (8 * i);
  EXPECT_EQ(n % 8, 0u);
  auto back = ParseSafetensors(*bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->metadata.at("k"), "v");
  ASSERT_EQ(back->tensors.size(), t.size());
  for (size_t i = 0; i < t.size(); ++i) {
    EXPECT_EQ(back->tensors[i].first, t[i].first);
    EXPECT_EQ(back->tensors[i].second.scalar_type(), t[i].second.scalar_type());
    EXPECT_EQ(back->tensors[i].second.sizes(), t[i].second.sizes());
    // torch::equal cannot take 0-dim tensors in 1.13; compare flattened.
    EXPECT_TRUE(torch::equal(back->tensors[i].second.reshape({-1}), t[i].second.reshape({-1})))
        << t[i].first;
  }
  EXPECT_THAT(Message(SerializeSafetensors({{"a", torch::zeros(1)}, {"a", torch::zeros(1)}}).status()),
              HasSubstr("duplicate"));
  EXPECT_THAT(Message(SerializeSafetensors({{"b", torch::zeros(1, torch::kBool)}}).status()),
              HasSubstr("unsupported dtype"));
}

// Hand-built files: header JSON + data bytes.
std::string Build(const std::string& header, const std::string& data) {
  std::string out;
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(char((n >> (8 * i)) & 0xff));
  return out + header + data;
}

TEST(SafetensorsTest, CorruptFilesAreErrorsNamingTheProblem) {
  auto msg = [](const std::string& bytes) {
    auto r = ParseSafetensors(bytes);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    return Message(r.status());
  };
  const std::string eight(8, 'x');
  EXPECT_THAT(msg("abc"), HasSubstr("fewer than the 8-byte header length"));
  EXPECT_THAT(msg(Build(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", eight)
                      .substr(0, 20)),
              HasSubstr("beyond the end of the file"));
  std::string huge = Build("{}", "");
  huge[7] = char(0x7f);
  EXPECT_THAT(msg(huge), HasSubstr("header length"));
  EXPECT_THAT(msg(Build(R"({"a":{"dtype":"F32",)", eight)), HasSubstr("not valid JSON"));
  EXPECT_THAT(msg(Build(R"([1,2])", "")), HasSubstr("not a JSON object"));
  EXPECT_THAT(msg(Build(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", eight)),
              HasSubstr("truncated"));
  EXPECT_THAT(msg(Build(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight)),
              HasSubstr("\"a\": 8 bytes but dtype F32 x shape [3] needs 12"));
  EXPECT_THAT(msg(Build(R"({"a":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}})", eight)),
              HasSubstr("needs 16"));
  EXPECT_THAT(msg(Build(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", eight)),
              HasSubstr("unsupported dtype"));
  EXPECT_THAT(msg(Build(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", eight)),
              HasSubstr("shape"));
  EXPECT_THAT(msg(Build(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", eight)),
              HasSubstr("begin 8 > end 0"));
  EXPECT_THAT(msg(Build(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                        eight)),
              HasSubstr("overlapping"));
  EXPECT_THAT(msg(Build(R"({"a":{"dtype":"F32","shape":[2]}})", eight)), HasSubstr("data_offsets"));
  EXPECT_THAT(msg(Build(R"({"__metadata__":{"k":1}})", "")), HasSubstr("__metadata__.k"));
  // And a well-formed hand-built file parses.
  float v[2] = {1.5f, -2.0f};
  auto ok = ParseSafetensors(Build(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                                   std::string(reinterpret_cast<char*>(v), 8)));
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->tensors[0].second[1].item<float>(), -2.0f);
}

class CorruptCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::manual_seed(2);
    model_ = TransformerLM(Preset("tiny"));
    dir_ = TempDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_TRUE(SaveCheckpoint(dir_, model_).ok());
    weights_ = dir_ + "/model.safetensors";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  // Rewrites the weights file with `tensors` and expects LoadCheckpoint to fail with `what`.
  void ExpectLoadError(const NamedTensors& tensors, const std::string& what) {
    ASSERT_TRUE(WriteSafetensors(weights_, tensors).ok());
    auto r = LoadCheckpoint(dir_);
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(Message(r.status()), HasSubstr(what));
  }
  TransformerLM model_{nullptr};
  std::string dir_, weights_;
};

TEST_F(CorruptCheckpointTest, TruncatedFile) {
  const std::string bytes = ReadBytes(weights_);
  WriteBytes(weights_, bytes.substr(0, bytes.size() - 100));
  auto r = LoadCheckpoint(dir_);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(r.status()), HasSubstr("truncated"));
  EXPECT_THAT(Message(r.status()), HasSubstr("model.safetensors"));
}

TEST_F(CorruptCheckpointTest, BadHeaderLength) {
  std::string bytes = ReadBytes(weights_);
  bytes[5] = char(0x01);  // ~1 TB header
  WriteBytes(weights_, bytes);
  EXPECT_THAT(Message(LoadCheckpoint(dir_).status()), HasSubstr("header length"));
}

TEST_F(CorruptCheckpointTest, BadJson) {
  std::string bytes = ReadBytes(weights_);
  bytes[8] = '[';
  bytes[9] = '}';
  WriteBytes(weights_, bytes);
  EXPECT_THAT(Message(LoadCheckpoint(dir_).status()), HasSubstr("not valid JSON"));
}

TEST_F(CorruptCheckpointTest, WrongShape) {
  auto t = ModelTensors(model_);
  for (auto& [name, tensor] : t) {
    if (name == "wpe.weight") tensor = torch::zeros({10, 128});
  }
  ExpectLoadError(t, "shape mismatch: wpe.weight [10, 128] vs model [160, 128]");
}

TEST_F(CorruptCheckpointTest, WrongDtype) {
  auto t = ModelTensors(model_);
  t[3].second = t[3].second.to(torch::kFloat16);
  ExpectLoadError(t, "dtype mismatch: " + t[3].first + " Half vs model Float");
}

TEST_F(CorruptCheckpointTest, MissingTensor) {
  auto t = ModelTensors(model_);
  t.pop_back();
  const std::string name = ModelTensors(model_).back().first;
  ExpectLoadError(t, "missing: " + name);
}

TEST_F(CorruptCheckpointTest, UnexpectedTensor) {
  auto t = ModelTensors(model_);
  t.emplace_back("blocks.9.attn.qkv.weight", torch::zeros({2}));
  ExpectLoadError(t, "unexpected: blocks.9.attn.qkv.weight");
}

TEST_F(CorruptCheckpointTest, BadConfigAndMissingFiles) {
  WriteBytes(dir_ + "/config.json", R"({"format":"rlhf-checkpoint-v1","model":{"d_model":"x"}})");
  EXPECT_THAT(Message(LoadCheckpoint(dir_).status()), HasSubstr("d_model must be an integer"));
  WriteBytes(dir_ + "/config.json", "{oops");
  EXPECT_THAT(Message(LoadCheckpoint(dir_).status()), HasSubstr("config.json"));
  EXPECT_EQ(LoadCheckpoint(dir_ + "/nope").status().code(), absl::StatusCode::kNotFound);
  std::filesystem::remove(weights_);
  ASSERT_TRUE(SaveCheckpoint(dir_ + "/fresh", model_).ok());
  std::filesystem::remove(dir_ + "/fresh/model.safetensors");
  EXPECT_EQ(LoadCheckpoint(dir_ + "/fresh").status().code(), absl::StatusCode::kNotFound);
}

TEST(LoadWeightsTest, FailedLoadLeavesModelUnchangedAndReportsEverything) {
  torch::manual_seed(3);
  TransformerLM model(Preset("tiny"));
  const auto before = model->named_parameters()["wte.weight"].clone();
  auto t = ModelTensors(TransformerLM(Preset("tiny")));  // different random weights
  t.erase(t.begin() + 1);
  t.emplace_back("extra", torch::zeros(1));
  auto s = LoadWeightsInto(model, t);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("missing: "));
  EXPECT_THAT(Message(s), HasSubstr("unexpected: extra"));
  EXPECT_TRUE(torch::equal(model->named_parameters()["wte.weight"], before));
}

TEST(LoadWeightsTest, RewardModelFromSftTrunk) {
  ModelConfig sft_config = Preset("llama-tiny");  // untied: has lm_head.weight
  torch::manual_seed(4);
  TransformerLM sft(sft_config);
  ModelConfig rm_config = sft_config;
  rm_config.lm_head = false;
  rm_config.scalar_head = true;
  TransformerLM rm(rm_config);
  const auto head_before = rm->named_parameters()["scalar_head.weight"].clone();
  const auto trunk = ModelTensors(sft);
  auto strict = LoadWeightsInto(rm, trunk);
  EXPECT_THAT(Message(strict), HasSubstr("missing: scalar_head.weight, scalar_head.bias"));
  EXPECT_THAT(Message(strict), HasSubstr("unexpected: lm_head.weight"));
  LoadWeightsOptions o;
  o.allow_missing_scalar_head = true;
  o.ignore_unexpected_lm_head = true;
  ASSERT_TRUE(LoadWeightsInto(rm, trunk, o).ok());
  EXPECT_TRUE(torch::equal(rm->named_parameters()["blocks.2.mlp.down.weight"],
                           sft->named_parameters()["blocks.2.mlp.down.weight"]));
  EXPECT_TRUE(torch::equal(rm->named_parameters()["scalar_head.weight"], head_before));
  // Same final hidden states as the SFT model.
  torch::NoGradGuard g;
  const auto ids = torch::arange(1, 9, torch::kLong).view({1, 8});
  EXPECT_TRUE(torch::allclose(rm->forward(ids).hidden, sft->forward(ids).hidden));
}

}  // namespace
}  // namespace rlhf
