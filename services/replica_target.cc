#include "services/replica_target.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace rlhf::services {
namespace {

struct Resolved {
  bool ipv6 = false;
  std::string address;  // numeric, without brackets
};

absl::StatusOr<Resolved> Resolve(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  const int rc = getaddrinfo(host.c_str(), nullptr, &hints, &result);
  if (rc != 0) return absl::InvalidArgumentError(gai_strerror(rc));
  // Prefer IPv4: "localhost" resolves to both, and one list must be one family.
  const addrinfo* pick = nullptr;
  for (const addrinfo* a = result; a != nullptr; a = a->ai_next) {
    if (a->ai_family == AF_INET) {
      pick = a;
      break;
    }
    if (a->ai_family == AF_INET6 && pick == nullptr) pick = a;
  }
  Resolved out;
  char buf[INET6_ADDRSTRLEN] = {0};
  if (pick != nullptr && pick->ai_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(pick->ai_addr)->sin_addr, buf,
              sizeof(buf));
  } else if (pick != nullptr) {
    out.ipv6 = true;
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(pick->ai_addr)->sin6_addr, buf,
              sizeof(buf));
  }
  freeaddrinfo(result);
  if (pick == nullptr) return absl::InvalidArgumentError("no IPv4 or IPv6 address");
  out.address = buf;
  return out;
}

bool IsGrpcUri(const std::string& target) {
  for (const char* scheme :
       {"ipv4:", "ipv6:", "dns:", "unix:", "unix-abstract:", "vsock:", "xds:", "google-c2p:"}) {
    if (absl::StartsWith(target, scheme)) return true;
  }
  return false;
}

}  // namespace

absl::Status SplitHostPort(const std::string& entry, std::string* host, int* port) {
  size_t colon;
  if (absl::StartsWith(entry, "[")) {
    const size_t close = entry.find(']');
    if (close == std::string::npos || close + 1 >= entry.size() || entry[close + 1] != ':') {
      return absl::InvalidArgumentError("expected [ipv6]:port");
    }
    *host = entry.substr(1, close - 1);
    colon = close + 1;
  } else {
    colon = entry.rfind(':');
    if (colon == std::string::npos || colon == 0 || entry.find(':') != colon) {
      return absl::InvalidArgumentError("expected host:port");
    }
    *host = entry.substr(0, colon);
  }
  if (!absl::SimpleAtoi(entry.substr(colon + 1), port) || *port < 1 || *port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("port '", entry.substr(colon + 1), "' is not in 1..65535"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ReplicaTarget> ParseReplicaTarget(const std::string& target) {
  if (IsGrpcUri(target) || target.find(',') == std::string::npos) {
    return ReplicaTarget{target, ""};
  }
  std::vector<std::string> addresses;
  std::string authority;
  int family = -1;  // 0 = IPv4, 1 = IPv6
  int index = 0;
  for (absl::string_view raw : absl::StrSplit(target, ',')) {
    ++index;
    const std::string entry(absl::StripAsciiWhitespace(raw));
    auto error = [&](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat("replica list '", target, "': entry ", index, " ('", entry, "'): ", what));
    };
    if (entry.empty()) return error("empty entry");
    std::string host;
    int port = 0;
    if (absl::Status s = SplitHostPort(entry, &host, &port); !s.ok()) return error(s.message());
    auto resolved = Resolve(host);
    if (!resolved.ok()) {
      return error(
          absl::StrCat("host '", host, "' does not resolve: ", resolved.status().message()));
    }
    const int this_family = resolved->ipv6 ? 1 : 0;
    if (family >= 0 && this_family != family) {
      return error("mixes IPv4 and IPv6 replicas; give every replica as one family");
    }
    family = this_family;
    if (authority.empty()) authority = entry;
    addresses.push_back(resolved->ipv6 ? absl::StrCat("[", resolved->address, "]:", port)
                                       : absl::StrCat(resolved->address, ":", port));
  }
  return ReplicaTarget{absl::StrCat(family == 1 ? "ipv6:" : "ipv4:", absl::StrJoin(addresses, ",")),
                       authority};
}

}  // namespace rlhf::services
