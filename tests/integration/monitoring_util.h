// Helpers shared by the monitoring tests: run a command, pull the PromQL expressions
// out of the shipped dashboard and alert rules, and find the metric names a PromQL
// expression refers to.
#pragma once

#include <set>
#include <string>
#include <vector>

namespace rlhf::testing {

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout + stderr
};
// Runs `command` with /bin/sh, feeding `stdin_text` when non-empty.
CommandResult RunShell(const std::string& command, const std::string& stdin_text = "");

std::string SourceDir();  // $RLHF_SOURCE_DIR
std::string BinDir();     // $RLHF_BIN_DIR

// Every "expr" of every panel target of a Grafana dashboard JSON file.
std::vector<std::string> DashboardExpressions(const std::string& path);
// Every "expr" of every rule of a Prometheus rules file.
std::vector<std::string> RuleExpressions(const std::string& path);

// Metric names (rlhf_* and up) referenced by a PromQL expression: strings, label
// matchers and range selectors are skipped, functions and keywords are not names.
std::set<std::string> MetricNamesInPromQL(const std::string& expr);

}  // namespace rlhf::testing
