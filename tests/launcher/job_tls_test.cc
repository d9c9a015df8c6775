// security.auto_tls: the per-job CA, certificates and token that `rlhf run` makes,
// checked with the openssl CLI (an independent reader of the certificates) and by real
// gRPC servers and clients using them.
#include "tools/launcher/job_tls.h"

#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "rlhf/v1/reward.grpc.pb.h"
#include "services/channel.h"
#include "services/health.h"
#include "services/server.h"
#include "tests/services/test_certs.h"
#include "tests/testing/temp_dir.h"

namespace rlhf::launcher {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// stdout of a shell command (openssl), "" on failure.
std::string Shell(const std::string& command) {
  std::string out;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  ::pclose(p);
  return out;
}

unsigned Mode(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 0777;
}

class JobTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = rlhf::testing::MakeTempDir("rlhf_job_tls_");
    ASSERT_FALSE(root_.empty());
    dir_ = root_ + "/run/tls";
  }
  void TearDown() override { fs::remove_all(root_); }
  std::string root_, dir_;
};

TEST_F(JobTlsTest, MakesACaServerAndClientCertificatesAndAPrivateToken) {
  auto f = EnsureJobTls(dir_, {"10.213.0.1", "learner.example", "localhost", "127.0.0.1"});
  ASSERT_TRUE(f.ok()) << f.status();
  const std::string server = Shell("openssl x509 -noout -text -in " + f->server_cert);
  EXPECT_THAT(server, HasSubstr("IP Address:10.213.0.1"));
  EXPECT_THAT(server, HasSubstr("DNS:learner.example"));
  EXPECT_THAT(server, HasSubstr("DNS:localhost"));
  EXPECT_THAT(server, HasSubstr("IP Address:127.0.0.1"));
  EXPECT_THAT(server, HasSubstr("TLS Web Server Authentication"));
  EXPECT_THAT(server, HasSubstr("Issuer: CN = rlhf job CA"));
  const std::string client = Shell("openssl x509 -noout -text -in " + f->client_cert);
  EXPECT_THAT(client, HasSubstr("TLS Web Client Authentication"));
  EXPECT_THAT(client, Not(HasSubstr("Subject Alternative Name")));
  EXPECT_THAT(Shell("openssl x509 -noout -text -in " + f->ca_cert), HasSubstr("CA:TRUE"));
  // Both leaves chain to the job's CA (openssl's own verifier).
  EXPECT_THAT(Shell(absl::StrCat("openssl verify -CAfile ", f->ca_cert, " ", f->server_cert, " ",
                                 f->client_cert)),
              HasSubstr(f->client_cert + ": OK"));
  EXPECT_THAT(Shell(absl::StrCat("openssl verify -CAfile ", f->ca_cert, " ", f->server_cert)),
              HasSubstr(f->server_cert + ": OK"));
  // Token: 32 random bytes in hex, readable only by the owner; keys likewise.
  const std::string token = ReadAll(f->token_file);
  ASSERT_EQ(token.size(), 65u) << token;
  EXPECT_EQ(token.find_first_not_of("0123456789abcdef"), 64u);
  EXPECT_EQ(Mode(f->token_file), 0600u);
  EXPECT_EQ(Mode(f->ca_key), 0600u);
  EXPECT_EQ(Mode(f->server_key), 0600u);
  EXPECT_EQ(Mode(f->client_key), 0600u);
  EXPECT_EQ(Mode(dir_), 0700u);
}

TEST_F(JobTlsTest, ReusedOnResumeAndTheServerCertReissuedWhenNamesChange) {
  auto a = EnsureJobTls(dir_, {"10.213.0.1", "localhost", "127.0.0.1"});
  ASSERT_TRUE(a.ok()) << a.status();
  const std::string ca = ReadAll(a->ca_cert), server = ReadAll(a->server_cert),
                    client = ReadAll(a->client_cert), token = ReadAll(a->token_file);
  auto b = EnsureJobTls(dir_, {"10.213.0.1", "localhost", "127.0.0.1"});
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(ReadAll(b->ca_cert), ca);
  EXPECT_EQ(ReadAll(b->server_cert), server);
  EXPECT_EQ(ReadAll(b->client_cert), client);
  EXPECT_EQ(ReadAll(b->token_file), token);
  auto c = EnsureJobTls(dir_, {"10.213.0.9", "localhost", "127.0.0.1"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(ReadAll(c->ca_cert), ca);
  EXPECT_EQ(ReadAll(c->client_cert), client);
  EXPECT_EQ(ReadAll(c->token_file), token);
  EXPECT_NE(ReadAll(c->server_cert), server);
  const std::string text = Shell("openssl x509 -noout -text -in " + c->server_cert);
  EXPECT_THAT(text, HasSubstr("IP Address:10.213.0.9"));
  EXPECT_THAT(text, Not(HasSubstr("IP Address:10.213.0.1")));
}

TEST_F(JobTlsTest, ServersAcceptTheJobsClientAndRefuseOthers) {
  auto f = EnsureJobTls(dir_, {"localhost", "127.0.0.1"});
  ASSERT_TRUE(f.ok()) << f.status();
  rlhf::v1::SecurityConfig sec;
  UseJobTls(*f, &sec);
  services::GrpcServerOptions o;
  o.tls.cert_file = sec.tls_cert();
  o.tls.key_file = sec.tls_key();
  o.tls.ca_file = sec.tls_ca();
  o.tls.require_client_cert = sec.require_client_cert();
  auto token = services::ReadTokenFile(sec.token_file());
  ASSERT_TRUE(token.ok()) << token.status();
  o.auth_token = *token;
  // A sync service (every method UNIMPLEMENTED): a token-protected server has no
  // reflection, and gRPC needs at least one sync service to serve health.
  rlhf::v1::RewardService::Service unimplemented;
  auto server = services::GrpcServer::Create(o, {&unimplemented});
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE((*server)->Start().ok());
  auto health = [&](const services::ClientTlsOptions& tls, absl::Duration wait) {
    services::ChannelOptions co;
    co.target = services::JoinHostPort("127.0.0.1", (*server)->port());
    co.tls = tls;
    auto channel = services::MakeChannel(co);
    EXPECT_TRUE(channel.ok()) << channel.status();
    return services::CheckHealth(*channel, "", absl::Now() + wait);
  };
  services::ClientTlsOptions job;
  job.enabled = true;
  job.ca_file = sec.tls_ca();
  job.cert_file = sec.client_cert();
  job.key_file = sec.client_key();
  auto ok = health(job, absl::Seconds(30));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, services::HealthStatus::kServing);

  auto certs = rlhf::testing::GenerateTestCerts();
  ASSERT_TRUE(certs.ok()) << certs.status();
  services::ClientTlsOptions no_cert = job;  // the right CA, no client certificate
  no_cert.cert_file.clear();
  no_cert.key_file.clear();
  auto refused = health(no_cert, absl::Seconds(2));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable) << refused.status();
  std::printf("no client certificate: %s\n", refused.status().ToString().c_str());
  services::ClientTlsOptions wrong_ca = job;  // the server's certificate is not from it
  wrong_ca.ca_file = certs->ca_pem;
  refused = health(wrong_ca, absl::Seconds(2));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable) << refused.status();
  std::printf("wrong CA: %s\n", refused.status().ToString().c_str());
  services::ClientTlsOptions foreign = job;  // a client certificate of another CA
  foreign.cert_file = certs->client_cert;
  foreign.key_file = certs->client_key;
  refused = health(foreign, absl::Seconds(2));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable) << refused.status();
  (*server)->Shutdown(absl::Now());
}

TEST(JobTlsConfigTest, EnabledByDefaultOffLoopbackOnly) {
  rlhf::v1::JobConfig c;
  for (auto* e : {c.mutable_reward_server()->mutable_endpoint(),
                  c.mutable_reference_server()->mutable_endpoint(),
                  c.mutable_learner()->mutable_endpoint()}) {
    e->set_host("127.0.0.1");
  }
  EXPECT_FALSE(AutoTlsEnabled(c));
  c.mutable_learner()->mutable_endpoint()->set_host("0.0.0.0");
  EXPECT_TRUE(AutoTlsEnabled(c));
  c.mutable_security()->set_tls_cert("/given.pem");  // given certificates win
  EXPECT_FALSE(AutoTlsEnabled(c));
  c.mutable_security()->clear_tls_cert();
  c.mutable_security()->set_auto_tls(false);
  EXPECT_FALSE(AutoTlsEnabled(c));
  c.mutable_learner()->mutable_endpoint()->set_host("127.0.0.1");
  c.mutable_security()->set_auto_tls(true);
  EXPECT_TRUE(AutoTlsEnabled(c));
}

TEST(JobTlsConfigTest, NamesAreEveryHostAndAdvertisedAddressWithoutWildcards) {
  rlhf::v1::JobConfig c;
  c.mutable_reward_server()->mutable_endpoint()->set_host("10.213.0.2");
  c.mutable_reference_server()->mutable_endpoint()->set_host("0.0.0.0");
  c.mutable_reference_server()->mutable_endpoint()->set_advertise("ref.example");
  c.mutable_learner()->mutable_endpoint()->set_host("10.213.0.2");
  c.mutable_learner()->mutable_endpoint()->set_advertise("[fd00::2]");
  const std::vector<std::string> names = JobTlsNames(c);
  ASSERT_GE(names.size(), 5u);
  EXPECT_THAT(std::vector<std::string>(names.begin(), names.begin() + 5),
              ElementsAre("10.213.0.2", "ref.example", "fd00::2", "localhost", "127.0.0.1"));
  EXPECT_THAT(names, Not(::testing::Contains("0.0.0.0")));
}

TEST(JobTlsConfigTest, UseJobTlsWiresEveryFieldAndKeepsAGivenToken) {
  JobTlsFiles f{"/r/tls",
                "/r/tls/ca.pem",
                "/r/tls/ca.key",
                "/r/tls/server.pem",
                "/r/tls/server.key",
                "/r/tls/client.pem",
                "/r/tls/client.key",
                "/r/tls/token"};
  rlhf::v1::SecurityConfig s;
  s.set_auto_tls(true);
  UseJobTls(f, &s);
  EXPECT_EQ(s.tls_cert(), "/r/tls/server.pem");
  EXPECT_EQ(s.tls_key(), "/r/tls/server.key");
  EXPECT_EQ(s.tls_ca(), "/r/tls/ca.pem");
  EXPECT_TRUE(s.require_client_cert());
  EXPECT_EQ(s.client_cert(), "/r/tls/client.pem");
  EXPECT_EQ(s.client_key(), "/r/tls/client.key");
  EXPECT_EQ(s.token_file(), "/r/tls/token");
  EXPECT_FALSE(s.has_auto_tls());
  rlhf::v1::SecurityConfig given;
  given.set_token_file("/mine");
  UseJobTls(f, &given);
  EXPECT_EQ(given.token_file(), "/mine");
}

}  // namespace
}  // namespace rlhf::launcher
