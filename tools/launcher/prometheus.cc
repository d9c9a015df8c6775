#include "tools/launcher/prometheus.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/util/file_util.h"
#include "tools/launcher/http.h"

namespace rlhf::launcher {

absl::StatusOr<int> PickFreePort(const std::string& host) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  if (::inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host.c_str(), &addr.sin_addr) !=
      1) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("not an IPv4 address: ", host));
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("bind ", host, ":0: ", std::strerror(err)));
  }
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return static_cast<int>(ntohs(addr.sin_port));
}

std::string FileSdJson(const std::vector<ScrapeTarget>& targets) {
  nlohmann::json groups = nlohmann::json::array();
  for (const auto& t : targets) {
    nlohmann::json g;
    g["targets"] = {t.address};
    g["labels"] = nlohmann::json::object();
    for (const auto& [k, v] : t.labels) g["labels"][k] = v;
    groups.push_back(std::move(g));
  }
  return groups.dump(2) + "\n";
}

absl::Status WriteFileSd(const std::string& path, const std::vector<ScrapeTarget>& targets) {
  return WriteFileAtomically(path, FileSdJson(targets), kNotDurable);
}

std::string PrometheusConfigYaml(const PrometheusJobOptions& o) {
  const double interval_s = o.scrape_interval_ms / 1000.0;
  std::string out = absl::StrCat(
      "# Written by `rlhf run` for this job; see deploy/prometheus/ for the shipped files.\n",
      "global:\n", "  scrape_interval: ", o.scrape_interval_ms, "ms\n",
      "  scrape_timeout: ", std::max(100, o.scrape_interval_ms * 9 / 10), "ms\n",
      "  evaluation_interval: ", o.scrape_interval_ms, "ms\n");
  (void)interval_s;
  if (!o.rule_files.empty()) {
    absl::StrAppend(&out, "rule_files:\n");
    for (const auto& r : o.rule_files) absl::StrAppend(&out, "  - \"", r, "\"\n");
  }
  absl::StrAppend(&out, "scrape_configs:\n", "  - job_name: ", o.job_name, "\n",
                  "    file_sd_configs:\n", "      - files: [\"", o.file_sd_path, "\"]\n",
                  "        refresh_interval: 1s\n");
  return out;
}

ChildSpec PrometheusChild(const std::string& binary, const std::string& config_path,
                          const std::string& data_dir, int port, const std::string& log_path,
                          absl::Duration ready_timeout) {
  ChildSpec spec;
  spec.process.name = "prometheus";
  spec.process.argv = {binary,
                       absl::StrCat("--config.file=", config_path),
                       absl::StrCat("--storage.tsdb.path=", data_dir),
                       absl::StrCat("--web.listen-address=127.0.0.1:", port),
                       "--storage.tsdb.retention.time=7d",
                       "--log.level=warn"};
  spec.process.log_path = log_path;
  spec.component = "prometheus";
  spec.stop_order = 100;
  spec.critical = false;
  spec.max_restarts = 1;
  spec.ready = [port, ready_timeout](Process& p) -> absl::Status {
    const absl::Time deadline = absl::Now() + ready_timeout;
    std::string last;
    while (true) {
      auto r = HttpGet("127.0.0.1", port, "/-/ready", absl::Seconds(2));
      if (r.ok()) return absl::OkStatus();
      last = std::string(r.status().message());
      if (!p.Poll()) {
        return absl::FailedPreconditionError(
            absl::StrCat("prometheus ", p.DescribeExit(), "; last lines of ",
                         p.spec().log_path, ":\n", TailFile(p.spec().log_path, 15)));
      }
      if (absl::Now() >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat("prometheus not ready: ", last));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  };
  return spec;
}

}  // namespace rlhf::launcher
