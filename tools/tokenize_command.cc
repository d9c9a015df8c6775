#include "tools/tokenize_command.h"

#include <cstdio>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/tokenizer/model_dir.h"
#include "core/tokenizer/tokenizer.h"
#include "tools/common_flags.h"

ABSL_FLAG(bool, decode, false, "tokenize: read JSON arrays of ids, print JSON strings");
ABSL_FLAG(bool, special, false, "tokenize --decode: render special tokens as their text");
ABSL_FLAG(std::string, field, "text", "tokenize: the JSONL field that holds the text");

namespace rlhf::tools {
namespace {

absl::Status LineError(int line_no, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("stdin line ", line_no, ": ", what));
}

absl::Status Tokenize(const Tokenizer& tok) {
  const bool decode = absl::GetFlag(FLAGS_decode);
  const bool special = absl::GetFlag(FLAGS_special);
  const std::string field = absl::GetFlag(FLAGS_field);
  std::string line;
  int line_no = 0;
  while (std::getline(std::cin, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (decode) {
      nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_object() && j.contains("ids")) j = j["ids"];
      if (!j.is_array()) return LineError(line_no, "expected a JSON array of ids");
      std::vector<int32_t> ids;
      for (const auto& v : j) {
        if (!v.is_number_integer()) return LineError(line_no, "ids must be integers");
        const int64_t id = v.get<int64_t>();
        if (id < 0 || id >= tok.vocab_size()) {
          return LineError(line_no, absl::StrCat("id ", id, " is outside the vocabulary [0, ",
                                                 tok.vocab_size(), ")"));
        }
        ids.push_back(static_cast<int32_t>(id));
      }
      const std::string text = special ? tok.DecodeWithSpecial(ids) : tok.Decode(ids);
      // Invalid UTF-8 (a character cut between tokens) is shown as U+FFFD, not an error.
      std::cout << nlohmann::json(text).dump(-1, ' ', false,
                                             nlohmann::json::error_handler_t::replace)
                << "\n";
      continue;
    }
    std::string text = line;
    if (!line.empty() && (line[0] == '{' || line[0] == '"')) {
      nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_string()) {
        text = j.get<std::string>();
      } else if (j.is_object()) {
        if (!j.contains(field) || !j[field].is_string()) {
          return LineError(line_no, absl::StrCat("field \"", field, "\" (string) is missing"));
        }
        text = j[field].get<std::string>();
      }  // anything else: plain text that happens to start with { or "
    }
    std::cout << nlohmann::json(tok.Encode(text)).dump() << "\n";
  }
  return absl::OkStatus();
}

}  // namespace

int RunTokenizeCommand(const std::vector<std::string>& args) {
  if (!args.empty()) {
    return Fail("tokenize", absl::InvalidArgumentError(
                                absl::StrCat("unexpected argument \"", args[0], "\"")));
  }
  const std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) {
    return Fail("tokenize", absl::InvalidArgumentError("--model DIR is required"));
  }
  auto tok = model == "byte" ? MakeTokenizerByName("byte") : LoadTokenizerFromModelDir(model);
  if (!tok.ok()) return Fail("tokenize", tok.status());
  std::fprintf(stderr, "rlhf tokenize: %s tokenizer, vocab %lld, bos %d, eos %d, pad %d\n",
               (*tok)->name().c_str(), static_cast<long long>((*tok)->vocab_size()),
               (*tok)->bos_id(), (*tok)->eos_id(), (*tok)->pad_id());
  std::ios::sync_with_stdio(false);
  absl::Status status = Tokenize(**tok);
  std::cout.flush();
  if (!status.ok()) return Fail("tokenize", status);
  return 0;
}

}  // namespace rlhf::tools
