// The launcher's readiness probe against real servers with real TLS (certificates from
// the openssl CLI, tests/services/test_certs.h): the probe must speak the server's
// security or a TLS job never becomes ready.
#include "tools/launcher/ready.h"

#include <memory>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/time/clock.h"
#include "rlhf/v1/reward.grpc.pb.h"
#include "services/server.h"
#include "tests/services/test_certs.h"

namespace rlhf::launcher {
namespace {

using ::testing::HasSubstr;

class ReadyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto certs = rlhf::testing::GenerateTestCerts();
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = *certs;
    // The process the probe watches: alive throughout (a server in this test process
    // answers the probe).
    ProcessSpec spec;
    spec.name = "stand-in";
    spec.argv = {"/bin/sleep", "1000"};
    auto p = Process::Spawn(spec);
    ASSERT_TRUE(p.ok()) << p.status();
    process_ = std::move(*p);
  }
  void TearDown() override {
    if (process_ != nullptr) process_->Stop(absl::Seconds(1));
  }

  // A mutual-TLS server with a token on 127.0.0.1, like a job's with auto_tls.
  std::unique_ptr<services::GrpcServer> StartMtlsServer() {
    services::GrpcServerOptions o;
    o.name = "mtls";
    o.tls.cert_file = certs_.server_cert;
    o.tls.key_file = certs_.server_key;
    o.tls.ca_file = certs_.ca_pem;
    o.tls.require_client_cert = true;
    o.auth_token = "tok";
    // A sync service (every method UNIMPLEMENTED): a token-protected server has no
    // reflection, and gRPC needs at least one sync service to serve health.
    auto server = services::GrpcServer::Create(o, {&unimplemented_});
    EXPECT_TRUE(server.ok()) << server.status();
    if (!server.ok()) return nullptr;
    EXPECT_TRUE((*server)->Start().ok());
    return std::move(*server);
  }

  absl::Status Probe(int port, const ProbeOptions& probe,
                     absl::Duration wait = absl::Milliseconds(1500)) {
    return WaitForServing("127.0.0.1", port, *process_, absl::Now() + wait, probe);
  }

  rlhf::testing::TestCerts certs_;
  std::unique_ptr<Process> process_;
  rlhf::v1::RewardService::Service unimplemented_;
};

TEST_F(ReadyTest, ProbeWithTheJobsCaAndClientCertSeesServing) {
  auto server = StartMtlsServer();
  ASSERT_NE(server, nullptr);
  ProbeOptions probe;
  probe.tls.enabled = true;
  probe.tls.ca_file = certs_.ca_pem;
  probe.tls.cert_file = certs_.client_cert;
  probe.tls.key_file = certs_.client_key;
  // test_certs' server certificate is checked by its DNS name (as in server_test).
  probe.tls.server_name_override = "localhost";
  const absl::Status s = Probe(server->port(), probe, absl::Seconds(30));
  EXPECT_TRUE(s.ok()) << s;
}

TEST_F(ReadyTest, PlaintextProbeOfATlsServerNeverSeesServing) {
  auto server = StartMtlsServer();
  ASSERT_NE(server, nullptr);
  const absl::Status s = Probe(server->port(), ProbeOptions{});
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("not SERVING in time over plaintext"));
}

TEST_F(ReadyTest, MissingClientCertWrongCaAndForeignClientCertAreRefused) {
  auto server = StartMtlsServer();
  ASSERT_NE(server, nullptr);
  ProbeOptions no_client_cert;
  no_client_cert.tls.enabled = true;
  no_client_cert.tls.ca_file = certs_.ca_pem;
  absl::Status s = Probe(server->port(), no_client_cert);
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("over TLS"));

  ProbeOptions wrong_ca = no_client_cert;
  wrong_ca.tls.ca_file = certs_.other_ca_pem;  // the server's certificate is not from it
  wrong_ca.tls.cert_file = certs_.client_cert;
  wrong_ca.tls.key_file = certs_.client_key;
  s = Probe(server->port(), wrong_ca);
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;

  ProbeOptions foreign = no_client_cert;  // a client certificate of another CA
  foreign.tls.cert_file = certs_.other_client_cert;
  foreign.tls.key_file = certs_.other_client_key;
  s = Probe(server->port(), foreign);
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
}

TEST_F(ReadyTest, UnreadableProbeFilesFailAtOnceNamingThem) {
  ProbeOptions probe;
  probe.tls.enabled = true;
  probe.tls.ca_file = "/nonexistent/ca.pem";
  const absl::Status s = Probe(1, probe, absl::Seconds(60));
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("/nonexistent/ca.pem"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("readiness probe"));
}

TEST_F(ReadyTest, ProbeOptionsFollowTheJobsSecurity) {
  rlhf::v1::SecurityConfig s;
  EXPECT_FALSE(ProbeOptionsFromSecurity(s).tls.enabled);
  s.set_token_file("/t");  // a token alone: plaintext (health is open)
  EXPECT_FALSE(ProbeOptionsFromSecurity(s).tls.enabled);
  s.set_tls_cert(certs_.server_cert);
  s.set_tls_key(certs_.server_key);
  s.set_tls_ca(certs_.ca_pem);
  ProbeOptions p = ProbeOptionsFromSecurity(s);
  EXPECT_TRUE(p.tls.enabled);
  EXPECT_EQ(p.tls.ca_file, certs_.ca_pem);
  EXPECT_EQ(p.tls.cert_file, "");  // server-only TLS: no client certificate
  s.set_require_client_cert(true);
  p = ProbeOptionsFromSecurity(s);
  EXPECT_EQ(p.tls.cert_file, certs_.server_cert);  // what the actors present, too
  s.set_client_cert(certs_.client_cert);
  s.set_client_key(certs_.client_key);
  p = ProbeOptionsFromSecurity(s);
  EXPECT_EQ(p.tls.cert_file, certs_.client_cert);
  EXPECT_EQ(p.tls.key_file, certs_.client_key);
  // And that probe gets through the mutual-TLS server.
  p.tls.server_name_override = "localhost";
  auto server = StartMtlsServer();
  ASSERT_NE(server, nullptr);
  const absl::Status probed = Probe(server->port(), p, absl::Seconds(30));
  EXPECT_TRUE(probed.ok()) << probed;
}

}  // namespace
}  // namespace rlhf::launcher
