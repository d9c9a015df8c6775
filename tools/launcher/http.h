// Minimal loopback HTTP/1.0 GET (the launcher's own reads of /metrics and of
// Prometheus's API; no HTTP client library is in the dependency set), plus a parser
// for the Prometheus text exposition format good enough to read sample values.
//
// Thread-safety: free functions, no shared state.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace rlhf::launcher {

// GET http://host:port/path; returns the body of a 200 response. Other statuses,
// connection errors and timeouts are errors naming the URL.
absl::StatusOr<std::string> HttpGet(const std::string& host, int port, const std::string& path,
                                    absl::Duration timeout);

// "%XX"-escapes everything but unreserved characters (for PromQL in query strings).
std::string UrlEncode(const std::string& s);

struct MetricSample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// Parses the text exposition format (comments skipped). Malformed lines are skipped.
std::vector<MetricSample> ParseMetrics(const std::string& body);

// Sum of the samples named `name` whose labels include every pair of `labels`;
// nullopt if there is none.
std::optional<double> SumMetric(const std::vector<MetricSample>& samples,
                                const std::string& name,
                                const std::map<std::string, std::string>& labels = {});

}  // namespace rlhf::launcher
