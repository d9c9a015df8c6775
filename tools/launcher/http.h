// A parser for the Prometheus text exposition format good enough to read sample values;
// HttpGet / UrlEncode (core/util/http_get.h) are re-exported for the launcher's callers.
//
// Thread-safety: free functions, no shared state.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/util/http_get.h"

namespace rlhf::launcher {

using ::rlhf::HttpGet;
using ::rlhf::UrlEncode;

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
