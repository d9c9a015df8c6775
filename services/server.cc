#include "services/server.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/impl/server_builder_option.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/util/file_util.h"

namespace rlhf::services {

bool IsLoopbackHost(const std::string& host) {
  return host == "localhost" || host == "::1" || host == "[::1]" ||
         absl::StartsWith(host, "127.") || absl::StartsWith(host, "unix:");
}

std::string JoinHostPort(const std::string& host, int port) {
  if (absl::StartsWith(host, "unix:")) return host;
  if (host.find(':') != std::string::npos && !absl::StartsWith(host, "[")) {
    return absl::StrCat("[", host, "]:", port);
  }
  return absl::StrCat(host, ":", port);
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    std::string msg = absl::StrCat("cannot read '", path, "': ", std::strerror(err));
    if (err == EACCES) return absl::PermissionDeniedError(msg);
    return absl::NotFoundError(msg);
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  auto text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  std::string token(absl::StripAsciiWhitespace(*text));
  if (token.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": empty token file"));
  return token;
}

absl::Status WritePortFile(const std::string& path, int port) {
  return WriteFileAtomically(path, absl::StrCat(port, "\n"), kNotDurable);
}

absl::StatusOr<int> MessageBytesFromMiB(int64_t mib, const std::string& flag) {
  constexpr int64_t kMaxMiB = (int64_t{1} << 31) / (1 << 20) - 1;  // 2047: fits an int
  if (mib < 1 || mib > kMaxMiB) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": ", mib, " MiB not in [1, ", kMaxMiB, "] (gRPC sizes are int32)"));
  }
  return static_cast<int>(mib << 20);
}

namespace {

// A file that is not PEM at all gets a message naming it, instead of gRPC's later
// "could not listen".
absl::Status CheckPem(const std::string& pem, const std::string& field, const std::string& path,
                      absl::string_view kind) {
  if (pem.find("-----BEGIN ") == std::string::npos || !absl::StrContains(pem, kind)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", path, " is not a PEM ", kind, " (no '-----BEGIN ...", kind,
                     "-----' block)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Create(
    const GrpcServerOptions& options, std::vector<grpc::Service*> services) {
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("port: ", options.port, " not in [0, 65535]"));
  }
  if (options.max_message_bytes <= 0) {
    return absl::InvalidArgumentError("max_message_bytes: must be > 0");
  }
  // gRPC takes milliseconds as an int: 24 days is below INT_MAX ms.
  for (const auto& [name, value] :
       {std::pair<const char*, absl::Duration>{"max_connection_age", options.max_connection_age},
        {"max_connection_age_grace", options.max_connection_age_grace}}) {
    if (value < absl::ZeroDuration() || value > absl::Hours(24 * 24)) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": ", absl::FormatDuration(value), " not in [0, 24 days]"));
    }
  }
  const bool tls = options.tls.enabled();
  // Off loopback, plaintext is refused with or without a token: a bearer token sent in
  // clear text is readable by anyone on the path, so it protects nothing.
  if (!IsLoopbackHost(options.host) && !tls && !options.allow_insecure) {
    return absl::FailedPreconditionError(absl::StrCat(
        options.name, ": refusing to listen on non-loopback address '", options.host,
        "' without TLS (",
        options.auth_token.empty() ? "anyone on the network could call or impersonate it"
                                   : "the bearer token would cross the network in clear text",
        "); enable TLS with --tls_cert/--tls_key (`rlhf run`: security.auto_tls), or pass "
        "--allow_insecure on a trusted network"));
  }
  std::string cert, key, ca;
  if (tls) {
    if (options.tls.key_file.empty()) {
      return absl::InvalidArgumentError("tls.key_file: required when tls.cert_file is set");
    }
    auto c = ReadFileToString(options.tls.cert_file);
    if (!c.ok()) return c.status();
    auto k = ReadFileToString(options.tls.key_file);
    if (!k.ok()) return k.status();
    cert = *std::move(c);
    key = *std::move(k);
    if (auto st = CheckPem(cert, "tls.cert_file", options.tls.cert_file, "CERTIFICATE"); !st.ok()) {
      return st;
    }
    if (auto st = CheckPem(key, "tls.key_file", options.tls.key_file, "PRIVATE KEY"); !st.ok()) {
      return st;
    }
    if (!options.tls.ca_file.empty()) {
      auto a = ReadFileToString(options.tls.ca_file);
      if (!a.ok()) return a.status();
      ca = *std::move(a);
      if (auto st = CheckPem(ca, "tls.ca_file", options.tls.ca_file, "CERTIFICATE"); !st.ok()) {
        return st;
      }
    }
    if (options.tls.require_client_cert && ca.empty()) {
      return absl::InvalidArgumentError(
          "tls.ca_file: required with require_client_cert (mutual TLS)");
    }
  } else if (options.tls.require_client_cert || !options.tls.key_file.empty()) {
    return absl::InvalidArgumentError("tls.cert_file: required for TLS options");
  }
  return std::unique_ptr<GrpcServer>(new GrpcServer(options, std::move(services),
                                                    std::move(cert), std::move(key),
                                                    std::move(ca)));
}

namespace {

// Drops the (process-wide) reflection plugin from one builder.
class WithoutReflection : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->erase(std::remove_if(plugins->begin(), plugins->end(),
                                  [](const std::unique_ptr<grpc::ServerBuilderPlugin>& p) {
                                    return p->name() == "proto_server_reflection";
                                  }),
                   plugins->end());
  }
};

}  // namespace

GrpcServer::~GrpcServer() { Shutdown(absl::Now()); }

absl::Status GrpcServer::Start() {
  absl::MutexLock lock(&mu_);
  if (server_ != nullptr || shut_down_) {
    return absl::FailedPreconditionError(absl::StrCat(options_.name, ": already started"));
  }
  // Process-wide switches; both must be set before the builder is created.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  std::shared_ptr<grpc::ServerCredentials> creds;
  if (options_.tls.enabled()) {
    grpc::SslServerCredentialsOptions ssl(
        options_.tls.require_client_cert
            ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
            : (ca_pem_.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                               : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY));
    ssl.pem_root_certs = ca_pem_;
    ssl.pem_key_cert_pairs.push_back({key_pem_, cert_pem_});
    creds = grpc::SslServerCredentials(ssl);
  } else {
    creds = grpc::InsecureServerCredentials();
  }

  grpc::ServerBuilder builder;
  if (!options_.auth_token.empty()) {
    // Reflection is a gRPC-internal service our per-call token check cannot guard, and
    // it would describe every method to anyone: a token-protected server omits it.
    builder.SetOption(std::make_unique<WithoutReflection>());
  }
  int bound_port = 0;
  builder.AddListeningPort(JoinHostPort(options_.host, options_.port), creds, &bound_port);
  builder.SetMaxReceiveMessageSize(options_.max_message_bytes);
  builder.SetMaxSendMessageSize(options_.max_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                             static_cast<int>(absl::ToInt64Milliseconds(options_.keepalive_time)));
  builder.AddChannelArgument(
      GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
      static_cast<int>(absl::ToInt64Milliseconds(options_.keepalive_timeout)));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Clients ping at most every keepalive_time; accept that rate without GOAWAY.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             static_cast<int>(absl::ToInt64Milliseconds(options_.keepalive_time) / 2));
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  if (options_.max_connection_age > absl::ZeroDuration()) {
    builder.AddChannelArgument(
        GRPC_ARG_MAX_CONNECTION_AGE_MS,
        static_cast<int>(absl::ToInt64Milliseconds(options_.max_connection_age)));
    builder.AddChannelArgument(
        GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
        static_cast<int>(absl::ToInt64Milliseconds(options_.max_connection_age_grace)));
  }
  // Two servers on one port would silently split traffic; make a taken port an error.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  if (options_.max_threads > 0) {
    grpc::ResourceQuota quota(options_.name);
    quota.SetMaxThreads(options_.max_threads);
    builder.SetResourceQuota(quota);
  }
  for (grpc::Service* service : services_) builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || bound_port == 0) {
    return absl::UnavailableError(absl::StrCat(
        options_.name, ": could not listen on ", JoinHostPort(options_.host, options_.port),
        options_.tls.enabled()
            ? " (the port may be taken, or gRPC rejected the TLS certificate/key: check that "
              "the key belongs to the certificate)"
            : " (is the port taken?)"));
  }
  port_ = bound_port;
  server_ = std::move(server);
  if (auto* health = server_->GetHealthCheckService()) {
    for (const std::string& name : options_.health_service_names) {
      health->SetServingStatus(name, true);
    }
    health->SetServingStatus(true);
  }
  return absl::OkStatus();
}

void GrpcServer::SetServing(bool serving) {
  absl::MutexLock lock(&mu_);
  if (server_ == nullptr || shut_down_) return;
  if (auto* health = server_->GetHealthCheckService()) health->SetServingStatus(serving);
}

void GrpcServer::Shutdown(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  if (server_ == nullptr || shut_down_) return;
  shut_down_ = true;
  if (auto* health = server_->GetHealthCheckService()) health->SetServingStatus(false);
  // Stops accepting; in-flight calls run until the deadline, then are cancelled.
  server_->Shutdown(absl::ToChronoTime(deadline));
  server_->Wait();
}

}  // namespace rlhf::services
