#include "services/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <thread>
#include <vector>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/support/byte_buffer.h>
#include <gtest/gtest.h>
#include <prometheus/counter.h>
#include <prometheus/registry.h>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "core/util/http_get.h"
#include "rlhf/v1/reward.grpc.pb.h"
#include "services/auth.h"
#include "services/channel.h"
#include "services/grpc_status.h"
#include "services/health.h"
#include "services/metrics.h"
#include "tests/services/test_certs.h"

namespace rlhf::services {
namespace {

absl::Time Soon() { return absl::Now() + absl::Seconds(10); }

std::shared_ptr<grpc::Channel> PlainChannel(int port) {
  ChannelOptions options;
  options.target = JoinHostPort("127.0.0.1", port);
  auto channel = MakeChannel(options);
  EXPECT_TRUE(channel.ok()) << channel.status();
  return *channel;
}

TEST(GrpcStatusTest, RoundTripsCodeAndMessage) {
  const absl::Status s = absl::InvalidArgumentError("sequences[3].response[7]: bad");
  const grpc::Status g = ToGrpcStatus(s);
  EXPECT_EQ(g.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(g.error_message(), "sequences[3].response[7]: bad");
  EXPECT_EQ(FromGrpcStatus(g), s);
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "full")).code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(HostTest, LoopbackAndJoin) {
  EXPECT_TRUE(IsLoopbackHost("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackHost("localhost"));
  EXPECT_TRUE(IsLoopbackHost("::1"));
  EXPECT_FALSE(IsLoopbackHost("0.0.0.0"));
  EXPECT_FALSE(IsLoopbackHost("10.1.2.3"));
  EXPECT_FALSE(IsLoopbackHost("::"));
  EXPECT_EQ(JoinHostPort("::", 80), "[::]:80");
  EXPECT_EQ(JoinHostPort("127.0.0.1", 5), "127.0.0.1:5");
}

TEST(GrpcServerTest, RefusesInsecureNonLoopback) {
  GrpcServerOptions options;
  options.host = "0.0.0.0";
  auto server = GrpcServer::Create(options, {});
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(server.status().message().find("allow_insecure"), std::string::npos);

  EXPECT_NE(server.status().message().find("'0.0.0.0'"), std::string::npos);

  // A token over plaintext is refused like no auth at all: it would travel in clear.
  options.auth_token = "secret";
  server = GrpcServer::Create(options, {});
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(server.status().message().find("'0.0.0.0'"), std::string::npos);
  EXPECT_NE(server.status().message().find("clear text"), std::string::npos);
  EXPECT_NE(server.status().message().find("TLS"), std::string::npos);
  options.host = "10.1.2.3";
  EXPECT_EQ(GrpcServer::Create(options, {}).status().code(), absl::StatusCode::kFailedPrecondition);
  // On loopback a token alone is fine (nothing crosses a network).
  options.host = "127.0.0.1";
  EXPECT_TRUE(GrpcServer::Create(options, {}).ok());
  options.host = "0.0.0.0";
  options.auth_token.clear();
  options.allow_insecure = true;  // an explicit opt-in accepts plaintext
  EXPECT_TRUE(GrpcServer::Create(options, {}).ok());
  options.auth_token = "secret";
  EXPECT_TRUE(GrpcServer::Create(options, {}).ok());
}

TEST(GrpcServerTest, TlsOffLoopbackIsAccepted) {
  auto certs = rlhf::testing::GenerateTestCerts();
  ASSERT_TRUE(certs.ok()) << certs.status();
  GrpcServerOptions options;
  options.host = "0.0.0.0";
  options.auth_token = "secret";
  options.tls.cert_file = certs->server_cert;
  options.tls.key_file = certs->server_key;
  EXPECT_TRUE(GrpcServer::Create(options, {}).ok());
}

TEST(GrpcServerTest, RejectsBadOptions) {
  GrpcServerOptions options;
  options.port = 70000;
  EXPECT_EQ(GrpcServer::Create(options, {}).status().code(), absl::StatusCode::kInvalidArgument);
  options.port = 0;
  options.tls.cert_file = "/nonexistent/cert.pem";
  options.tls.key_file = "/nonexistent/key.pem";
  auto s = GrpcServer::Create(options, {});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.status().message().find("/nonexistent/cert.pem"), std::string::npos);
}

TEST(GrpcServerTest, PortZeroHealthServingAndNotServing) {
  auto server = GrpcServer::Create(GrpcServerOptions{}, {});
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE((*server)->Start().ok());
  const int port = (*server)->port();
  EXPECT_GT(port, 0);
  auto channel = PlainChannel(port);
  auto health = CheckHealth(channel, "", Soon());
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, HealthStatus::kServing);
  (*server)->SetServing(false);
  health = CheckHealth(channel, "", Soon());
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, HealthStatus::kNotServing);
  (*server)->SetServing(true);
  EXPECT_EQ(*CheckHealth(channel, "", Soon()), HealthStatus::kServing);
  // Unknown service names are NOT_FOUND per the health protocol.
  EXPECT_EQ(CheckHealth(channel, "no.such.Service", Soon()).status().code(),
            absl::StatusCode::kNotFound);
  (*server)->Shutdown(absl::Now() + absl::Seconds(1));
  EXPECT_FALSE(CheckHealth(channel, "", absl::Now() + absl::Milliseconds(500)).ok());
  (*server)->Shutdown(absl::Now());  // idempotent
}

// ServerReflectionInfo with one list_services request; the call's status.
grpc::Status ListServicesByReflection(int port) {
  auto channel = PlainChannel(port);
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto call = stub.PrepareCall(
      &ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag;
  bool ok;
  call->StartCall(reinterpret_cast<void*>(1));
  cq.Next(&tag, &ok);
  const std::string request("\x3a\x01*", 3);  // field 7 (list_services) = "*"
  grpc::Slice slice(request);
  grpc::ByteBuffer buffer(&slice, 1);
  call->Write(buffer, reinterpret_cast<void*>(2));
  cq.Next(&tag, &ok);
  call->WritesDone(reinterpret_cast<void*>(3));
  cq.Next(&tag, &ok);
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(4));
  cq.Next(&tag, &ok);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

// Issue 23 item 9: reflection must not answer anyone on a token-protected server.
TEST(GrpcServerTest, ReflectionOnlyWithoutAToken) {
  auto open = GrpcServer::Create(GrpcServerOptions{}, {});
  ASSERT_TRUE((*open)->Start().ok());
  grpc::Status s = ListServicesByReflection((*open)->port());
  EXPECT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
  GrpcServerOptions guarded;
  guarded.auth_token = "s3cret";
  // A real server has a service (gRPC refuses to start with no polled queue at all once
  // reflection, its only other service, is gone).
  rlhf::v1::RewardService::CallbackService some_service;
  auto closed = GrpcServer::Create(guarded, {&some_service});
  absl::Status started = (*closed)->Start();
  ASSERT_TRUE(started.ok()) << started;
  s = ListServicesByReflection((*closed)->port());
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED) << s.error_message();
  // Health stays open for probes.
  EXPECT_EQ(*CheckHealth(PlainChannel((*closed)->port()), "", Soon()), HealthStatus::kServing);
}

TEST(GrpcServerTest, MaxMessageMiBIsRangeChecked) {
  EXPECT_EQ(*MessageBytesFromMiB(64), 64 << 20);
  EXPECT_EQ(*MessageBytesFromMiB(2047), 2047 << 20);
  auto big = MessageBytesFromMiB(2048);
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(big.status().message().find("max_message_mb: 2048"), std::string::npos);
  EXPECT_FALSE(MessageBytesFromMiB(0).ok());
}

TEST(GrpcServerTest, ABadPemIsNamedNotCouldNotListen) {
  const std::string dir = ::testing::TempDir();
  const std::string junk = dir + "/junk.pem";
  std::FILE* f = std::fopen(junk.c_str(), "w");
  std::fputs("this is not a certificate\n", f);
  std::fclose(f);
  GrpcServerOptions options;
  options.tls.cert_file = junk;
  options.tls.key_file = junk;
  auto s = GrpcServer::Create(options, {});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("tls.cert_file: " + junk + " is not a PEM CERTIFICATE"),
            std::string::npos) << s.status();
}

TEST(GrpcServerTest, PortInUseIsUnavailable) {
  auto first = GrpcServer::Create(GrpcServerOptions{}, {});
  ASSERT_TRUE((*first)->Start().ok());
  GrpcServerOptions options;
  options.port = (*first)->port();
  auto second = GrpcServer::Create(options, {});
  ASSERT_TRUE(second.ok());
  EXPECT_EQ((*second)->Start().code(), absl::StatusCode::kUnavailable);
}

TEST(FilesTest, TokenAndPortFiles) {
  const std::string dir = rlhf::testing::MakeTempDir("rlhf_files_");
  const std::string port_file = dir + "/port";
  ASSERT_TRUE(WritePortFile(port_file, 4321).ok());
  EXPECT_EQ(*ReadFileToString(port_file), "4321\n");
  {
    std::FILE* f = std::fopen((dir + "/token").c_str(), "w");
    std::fputs("  s3cret\n", f);
    std::fclose(f);
  }
  EXPECT_EQ(*ReadTokenFile(dir + "/token"), "s3cret");
  {
    std::FILE* f = std::fopen((dir + "/empty").c_str(), "w");
    std::fclose(f);
  }
  EXPECT_EQ(ReadTokenFile(dir + "/empty").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadTokenFile(dir + "/missing").status().code(), absl::StatusCode::kNotFound);
}

TEST(BearerTokenAuthTest, ChecksHeader) {
  BearerTokenAuth auth("s3cret");
  EXPECT_TRUE(auth.CheckHeader("Bearer s3cret").ok());
  EXPECT_EQ(auth.CheckHeader("").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.CheckHeader("Bearer s3cre").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.CheckHeader("Bearer s3cret2").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.CheckHeader("Basic s3cret").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.CheckHeader("Bearer wrong").message().find("wrong"), std::string::npos);
  EXPECT_TRUE(BearerTokenAuth("").CheckHeader("").ok());
  // RFC 6750: the scheme is case-insensitive (issue 23 item 9).
  EXPECT_TRUE(auth.CheckHeader("bearer s3cret").ok());
  EXPECT_TRUE(auth.CheckHeader("BEARER s3cret").ok());
  EXPECT_EQ(auth.CheckHeader("bearer S3CRET").code(), absl::StatusCode::kUnauthenticated);
}

TEST(RetryTest, BackoffGrowsAndCaps) {
  RetryOptions options;
  options.initial_backoff = absl::Milliseconds(10);
  options.multiplier = 3;
  options.max_backoff = absl::Milliseconds(50);
  EXPECT_EQ(BackoffForAttempt(options, 1), absl::Milliseconds(10));
  EXPECT_EQ(BackoffForAttempt(options, 2), absl::Milliseconds(30));
  EXPECT_EQ(BackoffForAttempt(options, 3), absl::Milliseconds(50));
}

TEST(RetryTest, RetriesOnlyUnavailable) {
  RetryOptions options;
  options.initial_backoff = absl::Milliseconds(1);
  options.max_attempts = 5;
  int calls = 0;
  absl::Status s = CallWithRetry(options, Soon(), [&](absl::Time) {
    return ++calls < 3 ? absl::UnavailableError("down") : absl::OkStatus();
  });
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(calls, 3);

  calls = 0;
  s = CallWithRetry(options, Soon(), [&](absl::Time) {
    ++calls;
    return absl::InvalidArgumentError("bad");
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(calls, 1);

  calls = 0;
  s = CallWithRetry(options, Soon(), [&](absl::Time) {
    ++calls;
    return absl::UnavailableError("down");
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(calls, 5);

  // A deadline too close for the next backoff stops early.
  calls = 0;
  options.initial_backoff = absl::Seconds(30);
  options.max_backoff = absl::Seconds(60);
  s = CallWithRetry(options, Soon(), [&](absl::Time) {
    ++calls;
    return absl::UnavailableError("down");
  });
  EXPECT_EQ(calls, 1);
}

TEST(RetryTest, ReachesServerThatStartsLate) {
  // Reserve a port, release it, then bring the server up while the client retries.
  auto probe = GrpcServer::Create(GrpcServerOptions{}, {});
  ASSERT_TRUE((*probe)->Start().ok());
  const int port = (*probe)->port();
  (*probe)->Shutdown(absl::Now());
  probe->reset();

  auto channel = PlainChannel(port);
  GrpcServerOptions options;
  options.port = port;
  auto server = GrpcServer::Create(options, {});
  ASSERT_TRUE(server.ok());
  std::atomic<int> calls{0};
  RetryOptions retry;
  retry.initial_backoff = absl::Milliseconds(20);
  retry.max_attempts = 50;
  absl::Status s = CallWithRetry(retry, Soon(), [&](absl::Time deadline) -> absl::Status {
    if (++calls == 2) {
      absl::Status started = (*server)->Start();
      if (!started.ok()) return started;
    }
    auto health = CheckHealth(channel, "", std::min(deadline, absl::Now() + absl::Seconds(1)));
    return health.status();
  });
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_GE(calls.load(), 2);
}

TEST(MetricsExposerTest, PortZeroServesRegistry) {
  auto registry = std::make_shared<prometheus::Registry>();
  RpcMetrics rpc(*registry, "test");
  rpc.Record("Score", absl::StatusCode::kOk, absl::Milliseconds(3));
  rpc.Record("Score", absl::StatusCode::kInvalidArgument, absl::Milliseconds(1));
  auto exposer = MetricsExposer::Create("127.0.0.1", 0, registry);
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  EXPECT_GT((*exposer)->port(), 0);
  auto body = rlhf::HttpGet("127.0.0.1", (*exposer)->port(), "/metrics", absl::Seconds(5));
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_NE(body->find("rlhf_test_requests_total{code=\"INVALID_ARGUMENT\",method=\"Score\"} 1"),
            std::string::npos)
      << *body;
  EXPECT_NE(body->find("rlhf_test_request_duration_seconds_count{method=\"Score\"} 2"),
            std::string::npos)
      << *body;
}

// Opens a TCP connection to 127.0.0.1:port (blocking), -1 on failure.
int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Issue 23 item 8: idle connections and a slow client (a byte now and then, never a
// whole request) do not hold up a scrape. Before, the single-threaded exposer served
// them one after the other with a 2 s read timeout each (20 s for ten) and forever for
// the slow one, so the scrape below timed out.
TEST(MetricsExposerTest, IdleAndSlowClientsDoNotBlockAScrape) {
  auto registry = std::make_shared<prometheus::Registry>();
  RpcMetrics rpc(*registry, "test");
  rpc.Record("Score", absl::StatusCode::kOk, absl::Milliseconds(3));
  auto exposer = MetricsExposer::Create("127.0.0.1", 0, registry);
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  const int port = (*exposer)->port();
  std::vector<int> idle;
  for (int i = 0; i < 10; ++i) {
    const int fd = Connect(port);
    ASSERT_GE(fd, 0);
    idle.push_back(fd);
  }
  absl::Notification stop;
  std::thread slow([&] {
    const int fd = Connect(port);
    const std::string partial = "GET /metrics HTTP/1.0\r\n";
    for (size_t i = 0; i < partial.size() && !stop.HasBeenNotified(); ++i) {
      if (write(fd, &partial[i], 1) != 1) break;
      stop.WaitForNotificationWithTimeout(absl::Milliseconds(1500));  // drip pacing
    }
    close(fd);
  });
  for (int i = 0; i < 3; ++i) {
    auto body = rlhf::HttpGet("127.0.0.1", port, "/metrics", absl::Seconds(10));
    ASSERT_TRUE(body.ok()) << body.status();
    EXPECT_NE(body->find("rlhf_test_requests_total"), std::string::npos);
  }
  stop.Notify();
  slow.join();
  // The idle connections are closed by the server (their deadline), not kept forever.
  for (int fd : idle) {
    timeval tv{20, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char c;
    EXPECT_EQ(read(fd, &c, 1), 0);
    close(fd);
  }
}

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto certs = rlhf::testing::GenerateTestCerts();
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = new rlhf::testing::TestCerts(*certs);
  }
  static rlhf::testing::TestCerts* certs_;

  std::unique_ptr<GrpcServer> StartServer(bool mutual) {
    GrpcServerOptions options;
    options.tls.cert_file = certs_->server_cert;
    options.tls.key_file = certs_->server_key;
    if (mutual) {
      options.tls.ca_file = certs_->ca_pem;
      options.tls.require_client_cert = true;
    }
    auto server = GrpcServer::Create(options, {});
    EXPECT_TRUE(server.ok()) << server.status();
    EXPECT_TRUE((*server)->Start().ok());
    return *std::move(server);
  }

  absl::StatusOr<HealthStatus> Probe(int port, ClientTlsOptions tls) {
    ChannelOptions options;
    options.target = JoinHostPort("127.0.0.1", port);
    options.tls = tls;
    auto channel = MakeChannel(options);
    if (!channel.ok()) return channel.status();
    return CheckHealth(*channel, "", absl::Now() + absl::Seconds(10));
  }
};
rlhf::testing::TestCerts* TlsTest::certs_ = nullptr;

TEST_F(TlsTest, ServerTls) {
  auto server = StartServer(/*mutual=*/false);
  ClientTlsOptions tls;
  tls.enabled = true;
  tls.ca_file = certs_->ca_pem;
  tls.server_name_override = "localhost";
  auto ok = Probe(server->port(), tls);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, HealthStatus::kServing);
  // A plaintext client cannot talk to a TLS server.
  EXPECT_FALSE(Probe(server->port(), ClientTlsOptions{}).ok());
  // A client that trusts another CA rejects the server.
  tls.ca_file = certs_->other_ca_pem;
  EXPECT_FALSE(Probe(server->port(), tls).ok());
}

TEST_F(TlsTest, MutualTlsNeedsAValidClientCert) {
  auto server = StartServer(/*mutual=*/true);
  ClientTlsOptions tls;
  tls.enabled = true;
  tls.ca_file = certs_->ca_pem;
  tls.server_name_override = "localhost";
  EXPECT_FALSE(Probe(server->port(), tls).ok()) << "no client cert must be rejected";
  tls.cert_file = certs_->other_client_cert;
  tls.key_file = certs_->other_client_key;
  EXPECT_FALSE(Probe(server->port(), tls).ok()) << "cert from another CA must be rejected";
  tls.cert_file = certs_->client_cert;
  tls.key_file = certs_->client_key;
  auto ok = Probe(server->port(), tls);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, HealthStatus::kServing);
}

TEST(GrpcServerTest, MutualTlsWithoutCaIsRejected) {
  auto certs = rlhf::testing::GenerateTestCerts();
  ASSERT_TRUE(certs.ok());
  GrpcServerOptions options;
  options.tls.cert_file = certs->server_cert;
  options.tls.key_file = certs->server_key;
  options.tls.require_client_cert = true;
  auto server = GrpcServer::Create(options, {});
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(server.status().message().find("tls.ca_file"), std::string::npos);
}

}  // namespace
}  // namespace rlhf::services
