// Minimal HTTP/1.0 GET over TCP (no HTTP client library is in the dependency set): the
// launcher reads /metrics and Prometheus's API with it, tests scrape /metrics.
//
// Thread-safety: free functions, no shared state.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace rlhf {

// GET http://host:port/path; returns the body of a 200 response (chunked transfer
// decoded). Other statuses, connection errors and timeouts are errors naming the URL.
absl::StatusOr<std::string> HttpGet(const std::string& host, int port, const std::string& path,
                                    absl::Duration timeout);

// "%XX"-escapes everything but unreserved characters (for PromQL in query strings).
std::string UrlEncode(const std::string& s);

}  // namespace rlhf
