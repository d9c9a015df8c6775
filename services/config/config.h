// The job configuration loader: one YAML file -> rlhf.v1.JobConfig.
//
//   YAML text --(path-aware walk over the JobConfig descriptor)--> typed JSON
//            --(deep merge over DefaultJobConfig()'s JSON)--> JSON
//            --(JsonStringToMessage)--> JobConfig --(resolve paths, validate)--> result
//
// Merging at the JSON level (not proto MergeFrom) means an explicit `beta: 0` in the
// YAML beats the default 0.05: proto3 cannot tell an explicit zero from "unset".
// Every error names the YAML path of the offending key, and the file line when known:
//
//   job.yaml:12: rl.kl.beta: expected a number, got 'abc'
//   job.yaml:4: rl.klx: unknown field (did you mean 'kl'?)
//   actors.count: must be >= 1, got 0
//
// Defaults live only in DefaultJobConfig(); config.proto's comments document them.
// Placeholders: "<name>" (in run_dir) and "<run_dir>" (in any string) are substituted;
// relative paths are made absolute against LoadOptions::base_dir.
//
// Thread-safety: all functions are pure (no shared state) and may be called from any
// thread.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "rlhf/v1/config.pb.h"

namespace rlhf::config {

struct LoadOptions {
  // Directory that relative paths in the config are resolved against. Empty = the
  // process's current working directory.
  std::string base_dir;
  // When true, a checkpoint or file path the YAML sets explicitly to a place outside
  // the run directory must exist (paths inside it are produced by the pipeline).
  bool check_files = true;
  // "dotted.path=value" overrides applied on top of the file before anything else, the
  // value parsed as YAML (e.g. "rl.steps=10", "sampling.max_new_tokens=32").
  std::vector<std::string> overrides;
};

// The defaults, documented field by field in proto/rlhf/v1/config.proto. Path fields
// still hold their "<run_dir>" placeholders.
rlhf::v1::JobConfig DefaultJobConfig();

// Parses YAML text (source_name is used in messages, e.g. the file name), applies
// overrides and defaults, resolves placeholders and paths, validates.
absl::StatusOr<rlhf::v1::JobConfig> ParseJobConfigYaml(absl::string_view yaml_text,
                                                       absl::string_view source_name,
                                                       const LoadOptions& options);

// Reads `path` and calls ParseJobConfigYaml. An empty path means "defaults only" (plus
// overrides).
absl::StatusOr<rlhf::v1::JobConfig> LoadJobConfig(const std::string& path,
                                                  const LoadOptions& options);

// Range and consistency checks on a resolved config; the message lists every problem,
// one per line, each starting with the field path.
absl::Status ValidateJobConfig(const rlhf::v1::JobConfig& config);

// The config as YAML with every field spelled out (re-loadable by LoadJobConfig).
std::string JobConfigToYaml(const rlhf::v1::JobConfig& config);

// Writes JobConfigToYaml(config) to `path` (atomically: temp file + rename).
absl::Status WriteJobConfig(const rlhf::v1::JobConfig& config, const std::string& path);

}  // namespace rlhf::config
