// Test-only PKI: a throwaway CA, a server certificate for localhost/127.0.0.1 and a
// client certificate, generated with the openssl CLI into a fresh temporary directory.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "tests/testing/temp_dir.h"  // MakeTempDir, used with the certs

namespace rlhf::testing {

struct TestCerts {
  std::string dir;
  std::string ca_pem, server_cert, server_key, client_cert, client_key;  // file paths
  std::string other_ca_pem;  // a second, unrelated CA (its certs must be rejected)
  std::string other_client_cert, other_client_key;  // signed by other_ca
};

absl::StatusOr<TestCerts> GenerateTestCerts();

}  // namespace rlhf::testing
