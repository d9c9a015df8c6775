#include "tools/launcher/job_tls.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "services/server.h"
#include "tools/launcher/process.h"

namespace rlhf::launcher {
namespace {

namespace fs = std::filesystem;

bool IsWildcard(const std::string& host) {
  return host == "0.0.0.0" || host == "::" || host == "[::]" || host.empty();
}

bool IsIp(const std::string& host) {
  unsigned char buf[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

std::string FindOnPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path != nullptr ? path : "/usr/bin:/bin", ':')) {
    if (dir.empty()) continue;
    const std::string candidate = absl::StrCat(dir, "/", name);
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool Exists(const std::string& path) {
  std::error_code ec;
  return fs::exists(path, ec);
}

// Runs one openssl command with its output in <dir>/openssl.log (the error names it).
absl::Status Openssl(const std::string& openssl, const std::string& dir,
                     std::vector<std::string> args) {
  ProcessSpec spec;
  spec.name = "openssl";
  spec.argv = {openssl};
  for (auto& a : args) spec.argv.push_back(std::move(a));
  spec.log_path = dir + "/openssl.log";
  auto p = Process::Spawn(spec);
  if (!p.ok()) return p.status();
  if (!(*p)->WaitExit(absl::Now() + absl::Seconds(60))) {
    (*p)->Stop(absl::Seconds(1));
    return absl::DeadlineExceededError(absl::StrCat(
        "security.auto_tls: `", absl::StrJoin(spec.argv, " "), "` did not finish in 60 s"));
  }
  if (!(*p)->exited_cleanly()) {
    return absl::InternalError(absl::StrCat("security.auto_tls: `", absl::StrJoin(spec.argv, " "),
                                            "` ", (*p)->DescribeExit(), "; last lines of ",
                                            spec.log_path, ":\n", TailFile(spec.log_path, 10)));
  }
  return absl::OkStatus();
}

absl::Status WritePrivate(const std::string& path, const std::string& contents) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot write '", path, "': ", std::strerror(errno)));
  }
  ::fchmod(fd, 0600);  // an existing file keeps its mode through O_TRUNC
  const bool ok =
      ::write(fd, contents.data(), contents.size()) == static_cast<ssize_t>(contents.size());
  const bool closed = ::close(fd) == 0;
  if (!ok || !closed) {
    return absl::UnavailableError(absl::StrCat("writing '", path, "': ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> RandomToken() {
  std::ifstream in("/dev/urandom", std::ios::binary);
  unsigned char bytes[32];
  if (!in.read(reinterpret_cast<char*>(bytes), sizeof(bytes))) {
    return absl::UnavailableError("security.auto_tls: cannot read /dev/urandom for the token");
  }
  static const char kHex[] = "0123456789abcdef";
  std::string token;
  for (unsigned char b : bytes) {
    token.push_back(kHex[b >> 4]);
    token.push_back(kHex[b & 15]);
  }
  return token;
}

// A leaf certificate signed by the CA: new key + CSR, then x509 -req with `ext`.
absl::Status MakeLeaf(const std::string& openssl, const JobTlsFiles& f, const std::string& base,
                      const std::string& cn, const std::string& ext) {
  const std::string csr = base + ".csr", ext_file = base + ".ext";
  std::error_code ec;
  fs::remove(base + ".pem", ec);  // never left paired with a newer .ext if this fails
  if (absl::Status s = WritePrivate(ext_file, ext); !s.ok()) return s;
  if (absl::Status s =
          Openssl(openssl, f.dir,
                  {"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                   "-nodes", "-subj", "/CN=" + cn, "-keyout", base + ".key", "-out", csr});
      !s.ok()) {
    return s;
  }
  if (absl::Status s = Openssl(openssl, f.dir,
                               {"x509", "-req", "-days", "3650", "-in", csr, "-CA", f.ca_cert,
                                "-CAkey", f.ca_key, "-CAcreateserial", "-CAserial",
                                f.dir + "/ca.srl", "-out", base + ".pem", "-extfile", ext_file});
      !s.ok()) {
    return s;
  }
  ::chmod((base + ".key").c_str(), 0600);
  fs::remove(csr, ec);
  return absl::OkStatus();
}

}  // namespace

bool AutoTlsEnabled(const rlhf::v1::JobConfig& c) {
  if (c.security().has_auto_tls()) return c.security().auto_tls();
  if (!c.security().tls_cert().empty()) return false;
  for (const auto* e :
       {&c.reward_server().endpoint(), &c.reference_server().endpoint(), &c.learner().endpoint()}) {
    if (!services::IsLoopbackHost(e->host())) return true;
  }
  return false;
}

std::vector<std::string> JobTlsNames(const rlhf::v1::JobConfig& c) {
  std::vector<std::string> names;
  auto add = [&](std::string name) {
    if (name.size() > 2 && name.front() == '[' && name.back() == ']') {
      name = name.substr(1, name.size() - 2);
    }
    if (IsWildcard(name)) return;
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  };
  for (const auto* e :
       {&c.reward_server().endpoint(), &c.reference_server().endpoint(), &c.learner().endpoint()}) {
    add(e->host());
    add(e->advertise());
  }
  add("localhost");
  add("127.0.0.1");
  char host[256] = {0};
  if (::gethostname(host, sizeof(host) - 1) == 0) add(host);
  return names;
}

absl::StatusOr<JobTlsFiles> EnsureJobTls(const std::string& dir,
                                         const std::vector<std::string>& names) {
  JobTlsFiles f;
  f.dir = dir;
  f.ca_cert = dir + "/ca.pem";
  f.ca_key = dir + "/ca.key";
  f.server_cert = dir + "/server.pem";
  f.server_key = dir + "/server.key";
  f.client_cert = dir + "/client.pem";
  f.client_key = dir + "/client.key";
  f.token_file = dir + "/token";
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("security.auto_tls: cannot create '", dir, "': ", ec.message()));
  }
  ::chmod(dir.c_str(), 0700);

  const bool have_ca = Exists(f.ca_cert) && Exists(f.ca_key);
  const bool have_server = have_ca && Exists(f.server_cert) && Exists(f.server_key);
  const bool have_client = have_ca && Exists(f.client_cert) && Exists(f.client_key);
  std::vector<std::string> sans;
  for (const std::string& n : names) sans.push_back(absl::StrCat(IsIp(n) ? "IP:" : "DNS:", n));
  const std::string san_line = absl::StrCat("subjectAltName=", absl::StrJoin(sans, ","));
  // The names the current server certificate was issued for (server.ext), so that a
  // changed address list re-issues it.
  const bool server_current =
      have_server && ReadAll(dir + "/server.ext").find(san_line + "\n") == 0;
  if (!have_ca || !server_current || !have_client) {
    const std::string openssl = FindOnPath("openssl");
    if (openssl.empty()) {
      return absl::FailedPreconditionError(
          "security.auto_tls: the `openssl` command is not on PATH (Debian package openssl; "
          "scripts/deps.sh installs it), or set security.auto_tls: false and give "
          "security.tls_cert/tls_key/tls_ca");
    }
    if (!have_ca) {
      // A new CA invalidates every certificate issued before.
      for (const std::string& p : {f.server_cert, f.client_cert}) fs::remove(p, ec);
      if (absl::Status s = Openssl(
              openssl, dir,
              {"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
               "-nodes", "-days", "3650", "-subj", "/CN=rlhf job CA", "-addext",
               "basicConstraints=critical,CA:TRUE", "-addext",
               "keyUsage=critical,keyCertSign,cRLSign", "-keyout", f.ca_key, "-out", f.ca_cert});
          !s.ok()) {
        return s;
      }
      ::chmod(f.ca_key.c_str(), 0600);
    }
    if (!have_ca || !server_current) {
      if (absl::Status s = MakeLeaf(openssl, f, dir + "/server", "rlhf-server",
                                    absl::StrCat(san_line, "\nextendedKeyUsage=serverAuth\n"));
          !s.ok()) {
        return s;
      }
    }
    if (!have_ca || !have_client) {
      if (absl::Status s =
              MakeLeaf(openssl, f, dir + "/client", "rlhf-client", "extendedKeyUsage=clientAuth\n");
          !s.ok()) {
        return s;
      }
    }
  }
  if (!Exists(f.token_file) || ReadAll(f.token_file).empty()) {
    auto token = RandomToken();
    if (!token.ok()) return token.status();
    if (absl::Status s = WritePrivate(f.token_file, *token + "\n"); !s.ok()) return s;
  }
  return f;
}

void UseJobTls(const JobTlsFiles& f, rlhf::v1::SecurityConfig* s) {
  s->set_tls_cert(f.server_cert);
  s->set_tls_key(f.server_key);
  s->set_tls_ca(f.ca_cert);
  s->set_require_client_cert(true);
  s->set_client_cert(f.client_cert);
  s->set_client_key(f.client_key);
  if (s->token_file().empty()) s->set_token_file(f.token_file);
  s->clear_auto_tls();
}

}  // namespace rlhf::launcher
