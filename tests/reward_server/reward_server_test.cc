#include "reward_server/reward_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <cmath>
#include <thread>
#include <vector>

#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <torch/utils.h>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "core/data/gold_labeler.h"
#include "core/model/checkpoint.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/http_get.h"
#include "reward_server/reward_client.h"
#include "services/health.h"
#include "services/metrics.h"
#include "tests/services/test_certs.h"

namespace rlhf::reward {
namespace {

using rlhf::v1::RewardScoreRequest;
using rlhf::v1::RewardScoreResponse;

ModelConfig TinyRewardConfig() {
  ModelConfig c;
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 4;
  c.d_ff = 64;
  c.max_seq_len = 64;
  c.lm_head = false;
  c.scalar_head = true;
  return c;
}

TransformerLM TinyRewardModel(int seed = 1) {
  torch::manual_seed(seed);
  TransformerLM model(TinyRewardConfig());
  model->eval();
  return model;
}

// The in-process reference: one sequence, no padding, scalar at the last token.
float InProcessScore(TransformerLM& model, const v1::TokenSequence& seq) {
  c10::InferenceMode guard;
  std::vector<int64_t> ids(seq.prompt().begin(), seq.prompt().end());
  ids.insert(ids.end(), seq.response().begin(), seq.response().end());
  auto t = torch::tensor(ids, torch::kLong).unsqueeze(0);
  auto out = model->forward(t);
  return out.scalar[0][static_cast<int64_t>(ids.size()) - 1].item<float>();
}

v1::TokenSequence MakeSeq(int prompt_len, int response_len, int salt) {
  v1::TokenSequence s;
  for (int i = 0; i < prompt_len; ++i) s.add_prompt((i * 7 + salt * 13) % 256);
  for (int i = 0; i < response_len; ++i) s.add_response((i * 11 + salt * 5 + 3) % 256);
  return s;
}

RewardScoreRequest MixedRequest(int n, int salt) {
  RewardScoreRequest r;
  for (int i = 0; i < n; ++i) {
    *r.add_sequences() = MakeSeq(2 + (i * 5 + salt) % 9, 1 + (i * 3 + salt) % 13, salt * 31 + i);
  }
  return r;
}

// A scorer that blocks every batch until released; records the sequences it saw.
class GateScorer final : public RewardScorer {
 public:
  std::string name() const override { return "gate"; }
  absl::StatusOr<std::vector<float>> Score(const std::vector<const ScoringSequence*>& batch) override {
    {
      absl::MutexLock lock(&mu_);
      ++entered_;
      for (const auto* s : batch) seen_.push_back(s->prompt[0]);
    }
    release_.WaitForNotification();
    return std::vector<float>(batch.size(), 1.0f);
  }
  void WaitEntered(int n) {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](std::pair<GateScorer*, int>* a) ABSL_NO_THREAD_SAFETY_ANALYSIS {
          return a->first->entered_ >= a->second;
        },
        new_arg(n)));
  }
  std::vector<int> seen() {
    absl::MutexLock lock(&mu_);
    return seen_;
  }
  absl::Notification release_;

 private:
  std::pair<GateScorer*, int>* new_arg(int n) {
    arg_ = {this, n};
    return &arg_;
  }
  absl::Mutex mu_;
  int entered_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int> seen_ ABSL_GUARDED_BY(mu_);
  std::pair<GateScorer*, int> arg_;
};

struct Harness {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<RewardServer> server;
  std::unique_ptr<GrpcRewardClient> client;
};

Harness StartServer(std::vector<WeightedScorer> scorers, RewardServerOptions options = {},
                    services::ChannelOptions channel = {}) {
  Harness h;
  options.handler.vocab_size = 259;
  options.handler.max_seq_len = 64;
  RewardServerDeps deps;
  deps.scorers = std::move(scorers);
  deps.registry = h.registry;
  auto server = RewardServer::Create(options, std::move(deps));
  EXPECT_TRUE(server.ok()) << server.status();
  h.server = *std::move(server);
  EXPECT_TRUE(h.server->Start().ok());
  channel.target = absl::StrCat("127.0.0.1:", h.server->port());
  services::RetryOptions retry;
  retry.max_attempts = 1;
  auto client = GrpcRewardClient::Create(channel, retry);
  EXPECT_TRUE(client.ok()) << client.status();
  h.client = *std::move(client);
  return h;
}

std::vector<WeightedScorer> ModelScorer(TransformerLM model, Normalization n = {}) {
  std::vector<WeightedScorer> v;
  auto s = ModelRewardScorer::Create("rm", std::move(model), ByteTokenizer::kPad, n);
  EXPECT_TRUE(s.ok()) << s.status();
  v.push_back({*std::move(s), 1.0});
  return v;
}

absl::Time Soon() { return absl::Now() + absl::Seconds(30); }

TEST(RewardServerTest, BatchedEqualsOneAtATimeEqualsInProcess) {
  TransformerLM model = TinyRewardModel();
  TransformerLM same = TinyRewardModel();  // identical weights (same seed)
  Harness h = StartServer(ModelScorer(model));
  const RewardScoreRequest request = MixedRequest(7, 1);
  auto batched = h.client->Score(request, Soon());
  ASSERT_TRUE(batched.ok()) << batched.status();
  ASSERT_EQ(batched->rewards_size(), 7);
  ASSERT_EQ(batched->components().at("rm").values_size(), 7);
  for (int i = 0; i < 7; ++i) {
    RewardScoreRequest one;
    *one.add_sequences() = request.sequences(i);
    auto single = h.client->Score(one, Soon());
    ASSERT_TRUE(single.ok()) << single.status();
    const float expected = InProcessScore(same, request.sequences(i));
    EXPECT_NEAR(batched->rewards(i), single->rewards(0), 1e-5) << i;
    EXPECT_NEAR(batched->rewards(i), expected, 1e-5) << i;
  }
}

TEST(RewardServerTest, GoldScorerAndWeightedSum) {
  auto tokenizer = std::make_shared<ByteTokenizer>();
  TransformerLM model = TinyRewardModel();
  TransformerLM same = TinyRewardModel();
  std::vector<WeightedScorer> scorers = ModelScorer(model);
  scorers[0].weight = 2.0;
  scorers.push_back({std::make_unique<GoldRewardScorer>(tokenizer), 0.5});
  Harness h = StartServer(std::move(scorers));
  RewardScoreRequest request;
  const std::vector<std::pair<std::string, std::string>> texts = {
      {"Name two red fruits.", "Cherry and apple."},
      {"Name two red fruits.", "apple apple apple"},
      {"List three animals that can swim.", "Duck, fish and frog."}};
  for (const auto& [p, r] : texts) {
    auto* s = request.add_sequences();
    for (int32_t id : tokenizer->Encode(p)) s->add_prompt(id);
    for (int32_t id : tokenizer->Encode(r)) s->add_response(id);
  }
  auto response = h.client->Score(request, Soon());
  ASSERT_TRUE(response.ok()) << response.status();
  for (int i = 0; i < 3; ++i) {
    const double gold = GoldScore(texts[i].first, texts[i].second);
    const float rm = InProcessScore(same, request.sequences(i));
    EXPECT_NEAR(response->components().at("gold").values(i), gold, 1e-6);
    EXPECT_NEAR(response->components().at("rm").values(i), rm, 1e-5);
    EXPECT_NEAR(response->rewards(i), 2.0 * rm + 0.5 * gold, 1e-5);
  }
  // The ideal answer beats the degenerate one on the gold component.
  EXPECT_GT(response->components().at("gold").values(0),
            response->components().at("gold").values(1));
}

TEST(RewardServerTest, NormalisationFromCheckpointMetadata) {
  TransformerLM model = TinyRewardModel();
  const std::string dir = rlhf::testing::MakeTempDir("rlhf_rm_ckpt_");
  ASSERT_TRUE(SaveCheckpoint(dir, model, {{"reward_mean", 0.25}, {"reward_std", 2.0}}).ok());
  auto normalised = ModelRewardScorer::FromCheckpoint("rm", dir, ByteTokenizer::kPad, true);
  ASSERT_TRUE(normalised.ok()) << normalised.status();
  auto raw = ModelRewardScorer::FromCheckpoint("rm", dir, ByteTokenizer::kPad, false);
  ASSERT_TRUE(raw.ok()) << raw.status();
  ScoringSequence seq{{1, 2, 3}, {4, 5}};
  auto a = (*normalised)->Score({&seq});
  auto b = (*raw)->Score({&seq});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NEAR((*a)[0], ((*b)[0] - 0.25) / 2.0, 1e-6);
  v1::TokenSequence proto_seq;
  for (int id : {1, 2, 3}) proto_seq.add_prompt(id);
  for (int id : {4, 5}) proto_seq.add_response(id);
  EXPECT_NEAR((*b)[0], InProcessScore(model, proto_seq), 1e-5);  // the saved weights
  // A checkpoint without the metadata cannot be normalised.
  const std::string bare = rlhf::testing::MakeTempDir("rlhf_rm_bare_");
  ASSERT_TRUE(SaveCheckpoint(bare, model).ok());
  EXPECT_EQ(ModelRewardScorer::FromCheckpoint("rm", bare, ByteTokenizer::kPad, true).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(RewardServerTest, MalformedRequestsAreInvalidArgumentAndServerKeepsServing) {
  RewardServerOptions options;
  options.handler.max_sequences_per_request = 4;
  Harness h = StartServer(ModelScorer(TinyRewardModel()), options);
  struct Case {
    std::function<void(RewardScoreRequest*)> mutate;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](RewardScoreRequest* r) { r->clear_sequences(); }, "sequences: empty"},
      {[](RewardScoreRequest* r) { *r = MixedRequest(5, 2); }, "sequences: 5 entries > limit 4"},
      {[](RewardScoreRequest* r) { r->mutable_sequences(1)->clear_prompt(); },
       "sequences[1].prompt: empty"},
      {[](RewardScoreRequest* r) { r->mutable_sequences(2)->clear_response(); },
       "sequences[2].response: empty"},
      {[](RewardScoreRequest* r) { r->mutable_sequences(2)->set_response(0, 300); },
       "sequences[2].response[0]: token id 300 >= vocab size 259"},
      {[](RewardScoreRequest* r) { r->mutable_sequences(0)->set_prompt(1, -4); },
       "sequences[0].prompt[1]: token id -4 < 0"},
      {[](RewardScoreRequest* r) {
         for (int i = 0; i < 70; ++i) r->mutable_sequences(1)->add_response(5);
       },
       "sequences[1]: prompt+response length"},
  };
  for (const Case& c : cases) {
    RewardScoreRequest request = MixedRequest(3, 3);
    c.mutate(&request);
    auto response = h.client->Score(request, Soon());
    EXPECT_EQ(response.status().code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_NE(response.status().message().find(c.message), std::string::npos)
        << response.status() << " vs " << c.message;
  }
  EXPECT_TRUE(h.client->Score(MixedRequest(3, 3), Soon()).ok());
}

TEST(RewardServerTest, ManyConcurrentClientsLoseNoResponse) {
  TransformerLM same = TinyRewardModel();
  RewardServerOptions options;
  options.handler.batcher.max_wait = absl::Milliseconds(2);
  Harness h = StartServer(ModelScorer(TinyRewardModel()), options);
  constexpr int kThreads = 32, kPerThread = 3;
  std::vector<RewardScoreRequest> requests;
  std::vector<std::vector<float>> expected;
  for (int i = 0; i < kThreads * kPerThread; ++i) {
    requests.push_back(MixedRequest(1 + i % 3, i));
    expected.emplace_back();
    for (const auto& s : requests.back().sequences()) {
      expected.back().push_back(InProcessScore(same, s));
    }
  }
  std::atomic<int> correct{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < kPerThread; ++k) {
        const int i = t * kPerThread + k;
        auto r = h.client->Score(requests[i], Soon());
        if (!r.ok() || r->rewards_size() != static_cast<int>(expected[i].size())) continue;
        bool ok = true;
        for (int j = 0; j < r->rewards_size(); ++j) {
          ok = ok && std::abs(r->rewards(j) - expected[i][j]) <= 1e-5;
        }
        if (ok) ++correct;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(correct.load(), kThreads * kPerThread);
  // Metrics saw every request and every sequence.
  auto exposer = services::MetricsExposer::Create("127.0.0.1", 0, h.registry);
  ASSERT_TRUE(exposer.ok());
  auto body = rlhf::HttpGet("127.0.0.1", (*exposer)->port(), "/metrics", absl::Seconds(5));
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_NE(body->find(absl::StrCat("rlhf_reward_server_requests_total{code=\"OK\",method=\"Score\"} ",
                                    kThreads * kPerThread)),
            std::string::npos)
      << *body;
  EXPECT_NE(body->find("rlhf_reward_server_batch_size_count"), std::string::npos);
  EXPECT_NE(body->find("rlhf_reward_server_model_info{"), std::string::npos);
}

TEST(RewardServerTest, FullQueueDeadlineAndCancellation) {
  auto gate_owner = std::make_unique<GateScorer>();
  GateScorer* gate = gate_owner.get();
  std::vector<WeightedScorer> scorers;
  scorers.push_back({std::move(gate_owner), 1.0});
  RewardServerOptions options;
  options.handler.batcher.max_queue_sequences = 4;
  options.handler.batcher.max_wait = absl::ZeroDuration();
  Harness h = StartServer(std::move(scorers), options);

  // 1) occupy the worker.
  RewardScoreRequest first = MixedRequest(1, 0);
  first.mutable_sequences(0)->set_prompt(0, 101);
  std::thread busy([&] { EXPECT_TRUE(h.client->Score(first, Soon()).ok()); });
  gate->WaitEntered(1);
  // 2) a request that will expire while queued (2 of the 4 queue slots).
  RewardScoreRequest expiring = MixedRequest(2, 0);
  expiring.mutable_sequences(0)->set_prompt(0, 102);
  expiring.mutable_sequences(1)->set_prompt(0, 102);
  auto expired = h.client->Score(expiring, absl::Now() + absl::Seconds(1));
  EXPECT_EQ(expired.status().code(), absl::StatusCode::kDeadlineExceeded);
  // 3) the queue still holds the expired request until the worker gets to it, so 3 more
  // sequences do not fit.
  RewardScoreRequest big = MixedRequest(3, 0);
  auto full = h.client->Score(big, Soon());
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted) << full.status();
  // The server's deadline for `expiring` runs from when it received the call (gRPC sends
  // the time left, at most 1 s), so it can end slightly after the client's. It had
  // received the call by now (the queue was full of it), so its deadline has passed
  // by `server_deadline_bound`, checked below before the worker is released.
  const absl::Time server_deadline_bound = absl::Now() + absl::Seconds(1);
  RewardScoreRequest third = MixedRequest(1, 0);
  third.mutable_sequences(0)->set_prompt(0, 103);
  // 4) cancellation from the client side.
  {
    grpc::ClientContext context;
    RewardScoreResponse response;
    absl::Notification done;
    grpc::Status status;
    auto stub = v1::RewardService::NewStub(
        *services::MakeChannel({.target = absl::StrCat("127.0.0.1:", h.server->port())}));
    stub->async()->Score(&context, &third, &response, [&](grpc::Status s) {
      status = s;
      done.Notify();
    });
    context.TryCancel();
    done.WaitForNotification();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED);
  }
  // 5) a live request queued behind the expired one (fits: at most 2 + 1 + 1 queued).
  absl::StatusOr<RewardScoreResponse> after;
  std::thread later([&] { after = h.client->Score(MixedRequest(1, 5), Soon()); });
  absl::SleepFor(server_deadline_bound - absl::Now());  // a no-op once it has passed
  gate->release_.Notify();
  busy.join();
  later.join();
  // The expired request never reached the model; the server kept serving.
  EXPECT_TRUE(after.ok()) << after.status();
  for (int id : gate->seen()) EXPECT_NE(id, 102);
}

TEST(RewardServerTest, ShutdownFinishesInFlightWork) {
  auto gate_owner = std::make_unique<GateScorer>();
  GateScorer* gate = gate_owner.get();
  std::vector<WeightedScorer> scorers;
  scorers.push_back({std::move(gate_owner), 1.0});
  Harness h = StartServer(std::move(scorers));
  absl::StatusOr<RewardScoreResponse> in_flight;
  std::thread call([&] { in_flight = h.client->Score(MixedRequest(2, 1), Soon()); });
  gate->WaitEntered(1);
  std::thread stopper([&] { h.server->Shutdown(absl::Now() + absl::Seconds(20)); });
  gate->release_.Notify();
  call.join();
  stopper.join();
  ASSERT_TRUE(in_flight.ok()) << in_flight.status();
  EXPECT_EQ(in_flight->rewards_size(), 2);
  // After shutdown nothing is served.
  EXPECT_EQ(h.client->Score(MixedRequest(1, 1), absl::Now() + absl::Seconds(2)).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST(RewardServerTest, MessageSizeLimitIsEnforced) {
  RewardServerOptions options;
  options.grpc.max_message_bytes = 4096;
  options.handler.max_sequences_per_request = 100000;
  Harness h = StartServer(ModelScorer(TinyRewardModel()), options);
  RewardScoreRequest big;
  for (int i = 0; i < 400; ++i) *big.add_sequences() = MakeSeq(8, 8, i);
  ASSERT_GT(big.ByteSizeLong(), 4096u);
  EXPECT_EQ(h.client->Score(big, Soon()).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(h.client->Score(MixedRequest(2, 1), Soon()).ok());
}

TEST(RewardServerTest, HealthAndBearerToken) {
  RewardServerOptions options;
  options.grpc.auth_token = "t0ken";
  services::ChannelOptions channel;
  Harness h = StartServer(ModelScorer(TinyRewardModel()), options, channel);
  // No token.
  auto r = h.client->Score(MixedRequest(1, 1), Soon());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated);
  // Wrong token.
  channel.target = absl::StrCat("127.0.0.1:", h.server->port());
  channel.auth_token = "wrong";
  auto wrong = GrpcRewardClient::Create(channel);
  EXPECT_EQ((*wrong)->Score(MixedRequest(1, 1), Soon()).status().code(),
            absl::StatusCode::kUnauthenticated);
  channel.auth_token = "t0ken";
  auto right = GrpcRewardClient::Create(channel);
  EXPECT_TRUE((*right)->Score(MixedRequest(1, 1), Soon()).ok());
  // Health stays open (probes carry no token) and follows the server state.
  auto ch = services::MakeChannel(channel);
  EXPECT_EQ(*services::CheckHealth(*ch, "", Soon()), services::HealthStatus::kServing);
  EXPECT_EQ(*services::CheckHealth(*ch, "rlhf.v1.RewardService", Soon()),
            services::HealthStatus::kServing);
  h.server->grpc_server().SetServing(false);
  EXPECT_EQ(*services::CheckHealth(*ch, "", Soon()), services::HealthStatus::kNotServing);
}

TEST(RewardServerTest, MutualTls) {
  auto certs = rlhf::testing::GenerateTestCerts();
  ASSERT_TRUE(certs.ok()) << certs.status();
  RewardServerOptions options;
  options.grpc.tls.cert_file = certs->server_cert;
  options.grpc.tls.key_file = certs->server_key;
  options.grpc.tls.ca_file = certs->ca_pem;
  options.grpc.tls.require_client_cert = true;
  services::ChannelOptions channel;
  channel.tls.enabled = true;
  channel.tls.ca_file = certs->ca_pem;
  channel.tls.cert_file = certs->client_cert;
  channel.tls.key_file = certs->client_key;
  channel.tls.server_name_override = "localhost";
  Harness h = StartServer(ModelScorer(TinyRewardModel()), options, channel);
  EXPECT_TRUE(h.client->Score(MixedRequest(2, 1), Soon()).ok());
  channel.target = absl::StrCat("127.0.0.1:", h.server->port());
  channel.tls.cert_file.clear();
  channel.tls.key_file.clear();
  auto anonymous = GrpcRewardClient::Create(channel, {.max_attempts = 1});
  EXPECT_EQ((*anonymous)->Score(MixedRequest(2, 1), absl::Now() + absl::Seconds(10)).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST(RewardServerTest, ScorerSpecsParse) {
  auto specs = ParseScorerSpecs("rm:/a/b:1.5,gold:0.5,gold");
  ASSERT_TRUE(specs.ok()) << specs.status();
  ASSERT_EQ(specs->size(), 3u);
  EXPECT_EQ((*specs)[0].checkpoint, "/a/b");
  EXPECT_DOUBLE_EQ((*specs)[0].weight, 1.5);
  EXPECT_EQ((*specs)[1].kind, ScorerSpec::Kind::kGold);
  EXPECT_DOUBLE_EQ((*specs)[1].weight, 0.5);
  EXPECT_DOUBLE_EQ((*specs)[2].weight, 1.0);
  EXPECT_EQ(ParseScorerSpecs("bogus").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(ParseScorerSpecs("gold,rm").status().message().find("scorers[1]"), std::string::npos);
  EXPECT_EQ(ParseScorerSpecs("gold:abc").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(FakeRewardClientTest, ScoresWithFunction) {
  FakeRewardClient fake;
  auto r = fake.Score(MixedRequest(2, 0), Soon());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->rewards(0), MixedRequest(2, 0).sequences(0).response_size());
  EXPECT_EQ(fake.calls(), 1);
}

// CancelInFlight against a real socket that accepts and never speaks HTTP/2 (a hung
// server): the call in flight ends with CANCELLED long before its 60 s deadline, and
// every later call fails at once. Without the cancel the future below times out.
TEST(GrpcRewardClientTest, CancelInFlightEndsAHungCallAndEveryLaterOne) {
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listener, 4), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  absl::Notification connected;
  int accepted = -1;
  std::thread acceptor([&] {
    accepted = ::accept(listener, nullptr, nullptr);
    connected.Notify();
  });
  services::ChannelOptions channel;
  channel.target = absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
  auto client = GrpcRewardClient::Create(channel, {.max_attempts = 1});
  ASSERT_TRUE(client.ok()) << client.status();
  rlhf::v1::RewardScoreRequest request;
  request.add_sequences()->add_prompt(1);
  auto call = std::async(std::launch::async, [&] {
    return (*client)->Score(request, absl::Now() + absl::Seconds(60));
  });
  ASSERT_TRUE(connected.WaitForNotificationWithTimeout(absl::Seconds(30)));
  (*client)->CancelInFlight();
  ASSERT_EQ(call.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_EQ(call.get().status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ((*client)->Score(request, absl::Now() + absl::Seconds(60)).status().code(),
            absl::StatusCode::kCancelled);
  acceptor.join();
  if (accepted >= 0) ::close(accepted);
  ::close(listener);
}

}  // namespace
}  // namespace rlhf::reward
