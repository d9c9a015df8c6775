#include "tests/services/test_certs.h"

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"

namespace rlhf::testing {

namespace {

absl::Status Run(const std::string& command) {
  const std::string full = absl::StrCat(command, " >/dev/null 2>&1");
  if (std::system(full.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("command failed: ", command));
  }
  return absl::OkStatus();
}

absl::Status MakeCa(const std::string& dir, const std::string& name) {
  return Run(absl::StrCat("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
                          "-nodes -days 2 -subj /CN=", name, " -keyout ", dir, "/", name,
                          ".key -out ", dir, "/", name, ".pem"));
}

absl::Status MakeLeaf(const std::string& dir, const std::string& ca, const std::string& name,
                      const std::string& cn, const std::string& ext) {
  const std::string base = absl::StrCat(dir, "/", name);
  if (auto s = Run(absl::StrCat("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
                                "-nodes -subj /CN=", cn, " -keyout ", base, ".key -out ", base,
                                ".csr"));
      !s.ok()) {
    return s;
  }
  const std::string ext_file = absl::StrCat(base, ".ext");
  if (auto s = Run(absl::StrCat("printf '", ext, "\\n' > ", ext_file)); !s.ok()) return s;
  return Run(absl::StrCat("openssl x509 -req -days 2 -in ", base, ".csr -CA ", dir, "/", ca,
                          ".pem -CAkey ", dir, "/", ca, ".key -CAcreateserial -out ", base,
                          ".pem -extfile ", ext_file));
}

}  // namespace

absl::StatusOr<TestCerts> GenerateTestCerts() {
  TestCerts certs;
  certs.dir = MakeTempDir("rlhf_certs_");
  if (certs.dir.empty()) return absl::InternalError("mkdtemp failed");
  const std::string& d = certs.dir;
  if (auto s = MakeCa(d, "ca"); !s.ok()) return s;
  if (auto s = MakeCa(d, "otherca"); !s.ok()) return s;
  if (auto s = MakeLeaf(d, "ca", "server", "localhost",
                        "subjectAltName=DNS:localhost,IP:127.0.0.1");
      !s.ok()) {
    return s;
  }
  if (auto s = MakeLeaf(d, "ca", "client", "rlhf-client", "extendedKeyUsage=clientAuth");
      !s.ok()) {
    return s;
  }
  if (auto s = MakeLeaf(d, "otherca", "intruder", "intruder", "extendedKeyUsage=clientAuth");
      !s.ok()) {
    return s;
  }
  certs.ca_pem = d + "/ca.pem";
  certs.server_cert = d + "/server.pem";
  certs.server_key = d + "/server.key";
  certs.client_cert = d + "/client.pem";
  certs.client_key = d + "/client.key";
  certs.other_ca_pem = d + "/otherca.pem";
  certs.other_client_cert = d + "/intruder.pem";
  certs.other_client_key = d + "/intruder.key";
  return certs;
}

}  // namespace rlhf::testing
