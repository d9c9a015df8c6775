// Run records (tools/launcher/run_records.h): metrics.jsonl lines built from GetStats
// replies of a real LearnerHandler behind the in-process FakeLearnerClient, driven
// through two training steps by hand; every expected number is counted by hand from
// the submissions below (1 prompt per step, 2 samples each).
#include "tools/launcher/run_records.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/time/clock.h"
#include "learner/fake_learner_client.h"
#include "learner/learner_handler.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace rlhf::launcher {
namespace {

using ::rlhf::testing::IsOk;
using Json = nlohmann::json;

std::vector<Json> ReadLines(const std::string& path) {
  std::vector<Json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) out.push_back(Json::parse(line));
  return out;
}

class RunRecordsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    learner::LearnerHandlerOptions o;
    o.prompts_per_step = 1;
    o.samples_per_prompt = 2;
    o.prompts_per_lease = 1;
    o.max_staleness = 0;
    o.total_steps = 2;
    o.step_records_kept = records_kept_;
    o.vocab_size = 50;
    o.max_seq_len = 16;
    auto h = learner::LearnerHandler::Create(o, {{1, 2}, {3}}, nullptr);
    ASSERT_TRUE(h.ok()) << h.status();
    handler_ = std::move(*h);
    ASSERT_THAT(handler_->Restore(0, 0), IsOk());
    client_ = std::make_unique<learner::FakeLearnerClient>(handler_.get());
    rlhf::v1::RegisterRequest r;
    r.set_actor_name("actor-0");
    auto reg = client_->Register(r, Deadline());
    ASSERT_TRUE(reg.ok()) << reg.status();
    actor_ = reg->actor_id();
    dir_ = rlhf::testing::MakeTempDir("run_records_");
    ASSERT_FALSE(dir_.empty());
    jsonl_ = dir_ + "/metrics.jsonl";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static absl::Time Deadline() { return absl::Now() + absl::Seconds(5); }

  // Leases one prompt, submits its 2 trajectories through the client and trains the
  // batch with `stats` as the step's trainer statistics.
  void Step(const std::map<std::string, double>& stats) {
    rlhf::v1::LeasePromptsRequest lr;
    lr.set_actor_id(actor_);
    lr.mutable_held_version()->set_version(handler_->version());
    auto lease = client_->LeasePrompts(lr, Deadline());
    ASSERT_TRUE(lease.ok()) << lease.status();
    ASSERT_EQ(lease->prompts_size(), 1);
    rlhf::v1::SubmitTrajectoriesRequest sr;
    sr.set_actor_id(actor_);
    sr.set_lease_id(lease->lease_id());
    for (int s = 0; s < 2; ++s) {
      auto* t = sr.add_trajectories();
      t->set_prompt_id(lease->prompts(0).prompt_id());
      *t->mutable_tokens()->mutable_prompt() = lease->prompts(0).tokens();
      t->mutable_tokens()->add_response(7 + s);
      t->add_behaviour_logprobs(-1.0f);
      t->add_ref_logprobs(-1.5f);
      t->add_kl(0.5f);
      t->set_reward(1.0f);
      t->mutable_version()->set_version(handler_->version());
    }
    ASSERT_TRUE(client_->Submit(sr, Deadline()).ok());
    auto batch = handler_->WaitForBatch(absl::ZeroDuration());
    ASSERT_TRUE(batch.has_value());
    ASSERT_THAT(handler_->OnTrained(*batch, handler_->version() + 1, stats), IsOk());
  }

  int records_kept_ = learner::LearnerHandlerOptions{}.step_records_kept;
  std::unique_ptr<learner::LearnerHandler> handler_;
  std::unique_ptr<learner::FakeLearnerClient> client_;
  std::string actor_, dir_, jsonl_;
};

TEST_F(RunRecordsTest, OneRecordPerNewStepFromGetStats) {
  RunRecorder recorder(client_.get(), jsonl_, 0, absl::Now());
  // Before the first step there is nothing to record.
  ASSERT_THAT(recorder.Poll(Deadline()), IsOk());
  EXPECT_FALSE(std::filesystem::exists(jsonl_));

  Step({{"reward_mean", 0.25},
        {"kl_mean", 1.5},
        {"approx_kl", std::numeric_limits<double>::quiet_NaN()}});
  ASSERT_THAT(recorder.Poll(Deadline()), IsOk());
  ASSERT_THAT(recorder.Poll(Deadline()), IsOk());  // same step: no second line
  EXPECT_EQ(recorder.last_step(), 1);
  Step({{"reward_mean", 0.75}, {"kl_mean", 2.0}});
  ASSERT_THAT(recorder.Poll(Deadline()), IsOk());

  const std::vector<Json> lines = ReadLines(jsonl_);
  ASSERT_EQ(lines.size(), 2u);
  const Json& first = lines[0];
  EXPECT_EQ(first["step"], 1);
  EXPECT_EQ(first["policy_version"], 1);
  EXPECT_EQ(first["actors_connected"], 1);
  EXPECT_DOUBLE_EQ(first["reward_mean"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(first["kl_mean"].get<double>(), 1.5);
  EXPECT_FALSE(first.contains("approx_kl"));  // NaN has no JSON spelling
  EXPECT_EQ(first["trajectories_accepted_total"], 2);
  EXPECT_EQ(first["trajectories_trained_total"], 2);
  EXPECT_EQ(first["trajectories_dropped_stale_total"], 0);
  EXPECT_EQ(first["trajectories_rejected_total"], 0);
  EXPECT_FALSE(first.contains("final"));
  EXPECT_GE(first["elapsed_s"].get<double>(), 0.0);
  EXPECT_GT(first["time_unix_s"].get<double>(), 1.7e9);

  const Json& last = lines[1];
  EXPECT_EQ(last["step"], 2);
  EXPECT_EQ(last["policy_version"], 2);
  EXPECT_DOUBLE_EQ(last["reward_mean"].get<double>(), 0.75);
  EXPECT_DOUBLE_EQ(last["kl_mean"].get<double>(), 2.0);
  EXPECT_EQ(last["trajectories_accepted_total"], 4);
  EXPECT_EQ(last["trajectories_trained_total"], 4);
  EXPECT_EQ(last["final"], true);  // total_steps = 2 reached
  EXPECT_GE(last["elapsed_s"].get<double>(), first["elapsed_s"].get<double>());
}

TEST_F(RunRecordsTest, AResumedRunDoesNotRewriteItsSteps) {
  Step({{"reward_mean", 0.25}});
  RunRecorder recorder(client_.get(), jsonl_, 1, absl::Now());  // metrics.jsonl ends at 1
  ASSERT_THAT(recorder.Poll(Deadline()), IsOk());
  EXPECT_FALSE(std::filesystem::exists(jsonl_));
  Step({{"reward_mean", 0.5}});
  ASSERT_THAT(recorder.Poll(Deadline()), IsOk());
  const std::vector<Json> lines = ReadLines(jsonl_);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["step"], 2);
}

// Under load two steps can finish between two polls (a 1 s RL stage polled every
// 500 ms): each still gets its record, with the numbers of its own step.
TEST_F(RunRecordsTest, StepsFinishedBetweenTwoPollsEachGetTheirRecord) {
  RunRecorder recorder(client_.get(), jsonl_, 0, absl::Now());
  Step({{"reward_mean", 0.25}});
  Step({{"reward_mean", 0.75}});
  ASSERT_THAT(recorder.Poll(Deadline()), IsOk());
  ASSERT_THAT(recorder.Poll(Deadline()), IsOk());  // nothing new: no more lines
  EXPECT_EQ(recorder.steps_missed(), 0);
  const std::vector<Json> lines = ReadLines(jsonl_);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["step"], 1);
  EXPECT_DOUBLE_EQ(lines[0]["reward_mean"].get<double>(), 0.25);
  EXPECT_EQ(lines[0]["trajectories_trained_total"], 2);
  EXPECT_FALSE(lines[0].contains("final"));  // the run was done, but not at step 1
  EXPECT_EQ(lines[1]["step"], 2);
  EXPECT_DOUBLE_EQ(lines[1]["reward_mean"].get<double>(), 0.75);
  EXPECT_EQ(lines[1]["trajectories_trained_total"], 4);
  EXPECT_EQ(lines[1]["final"], true);
  EXPECT_LE(lines[0]["time_unix_s"].get<double>(), lines[1]["time_unix_s"].get<double>());
  EXPECT_EQ(recorder.last_step(), 2);
}

// A learner that keeps one step's record, polled only after two steps: step 1 is gone.
// The recorder writes what exists and counts what it cannot write.
class RunRecordsOneKeptTest : public RunRecordsTest {
 protected:
  void SetUp() override {
    records_kept_ = 1;
    RunRecordsTest::SetUp();
  }
};

TEST_F(RunRecordsOneKeptTest, AStepNoLongerKeptIsCountedAsMissed) {
  RunRecorder recorder(client_.get(), jsonl_, 0, absl::Now());
  Step({{"reward_mean", 0.25}});
  Step({{"reward_mean", 0.75}});
  ASSERT_THAT(recorder.Poll(Deadline()), IsOk());
  const std::vector<Json> lines = ReadLines(jsonl_);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["step"], 2);
  EXPECT_EQ(recorder.steps_missed(), 1);
  ASSERT_THAT(recorder.Poll(Deadline()), IsOk());  // nothing new: nothing more missed
  EXPECT_EQ(recorder.steps_missed(), 1);
}

TEST(RunRecordsFreeTest, RecordFromAHandBuiltStep) {
  rlhf::v1::StepRecord step;
  step.set_step(7);
  step.set_policy_version(9);
  step.set_actors_connected(3);
  step.set_trajectories_accepted(40);
  step.set_trajectories_dropped_stale(5);
  step.set_trajectories_rejected(1);
  step.set_trajectories_trained(32);
  step.set_time_unix_s(1.8e9);  // the recorder's business, not the record's
  (*step.mutable_stats())["beta"] = 0.05;
  (*step.mutable_stats())["grad_norm"] = INFINITY;
  Json expected = {{"step", 7},
                   {"policy_version", 9},
                   {"actors_connected", 3},
                   {"beta", 0.05},
                   {"trajectories_accepted_total", 40},
                   {"trajectories_dropped_stale_total", 5},
                   {"trajectories_rejected_total", 1},
                   {"trajectories_trained_total", 32}};
  Json j = LearnerRecordFromStep(step, false);
  EXPECT_EQ(j, expected) << j.dump();
  expected["final"] = true;
  j = LearnerRecordFromStep(step, true);
  EXPECT_EQ(j, expected) << j.dump();
}

TEST(RunRecordsFreeTest, GrpcPollOfAMissingLearnerFailsAndWritesNothing) {
  const std::string dir = rlhf::testing::MakeTempDir("run_records_grpc_");
  ASSERT_FALSE(dir.empty());
  services::ChannelOptions channel;
  channel.target = "unix:" + dir + "/no-learner.sock";  // nothing listens there
  services::RetryOptions once;
  once.max_attempts = 1;
  auto client = learner::GrpcLearnerClient::Create(channel, once);
  ASSERT_TRUE(client.ok()) << client.status();
  RunRecorder recorder(client->get(), dir + "/metrics.jsonl", 0, absl::Now());
  const absl::Status s = recorder.Poll(absl::Now() + absl::Seconds(5));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_FALSE(std::filesystem::exists(dir + "/metrics.jsonl"));
  std::filesystem::remove_all(dir);
}

TEST(RunRecordsFreeTest, ChannelOptionsFromTheJobsSecurity) {
  const std::string dir = rlhf::testing::MakeTempDir("run_records_sec_");
  ASSERT_FALSE(dir.empty());
  std::ofstream(dir + "/token") << "  s3cret\n";
  rlhf::v1::SecurityConfig sec;
  auto plain = LearnerChannelOptions(sec, "127.0.0.1:7");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->target, "127.0.0.1:7");
  EXPECT_EQ(plain->auth_token, "");
  EXPECT_FALSE(plain->tls.enabled);

  sec.set_token_file(dir + "/token");
  sec.set_tls_cert("/certs/server.pem");
  sec.set_tls_key("/certs/server.key");
  sec.set_tls_ca("/certs/ca.pem");
  auto tls = LearnerChannelOptions(sec, "h:1");
  ASSERT_TRUE(tls.ok()) << tls.status();
  EXPECT_EQ(tls->auth_token, "s3cret");
  EXPECT_TRUE(tls->tls.enabled);
  EXPECT_EQ(tls->tls.ca_file, "/certs/ca.pem");
  EXPECT_EQ(tls->tls.cert_file, "");  // no client certificate unless required
  sec.set_require_client_cert(true);
  auto mtls = LearnerChannelOptions(sec, "h:1");
  ASSERT_TRUE(mtls.ok()) << mtls.status();
  EXPECT_EQ(mtls->tls.cert_file, "/certs/server.pem");
  EXPECT_EQ(mtls->tls.key_file, "/certs/server.key");

  sec.set_token_file(dir + "/missing");
  EXPECT_FALSE(LearnerChannelOptions(sec, "h:1").ok());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace rlhf::launcher
