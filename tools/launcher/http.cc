#include "tools/launcher/http.h"

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace rlhf::launcher {

std::vector<MetricSample> ParseMetrics(const std::string& body) {
  std::vector<MetricSample> out;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t eol = body.find('\n', pos);
    if (eol == std::string::npos) eol = body.size();
    absl::string_view line = absl::string_view(body).substr(pos, eol - pos);
    pos = eol + 1;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    MetricSample s;
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    s.name = std::string(line.substr(0, i));
    if (i < line.size() && line[i] == '{') {
      ++i;
      bool ok = true;
      while (i < line.size() && line[i] != '}') {
        size_t eq = line.find('=', i);
        if (eq == absl::string_view::npos || eq + 1 >= line.size() || line[eq + 1] != '"') {
          ok = false;
          break;
        }
        std::string key(absl::StripAsciiWhitespace(line.substr(i, eq - i)));
        std::string value;
        size_t j = eq + 2;
        while (j < line.size() && line[j] != '"') {
          if (line[j] == '\\' && j + 1 < line.size()) {
            ++j;
            value.push_back(line[j] == 'n' ? '\n' : line[j]);
          } else {
            value.push_back(line[j]);
          }
          ++j;
        }
        s.labels[key] = value;
        i = j + 1;
        if (i < line.size() && line[i] == ',') ++i;
      }
      if (!ok || i >= line.size()) continue;
      ++i;  // '}'
    }
    absl::string_view rest = absl::StripAsciiWhitespace(line.substr(i));
    size_t sp = rest.find(' ');  // optional timestamp after the value
    absl::string_view num = rest.substr(0, sp);
    if (num == "+Inf") {
      s.value = std::numeric_limits<double>::infinity();
    } else if (num == "-Inf") {
      s.value = -std::numeric_limits<double>::infinity();
    } else if (num == "NaN") {
      s.value = std::numeric_limits<double>::quiet_NaN();
    } else if (!absl::SimpleAtod(num, &s.value)) {
      continue;
    }
    out.push_back(std::move(s));
  }
  return out;
}

std::optional<double> SumMetric(const std::vector<MetricSample>& samples,
                                const std::string& name,
                                const std::map<std::string, std::string>& labels) {
  std::optional<double> sum;
  for (const auto& s : samples) {
    if (s.name != name) continue;
    bool match = true;
    for (const auto& [k, v] : labels) {
      auto it = s.labels.find(k);
      if (it == s.labels.end() || it->second != v) match = false;
    }
    if (match) sum = sum.value_or(0) + s.value;
  }
  return sum;
}

}  // namespace rlhf::launcher
