// MakeChannel's load-balancing policy with real servers: a target that resolves to two
// addresses spreads calls over both with round_robin (the default, for headless
// Services in Kubernetes) and sticks to one with pick_first. The two servers answer
// the health check differently, so each answer tells which server took the call.
#include <set>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/channel.h"
#include "services/health.h"
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
  std::multiset<HealthStatus> Answers(const std::string& lb_policy, int calls, bool warm_up) {
    ChannelOptions options;
    // gRPC's static resolver: one target name, two addresses (like a headless Service).
    options.target = absl::StrCat("ipv4:127.0.0.1:", servers_[0]->port(), ",127.0.0.1:",
                                  servers_[1]->port());
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
  std::vector<std::unique_ptr<GrpcServer>> servers_;
};

TEST_F(ChannelLbTest, DefaultIsRoundRobinOverEveryAddress) {
  EXPECT_EQ(ChannelOptions{}.lb_policy, "round_robin");
  auto seen = Answers(ChannelOptions{}.lb_policy, 10, /*warm_up=*/true);
  // Round robin alternates over the two connected servers: five calls each.
  EXPECT_EQ(seen.count(HealthStatus::kServing), 5u);
  EXPECT_EQ(seen.count(HealthStatus::kNotServing), 5u);
}

TEST_F(ChannelLbTest, PickFirstSticksToOneServer) {
  auto seen = Answers("pick_first", 10, /*warm_up=*/false);
  EXPECT_EQ(seen.count(HealthStatus::kServing), 10u);  // the first address, every time
}

}  // namespace
}  // namespace rlhf::services
