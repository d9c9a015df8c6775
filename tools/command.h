// The `rlhf` command-line front end: one binary, one subcommand per file
// (tools/<name>_command.{h,cc}), dispatched by tools/main.cc.
//
// ADDING A SUBCOMMAND: write tools/<name>_command.{h,cc} exposing
//   int Run<Name>Command(const std::vector<std::string>& args);
// add one line to kCommands in tools/main.cc, and the .cc to tools/CMakeLists.txt.
//
// Flags are absl flags, parsed once by main.cc before dispatch; a flag may be defined
// in only one file of the binary, so the flags several subcommands share live in
// tools/common_flags.h (--data, --out, --init, --preset, --steps, --batch_size, --lr,
// --seed, --threads, --resume, --heldout, --json_out, --model). Subcommand-specific flags live in
// the subcommand's file; pick names no other subcommand uses.
#pragma once

#include <string>
#include <vector>

namespace rlhf::tools {

// Positional arguments after the subcommand name (flags already parsed).
using CommandFn = int (*)(const std::vector<std::string>& args);

struct Command {
  const char* name;
  const char* summary;
  CommandFn run;
};

}  // namespace rlhf::tools
