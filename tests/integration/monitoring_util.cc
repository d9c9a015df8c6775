#include "tests/integration/monitoring_util.h"

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "absl/strings/ascii.h"

namespace rlhf::testing {

CommandResult RunShell(const std::string& command, const std::string& stdin_text) {
  CommandResult r;
  std::string cmd = command + " 2>&1";
  std::string input_file;
  if (!stdin_text.empty()) {
    char tmpl[] = "/tmp/rlhf_stdin_XXXXXX";
    int fd = mkstemp(tmpl);
    if (fd >= 0) {
      FILE* f = fdopen(fd, "w");
      std::fwrite(stdin_text.data(), 1, stdin_text.size(), f);
      std::fclose(f);
      input_file = tmpl;
      cmd = command + " < " + input_file + " 2>&1";
    }
  }
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, n);
  int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (!input_file.empty()) std::remove(input_file.c_str());
  return r;
}

std::string SourceDir() {
  const char* s = std::getenv("RLHF_SOURCE_DIR");
  return s != nullptr ? s : ".";
}

std::string BinDir() {
  const char* s = std::getenv("RLHF_BIN_DIR");
  return s != nullptr ? s : "bin";
}

std::vector<std::string> DashboardExpressions(const std::string& path) {
  std::ifstream in(path);
  nlohmann::json d = nlohmann::json::parse(in, nullptr, false);
  std::vector<std::string> out;
  if (d.is_discarded()) return out;
  for (const auto& panel : d.value("panels", nlohmann::json::array())) {
    for (const auto& t : panel.value("targets", nlohmann::json::array())) {
      if (t.contains("expr")) out.push_back(t["expr"].get<std::string>());
    }
  }
  return out;
}

std::vector<std::string> RuleExpressions(const std::string& path) {
  std::vector<std::string> out;
  YAML::Node root = YAML::LoadFile(path);
  for (const auto& group : root["groups"]) {
    for (const auto& rule : group["rules"]) out.push_back(rule["expr"].as<std::string>());
  }
  return out;
}

std::set<std::string> MetricNamesInPromQL(const std::string& expr) {
  // Blank out strings, {label matchers} and [ranges]; what remains are identifiers,
  // numbers and operators.
  std::string s = expr;
  int depth_brace = 0, depth_bracket = 0;
  bool in_string = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (in_string) {
      if (c == '\\') {
        s[i] = ' ';
        if (i + 1 < s.size()) s[++i] = ' ';
        continue;
      }
      if (c == '"') in_string = false;
      s[i] = ' ';
      continue;
    }
    if (c == '"') {
      in_string = true;
      s[i] = ' ';
    } else if (c == '{') {
      ++depth_brace;
      s[i] = ' ';
    } else if (c == '}') {
      --depth_brace;
      s[i] = ' ';
    } else if (c == '[') {
      ++depth_bracket;
      s[i] = ' ';
    } else if (c == ']') {
      --depth_bracket;
      s[i] = ' ';
    } else if (depth_brace > 0 || depth_bracket > 0) {
      s[i] = ' ';
    }
  }
  // Identifiers inside "by (...)" / "without (...)" / "on (...)" are labels.
  std::set<std::string> names;
  size_t i = 0;
  bool label_list = false;
  std::string prev;
  while (i < s.size()) {
    const char c = s[i];
    if (absl::ascii_isalpha(c) || c == '_' || c == ':') {
      size_t j = i;
      while (j < s.size() && (absl::ascii_isalnum(s[j]) || s[j] == '_' || s[j] == ':')) ++j;
      std::string word = s.substr(i, j - i);
      size_t k = j;
      while (k < s.size() && s[k] == ' ') ++k;
      const bool is_call = k < s.size() && s[k] == '(';
      if (!label_list && !is_call &&
          (word.rfind("rlhf_", 0) == 0 || word == "up")) {
        names.insert(word);
      }
      if (word == "by" || word == "without" || word == "on" || word == "ignoring" ||
          word == "group_left" || word == "group_right") {
        label_list = true;
      }
      prev = word;
      i = j;
      continue;
    }
    if (c == ')') label_list = false;
    ++i;
  }
  return names;
}

}  // namespace rlhf::testing
