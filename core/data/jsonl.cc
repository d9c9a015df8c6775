#include "core/data/jsonl.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "core/util/file_util.h"

namespace rlhf {
namespace {

using nlohmann::json;

// Parses each non-blank line of `path` into a JSON object and hands it to `fn` with its
// location prefix ("path:line"). `fn` returns InvalidArgument for a malformed record
// (skippable) or any other error (fatal).
absl::Status ForEachObject(
    const std::string& path, const JsonlReadOptions& options, JsonlStats* stats,
    const std::function<absl::Status(const json&, const std::string& where, bool* delivered)>&
        fn) {
  JsonlStats local;
  JsonlStats* s = stats != nullptr ? stats : &local;
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    ++s->lines;
    const std::string where = absl::StrCat(path, ":", line_no);
    absl::Status status;
    json obj;
    try {
      obj = json::parse(line);
    } catch (const json::exception& e) {
      status = absl::InvalidArgumentError(absl::StrCat(where, ": invalid JSON: ", e.what()));
    }
    if (status.ok() && !obj.is_object()) {
      status = absl::InvalidArgumentError(absl::StrCat(where, ": expected a JSON object"));
    }
    bool delivered = false;
    if (status.ok()) status = fn(obj, where, &delivered);
    if (!status.ok()) {
      if (status.code() != absl::StatusCode::kInvalidArgument || !options.skip_malformed) {
        return status;
      }
      ++s->malformed;
      if (s->first_errors.size() < 5) s->first_errors.emplace_back(status.message());
      continue;
    }
    if (delivered) {
      ++s->records;
      if (options.max_records >= 0 && s->records >= options.max_records) break;
    }
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return absl::OkStatus();
}

absl::Status FieldError(const std::string& where, absl::string_view field,
                        absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": field '", field, "': ", what));
}

absl::StatusOr<std::string> GetString(const json& obj, const std::string& where,
                                      const char* field) {
  auto it = obj.find(field);
  if (it == obj.end()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": missing field '", field, "'"));
  }
  if (!it->is_string()) return FieldError(where, field, "expected string");
  return it->get<std::string>();
}

absl::Status ParseRanked(const json& obj, const std::string& where, RankedRecord* rec,
                         JsonlStats* stats) {
  RLHF_ASSIGN_OR_RETURN(rec->prompt, GetString(obj, where, "prompt"));
  if (obj.contains("chosen") || obj.contains("rejected")) {
    RLHF_ASSIGN_OR_RETURN(std::string chosen, GetString(obj, where, "chosen"));
    RLHF_ASSIGN_OR_RETURN(std::string rejected, GetString(obj, where, "rejected"));
    if (chosen == rejected) {
      return FieldError(where, "rejected", "identical to 'chosen' (no preference)");
    }
    rec->responses = {std::move(chosen), std::move(rejected)};
    rec->ranking = {0, 1};
    return absl::OkStatus();
  }
  auto responses = obj.find("responses");
  if (responses == obj.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": missing field 'responses' (or 'chosen' and 'rejected')"));
  }
  if (!responses->is_array()) return FieldError(where, "responses", "expected array of strings");
  for (size_t i = 0; i < responses->size(); ++i) {
    if (!(*responses)[i].is_string()) {
      return FieldError(where, absl::StrCat("responses[", i, "]"), "expected string");
    }
    rec->responses.push_back((*responses)[i].get<std::string>());
  }
  const int k = static_cast<int>(rec->responses.size());
  if (k < 2) {
    return FieldError(where, "responses", absl::StrCat("needs at least 2 responses, got ", k));
  }
  auto ranking = obj.find("ranking");
  if (ranking == obj.end()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": missing field 'ranking'"));
  }
  if (!ranking->is_array()) return FieldError(where, "ranking", "expected array of integers");
  for (const json& r : *ranking) {
    if (!r.is_number_integer()) return FieldError(where, "ranking", "expected array of integers");
    rec->ranking.push_back(r.get<int>());
  }
  if (static_cast<int>(rec->ranking.size()) != k) {
    return FieldError(where, "ranking",
                      absl::StrCat("has ", rec->ranking.size(), " entries but 'responses' has ", k));
  }
  absl::Status perm = ValidateRanking(rec->ranking, k);
  if (!perm.ok()) return FieldError(where, "ranking", perm.message());
  if (stats != nullptr) stats->duplicate_pairs += static_cast<int64_t>(k) * (k - 1) / 2 - CountPairs(*rec);
  return absl::OkStatus();
}

absl::Status WriteLines(const std::string& path, const std::vector<json>& lines) {
  std::string text;
  for (const json& j : lines) {
    // Invalid UTF-8 is replaced rather than thrown: model samples can contain any byte.
    absl::StrAppend(&text, j.dump(-1, ' ', false, json::error_handler_t::replace), "\n");
  }
  return WriteFileAtomically(path, text, kNotDurable);
}

template <typename T, typename Fn>
absl::StatusOr<std::vector<T>> Collect(Fn for_each, const std::string& path,
                                       const JsonlReadOptions& options, JsonlStats* stats) {
  std::vector<T> out;
  RLHF_RETURN_IF_ERROR(for_each(
      path, options,
      [&](T rec) {
        out.push_back(std::move(rec));
        return absl::OkStatus();
      },
      stats));
  return out;
}

}  // namespace

std::vector<IndexPair> ExpandPairs(const RankedRecord& record) {
  std::vector<IndexPair> pairs;
  const int k = static_cast<int>(record.responses.size());
  for (int i = 0; i < k; ++i) {
    for (int j = i + 1; j < k; ++j) {
      if (record.responses[i] == record.responses[j]) continue;
      if (record.ranking[i] < record.ranking[j]) {
        pairs.push_back({i, j});
      } else {
        pairs.push_back({j, i});
      }
    }
  }
  return pairs;
}

int64_t CountPairs(const RankedRecord& record) {
  int64_t n = 0;
  const size_t k = record.responses.size();
  for (size_t i = 0; i < k; ++i) {
    for (size_t j = i + 1; j < k; ++j) n += record.responses[i] != record.responses[j];
  }
  return n;
}

absl::Status ValidateRanking(const std::vector<int>& ranking, int k) {
  if (static_cast<int>(ranking.size()) != k) {
    return absl::InvalidArgumentError(
        absl::StrCat("has ", ranking.size(), " entries, expected ", k));
  }
  std::vector<bool> seen(k, false);
  for (int r : ranking) {
    if (r < 0 || r >= k) {
      return absl::InvalidArgumentError(
          absl::StrCat("rank ", r, " out of range [0, ", k, "); ranking[i] is the rank of "
                       "responses[i], 0 = best"));
    }
    if (seen[r]) {
      return absl::InvalidArgumentError(
          absl::StrCat("not a permutation of 0..", k - 1, ": rank ", r, " appears twice"));
    }
    seen[r] = true;
  }
  return absl::OkStatus();
}

absl::Status ForEachSftRecord(const std::string& path, const JsonlReadOptions& options,
                              const std::function<absl::Status(SftRecord)>& fn,
                              JsonlStats* stats) {
  JsonlStats local;
  JsonlStats* s = stats != nullptr ? stats : &local;
  absl::Status callback_status;
  absl::Status st = ForEachObject(
      path, options, s, [&](const json& obj, const std::string& where, bool* delivered) {
        SftRecord rec;
        RLHF_ASSIGN_OR_RETURN(rec.prompt, GetString(obj, where, "prompt"));
        RLHF_ASSIGN_OR_RETURN(rec.response, GetString(obj, where, "response"));
        if (rec.response.empty()) {
          ++s->empty_responses;
          return absl::OkStatus();
        }
        *delivered = true;
        // Callback errors are never "malformed record": make them non-skippable.
        callback_status = fn(std::move(rec));
        return callback_status.ok() ? absl::OkStatus() : absl::AbortedError("callback");
      });
  return callback_status.ok() ? st : callback_status;
}

absl::Status ForEachPreferenceRecord(const std::string& path, const JsonlReadOptions& options,
                                     const std::function<absl::Status(RankedRecord)>& fn,
                                     JsonlStats* stats) {
  JsonlStats local;
  JsonlStats* s = stats != nullptr ? stats : &local;
  absl::Status callback_status;
  absl::Status st = ForEachObject(
      path, options, s, [&](const json& obj, const std::string& where, bool* delivered) {
        RankedRecord rec;
        RLHF_RETURN_IF_ERROR(ParseRanked(obj, where, &rec, s));
        *delivered = true;
        callback_status = fn(std::move(rec));
        return callback_status.ok() ? absl::OkStatus() : absl::AbortedError("callback");
      });
  return callback_status.ok() ? st : callback_status;
}

absl::Status ForEachPromptRecord(const std::string& path, const JsonlReadOptions& options,
                                 const std::function<absl::Status(PromptRecord)>& fn,
                                 JsonlStats* stats) {
  absl::Status callback_status;
  absl::Status st = ForEachObject(
      path, options, stats, [&](const json& obj, const std::string& where, bool* delivered) {
        PromptRecord rec;
        RLHF_ASSIGN_OR_RETURN(rec.prompt, GetString(obj, where, "prompt"));
        *delivered = true;
        callback_status = fn(std::move(rec));
        return callback_status.ok() ? absl::OkStatus() : absl::AbortedError("callback");
      });
  return callback_status.ok() ? st : callback_status;
}

absl::Status ForEachTextRecord(const std::string& path, const JsonlReadOptions& options,
                               const std::function<absl::Status(TextRecord)>& fn,
                               JsonlStats* stats) {
  absl::Status callback_status;
  absl::Status st = ForEachObject(
      path, options, stats, [&](const json& obj, const std::string& where, bool* delivered) {
        TextRecord rec;
        RLHF_ASSIGN_OR_RETURN(rec.text, GetString(obj, where, "text"));
        *delivered = true;
        callback_status = fn(std::move(rec));
        return callback_status.ok() ? absl::OkStatus() : absl::AbortedError("callback");
      });
  return callback_status.ok() ? st : callback_status;
}

absl::StatusOr<std::vector<SftRecord>> ReadSftJsonl(const std::string& path,
                                                    const JsonlReadOptions& options,
                                                    JsonlStats* stats) {
  return Collect<SftRecord>(ForEachSftRecord, path, options, stats);
}
absl::StatusOr<std::vector<RankedRecord>> ReadPreferenceJsonl(const std::string& path,
                                                              const JsonlReadOptions& options,
                                                              JsonlStats* stats) {
  return Collect<RankedRecord>(ForEachPreferenceRecord, path, options, stats);
}
absl::StatusOr<std::vector<PromptRecord>> ReadPromptJsonl(const std::string& path,
                                                          const JsonlReadOptions& options,
                                                          JsonlStats* stats) {
  return Collect<PromptRecord>(ForEachPromptRecord, path, options, stats);
}
absl::StatusOr<std::vector<TextRecord>> ReadTextJsonl(const std::string& path,
                                                      const JsonlReadOptions& options,
                                                      JsonlStats* stats) {
  return Collect<TextRecord>(ForEachTextRecord, path, options, stats);
}

absl::Status WriteSftJsonl(const std::string& path, const std::vector<SftRecord>& records) {
  std::vector<json> lines;
  for (const auto& r : records) lines.push_back({{"prompt", r.prompt}, {"response", r.response}});
  return WriteLines(path, lines);
}
absl::Status WriteRankedJsonl(const std::string& path, const std::vector<RankedRecord>& records) {
  std::vector<json> lines;
  for (const auto& r : records) {
    lines.push_back({{"prompt", r.prompt}, {"responses", r.responses}, {"ranking", r.ranking}});
  }
  return WriteLines(path, lines);
}
absl::Status WritePairJsonl(const std::string& path, const std::vector<PairRecord>& records) {
  std::vector<json> lines;
  for (const auto& r : records) {
    lines.push_back({{"prompt", r.prompt}, {"chosen", r.chosen}, {"rejected", r.rejected}});
  }
  return WriteLines(path, lines);
}
absl::Status WritePromptJsonl(const std::string& path, const std::vector<PromptRecord>& records) {
  std::vector<json> lines;
  for (const auto& r : records) lines.push_back({{"prompt", r.prompt}});
  return WriteLines(path, lines);
}
absl::Status WriteTextJsonl(const std::string& path, const std::vector<TextRecord>& records) {
  std::vector<json> lines;
  for (const auto& r : records) lines.push_back({{"text", r.text}});
  return WriteLines(path, lines);
}

absl::Status MakeDirs(const std::string& dir) {
  std::string prefix;
  for (size_t i = 0; i <= dir.size(); ++i) {
    if (i == dir.size() || dir[i] == '/') {
      prefix = dir.substr(0, i);
      if (prefix.empty()) continue;
      if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
        return absl::InternalError(absl::StrCat("mkdir ", prefix, ": ", std::strerror(errno)));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace rlhf
