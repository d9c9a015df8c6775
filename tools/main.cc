// `rlhf <command> [flags]`: the command-line front end. See tools/command.h for how to
// add a subcommand (one line in kCommands below).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "tools/command.h"
#include "tools/data_command.h"
#include "tools/eval_command.h"
#include "tools/export_command.h"
#include "tools/label_command.h"
#include "tools/rl_command.h"
#include "tools/rm_command.h"
#include "tools/run_command.h"
#include "tools/sft_command.h"
#include "tools/tokenize_command.h"

namespace rlhf::tools {
namespace {

// The subcommand registry: one line per subcommand.
constexpr Command kCommands[] = {
    {"data", "generate the built-in alignment task (JSONL files)", RunDataCommand},
    {"sft", "stage 1: supervised fine-tuning on prompt+response demonstrations", RunSftCommand},
    {"label", "stage 2 data: rank the SFT policy's own samples with the gold labeler", RunLabelCommand},
    {"rm", "stage 2: reward model from rankings (all C(K,2) pairs per prompt)", RunRmCommand},
    {"rl", "stage 3 in one process, no network: the job's RL settings (--config JOB.yaml)", RunRlCommand},
    {"eval", "gold score, KL and RM score of a policy on held-out prompts", RunEvalCommand},
    {"export", "write a checkpoint as a HuggingFace model directory (--format hf)", RunExportCommand},
    {"run", "the whole job: data, sft, rm, distributed RL, eval (--config JOB.yaml)", RunRunCommand},
    {"tokenize", "text (lines or JSONL) -> ids with a model's tokenizer (--model DIR; --decode)", RunTokenizeCommand},
};

std::string UsageText() {
  std::string text = "usage: rlhf <command> [flags]   (rlhf <command> --help for flags)\n\ncommands:\n";
  for (const Command& c : kCommands) {
    text += "  ";
    text += c.name;
    text += std::string(8 - std::min<size_t>(7, std::strlen(c.name)), ' ');
    text += c.summary;
    text += "\n";
  }
  return text;
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(UsageText());
  if (argc < 2 || argv[1][0] == '-') {
    if (argc >= 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
      std::fputs(UsageText().c_str(), stdout);
      return 0;
    }
    std::fputs(UsageText().c_str(), stderr);
    return 2;
  }
  const std::string name = argv[1];
  for (const Command& c : kCommands) {
    if (name != c.name) continue;
    // Parse the flags after the subcommand name; argv[0] stays the program name.
    std::vector<char*> rest = {argv[0]};
    for (int i = 2; i < argc; ++i) rest.push_back(argv[i]);
    std::vector<char*> positional = absl::ParseCommandLine(static_cast<int>(rest.size()), rest.data());
    std::vector<std::string> args(positional.begin() + 1, positional.end());
    return c.run(args);
  }
  std::fprintf(stderr, "rlhf: unknown command \"%s\"\n\n%s", name.c_str(), UsageText().c_str());
  return 2;
}

}  // namespace
}  // namespace rlhf::tools

int main(int argc, char** argv) {
  // OpenMP's default ACTIVE wait policy spins between parallel regions; on a busy
  // 2-core machine that burned ~60% of the training time in libgomp (perf). libgomp
  // reads the policy when it is loaded, before main, so set it and re-exec once.
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) {
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    execv("/proc/self/exe", argv);  // returns only on failure: then run as we are
  }
  return rlhf::tools::Main(argc, argv);
}
