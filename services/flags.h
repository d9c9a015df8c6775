// Command-line parsing for the server binaries (rlhf-learner, rlhf-actor,
// rlhf-reward-server, rlhf-reference-server): absl flags plus a useful --help.
//
//   int main(int argc, char** argv) {
//     rlhf::services::ParseServerFlags(argc, argv, "rlhf-learner: the LearnerService ...");
//
// absl's --help lists only flags defined in a file named like the program; ours live in
// main.cc, so --help printed nothing but "No modules matched". Here every flag outside
// Abseil is listed, after the usage text. Header-only; call once, first thing in main.
#pragma once

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace rlhf::services {

inline void ParseServerFlags(int argc, char** argv, absl::string_view usage) {
  absl::SetProgramUsageMessage(usage);
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [](absl::string_view file) {
    return !absl::StrContains(file, "absl/");
  };
  config.contains_helpshort_flags = config.contains_help_flags;
  absl::SetFlagsUsageConfig(config);
  absl::ParseCommandLine(argc, argv);
}

}  // namespace rlhf::services
