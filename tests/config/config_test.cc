// The job config loader: defaults, explicit zeros, placeholders, and an error naming
// the YAML path for every kind of mistake.
#include "services/config/config.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace rlhf::config {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

LoadOptions Opts() {
  LoadOptions o;
  o.base_dir = "/base";
  return o;
}

absl::StatusOr<rlhf::v1::JobConfig> Parse(const std::string& yaml,
                                          const LoadOptions& o = Opts()) {
  return ParseJobConfigYaml(yaml, "job.yaml", o);
}

TEST(ConfigTest, EmptyFileGivesTheDefaults) {
  auto c = Parse("");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->name(), "rlhf");
  EXPECT_EQ(c->run_dir(), "/base/runs/rlhf");
  EXPECT_EQ(c->data().dir(), "/base/runs/rlhf/data");
  EXPECT_EQ(c->model().sft_checkpoint(), "/base/runs/rlhf/sft");
  EXPECT_EQ(c->reference_server().checkpoint(), "/base/runs/rlhf/sft");
  ASSERT_EQ(c->reward_server().scorers_size(), 1);
  EXPECT_EQ(c->reward_server().scorers(0).checkpoint(), "/base/runs/rlhf/rm");
  EXPECT_FLOAT_EQ(c->rl().kl().beta(), 0.05f);
  EXPECT_TRUE(c->rl().kl().adaptive());
  EXPECT_EQ(c->actors().count(), 2);
  // No id literal: the model's EOS is added by whichever process loads the model.
  EXPECT_EQ(c->sampling().stop_tokens_size(), 0);
  EXPECT_EQ(c->weights().bucket_bytes(), 16 << 20);
  EXPECT_EQ(c->learner().endpoint().threads(), 2);
}

TEST(ConfigTest, ExplicitZeroBeatsNonZeroDefault) {
  auto c = Parse("rl:\n  kl:\n    beta: 0\n    adaptive: false\nsampling:\n  temperature: 0\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rl().kl().beta(), 0.0f);
  EXPECT_FALSE(c->rl().kl().adaptive());
  EXPECT_EQ(c->sampling().temperature(), 0.0f);
  // Siblings keep their defaults.
  EXPECT_FLOAT_EQ(c->rl().kl().target(), 3.0f);
  EXPECT_EQ(c->rl().steps(), 60);
}

TEST(ConfigTest, NamePlaceholderAndAbsolutePaths) {
  auto c = Parse("name: exp1\nmodel:\n  rm_checkpoint: /abs/rm\n",
                 [] {
                   LoadOptions o = Opts();
                   o.check_files = false;
                   return o;
                 }());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->run_dir(), "/base/runs/exp1");
  EXPECT_EQ(c->model().rm_checkpoint(), "/abs/rm");
  EXPECT_EQ(c->reward_server().scorers(0).checkpoint(), "/abs/rm");
  auto d = Parse("run_dir: out/x\ndata:\n  dir: <run_dir>/d2\n");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->run_dir(), "/base/out/x");
  EXPECT_EQ(d->data().dir(), "/base/out/x/d2");
}

TEST(ConfigTest, EnumsAcceptShortAndFullNames) {
  auto c = Parse("rl:\n  algorithm: grpo\n  kl:\n    estimator: K3\n    placement: "
                 "KL_PLACEMENT_IN_LOSS\nweights:\n  transport: collective\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rl().algorithm(), rlhf::v1::ALGORITHM_GRPO);
  EXPECT_EQ(c->rl().kl().estimator(), rlhf::v1::KL_ESTIMATOR_CHOICE_K3);
  EXPECT_EQ(c->rl().kl().placement(), rlhf::v1::KL_PLACEMENT_IN_LOSS);
  EXPECT_EQ(c->weights().transport(), rlhf::v1::WEIGHT_TRANSPORT_COLLECTIVE);
}

TEST(ConfigTest, PpoIsAcceptedByTheShortName) {
  // The distributed learner builds PPO's value model from model.rm_checkpoint.
  auto c = Parse("rl:\n  algorithm: ppo\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rl().algorithm(), rlhf::v1::ALGORITHM_PPO);
}

TEST(ConfigTest, UnknownFieldNamesPathLineAndSuggestion) {
  auto c = Parse("rl:\n  steps: 3\n  klx:\n    beta: 1\n");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("job.yaml:3: rl.klx: unknown field"));
  EXPECT_THAT(c.status().message(), HasSubstr("did you mean 'kl'"));
}

TEST(ConfigTest, UnknownTopLevelFieldListsKnownFields) {
  auto c = Parse("zzzzzzzz: 1\n");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("zzzzzzzz: unknown field; known fields: name,"));
}

TEST(ConfigTest, WrongTypesNamePath) {
  struct Case {
    std::string yaml, want;
  };
  const Case cases[] = {
      {"rl:\n  kl:\n    beta: abc\n", "job.yaml:3: rl.kl.beta: expected a number, got 'abc'"},
      {"actors:\n  count: 2.5\n", "actors.count: expected an integer, got '2.5'"},
      {"actors:\n  count: 99999999999\n", "actors.count: value 99999999999 does not fit"},
      {"seed: -1\n", "seed: expected a non-negative integer, got '-1'"},
      {"rl:\n  kl:\n    adaptive: maybe\n", "rl.kl.adaptive: expected true or false"},
      {"rl:\n  algorithm: ppp\n", "rl.algorithm: unknown value 'ppp'; expected one of "
                                  "reinforce, rloo, grpo, ppo"},
      {"rl: 3\n", "rl: expected a mapping (key: value), got '3'"},
      {"sampling:\n  stop_tokens: 5\n", "sampling.stop_tokens: expected a list"},
      {"sampling:\n  stop_tokens: [1, x]\n", "sampling.stop_tokens[1]: expected an integer"},
      {"reward_server:\n  scorers:\n    - type: gold\n    - weight: 2\n",
       "reward_server.scorers[1].type: required"},
      {"reward_server:\n  scorers:\n    - {type: gold, wieght: 2}\n",
       "reward_server.scorers[0].wieght: unknown field (did you mean 'weight'?)"},
      {"name: [a]\n", "name: expected a string, got a list"},
      {"rl:\n  kl:\n    beta: .nan\n", "rl.kl.beta: expected a number, got '.nan'"},
  };
  for (const Case& c : cases) {
    auto r = Parse(c.yaml);
    ASSERT_FALSE(r.ok()) << c.yaml;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.yaml;
    EXPECT_THAT(r.status().message(), HasSubstr(c.want)) << c.yaml;
  }
}

TEST(ConfigTest, YamlSyntaxErrorNamesLine) {
  auto c = Parse("rl:\n  steps: [1, 2\n");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("job.yaml:"));
  EXPECT_THAT(c.status().message(), HasSubstr("YAML syntax"));
}

TEST(ConfigTest, RangeErrorsNamePathAndListEveryProblem) {
  auto c = Parse("actors:\n  count: 0\nsampling:\n  temperature: -1\n  top_p: 1.5\n");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("actors.count: must be >= 1, got 0"));
  EXPECT_THAT(c.status().message(), HasSubstr("sampling.temperature: must be >= 0, got -1"));
  EXPECT_THAT(c.status().message(), HasSubstr("sampling.top_p: must be in ["));
}

TEST(ConfigTest, ConsistencyErrors) {
  auto c = Parse("rl:\n  algorithm: grpo\n  samples_per_prompt: 1\n");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("rl.samples_per_prompt: RLOO and GRPO need >= 2"));
  auto p = Parse("learner:\n  endpoint:\n    port: 70000\n");
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(p.status().message(), HasSubstr("learner.endpoint.port: must be a port"));
  auto s = Parse("sampling:\n  max_new_tokens: 200\n");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("sampling.max_new_tokens: must be < model.max_seq_len"));
}

// Issue 18: security.auto_tls is tri-state (unset = decided by the addresses), reads
// from YAML and survives the resolved config; true with given certificates is refused.
TEST(ConfigTest, AutoTlsIsTriStateAndConflictsWithGivenCertificates) {
  auto unset = Parse("");
  ASSERT_TRUE(unset.ok()) << unset.status();
  EXPECT_FALSE(unset->security().has_auto_tls());
  auto off = Parse("security:\n  auto_tls: false\n");
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_TRUE(off->security().has_auto_tls());
  EXPECT_FALSE(off->security().auto_tls());
  auto on = Parse(
      "security:\n  auto_tls: true\nlearner:\n  endpoint:\n    advertise: a.example\n"
      "weights:\n  gloo_interface: eth1\n");
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_TRUE(on->security().auto_tls());
  EXPECT_EQ(on->learner().endpoint().advertise(), "a.example");
  EXPECT_EQ(on->weights().gloo_interface(), "eth1");
  auto both = Parse("security:\n  auto_tls: true\n  tls_cert: /c.pem\n  tls_key: /k.pem\n", [] {
    LoadOptions o = Opts();
    o.check_files = false;
    return o;
  }());
  ASSERT_FALSE(both.ok());
  EXPECT_THAT(both.status().message(), HasSubstr("security.auto_tls: true makes the job's own"));
}

TEST(ConfigTest, DeviceAndTrainDtype) {
  auto d = Parse("");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->model().device(), "cpu");
  EXPECT_EQ(d->rl().train_dtype(), "fp32");
  // The syntax only: whether CUDA exists is each process's check at start (ParseDevice).
  for (const char* ok : {"cuda", "cuda:0", "cuda:12"}) {
    auto c = Parse(std::string("model:\n  device: \"") + ok + "\"\nrl:\n  train_dtype: bf16\n");
    ASSERT_TRUE(c.ok()) << ok << ": " << c.status();
    EXPECT_EQ(c->model().device(), ok);
    EXPECT_EQ(c->rl().train_dtype(), "bf16");
  }
  for (const char* bad : {"gpu", "CUDA", "cuda:", "cuda:-1", "cuda:x", "cpu:0"}) {
    auto c = Parse(std::string("model:\n  device: \"") + bad + "\"\n");
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_THAT(
        c.status().message(),
        HasSubstr(std::string("model.device: must be cpu, cuda or cuda:N, got '") + bad + "'"));
  }
  auto t = Parse("rl:\n  train_dtype: fp16\n");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), HasSubstr("rl.train_dtype: must be fp32 or bf16, got 'fp16'"));
}

TEST(ConfigTest, MissingExplicitCheckpointNamesPath) {
  auto c = Parse("model:\n  sft_checkpoint: /definitely/not/here/sft\n");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(),
              HasSubstr("model.sft_checkpoint: SFT checkpoint '/definitely/not/here/sft' does "
                        "not exist"));
  auto s = Parse("reward_server:\n  scorers:\n    - {type: rm, checkpoint: nope/rm}\n");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(),
              HasSubstr("reward_server.scorers[0].checkpoint: reward-model checkpoint "
                        "'/base/nope/rm' does not exist"));
  // Defaulted checkpoints are produced by the pipeline: not an error.
  EXPECT_TRUE(Parse("").ok());
}

TEST(ConfigTest, ScorerElementDefaults) {
  auto c = Parse("reward_server:\n  scorers:\n    - type: gold\n    - {type: rm, weight: 0}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->reward_server().scorers_size(), 2);
  EXPECT_EQ(c->reward_server().scorers(0).weight(), 1.0f);
  EXPECT_FALSE(c->reward_server().scorers(0).normalize());
  EXPECT_EQ(c->reward_server().scorers(0).checkpoint(), "");
  EXPECT_EQ(c->reward_server().scorers(1).weight(), 0.0f);
  EXPECT_TRUE(c->reward_server().scorers(1).normalize());
  EXPECT_EQ(c->reward_server().scorers(1).checkpoint(), "/base/runs/rlhf/rm");
}

TEST(ConfigTest, OverridesApplyOnTopOfTheFile) {
  LoadOptions o = Opts();
  o.overrides = {"rl.steps=7", "rl.kl.beta=0", "name=ov", "sampling.stop_tokens=[1, 2]"};
  auto c = Parse("rl:\n  steps: 3\n", o);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rl().steps(), 7);
  EXPECT_EQ(c->rl().kl().beta(), 0.0f);
  EXPECT_EQ(c->run_dir(), "/base/runs/ov");
  ASSERT_EQ(c->sampling().stop_tokens_size(), 2);
  o.overrides = {"rl.stepz=7"};
  auto bad = Parse("", o);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("rl.stepz: unknown field"));
  o.overrides = {"novalue"};
  EXPECT_FALSE(Parse("", o).ok());
}

TEST(ConfigTest, ResolvedConfigRoundTrips) {
  LoadOptions o = Opts();
  o.overrides = {"rl.kl.beta=0", "rl.algorithm=rloo", "weights.bucket_bytes=4096",
                 "reward_server.scorers=[{type: gold, weight: 0.5}]"};
  auto c = Parse("", o);
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string dir = ::testing::TempDir() + "/config_rt_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/resolved.yaml";
  ASSERT_TRUE(WriteJobConfig(*c, path).ok());
  LoadOptions reload = Opts();
  reload.check_files = false;  // the checkpoints are produced later by the pipeline
  auto again = LoadJobConfig(path, reload);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->SerializeAsString(), c->SerializeAsString());
  std::filesystem::remove_all(dir);
}

TEST(ConfigTest, MissingFileIsNotFound) {
  auto c = LoadJobConfig("/no/such/job.yaml", Opts());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(c.status().message(), HasSubstr("/no/such/job.yaml"));
}

TEST(ConfigTest, ShippedConfigsLoad) {
  const char* src = std::getenv("RLHF_SOURCE_DIR");
  ASSERT_NE(src, nullptr);
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(std::string(src) + "/deploy/local")) {
    if (e.path().extension() != ".yaml") continue;
    ++n;
    LoadOptions o;
    o.base_dir = "/tmp";
    auto c = LoadJobConfig(e.path().string(), o);
    EXPECT_TRUE(c.ok()) << e.path() << ": " << c.status();
  }
  EXPECT_GE(n, 2);
}

}  // namespace
}  // namespace rlhf::config
