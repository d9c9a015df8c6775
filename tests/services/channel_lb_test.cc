// MakeChannel's load-balancing policy with real servers: a target that resolves to two
// addresses spreads calls over both with round_robin (the default, for headless
// Services in Kubernetes) and sticks to one with pick_first. The two servers answer
// the health check differently, so each answer tells which server took the call.
// Replica lists ("host:port,host:port", replica_target.h) become one such target; a
// replica that dies costs no failed call when the caller retries (CallWithRetry); a
// server's maximum connection age recycles connections so a replica added later gets
// traffic.
#include <set>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/channel.h"
#include "services/health.h"
#include "services/replica_target.h"
#include "services/server.h"

namespace rlhf::services {
namespace {

class ChannelLbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 2; ++i) {
      auto s = GrpcServer::Create(GrpcServerOptions{}, {});
      ASSERT_TRUE(s.ok()) << s.status();
      ASSERT_TRUE((*s)->Start().ok());
      servers_.push_back(*std::move(s));
    }
    servers_[1]->SetServing(false);
  }
  void TearDown() override {
    for (auto& s : servers_) s->Shutdown(absl::Now() + absl::Seconds(2));
  }
  // The statuses seen over `calls` health checks through one channel.
  std::multiset<HealthStatus> Answers(const std::string& lb_policy, int calls, bool warm_up,
                                      std::string target = "") {
    ChannelOptions options;
    // gRPC's static resolver: one target name, two addresses (like a headless Service).
    options.target = !target.empty() ? target
                                     : absl::StrCat("ipv4:127.0.0.1:", servers_[0]->port(),
                                                    ",127.0.0.1:", servers_[1]->port());
    options.lb_policy = lb_policy;
    auto channel = MakeChannel(options);
    EXPECT_TRUE(channel.ok()) << channel.status();
    std::multiset<HealthStatus> seen;
    EXPECT_TRUE(WaitForChannelReady(*channel, absl::Now() + absl::Seconds(10)).ok());
    // round_robin connects to the backends one by one and uses those that are up: with
    // `warm_up`, call until the second server has answered once (or a deadline) before
    // counting.
    const absl::Time until = absl::Now() + absl::Seconds(10);
    while (warm_up && absl::Now() < until) {
      auto h = CheckHealth(*channel, "", absl::Now() + absl::Seconds(5));
      if (h.ok() && *h == HealthStatus::kNotServing) break;
    }
    for (int i = 0; i < calls; ++i) {
      auto h = CheckHealth(*channel, "", absl::Now() + absl::Seconds(5));
      EXPECT_TRUE(h.ok()) << h.status();
      if (h.ok()) seen.insert(*h);
    }
    return seen;
  }
  // Round robin alternates over the two connected servers, five calls each, except that
  // gRPC starts each new picker (one per subchannel state change, which can still come
  // after the warm-up) at a random server, which may repeat one: 4/6 was seen under
  // load. pick_first gives 10/0.
  static void ExpectBothServersShare(const std::multiset<HealthStatus>& seen) {
    EXPECT_EQ(seen.size(), 10u);
    EXPECT_GE(seen.count(HealthStatus::kServing), 3u);
    EXPECT_GE(seen.count(HealthStatus::kNotServing), 3u);
  }
  std::vector<std::unique_ptr<GrpcServer>> servers_;
};

TEST_F(ChannelLbTest, DefaultIsRoundRobinOverEveryAddress) {
  EXPECT_EQ(ChannelOptions{}.lb_policy, "round_robin");
  auto seen = Answers(ChannelOptions{}.lb_policy, 10, /*warm_up=*/true);
  ExpectBothServersShare(seen);
}

TEST_F(ChannelLbTest, PickFirstSticksToOneServer) {
  auto seen = Answers("pick_first", 10, /*warm_up=*/false);
  EXPECT_EQ(seen.count(HealthStatus::kServing), 10u);  // the first address, every time
}

// The actors' --reward_address / --reference_address form: a plain list of replicas,
// one by name. Round robin reaches both.
TEST_F(ChannelLbTest, ReplicaListIsRoundRobinOverEveryReplica) {
  auto seen =
      Answers(ChannelOptions{}.lb_policy, 10, /*warm_up=*/true,
              absl::StrCat("127.0.0.1:", servers_[0]->port(), ",localhost:", servers_[1]->port()));
  ExpectBothServersShare(seen);
}

// One replica of two goes away: with the caller's retry (as the reward and reference
// clients call), every call still succeeds, and from then on the survivor answers.
TEST_F(ChannelLbTest, AReplicaThatDiesCostsNoFailedCall) {
  servers_[1]->SetServing(true);
  ChannelOptions options;
  options.target =
      absl::StrCat("127.0.0.1:", servers_[0]->port(), ",127.0.0.1:", servers_[1]->port());
  auto channel = MakeChannel(options);
  ASSERT_TRUE(channel.ok()) << channel.status();
  ASSERT_TRUE(WaitForChannelReady(*channel, absl::Now() + absl::Seconds(10)).ok());
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(CheckHealth(*channel, "", absl::Now() + absl::Seconds(5)).ok());
  }
  servers_[0]->Shutdown(absl::Now());
  RetryOptions retry;
  retry.initial_backoff = absl::Milliseconds(10);
  for (int i = 0; i < 20; ++i) {
    absl::Status status = CallWithRetry(
        retry, absl::Now() + absl::Seconds(10),
        [&](absl::Time deadline) { return CheckHealth(*channel, "", deadline).status(); });
    EXPECT_TRUE(status.ok()) << "call " << i << ": " << status;
  }
}

TEST(ReplicaTargetTest, ListsBecomeOneStaticTargetAndEverythingElseIsKept) {
  auto list = ParseReplicaTarget("127.0.0.1:5001, localhost:5002");
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(list->target, "ipv4:127.0.0.1:5001,127.0.0.1:5002");
  EXPECT_EQ(list->authority, "127.0.0.1:5001");
  auto v6 = ParseReplicaTarget("[::1]:7,[::1]:8");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->target, "ipv6:[::1]:7,[::1]:8");
  for (const std::string kept : {"127.0.0.1:5001", "reward:50051", "dns:///reward:50051",
                                 "ipv4:10.0.0.1:1,10.0.0.2:1", "unix:/tmp/s"}) {
    auto t = ParseReplicaTarget(kept);
    ASSERT_TRUE(t.ok()) << kept;
    EXPECT_EQ(t->target, kept);
    EXPECT_EQ(t->authority, "");
  }
}

TEST(ReplicaTargetTest, BadEntriesAreNamed) {
  struct Case {
    std::string target, want;
  };
  const Case cases[] = {
      {"127.0.0.1:1,,127.0.0.1:2", "entry 2 (''): empty entry"},
      {"127.0.0.1:1,127.0.0.1", "entry 2 ('127.0.0.1'): expected host:port"},
      {"127.0.0.1:0,127.0.0.1:2", "entry 1 ('127.0.0.1:0'): port '0' is not in 1..65535"},
      {"127.0.0.1:1,127.0.0.1:70000", "port '70000' is not in 1..65535"},
      {"127.0.0.1:1,no-such-host.invalid:2",
       "entry 2 ('no-such-host.invalid:2'): host 'no-such-host.invalid' does not resolve"},
      {"127.0.0.1:1,[::1]:2", "entry 2 ('[::1]:2'): mixes IPv4 and IPv6"},
  };
  for (const Case& c : cases) {
    auto t = ParseReplicaTarget(c.target);
    ASSERT_FALSE(t.ok()) << c.target;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(t.status().message()).find(c.want), std::string::npos) << t.status();
    ChannelOptions options;
    options.target = c.target;
    EXPECT_FALSE(MakeChannel(options).ok()) << c.target;
  }
}

// A server with a maximum connection age closes (GOAWAY) each connection after it: the
// client reconnects and re-resolves, so a replica added behind a DNS name gets traffic.
TEST(MaxConnectionAgeTest, ConnectionsAreRecycled) {
  GrpcServerOptions server_options;
  server_options.max_connection_age = absl::Seconds(1);
  server_options.max_connection_age_grace = absl::Seconds(1);
  auto server = GrpcServer::Create(server_options, {});
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE((*server)->Start().ok());
  ChannelOptions options;
  options.target = absl::StrCat("127.0.0.1:", (*server)->port());
  auto channel = MakeChannel(options);
  ASSERT_TRUE(channel.ok());
  ASSERT_TRUE(WaitForChannelReady(*channel, absl::Now() + absl::Seconds(10)).ok());
  // READY -> (GOAWAY) -> not READY within the age plus its jitter; a deadline, not a
  // timing. (The policy reconnects at once, so the state may be READY again by the time
  // it is read: the change itself is the evidence.)
  EXPECT_TRUE((*channel)->WaitForStateChange(GRPC_CHANNEL_READY,
                                             absl::ToChronoTime(absl::Now() + absl::Seconds(30))))
      << "the server never closed the connection";
  (*server)->Shutdown(absl::Now() + absl::Seconds(1));
}

TEST(MaxConnectionAgeTest, OutOfRangeIsRefused) {
  GrpcServerOptions options;
  options.max_connection_age = absl::Seconds(-1);
  auto server = GrpcServer::Create(options, {});
  ASSERT_FALSE(server.ok());
  EXPECT_NE(std::string(server.status().message()).find("max_connection_age"), std::string::npos);
}

}  // namespace
}  // namespace rlhf::services
