#include "services/metrics.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <prometheus/text_serializer.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/util/file_util.h"
#include "services/server.h"

namespace rlhf::services {

absl::StatusOr<std::unique_ptr<MetricsExposer>> MetricsExposer::Create(
    const std::string& host, int port, std::shared_ptr<prometheus::Registry> registry) {
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics port: ", port, " not in [0, 65535]"));
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* info = nullptr;
  const std::string bare_host =
      (host.size() > 2 && host.front() == '[' && host.back() == ']') ? host.substr(1, host.size() - 2)
                                                                     : host;
  if (int rc = getaddrinfo(bare_host.c_str(), std::to_string(port).c_str(), &hints, &info);
      rc != 0 || info == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics host '", host, "': ", gai_strerror(rc)));
  }
  const int fd = socket(info->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(info);
    return absl::InternalError(absl::StrCat("metrics: socket: ", std::strerror(errno)));
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  const bool bound = bind(fd, info->ai_addr, info->ai_addrlen) == 0 && listen(fd, 64) == 0;
  const int bind_errno = errno;
  freeaddrinfo(info);
  if (!bound) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("metrics: cannot listen on ",
                                               JoinHostPort(host, port), ": ",
                                               std::strerror(bind_errno)));
  }
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int bound_port =
      addr.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port)
                                 : ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  return std::unique_ptr<MetricsExposer>(
      new MetricsExposer(fd, host, bound_port, std::move(registry)));
}

MetricsExposer::MetricsExposer(int fd, std::string host, int port,
                               std::shared_ptr<prometheus::Registry> registry)
    : registry_(std::move(registry)), fd_(fd), host_(std::move(host)), port_(port) {
  thread_ = std::thread([this] { Serve(); });
}

MetricsExposer::~MetricsExposer() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  close(fd_);
}

namespace {

// One scrape connection of the event loop.
struct Conn {
  int fd;
  absl::Time deadline;   // the whole request/response must be done by then
  std::string in, out;   // request read so far; response left to send
  size_t sent = 0;
};

}  // namespace

// One thread, non-blocking sockets, poll(): a slow or idle client holds one slot and
// its own deadline, never the loop, so other scrapes are answered at once. At most
// kMaxConnections are open; more are closed on accept.
void MetricsExposer::Serve() {
  constexpr size_t kMaxConnections = 64;
  constexpr size_t kMaxRequestBytes = 16384;
  const absl::Duration kDeadline = absl::Seconds(2);
  std::vector<Conn> conns;
  // Accept until EAGAIN below: the listening socket must not block.
  fcntl(fd_, F_SETFL, fcntl(fd_, F_GETFL) | O_NONBLOCK);
  while (!stop_) {
    std::vector<pollfd> fds;
    fds.push_back({fd_, POLLIN, 0});
    for (const Conn& c : conns) {
      fds.push_back({c.fd, static_cast<short>(c.out.empty() ? POLLIN : POLLOUT), 0});
    }
    // Wake up regularly to notice stop_ and deadlines.
    const int ready = poll(fds.data(), fds.size(), 100);
    const absl::Time now = absl::Now();
    if (ready > 0 && (fds[0].revents & POLLIN)) {
      for (;;) {
        const int conn = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (conn < 0) break;
        if (conns.size() >= kMaxConnections) {
          close(conn);
          continue;
        }
        conns.push_back(Conn{conn, now + kDeadline, "", ""});
      }
    }
    std::vector<Conn> keep;
    for (size_t i = 0; i < conns.size(); ++i) {
      Conn& c = conns[i];
      const short revents = i + 1 < fds.size() && fds[i + 1].fd == c.fd ? fds[i + 1].revents : 0;
      bool done = now >= c.deadline || (revents & (POLLERR | POLLHUP | POLLNVAL)) != 0;
      if (!done && c.out.empty() && (revents & POLLIN)) {
        char buf[2048];
        const ssize_t n = read(c.fd, buf, sizeof(buf));
        if (n <= 0) {
          done = true;
        } else {
          c.in.append(buf, static_cast<size_t>(n));
          if (c.in.find("\r\n\r\n") != std::string::npos || c.in.size() >= kMaxRequestBytes) {
            c.out = Respond(c.in);
          }
        }
      }
      if (!done && !c.out.empty() && (revents & POLLOUT)) {
        const ssize_t n = send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
        if (n <= 0) {
          done = true;
        } else {
          c.sent += static_cast<size_t>(n);
          done = c.sent >= c.out.size();
        }
      }
      if (done) {
        close(c.fd);
      } else {
        keep.push_back(std::move(c));
      }
    }
    conns = std::move(keep);
  }
  for (const Conn& c : conns) close(c.fd);
}

std::string MetricsExposer::Respond(const std::string& request) const {
  std::string status = "200 OK", body;
  if (request.rfind("GET /metrics", 0) == 0) {
    body = prometheus::TextSerializer().Serialize(registry_->Collect());
  } else {
    status = "404 Not Found";
    body = "try /metrics\n";
  }
  return absl::StrCat("HTTP/1.0 ", status, "\r\nContent-Type: text/plain; version=0.0.4\r\n",
                      "Content-Length: ", body.size(), "\r\nConnection: close\r\n\r\n", body);
}

absl::Status WriteMetricsFile(const prometheus::Registry& registry, const std::string& path) {
  return WriteFileAtomically(path, prometheus::TextSerializer().Serialize(registry.Collect()),
                             kNotDurable);
}

std::string MetricsExposer::url() const {
  return absl::StrCat("http://", JoinHostPort(host_, port_), "/metrics");
}

RpcMetrics::RpcMetrics(prometheus::Registry& registry, const std::string& component)
    : requests_(prometheus::BuildCounter()
                    .Name(absl::StrCat("rlhf_", component, "_requests_total"))
                    .Help("RPCs handled, by method and final status code")
                    .Register(registry)),
      latency_(prometheus::BuildHistogram()
                   .Name(absl::StrCat("rlhf_", component, "_request_duration_seconds"))
                   .Help("RPC latency from arrival to response, seconds")
                   .Register(registry)) {}

void RpcMetrics::Record(const std::string& method, absl::StatusCode code,
                        absl::Duration latency) {
  requests_.Add({{"method", method}, {"code", absl::StatusCodeToString(code)}}).Increment();
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  latency_.Add({{"method", method}}, kBuckets).Observe(absl::ToDoubleSeconds(latency));
}

}  // namespace rlhf::services

namespace rlhf::services {
namespace {

prometheus::Histogram& MakeHistogram(prometheus::Registry& registry, const std::string& name,
                                     const std::string& help,
                                     prometheus::Histogram::BucketBoundaries buckets) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(registry).Add(
      {}, std::move(buckets));
}

}  // namespace

BatchMetrics::BatchMetrics(prometheus::Registry& registry, const std::string& component)
    : batch_size_(MakeHistogram(registry, absl::StrCat("rlhf_", component, "_batch_size"),
                                "Sequences per model forward",
                                {1, 2, 4, 8, 16, 32, 64, 128, 256})),
      padding_(MakeHistogram(registry, absl::StrCat("rlhf_", component, "_batch_padding_ratio"),
                             "Share of padded positions in a forward (0 = no waste)",
                             {0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9})),
      forward_seconds_(MakeHistogram(
          registry, absl::StrCat("rlhf_", component, "_forward_duration_seconds"),
          "Time inside the model per batched forward, seconds",
          {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5})),
      queue_depth_(prometheus::BuildGauge()
                       .Name(absl::StrCat("rlhf_", component, "_queue_depth"))
                       .Help("Sequences waiting for a batch")
                       .Register(registry)
                       .Add({})),
      sequences_(prometheus::BuildCounter()
                     .Name(absl::StrCat("rlhf_", component, "_sequences_total"))
                     .Help("Sequences run through the model")
                     .Register(registry)
                     .Add({})),
      tokens_(prometheus::BuildCounter()
                  .Name(absl::StrCat("rlhf_", component, "_tokens_total"))
                  .Help("Real (unpadded) tokens run through the model")
                  .Register(registry)
                  .Add({})),
      model_info_(prometheus::BuildGauge()
                      .Name(absl::StrCat("rlhf_", component, "_model_info"))
                      .Help("What this server serves (value 1; the labels carry the info)")
                      .Register(registry)) {}

BatcherHooks BatchMetrics::Hooks() {
  BatcherHooks hooks;
  hooks.on_forward = [this](const BatchStats& stats) {
    batch_size_.Observe(stats.sequences);
    padding_.Observe(stats.padding_waste());
    forward_seconds_.Observe(absl::ToDoubleSeconds(stats.forward_time));
    sequences_.Increment(stats.sequences);
    tokens_.Increment(static_cast<double>(stats.real_tokens));
  };
  hooks.on_queue_depth = [this](int64_t depth) { queue_depth_.Set(static_cast<double>(depth)); };
  return hooks;
}

void BatchMetrics::SetModelInfo(const std::map<std::string, std::string>& labels) {
  model_info_.Add(labels).Set(1);
}

}  // namespace rlhf::services
