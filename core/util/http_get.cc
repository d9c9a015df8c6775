#include "core/util/http_get.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace rlhf {
namespace {

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// Waits for `events` on fd until deadline; false on timeout/error.
bool WaitFd(int fd, short events, absl::Time deadline) {
  while (true) {
    const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (ms <= 0) return false;
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, static_cast<int>(ms));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return false;
  }
}

}  // namespace

absl::StatusOr<std::string> HttpGet(const std::string& host, int port, const std::string& path,
                                    absl::Duration timeout) {
  const std::string url = absl::StrCat("http://", host, ":", port, path);
  const absl::Time deadline = absl::Now() + timeout;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string port_str = std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), port_str.c_str(), &hints, &res); rc != 0) {
    return absl::UnavailableError(absl::StrCat(url, ": ", gai_strerror(rc)));
  }
  Fd fd(::socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) {
    ::freeaddrinfo(res);
    return absl::InternalError(absl::StrCat(url, ": socket: ", std::strerror(errno)));
  }
  int rc = ::connect(fd.get(), res->ai_addr, res->ai_addrlen);
  ::freeaddrinfo(res);
  if (rc != 0 && errno != EINPROGRESS) {
    return absl::UnavailableError(absl::StrCat(url, ": connect: ", std::strerror(errno)));
  }
  if (!WaitFd(fd.get(), POLLOUT, deadline)) {
    return absl::DeadlineExceededError(absl::StrCat(url, ": connect timed out"));
  }
  int err = 0;
  socklen_t len = sizeof(err);
  ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) {
    return absl::UnavailableError(absl::StrCat(url, ": connect: ", std::strerror(err)));
  }
  const std::string request = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", host, ":", port,
                                           "\r\nAccept: */*\r\nConnection: close\r\n\r\n");
  size_t sent = 0;
  while (sent < request.size()) {
    if (!WaitFd(fd.get(), POLLOUT, deadline)) {
      return absl::DeadlineExceededError(absl::StrCat(url, ": send timed out"));
    }
    ssize_t n = ::send(fd.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      return absl::UnavailableError(absl::StrCat(url, ": send: ", std::strerror(errno)));
    }
    if (n > 0) sent += n;
  }
  std::string response;
  char buf[16384];
  while (true) {
    if (!WaitFd(fd.get(), POLLIN, deadline)) {
      return absl::DeadlineExceededError(absl::StrCat(url, ": read timed out"));
    }
    ssize_t n = ::recv(fd.get(), buf, sizeof(buf), 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return absl::UnavailableError(absl::StrCat(url, ": read: ", std::strerror(errno)));
    }
    response.append(buf, n);
  }
  const size_t header_end = response.find("\r\n\r\n");
  if (header_end == std::string::npos || !absl::StartsWith(response, "HTTP/")) {
    return absl::InternalError(absl::StrCat(url, ": malformed HTTP response"));
  }
  const size_t sp = response.find(' ');
  int code = 0;
  if (sp == std::string::npos ||
      !absl::SimpleAtoi(absl::string_view(response).substr(sp + 1, 3), &code)) {
    return absl::InternalError(absl::StrCat(url, ": malformed status line"));
  }
  std::string body = response.substr(header_end + 4);
  const std::string headers = absl::AsciiStrToLower(response.substr(0, header_end));
  if (absl::StrContains(headers, "transfer-encoding: chunked")) {
    std::string out;
    size_t pos = 0;
    while (pos < body.size()) {
      size_t eol = body.find("\r\n", pos);
      if (eol == std::string::npos) break;
      size_t chunk = std::strtoul(body.substr(pos, eol - pos).c_str(), nullptr, 16);
      if (chunk == 0) break;
      out.append(body, eol + 2, chunk);
      pos = eol + 2 + chunk + 2;
    }
    body = std::move(out);
  }
  if (code != 200) {
    return absl::UnavailableError(absl::StrCat(url, ": HTTP ", code, ": ", body.substr(0, 300)));
  }
  return body;
}

std::string UrlEncode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppend(&out, "%",
                      absl::AsciiStrToUpper(absl::StrCat(absl::Hex(c, absl::kZeroPad2))));
    }
  }
  return out;
}

}  // namespace rlhf
