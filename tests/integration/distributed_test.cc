// Distributed RL end to end: the real rlhf-learner, rlhf-reward-server,
// rlhf-reference-server and rlhf-actor binaries (RLHF_BIN_DIR) on loopback, a tiny model
// and a few steps. Covers elastic actors (join mid-run, SIGKILL mid-run), the lease
// accounting invariant from the learner's own counters, bitwise-identical weights on
// every actor for every version (both transports), a SIGKILLed learner restarted from
// its checkpoint with the actors reconnecting, PPO (value model from the RM) with the
// pretraining term, replicated reward servers (one killed mid-run, nothing lost), and
// malformed trajectories rejected.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "core/util/http_get.h"
#include "learner/learner_client.h"
#include "tests/testing/child_process.h"


namespace {

using rlhf::learner::GrpcLearnerClient;

std::string BinDir() {
  const char* d = std::getenv("RLHF_BIN_DIR");
  return d ? d : "build/bin";
}

using rlhf::testing::ReadFileOrEmpty;

// A binary of RLHF_BIN_DIR as a child process, output in `log`.
class Proc : public rlhf::testing::ChildProcess {
 public:
  Proc(const std::string& name, std::vector<std::string> args, const std::string& log)
      : ChildProcess(WithBinary(name, std::move(args)), log) {}

 private:
  static std::vector<std::string> WithBinary(const std::string& name,
                                             std::vector<std::string> args) {
    args.insert(args.begin(), BinDir() + "/" + name);
    return args;
  }
};

class DistributedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/rlhf-dist-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    procs_.clear();
    // RLHF_KEEP_TEST_DIR=1 keeps the run's checkpoints (e.g. for rlhf_bench_exact_kl).
    if (!HasFailure() && std::getenv("RLHF_KEEP_TEST_DIR") == nullptr) {
      std::system(("rm -rf " + dir_).c_str());
    } else {
      std::fprintf(stderr, "logs kept in %s\n", dir_.c_str());
    }
  }
  Proc* Start(const std::string& name, const std::string& tag, std::vector<std::string> args) {
    procs_.push_back(std::make_unique<Proc>(name, std::move(args), dir_ + "/" + tag + ".log"));
    EXPECT_GT(procs_.back()->pid(), 0) << name;
    return procs_.back().get();
  }
  int WaitPort(const std::string& file, Proc* proc) {
    return proc->WaitForPortFile(file, absl::Seconds(60));
  }
  void StartScorers() {
    Proc* rm = Start("rlhf-reward-server", "reward",
                     {"--scorers=gold", "--port_file=" + dir_ + "/reward.port"});
    Proc* ref = Start("rlhf-reference-server", "reference",
                      {"--preset=tiny", "--seed=3", "--port_file=" + dir_ + "/reference.port"});
    reward_port_ = WaitPort(dir_ + "/reward.port", rm);
    reference_port_ = WaitPort(dir_ + "/reference.port", ref);
  }
  std::vector<std::string> LearnerArgs(const std::string& transport, int steps, int port) {
    return {"--checkpoint_dir=" + dir_ + "/learner", "--port=" + std::to_string(port),
            "--port_file=" + dir_ + "/learner.port", "--metrics_port=-1",
            "--drain_grace_s=20", "--checkpoint_every=1",
            absl::StrCat("--set=rl.steps=", steps,
                         ",rl.prompts_per_step=4,rl.samples_per_prompt=2,rl.minibatch_size=8,"
                         "rl.max_staleness=1,actors.prompts_per_lease=2,"
                         "sampling.max_new_tokens=6,data.num_rl_train=24,"
                         "learner.lease_timeout_ms=5000,learner.heartbeat_interval_ms=300,"
                         "weights.timeout_s=20,weights.bucket_bytes=65536,weights.transport=",
                         transport)};
  }
  // `reward_address` empty: the one reward server StartScorers started.
  Proc* StartActor(const std::string& name, const std::string& reward_address = "") {
    return Start(
        "rlhf-actor", name,
        {absl::StrCat("--learner_address=127.0.0.1:", learner_port_),
         "--reward_address=" +
             (reward_address.empty() ? absl::StrCat("127.0.0.1:", reward_port_) : reward_address),
         absl::StrCat("--reference_address=127.0.0.1:", reference_port_), "--actor_name=" + name,
         "--log_weight_hashes", "--call_timeout_s=10"});
  }
  // A port nothing listens on now (bound and released): for servers whose /metrics
  // port the test must know (they write no port file for it).
  static int UnusedPort() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    int port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port = ntohs(addr.sin_port);
    }
    ::close(fd);
    return port;
  }
  // Score calls a reward server answered OK, from its /metrics; -1 if unreadable.
  static double ScoreCallsServed(int metrics_port) {
    auto body = rlhf::HttpGet("127.0.0.1", metrics_port, "/metrics", absl::Seconds(2));
    if (!body.ok()) return -1;
    for (absl::string_view line : absl::StrSplit(*body, '\n')) {
      if (!absl::StartsWith(line, "rlhf_reward_server_requests_total{") ||
          !absl::StrContains(line, "Score") || !absl::StrContains(line, "code=\"OK\"")) {
        continue;
      }
      double v = 0;
      if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &v)) return v;
    }
    return 0;
  }
  std::unique_ptr<GrpcLearnerClient> Client() {
    rlhf::services::ChannelOptions c;
    c.target = absl::StrCat("127.0.0.1:", learner_port_);
    auto client = GrpcLearnerClient::Create(c);
    EXPECT_TRUE(client.ok());
    return *std::move(client);
  }
  // Polls the learner's counters until `pred` holds (or the deadline / learner exit).
  rlhf::v1::LearnerStats WaitStats(const std::function<bool(const rlhf::v1::LearnerStats&)>& pred,
                                   Proc* learner, absl::Duration timeout = absl::Seconds(120)) {
    auto client = Client();
    const absl::Time until = absl::Now() + timeout;
    rlhf::v1::LearnerStats last;
    while (absl::Now() < until && learner->alive()) {
      auto s = client->GetStats({}, absl::Now() + absl::Seconds(2));
      if (s.ok()) {
        last = *s;
        learner_hashes_[last.policy_version()] = std::to_string(last.weights_hash());
        if (pred(last)) return last;
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    ADD_FAILURE() << "condition not reached; last stats: " << last.ShortDebugString()
                  << "\nlearner log:\n" << learner->log();
    return last;
  }
  static void ExpectAccounting(const rlhf::v1::LearnerStats& s) {
    EXPECT_EQ(s.prompts_leased(), s.prompts_trained() + s.prompts_reissued() +
                                      s.prompts_outstanding() + s.prompts_buffered())
        << s.ShortDebugString();
    EXPECT_EQ(s.trajectories_trained(), 2 * s.prompts_trained()) << s.ShortDebugString();
  }
  // version -> actor -> hash, from the actors' "weights: actor=N version=V hash=H" lines.
  std::map<int64_t, std::map<std::string, std::string>> Hashes() {
    std::map<int64_t, std::map<std::string, std::string>> out;
    std::regex re("weights: actor=(\\S+) version=(\\d+) hash=(\\d+)");
    for (const auto& p : procs_) {
      std::string log = p->log();
      for (std::sregex_iterator it(log.begin(), log.end(), re), end; it != end; ++it) {
        auto& slot = out[std::stoll((*it)[2])][(*it)[1]];
        // A restarted learner may republish a version; every copy must match anyway.
        if (!slot.empty() && slot != (*it)[3]) slot = "MISMATCH";
        else slot = (*it)[3];
      }
    }
    return out;
  }
  // The newest weights version any actor has logged applying (0 if none).
  int64_t NewestVersionAppliedByAnActor() {
    int64_t newest = 0;
    for (const auto& [version, by_actor] : Hashes()) newest = std::max(newest, version);
    return newest;
  }
  // For each submission an actor logged as rejected with INVALID_ARGUMENT: the version
  // its trajectories named when the learner rejected that version, else -1.
  std::vector<int64_t> RejectedSubmissionVersions() {
    std::vector<int64_t> out;
    std::regex rejected(": submit \\S+: INVALID_ARGUMENT: ([^\\n]*)");
    std::regex version("version: (\\d+) is not in");
    for (const auto& p : procs_) {
      std::string log = p->log();
      for (std::sregex_iterator it(log.begin(), log.end(), rejected), end; it != end; ++it) {
        const std::string why = (*it)[1];
        std::smatch m;
        out.push_back(std::regex_search(why, m, version) ? std::stoll(m[1]) : -1);
      }
    }
    return out;
  }
  // Every version whose published hash we saw and an actor applied: the same bits.
  void ExpectActorsMatchLearner() {
    auto hashes = Hashes();
    int compared = 0;
    for (const auto& [version, hash] : learner_hashes_) {
      if (rolled_back_.count(version)) continue;
      auto it = hashes.find(version);
      if (it == hashes.end()) continue;
      for (const auto& [actor, h] : it->second) {
        EXPECT_EQ(h, hash) << actor << " version " << version;
        ++compared;
      }
    }
    EXPECT_GT(compared, 0);
  }
  void ExpectIdenticalHashes(int min_actors_per_version_somewhere) {
    auto hashes = Hashes();
    ASSERT_FALSE(hashes.empty());
    size_t widest = 0;
    for (const auto& [version, by_actor] : hashes) {
      if (rolled_back_.count(version)) continue;
      std::set<std::string> distinct;
      for (const auto& [actor, h] : by_actor) distinct.insert(h);
      EXPECT_EQ(distinct.size(), 1u) << "version " << version << ": "
                                     << absl::StrJoin(distinct, ",");
      EXPECT_EQ(distinct.count("MISMATCH"), 0u) << "version " << version;
      widest = std::max(widest, by_actor.size());
    }
    EXPECT_GE(widest, static_cast<size_t>(min_actors_per_version_somewhere));
  }

  std::string dir_;
  std::map<int64_t, std::string> learner_hashes_;  // version -> hash the learner published
  // Versions published before a learner crash but after its last checkpoint: the
  // restarted learner trains them again (other data), so two weight sets share them.
  std::set<int64_t> rolled_back_;
  std::vector<std::unique_ptr<Proc>> procs_;
  int reward_port_ = 0, reference_port_ = 0, learner_port_ = 0;
};

TEST_F(DistributedTest, ElasticActorsAndLearnerRestartWithGrpcWeights) {
  StartScorers();
  Proc* learner = Start("rlhf-learner", "learner", LearnerArgs("grpc", 100000, 0));
  learner_port_ = WaitPort(dir_ + "/learner.port", learner);
  Proc* a0 = StartActor("a0");
  Proc* a1 = StartActor("a1");
  WaitStats([](const auto& s) { return s.step() >= 2; }, learner);

  // A third actor joins mid-run and gets work.
  Proc* a2 = StartActor("a2");
  auto s = WaitStats([](const auto& s) { return s.actors_registered_total() >= 3 && s.step() >= 4; },
                     learner);
  EXPECT_EQ(s.actors_connected(), 3);

  // SIGKILL one actor: its leases expire and training continues.
  a1->Kill(SIGKILL);
  const int64_t step_at_kill = s.step();
  s = WaitStats([&](const auto& s) {
    return s.step() >= step_at_kill + 2 && s.actors_connected() == 2;
  }, learner);
  ExpectAccounting(s);

  // SIGKILL the learner; restart it on the same port from its checkpoint directory.
  const int64_t before_crash = s.step();
  learner->Kill(SIGKILL);
  EXPECT_EQ(learner->Wait(absl::Seconds(10)), -1);  // killed, not exited
  // The last version the killed learner published, read before the new one publishes
  // anything. It may be past before_crash, and past the learner's own log: a version
  // can reach the actors before its step's log line is written.
  int64_t published = std::max(before_crash, NewestVersionAppliedByAnActor());
  {
    const std::string log1 = learner->log();
    std::regex step_re("learner: step (\\d+) version");
    for (std::sregex_iterator it(log1.begin(), log1.end(), step_re), end; it != end; ++it) {
      published = std::max<int64_t>(published, std::stoll((*it)[1]));
    }
  }
  std::remove((dir_ + "/learner.port").c_str());
  Proc* learner2 = Start("rlhf-learner", "learner2", LearnerArgs("grpc", 100000, learner_port_));
  ASSERT_EQ(WaitPort(dir_ + "/learner.port", learner2), learner_port_);
  const std::string log2 = learner2->log();
  std::smatch m;
  ASSERT_TRUE(std::regex_search(log2, m, std::regex("learner: restored \\S+ \\(step (\\d+)")))
      << log2;
  const int64_t restored = std::stoll(m[1]);
  EXPECT_LE(restored, before_crash);
  for (int64_t v = restored + 1; v <= published; ++v) {
    rolled_back_.insert(v);
    learner_hashes_.erase(v);
  }
  // The actors reconnect and keep feeding the restarted learner.
  s = WaitStats([&](const auto& s) { return s.step() >= before_crash + 3; }, learner2,
                absl::Seconds(180));
  ExpectAccounting(s);
  // An actor may have generated with a version the killed learner published after its
  // last checkpoint. The restarted learner never made that version and rejects those
  // trajectories (the actor then releases the lease and its prompts are re-issued, which
  // ExpectAccounting covers). Nothing else is rejected.
  const std::vector<int64_t> rejected_versions = RejectedSubmissionVersions();
  for (int64_t v : rejected_versions) {
    EXPECT_EQ(rolled_back_.count(v), 1u) << "a submission of version " << v << " was rejected";
  }
  if (s.trajectories_rejected() > 0) {
    EXPECT_FALSE(rejected_versions.empty());
  }

  // SIGTERM: the actors drain (submit what they hold), deregister and exit 0; their
  // leases go back to the queue; then the learner shuts down cleanly.
  a0->Kill(SIGTERM);
  a2->Kill(SIGTERM);
  EXPECT_EQ(a0->Wait(absl::Seconds(60)), 0) << a0->log();
  EXPECT_EQ(a2->Wait(absl::Seconds(60)), 0) << a2->log();
  s = WaitStats([](const auto& s) { return s.actors_connected() == 0; }, learner2);
  ExpectAccounting(s);
  EXPECT_EQ(s.prompts_outstanding(), 0);
  learner2->Kill(SIGTERM);
  EXPECT_EQ(learner2->Wait(absl::Seconds(60)), 0) << learner2->log();
  ExpectIdenticalHashes(2);
  ExpectActorsMatchLearner();
}

TEST_F(DistributedTest, CollectiveWeightsAreIdenticalAcrossActorsAndJoins) {
  StartScorers();
  Proc* learner = Start("rlhf-learner", "learner", LearnerArgs("collective", 100000, 0));
  learner_port_ = WaitPort(dir_ + "/learner.port", learner);
  Proc* a0 = StartActor("a0");
  Proc* a1 = StartActor("a1");
  auto s = WaitStats([](const auto& s) { return s.step() >= 2; }, learner);
  // A third actor joins: the group is re-formed and it receives the same weights.
  Proc* a2 = StartActor("a2");
  const int64_t joined_at = s.step();
  s = WaitStats([&](const auto& s) {
    return s.actors_connected() == 3 && s.step() >= joined_at + 3 &&
           a2->log().find("weights: actor=a2") != std::string::npos;
  }, learner, absl::Seconds(180));
  // One more version after a2 holds weights, so that all three share one.
  const int64_t then = s.step();
  s = WaitStats([&](const auto& s) { return s.step() >= then + 2; }, learner);
  ExpectAccounting(s);
  for (Proc* a : {a0, a1, a2}) a->Kill(SIGTERM);
  EXPECT_EQ(a0->Wait(absl::Seconds(90)), 0) << a0->log();
  EXPECT_EQ(a1->Wait(absl::Seconds(90)), 0) << a1->log();
  EXPECT_EQ(a2->Wait(absl::Seconds(90)), 0) << a2->log();
  learner->Kill(SIGTERM);
  EXPECT_EQ(learner->Wait(absl::Seconds(60)), 0) << learner->log();
  ExpectIdenticalHashes(3);
  ExpectActorsMatchLearner();
  EXPECT_NE(learner->log().find("weights rendezvous on 127.0.0.1:"), std::string::npos);
}

TEST_F(DistributedTest, PpoWithPtxTrainsTheValueModelAndThePretrainingTerm) {
  // The job's data (pretrain.jsonl for the ptx term) and a reward-model checkpoint for
  // PPO's value model (InstructGPT initialises the value function from the RM).
  Proc* data = Start("rlhf", "data",
                     {"data", "--out=" + dir_ + "/data", "--num_sft=8", "--num_rank=8",
                      "--num_rl_train=24", "--num_pretrain=32"});
  ASSERT_EQ(data->Wait(absl::Seconds(60)), 0) << data->log();
  Proc* rm = Start("rlhf", "rm", {"rm", "--data=" + dir_ + "/data/rank.jsonl", "--steps=0",
                                  "--out=" + dir_ + "/rm"});
  ASSERT_EQ(rm->Wait(absl::Seconds(60)), 0) << rm->log();
  StartScorers();
  // No step budget: a learner that stops at step 3 can exit before a poll sees step 3.
  std::vector<std::string> args = LearnerArgs("grpc", 100000, 0);
  args.back() += ",rl.algorithm=ppo,rl.ptx_coef=0.5,rl.ptx_batch_size=4,model.rm_checkpoint=" +
                 dir_ + "/rm,data.dir=" + dir_ + "/data";
  Proc* learner = Start("rlhf-learner", "learner", args);
  learner_port_ = WaitPort(dir_ + "/learner.port", learner);
  StartActor("a0");
  auto s = WaitStats([](const auto& s) { return s.step() >= 3; }, learner);
  ASSERT_GT(s.recent_steps_size(), 0) << s.ShortDebugString();
  const auto& stats = s.recent_steps(s.recent_steps_size() - 1).stats();  // the last step's
  ASSERT_TRUE(stats.count("value_loss") && stats.count("ptx_loss")) << s.ShortDebugString();
  EXPECT_GT(stats.at("value_loss"), 0.0) << s.ShortDebugString();  // 0 without a value model
  EXPECT_GT(stats.at("ptx_loss"), 0.0) << s.ShortDebugString();    // 0 without pretraining texts
  const std::string log = learner->log();
  EXPECT_NE(log.find("PPO value model from " + dir_ + "/rm"), std::string::npos) << log;
  EXPECT_NE(log.find("ptx term on, 32 pretraining texts, 4 per step"), std::string::npos) << log;
  learner->Kill(SIGTERM);
  EXPECT_EQ(learner->Wait(absl::Seconds(60)), 0) << learner->log();
}

// Replicated reward servers (issue 18): the actor is given two gold reward servers as a
// list ("127.0.0.1:P0,localhost:P1"); round_robin spreads its Score calls over both.
// One is killed with SIGKILL mid-run: the actor's calls go to the survivor (a failed
// call is retried there), no lease is released or expires, nothing is rejected, and
// the job keeps training with the learner's accounting intact.
TEST_F(DistributedTest, ReplicatedRewardServersLoseNothingWhenOneDies) {
  std::vector<Proc*> replicas;
  std::vector<int> ports, metrics_ports;
  for (int i = 0; i < 2; ++i) {
    const std::string tag = absl::StrCat("reward", i);
    metrics_ports.push_back(UnusedPort());
    replicas.push_back(Start("rlhf-reward-server", tag,
                             {"--scorers=gold", "--port_file=" + dir_ + "/" + tag + ".port",
                              absl::StrCat("--metrics_port=", metrics_ports.back())}));
    ports.push_back(WaitPort(dir_ + "/" + tag + ".port", replicas.back()));
  }
  Proc* ref = Start("rlhf-reference-server", "reference",
                    {"--preset=tiny", "--seed=3", "--port_file=" + dir_ + "/reference.port"});
  reference_port_ = WaitPort(dir_ + "/reference.port", ref);
  Proc* learner = Start("rlhf-learner", "learner", LearnerArgs("grpc", 100000, 0));
  learner_port_ = WaitPort(dir_ + "/learner.port", learner);
  Proc* actor = StartActor("a0", absl::StrCat("127.0.0.1:", ports[0], ",localhost:", ports[1]));

  // Both replicas serve (round_robin over the list).
  const absl::Time until = absl::Now() + absl::Seconds(120);
  while (absl::Now() < until &&
         (ScoreCallsServed(metrics_ports[0]) < 1 || ScoreCallsServed(metrics_ports[1]) < 1)) {
    ASSERT_TRUE(actor->alive()) << actor->log();
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_GE(ScoreCallsServed(metrics_ports[0]), 1) << actor->log();
  ASSERT_GE(ScoreCallsServed(metrics_ports[1]), 1) << actor->log();

  replicas[0]->Kill(SIGKILL);
  const double survivor_before = ScoreCallsServed(metrics_ports[1]);
  const int64_t killed_at = Client()->GetStats({}, absl::Now() + absl::Seconds(5))->step();
  auto s = WaitStats([&](const auto& s) { return s.step() >= killed_at + 4; }, learner);
  EXPECT_GT(ScoreCallsServed(metrics_ports[1]), survivor_before);
  // Nothing was released or expired: the only re-issues are of groups dropped as stale
  // (max_staleness 1, timing-dependent on a loaded machine), 2 samples per prompt.
  EXPECT_EQ(s.leases_expired(), 0) << s.ShortDebugString() << "\n" << actor->log();
  EXPECT_EQ(2 * s.prompts_reissued(), s.trajectories_dropped_stale())
      << s.ShortDebugString() << "\n"
      << actor->log();
  EXPECT_EQ(s.trajectories_rejected(), 0) << s.ShortDebugString();
  ExpectAccounting(s);
  actor->Kill(SIGTERM);
  EXPECT_EQ(actor->Wait(absl::Seconds(90)), 0) << actor->log();
  learner->Kill(SIGTERM);
  EXPECT_EQ(learner->Wait(absl::Seconds(60)), 0) << learner->log();
}

// kl.estimator exact end to end (issue 22): the actors send their per-step sampling
// distributions (top-16 + tail), the reference server returns the exact per-token KL,
// the learner subtracts β·KL_t and the adaptive controller acts on it. The reference is
// the learner's own initial policy, so version 0's KL is 0 up to rounding and every
// step's is >= 0 (a sampled k1 sum is not); a high learning rate pushes the policy away
// and the controller holds the per-sequence KL near its target. DISABLED_ so that the
// plain distributed_test run skips it; ctest runs it as distributed_exact_kl_test
// (labels e2e, slow; tests/integration/exact_kl.cmake).
TEST_F(DistributedTest, DISABLED_ExactKlOnTheRlPathStaysNearTarget) {
  constexpr int kSteps = 16;
  constexpr double kTarget = 0.5;
  Proc* data = Start("rlhf", "data", {"data", "--out=" + dir_ + "/data", "--num_sft=8",
                                      "--num_rank=8", "--num_rl_train=64"});
  ASSERT_EQ(data->Wait(absl::Seconds(60)), 0) << data->log();
  Proc* sft = Start("rlhf", "sft", {"sft", "--data=" + dir_ + "/data/sft.jsonl", "--steps=0",
                                    "--out=" + dir_ + "/sft"});
  ASSERT_EQ(sft->Wait(absl::Seconds(60)), 0) << sft->log();
  Proc* rm = Start("rlhf-reward-server", "reward",
                   {"--scorers=gold", "--port_file=" + dir_ + "/reward.port"});
  Proc* ref = Start("rlhf-reference-server", "reference",
                    {"--checkpoint=" + dir_ + "/sft", "--port_file=" + dir_ + "/reference.port"});
  reward_port_ = WaitPort(dir_ + "/reward.port", rm);
  reference_port_ = WaitPort(dir_ + "/reference.port", ref);
  std::vector<std::string> args = LearnerArgs("grpc", 100000, 0);  // stopped below
  args.back() += absl::StrCat(",rl.kl.estimator=exact,rl.kl.top_k=16,rl.lr=3e-3,rl.kl.beta=0.05,",
                              "rl.kl.adaptive=true,rl.kl.target=", kTarget,
                              ",rl.kl.horizon=8,data.dir=", dir_, "/data");
  args.push_back("--policy_checkpoint=" + dir_ + "/sft");
  Proc* learner = Start("rlhf-learner", "learner", args);
  learner_port_ = WaitPort(dir_ + "/learner.port", learner);
  StartActor("a0");
  StartActor("a1");
  auto s = WaitStats([](const auto& s) { return s.step() >= kSteps; }, learner, absl::Seconds(300));
  ASSERT_GE(s.step(), kSteps);
  ExpectAccounting(s);
  // Per step: "learner: step N version V reward R kl K beta B loss L".
  // The stats can report the last step before its log line is written: wait for it.
  std::map<int64_t, std::pair<double, double>> kl_beta;
  std::string log;
  std::regex re("learner: step (\\d+) version \\d+ reward \\S+ kl (\\S+) beta (\\S+) loss");
  for (const absl::Time until = absl::Now() + absl::Seconds(30);;) {
    log = learner->log();
    for (std::sregex_iterator it(log.begin(), log.end(), re), end; it != end; ++it) {
      kl_beta[std::stoll((*it)[1])] = {std::stod((*it)[2]), std::stod((*it)[3])};
    }
    if (kl_beta.size() >= static_cast<size_t>(kSteps) || absl::Now() > until) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_GE(kl_beta.size(), static_cast<size_t>(kSteps)) << log;
  EXPECT_LT(kl_beta[1].first, 1e-3) << "version 0 is the reference itself";
  std::string trace;
  for (const auto& [step, kb] : kl_beta) {
    EXPECT_GE(kb.first, -1e-4) << "step " << step << ": exact KL is never negative";
    trace += absl::StrCat(" ", step, ":", kb.first, "/", kb.second);
  }
  // The policy moved away (KL well above 0) and the controller kept it near the target
  // over the second half of the run.
  double late = 0;
  int n = 0;
  for (int64_t step = kSteps / 2 + 1; step <= kSteps; ++step, ++n) late += kl_beta[step].first;
  late /= n;
  EXPECT_GT(late, kTarget / 3) << "step:kl/beta" << trace;
  EXPECT_LT(late, kTarget * 3) << "step:kl/beta" << trace;
  std::fprintf(stderr, "exact KL per step (kl/beta):%s\n", trace.c_str());
  learner->Kill(SIGTERM);
  EXPECT_EQ(learner->Wait(absl::Seconds(60)), 0) << learner->log();
}

TEST_F(DistributedTest, MalformedTrajectoriesAreRejectedAndNothingIsTrained) {
  Proc* learner = Start("rlhf-learner", "learner", LearnerArgs("grpc", 3, 0));
  learner_port_ = WaitPort(dir_ + "/learner.port", learner);
  auto client = Client();
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  rlhf::v1::RegisterRequest reg;
  reg.set_actor_name("bad");
  auto r = client->Register(reg, deadline);
  ASSERT_TRUE(r.ok()) << r.status();
  rlhf::v1::LeasePromptsRequest lreq;
  lreq.set_actor_id(r->actor_id());
  auto lease = client->LeasePrompts(lreq, deadline);
  ASSERT_TRUE(lease.ok()) << lease.status();
  ASSERT_EQ(lease->prompts_size(), 2);
  auto good = [&] {
    rlhf::v1::SubmitTrajectoriesRequest sub;
    sub.set_actor_id(r->actor_id());
    sub.set_lease_id(lease->lease_id());
    for (const auto& p : lease->prompts()) {
      for (int i = 0; i < 2; ++i) {
        auto* t = sub.add_trajectories();
        t->set_prompt_id(p.prompt_id());
        *t->mutable_tokens()->mutable_prompt() = p.tokens();
        t->mutable_tokens()->add_response(65);
        t->add_behaviour_logprobs(-1);
        t->add_ref_logprobs(-1);
        t->add_kl(0);
      }
    }
    return sub;
  };
  auto mismatch = good();
  mismatch.mutable_trajectories(2)->add_behaviour_logprobs(-2);
  auto unknown = good();
  unknown.set_lease_id("no-such-lease");
  auto nan = good();
  nan.mutable_trajectories(1)->set_ref_logprobs(0, std::nanf(""));
  auto inf = good();
  inf.mutable_trajectories(3)->set_reward(INFINITY);
  const std::vector<std::pair<rlhf::v1::SubmitTrajectoriesRequest, std::string>> cases = {
      {mismatch, "trajectories[2].behaviour_logprobs: 2 values for 1 response tokens"},
      {unknown, "lease_id: unknown lease"},
      {nan, "trajectories[1].ref_logprobs[0]: non-finite"},
      {inf, "trajectories[3].reward: non-finite"}};
  for (const auto& [req, message] : cases) {
    auto resp = client->Submit(req, deadline);
    EXPECT_EQ(resp.status().code(), absl::StatusCode::kInvalidArgument) << message;
    EXPECT_NE(resp.status().message().find(message), std::string::npos) << resp.status();
  }
  auto stats = client->GetStats({}, deadline);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->trajectories_accepted(), 0);
  EXPECT_EQ(stats->trajectories_rejected(), 16);
  EXPECT_EQ(stats->prompts_buffered(), 0);
  EXPECT_EQ(stats->step(), 0);
  EXPECT_EQ(stats->prompts_outstanding(), 2);
}

}  // namespace
