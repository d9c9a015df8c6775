// Monitoring glue for `rlhf run`: the file-based service discovery file listing the
// job's /metrics endpoints, a Prometheus config for the job, and the spec of a real
// Prometheus server (Debian's /usr/bin/prometheus) as a supervised child.
//
// Thread-safety: free functions, no shared state.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tools/launcher/supervisor.h"

namespace rlhf::launcher {

struct ScrapeTarget {
  std::string address;                        // "127.0.0.1:9100"
  std::map<std::string, std::string> labels;  // component, actor_id, ...
};

// A free TCP port on `host` (bound to 0 and released; the caller passes it on at once).
absl::StatusOr<int> PickFreePort(const std::string& host = "127.0.0.1");

// The file_sd JSON Prometheus reads: one group per target, written atomically
// (temp file + rename) so Prometheus never sees a half-written file.
absl::Status WriteFileSd(const std::string& path, const std::vector<ScrapeTarget>& targets);
std::string FileSdJson(const std::vector<ScrapeTarget>& targets);

struct PrometheusJobOptions {
  std::string job_name = "rlhf";
  int scrape_interval_ms = 1000;
  std::string file_sd_path;             // the file WriteFileSd maintains
  std::vector<std::string> rule_files;  // absolute paths
};

// prometheus.yml for the job: global intervals, rule files, one file_sd scrape job.
std::string PrometheusConfigYaml(const PrometheusJobOptions& options);

// The child spec for a Prometheus server listening on 127.0.0.1:port with its TSDB in
// `data_dir`; ready() waits for GET /-/ready == 200. stop_order is the largest (it
// stops last so it sees the job go down).
ChildSpec PrometheusChild(const std::string& binary, const std::string& config_path,
                          const std::string& data_dir, int port, const std::string& log_path,
                          absl::Duration ready_timeout);

}  // namespace rlhf::launcher
