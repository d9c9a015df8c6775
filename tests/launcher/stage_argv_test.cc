// The command lines `rlhf run` starts, against hand-written expected argv.
#include "tools/launcher/stage_argv.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace rlhf::launcher {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

rlhf::v1::JobConfig Config() {
  rlhf::v1::JobConfig c;
  c.set_seed(7);
  c.mutable_data()->set_dir("/d");
  c.mutable_data()->set_seed(3);
  c.mutable_data()->set_num_sft(10);
  c.mutable_data()->set_num_rank(11);
  c.mutable_data()->set_num_rl_train(12);
  c.mutable_data()->set_num_rl_heldout(13);
  c.mutable_data()->set_num_pretrain(14);
  c.mutable_model()->set_sft_checkpoint("/m/sft");
  c.mutable_model()->set_rm_checkpoint("/m/rm");
  c.mutable_model()->set_preset("tiny");
  c.mutable_model()->set_max_seq_len(96);
  auto* s = c.mutable_sft();
  s->set_steps(100);
  s->set_batch_size(8);
  s->set_lr(0.001f);
  s->set_warmup_steps(5);
  s->set_eval_every(20);
  s->set_checkpoint_every(50);
  c.mutable_sampling()->set_temperature(0.0f);
  c.mutable_sampling()->set_max_new_tokens(24);
  auto* r = c.mutable_rm();
  r->set_label_prompts(40);
  r->set_label_samples_per_prompt(4);
  r->set_label_min_gold_gap(0.25f);
  r->set_steps(60);
  r->set_prompts_per_batch(16);
  r->set_lr(0.0005f);
  r->set_warmup_steps(2);
  r->set_eval_every(30);
  auto* rs = c.mutable_reward_server();
  rs->mutable_endpoint()->set_threads(2);
  rs->mutable_batching()->set_max_batch_tokens(1000);
  rs->mutable_batching()->set_max_wait_ms(3);
  rs->mutable_batching()->set_max_queue(50);
  rs->mutable_batching()->set_max_sequences_per_request(60);
  auto* gold = rs->add_scorers();
  gold->set_type("gold");
  gold->set_weight(0.5f);
  auto* rm = rs->add_scorers();
  rm->set_type("rm");
  rm->set_checkpoint("/m/rm");
  rm->set_weight(1.0f);
  rm->set_normalize(true);
  auto* ref = c.mutable_reference_server();
  ref->set_checkpoint("/m/sft");
  ref->mutable_endpoint()->set_threads(1);
  ref->mutable_batching()->set_max_batch_tokens(2000);
  ref->mutable_batching()->set_max_wait_ms(4);
  ref->mutable_batching()->set_max_queue(70);
  ref->mutable_batching()->set_max_sequences_per_request(80);
  c.mutable_actors()->set_threads(2);
  c.mutable_eval()->set_samples_per_prompt(3);
  c.mutable_eval()->set_num_examples(2);
  return c;
}

const JobPaths kPaths{"/bin", "/run"};

TEST(StageArgv, Data) {
  EXPECT_THAT(DataArgv(Config(), kPaths),
              ElementsAre("/bin/rlhf", "data", "--task=builtin", "--out=/d", "--seed=3",
                          "--num_sft=10", "--num_rank=11", "--num_rl_train=12",
                          "--num_rl_heldout=13", "--num_pretrain=14"));
}

TEST(StageArgv, SftAddsTrainOnPromptOnlyWhenSet) {
  rlhf::v1::JobConfig c = Config();
  const std::vector<std::string> expected = {"/bin/rlhf",
                                             "sft",
                                             "--data=/d/sft.jsonl",
                                             "--heldout=/d/sft_heldout.jsonl",
                                             "--out=/m/sft",
                                             "--preset=tiny",
                                             "--max_seq_len=96",
                                             "--steps=100",
                                             "--batch_size=8",
                                             "--lr=0.001",
                                             "--warmup_steps=5",
                                             "--eval_every=20",
                                             "--checkpoint_every=50",
                                             "--seed=7",
                                             "--threads=2",
                                             "--resume",
                                             "--json_out=/run/sft.json"};
  EXPECT_THAT(SftArgv(c, kPaths), ElementsAreArray(expected));
  c.mutable_sft()->set_train_on_prompt(true);
  std::vector<std::string> with = expected;
  with.push_back("--train_on_prompt");
  EXPECT_THAT(SftArgv(c, kPaths), ElementsAreArray(with));
}

TEST(StageArgv, LabelSamplesAtTemperatureOneWhenSamplingIsGreedy) {
  EXPECT_THAT(
      LabelArgv(Config(), kPaths, "/run/rank_policy.jsonl"),
      ElementsAre("/bin/rlhf", "label", "--policy=/m/sft", "--prompts=/d/rank.jsonl,/d/sft.jsonl",
                  "--out=/run/rank_policy.jsonl", "--max_prompts=40", "--label_samples=4",
                  "--min_gold_gap=0.25", "--temperature=1", "--max_new_tokens=24", "--seed=7",
                  "--threads=2", "--json_out=/run/label.json"));
}

TEST(StageArgv, Rm) {
  EXPECT_THAT(
      RmArgv(Config(), kPaths, "/d/rank.jsonl,/run/rank_policy.jsonl"),
      ElementsAre("/bin/rlhf", "rm", "--data=/d/rank.jsonl,/run/rank_policy.jsonl",
                  "--heldout=/d/rank_heldout.jsonl", "--init=/m/sft", "--out=/m/rm", "--steps=60",
                  "--batch_size=16", "--lr=0.0005", "--warmup_steps=2", "--eval_every=30",
                  "--seed=7", "--threads=2", "--resume", "--json_out=/run/rm.json"));
}

TEST(StageArgv, EvalWithAndWithoutRewardModelAndPromptLimit) {
  rlhf::v1::JobConfig c = Config();
  const std::vector<std::string> base = {"/bin/rlhf",
                                         "eval",
                                         "--policy=/run/learner/step-00000004/policy",
                                         "--reference=/m/sft",
                                         "--prompts=/d/rl_heldout.jsonl",
                                         "--json_out=/run/eval_rl.json",
                                         "--temperature=0",
                                         "--max_new_tokens=24",
                                         "--samples_per_prompt=3",
                                         "--show=2",
                                         "--seed=7",
                                         "--threads=2",
                                         "--gold=false"};
  EXPECT_THAT(EvalArgv(c, kPaths, "rl", "/run/learner/step-00000004/policy", ""),
              ElementsAreArray(base));
  c.mutable_eval()->set_num_prompts(9);
  c.mutable_eval()->set_gold(true);
  c.mutable_eval()->set_heldout_rm_checkpoint("/m/rm2");
  std::vector<std::string> full = base;
  full.pop_back();  // --gold=false
  full.push_back("--rm=/m/rm");
  full.push_back("--max_prompts=9");
  full.push_back("--gold=true");
  full.push_back("--heldout_rm=/m/rm2");
  EXPECT_THAT(EvalArgv(c, kPaths, "rl", "/run/learner/step-00000004/policy", "/m/rm"),
              ElementsAreArray(full));
}

TEST(StageArgv, StepEvalIsSmallAndSeeded) {
  rlhf::v1::JobConfig c = Config();
  c.mutable_eval()->set_step_prompts(6);
  EXPECT_THAT(StepEvalArgv(c, kPaths, "/run/learner/step-00000004/policy", "/m/rm",
                           "/run/eval_steps/step-00000004.json"),
              ElementsAre("/bin/rlhf", "eval", "--policy=/run/learner/step-00000004/policy",
                          "--prompts=/d/rl_heldout.jsonl", "--rm=/m/rm",
                          "--json_out=/run/eval_steps/step-00000004.json", "--temperature=0",
                          "--max_new_tokens=24", "--samples_per_prompt=1", "--show=0",
                          "--max_prompts=6", "--seed=7", "--threads=1", "--gold=false"));
}

TEST(ServerArgs, RewardServerScorersBatchingAndNormalize) {
  EXPECT_THAT(RewardServerArgs(Config()),
              ElementsAre(R"(--scorers_json=[{"type":"gold","weight":0.5},)"
                          R"({"checkpoint":"/m/rm","type":"rm","weight":1.0}])",
                          "--threads=2", "--max_batch_tokens=1000",
                          "--max_wait_ms=3", "--max_queue_sequences=50",
                          "--max_sequences_per_request=60", "--max_seq_len=96", "--normalize"));
}

TEST(ServerArgs, ReferenceServerAndLearner) {
  EXPECT_THAT(ReferenceServerArgs(Config()),
              ElementsAre("--checkpoint=/m/sft", "--threads=1", "--max_batch_tokens=2000",
                          "--max_wait_ms=4", "--max_queue_sequences=70",
                          "--max_sequences_per_request=80", "--max_seq_len=96"));
  EXPECT_THAT(LearnerArgs(Config(), kPaths),
              ElementsAre("--config=/run/config.yaml", "--checkpoint_dir=/run/learner"));
}

TEST(ServerArgs, ComputeDtypeReachesTheForwardOnlyProcesses) {
  rlhf::v1::JobConfig c = Config();
  c.mutable_model()->set_compute_dtype("bf16");
  const std::string flag = "--compute_dtype=bf16";
  EXPECT_THAT(ReferenceServerArgs(c), ::testing::Contains(flag));
  EXPECT_THAT(RewardServerArgs(c), ::testing::Contains(flag));
  EXPECT_THAT(EvalArgv(c, kPaths, "rl", "/p", "/m/rm"), ::testing::Contains(flag));
  EXPECT_THAT(LabelArgv(c, kPaths, "/run/x.jsonl"), ::testing::Contains(flag));
  // Training stages keep fp32 weights.
  EXPECT_THAT(SftArgv(c, kPaths), ::testing::Not(::testing::Contains(flag)));
  EXPECT_THAT(RmArgv(c, kPaths, "/d/rank.jsonl"), ::testing::Not(::testing::Contains(flag)));
}

TEST(ServerArgs, DeviceReachesEveryRlProcess) {
  rlhf::v1::JobConfig c = Config();
  c.mutable_model()->set_device("cuda:1");
  const std::string flag = "--device=cuda:1";
  const ActorAddresses a{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"};
  EXPECT_THAT(LearnerArgs(c, kPaths), ::testing::Contains(flag));
  EXPECT_THAT(ActorArgv(c, kPaths, 0, a), ::testing::Contains(flag));
  EXPECT_THAT(ActorArgv(c, kPaths, 3, a), ::testing::Contains(flag));
  EXPECT_THAT(ReferenceServerArgs(c), ::testing::Contains(flag));
  EXPECT_THAT(RewardServerArgs(c), ::testing::Contains(flag));
  // The offline stages run on the CPU (docs/gpu.md): no flag they would not understand.
  EXPECT_THAT(SftArgv(c, kPaths),
              ::testing::Not(::testing::Contains(::testing::HasSubstr("--device"))));
  EXPECT_THAT(EvalArgv(c, kPaths, "rl", "/p", "/m/rm"),
              ::testing::Not(::testing::Contains(::testing::HasSubstr("--device"))));
  // The job config's default ("cpu") is passed as such; unset passes nothing.
  c.mutable_model()->set_device("cpu");
  EXPECT_THAT(ActorArgv(c, kPaths, 0, a), ::testing::Contains("--device=cpu"));
  c.mutable_model()->clear_device();
  EXPECT_THAT(LearnerArgs(c, kPaths),
              ElementsAre("--config=/run/config.yaml", "--checkpoint_dir=/run/learner"));
}

TEST(ServerArgs, SecurityFlagsOnlyForWhatIsSet) {
  rlhf::v1::SecurityConfig s;
  EXPECT_TRUE(ServerSecurityArgs(s).empty());
  s.set_token_file("/t");
  s.set_tls_cert("/c.pem");
  s.set_tls_key("/k.pem");
  s.set_tls_ca("/ca.pem");
  s.set_require_client_cert(true);
  s.set_allow_insecure(true);
  EXPECT_THAT(ServerSecurityArgs(s),
              ElementsAre("--token_file=/t", "--tls_cert=/c.pem", "--tls_key=/k.pem",
                          "--tls_ca=/ca.pem", "--require_client_cert", "--allow_insecure"));
}

TEST(ActorArgv, AddressesSeedMetricsAndClientSecurity) {
  rlhf::v1::JobConfig c = Config();
  const ActorAddresses a{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"};
  EXPECT_THAT(ActorArgv(c, kPaths, 1, a),
              ElementsAre("/bin/rlhf-actor", "--actor_name=actor-1",
                          "--learner_address=127.0.0.1:1", "--reward_address=127.0.0.1:2",
                          "--reference_address=127.0.0.1:3", "--seed=7001", "--threads=2",
                          "--metrics_port=0", "--metrics_port_file=/run/ports/actor-1.metrics.port",
                          "--metrics_file=/run/metrics/actor-1.prom"));
  c.mutable_security()->set_token_file("/t");
  c.mutable_security()->set_tls_ca("/ca.pem");
  c.mutable_security()->set_tls_cert("/server-only.pem");
  EXPECT_THAT(ActorArgv(c, kPaths, 0, a),
              ElementsAre("/bin/rlhf-actor", "--actor_name=actor-0",
                          "--learner_address=127.0.0.1:1", "--reward_address=127.0.0.1:2",
                          "--reference_address=127.0.0.1:3", "--seed=7000", "--threads=2",
                          "--metrics_port=0", "--metrics_port_file=/run/ports/actor-0.metrics.port",
                          "--metrics_file=/run/metrics/actor-0.prom", "--token_file=/t",
                          "--tls_ca=/ca.pem"));
  c.mutable_actors()->set_generation_batch(16);
  EXPECT_THAT(ActorArgv(c, kPaths, 1, a), Contains("--generation_batch=16"));
  c.mutable_weights()->set_gloo_interface("veth7");
  EXPECT_THAT(ActorArgv(c, kPaths, 1, a), Contains("--gloo_interface=veth7"));
}

TEST(ActorArgv, ClientCertificateUnderMutualTls) {
  rlhf::v1::SecurityConfig s;
  s.set_tls_ca("/ca.pem");
  s.set_tls_cert("/server.pem");
  s.set_tls_key("/server.key");
  s.set_require_client_cert(true);
  // Without a separate client certificate the server's own is presented.
  EXPECT_THAT(ActorSecurityArgs(s),
              ElementsAre("--tls_ca=/ca.pem", "--tls_cert=/server.pem", "--tls_key=/server.key"));
  s.set_client_cert("/client.pem");
  s.set_client_key("/client.key");
  EXPECT_THAT(ActorSecurityArgs(s),
              ElementsAre("--tls_ca=/ca.pem", "--tls_cert=/client.pem", "--tls_key=/client.key"));
}

TEST(ServerArgs, AdvertisedHost) {
  rlhf::v1::ServerEndpoint e;
  e.set_host("10.213.0.2");
  EXPECT_EQ(AdvertisedHost(e), "10.213.0.2");
  e.set_host("0.0.0.0");
  EXPECT_EQ(AdvertisedHost(e), "127.0.0.1");
  e.set_host("::");
  EXPECT_EQ(AdvertisedHost(e), "127.0.0.1");
  e.set_advertise("learner.example");
  EXPECT_EQ(AdvertisedHost(e), "learner.example");
}

}  // namespace
}  // namespace rlhf::launcher
