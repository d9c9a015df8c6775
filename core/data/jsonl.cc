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

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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
      absl::string_view reason = status.message();
      if (absl::StartsWith(reason, where + ": ")) reason.remove_prefix(where.size() + 2);
      // Parser messages carry byte offsets: one reason for all of them.
      std::string key(absl::StartsWith(reason, "invalid JSON") ? "invalid JSON" : reason);
      if (s->skip_reasons.count(key) == 0 && s->skip_reasons.size() >= 16) key = "other";
      ++s->skip_reasons[key];
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

// A message list: [{"role": str, "content": str}, ...].
absl::StatusOr<std::vector<ChatMessage>> GetMessages(const json& value, const std::string& where,
                                                     const std::string& field) {
  if (!value.is_array()) {
    return FieldError(where, field, "expected array of {\"role\", \"content\"} objects");
  }
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < value.size(); ++i) {
    const json& m = value[i];
    const std::string f = absl::StrCat(field, "[", i, "]");
    if (!m.is_object()) return FieldError(where, f, "expected {\"role\", \"content\"} object");
    auto role = m.find("role");
    auto content = m.find("content");
    if (role == m.end() || !role->is_string()) {
      return FieldError(where, f + ".role", "expected string");
    }
    if (content == m.end() || !content->is_string()) {
      return FieldError(where, f + ".content", "expected string");
    }
    out.push_back({role->get<std::string>(), content->get<std::string>()});
  }
  if (out.empty()) return FieldError(where, field, "empty message list");
  return out;
}

// Re-anchors an error of PromptTemplate's chat rendering ("messages[2]: ...") at the
// record's location and field.
absl::Status ChatError(const std::string& where, const std::string& field,
                       const absl::Status& status) {
  absl::string_view msg = status.message();
  if (absl::StartsWith(msg, "messages")) msg.remove_prefix(8);
  const size_t colon = msg.find(':');
  if (colon == absl::string_view::npos) return FieldError(where, field, msg);
  return FieldError(where, absl::StrCat(field, msg.substr(0, colon)),
                    absl::StripLeadingAsciiWhitespace(msg.substr(colon + 1)));
}

// A prompt given as a string (rendered through the template) or a message list.
absl::StatusOr<std::string> GetPrompt(const json& obj, const std::string& where,
                                      const char* field, const PromptTemplate& tmpl) {
  auto it = obj.find(field);
  if (it == obj.end()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": missing field '", field, "'"));
  }
  if (it->is_string()) return tmpl.Render(it->get<std::string>());
  if (!it->is_array()) return FieldError(where, field, "expected string or message list");
  RLHF_ASSIGN_OR_RETURN(std::vector<ChatMessage> messages, GetMessages(*it, where, field));
  absl::StatusOr<std::string> rendered = tmpl.RenderChatPrompt(messages);
  if (!rendered.ok()) return ChatError(where, field, rendered.status());
  return *rendered;
}

// A response given as a string, or (TRL) a list holding one assistant message.
absl::StatusOr<std::string> GetResponse(const json& obj, const std::string& where,
                                        const char* field) {
  auto it = obj.find(field);
  if (it == obj.end()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": missing field '", field, "'"));
  }
  if (it->is_string()) return it->get<std::string>();
  if (!it->is_array()) return FieldError(where, field, "expected string or message list");
  RLHF_ASSIGN_OR_RETURN(std::vector<ChatMessage> messages, GetMessages(*it, where, field));
  if (messages.size() != 1 || messages[0].role != "assistant") {
    return FieldError(where, field,
                      "with a 'prompt', expected exactly one assistant message");
  }
  return messages[0].content;
}

absl::Status ParseSft(const json& obj, const std::string& where, const PromptTemplate& tmpl,
                      SftRecord* rec) {
  auto messages = obj.find("messages");
  if (messages != obj.end() && !obj.contains("prompt")) {
    RLHF_ASSIGN_OR_RETURN(std::vector<ChatMessage> list, GetMessages(*messages, where, "messages"));
    auto example = tmpl.RenderChatExample(list);
    if (!example.ok()) return ChatError(where, "messages", example.status());
    rec->prompt = std::move(example->first);
    rec->response = std::move(example->second);
    return absl::OkStatus();
  }
  RLHF_ASSIGN_OR_RETURN(rec->prompt, GetPrompt(obj, where, "prompt", tmpl));
  RLHF_ASSIGN_OR_RETURN(rec->response, GetString(obj, where, "response"));
  return absl::OkStatus();
}

absl::Status ParsePromptOnly(const json& obj, const std::string& where,
                             const PromptTemplate& tmpl, PromptRecord* rec) {
  auto messages = obj.find("messages");
  if (messages != obj.end() && !obj.contains("prompt")) {
    RLHF_ASSIGN_OR_RETURN(rec->prompt, GetPrompt(obj, where, "messages", tmpl));
  } else {
    RLHF_ASSIGN_OR_RETURN(rec->prompt, GetPrompt(obj, where, "prompt", tmpl));
  }
  auto ref = obj.find("reference");
  if (ref != obj.end()) {
    if (!ref->is_string()) return FieldError(where, "reference", "expected string");
    rec->reference = ref->get<std::string>();
  }
  return absl::OkStatus();
}

// {"chosen","rejected"} without a prompt: two full conversations (message lists) whose
// shared leading messages are the prompt, or two HH transcripts.
absl::Status ParseImplicitPrompt(const json& obj, const std::string& where,
                                 const PromptTemplate& tmpl, RankedRecord* rec) {
  const json& c = obj["chosen"];
  const json& r = obj["rejected"];
  if (c.is_string() && r.is_string()) {
    auto split = SplitSharedPrompt(c.get<std::string>(), r.get<std::string>());
    if (!split.ok()) return absl::InvalidArgumentError(absl::StrCat(where, ": ", split.status().message()));
    rec->prompt = std::move(split->prompt);
    rec->responses = {std::move(split->chosen), std::move(split->rejected)};
    return absl::OkStatus();
  }
  if (!c.is_array() || !r.is_array()) {
    return FieldError(where, c.is_array() || c.is_string() ? "rejected" : "chosen",
                      "expected both 'chosen' and 'rejected' as strings (HH transcripts) or "
                      "as message lists");
  }
  RLHF_ASSIGN_OR_RETURN(std::vector<ChatMessage> cm, GetMessages(c, where, "chosen"));
  RLHF_ASSIGN_OR_RETURN(std::vector<ChatMessage> rm, GetMessages(r, where, "rejected"));
  if (cm.size() != rm.size() || cm.back().role != "assistant" || rm.back().role != "assistant") {
    return FieldError(where, "rejected",
                      "without a 'prompt', 'chosen' and 'rejected' must be conversations of "
                      "equal length that differ only in their final assistant turn");
  }
  for (size_t i = 0; i + 1 < cm.size(); ++i) {
    if (cm[i].role != rm[i].role || cm[i].content != rm[i].content) {
      return FieldError(where, absl::StrCat("rejected[", i, "]"),
                        "differs from 'chosen' before the final assistant turn");
    }
  }
  auto example = tmpl.RenderChatExample(cm);
  if (!example.ok()) return ChatError(where, "chosen", example.status());
  rec->prompt = std::move(example->first);
  rec->responses = {std::move(example->second), rm.back().content};
  return absl::OkStatus();
}

absl::Status ParseRanked(const json& obj, const std::string& where, const PromptTemplate& tmpl,
                         RankedRecord* rec, JsonlStats* stats) {
  if (!obj.contains("prompt") && (obj.contains("chosen") || obj.contains("rejected"))) {
    if (!obj.contains("chosen") || !obj.contains("rejected")) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": missing field '", obj.contains("chosen") ? "rejected" : "chosen", "'"));
    }
    RLHF_RETURN_IF_ERROR(ParseImplicitPrompt(obj, where, tmpl, rec));
    rec->ranking = {0, 1};
    if (rec->responses[0] == rec->responses[1]) {
      return FieldError(where, "rejected", "identical to 'chosen' (no preference)");
    }
    return absl::OkStatus();
  }
  RLHF_ASSIGN_OR_RETURN(rec->prompt, GetPrompt(obj, where, "prompt", tmpl));
  if (obj.contains("chosen") || obj.contains("rejected")) {
    RLHF_ASSIGN_OR_RETURN(std::string chosen, GetResponse(obj, where, "chosen"));
    RLHF_ASSIGN_OR_RETURN(std::string rejected, GetResponse(obj, where, "rejected"));
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

json ToJson(const SftRecord& r) { return {{"prompt", r.prompt}, {"response", r.response}}; }
json ToJson(const RankedRecord& r) {
  return {{"prompt", r.prompt}, {"responses", r.responses}, {"ranking", r.ranking}};
}
json ToJson(const PromptRecord& r) {
  json j = {{"prompt", r.prompt}};
  if (!r.reference.empty()) j["reference"] = r.reference;
  return j;
}
json ToJson(const TextRecord& r) { return {{"text", r.text}}; }
std::string Dump(const json& j) {
  // Invalid UTF-8 is replaced rather than thrown: model samples can contain any byte.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

absl::Status WriteLines(const std::string& path, const std::vector<json>& lines) {
  std::string text;
  for (const json& j : lines) absl::StrAppend(&text, Dump(j), "\n");
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
        RLHF_RETURN_IF_ERROR(ParseSft(obj, where, options.prompt_template, &rec));
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
        RLHF_RETURN_IF_ERROR(ParseRanked(obj, where, options.prompt_template, &rec, s));
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
        RLHF_RETURN_IF_ERROR(ParsePromptOnly(obj, where, options.prompt_template, &rec));
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
  for (const auto& r : records) lines.push_back(ToJson(r));
  return WriteLines(path, lines);
}
absl::Status WriteTextJsonl(const std::string& path, const std::vector<TextRecord>& records) {
  std::vector<json> lines;
  for (const auto& r : records) lines.push_back({{"text", r.text}});
  return WriteLines(path, lines);
}

std::string FormatJsonlSummary(const std::string& path, const JsonlStats& stats) {
  std::string out = absl::StrCat(path, ": ", stats.records, " records");
  if (stats.malformed > 0) {
    std::vector<std::string> reasons;
    for (const auto& [reason, n] : stats.skip_reasons) reasons.push_back(absl::StrCat(n, "x ", reason));
    absl::StrAppend(&out, ", ", stats.malformed, " skipped (", absl::StrJoin(reasons, "; "), ")");
  }
  if (stats.empty_responses > 0) {
    absl::StrAppend(&out, ", ", stats.empty_responses, " empty response",
                    stats.empty_responses == 1 ? "" : "s", " dropped");
  }
  if (stats.duplicate_pairs > 0) {
    absl::StrAppend(&out, ", ", stats.duplicate_pairs, " pairs of identical responses dropped");
  }
  return out;
}

JsonlWriter::JsonlWriter(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp") {}

JsonlWriter::~JsonlWriter() {
  if (file_ != nullptr) {
    std::fclose(file_);
    std::remove(tmp_.c_str());
  }
}

absl::StatusOr<std::unique_ptr<JsonlWriter>> JsonlWriter::Open(const std::string& path) {
  std::unique_ptr<JsonlWriter> w(new JsonlWriter(path));
  w->file_ = std::fopen(w->tmp_.c_str(), "w");
  if (w->file_ == nullptr) {
    return absl::InternalError(
        absl::StrCat(w->tmp_, ": cannot open for writing: ", std::strerror(errno)));
  }
  return w;
}

absl::Status JsonlWriter::WriteLine(const std::string& line) {
  if (file_ == nullptr) return absl::FailedPreconditionError(absl::StrCat(path_, ": closed"));
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() ||
      std::fputc('\n', file_) == EOF) {
    return absl::DataLossError(absl::StrCat(tmp_, ": write failed: ", std::strerror(errno)));
  }
  ++written_;
  return absl::OkStatus();
}

absl::Status JsonlWriter::Write(const SftRecord& r) { return WriteLine(Dump(ToJson(r))); }
absl::Status JsonlWriter::Write(const RankedRecord& r) { return WriteLine(Dump(ToJson(r))); }
absl::Status JsonlWriter::Write(const PromptRecord& r) { return WriteLine(Dump(ToJson(r))); }
absl::Status JsonlWriter::Write(const TextRecord& r) { return WriteLine(Dump(ToJson(r))); }

absl::Status JsonlWriter::Close() {
  if (file_ == nullptr) return absl::FailedPreconditionError(absl::StrCat(path_, ": closed"));
  const bool ok = std::fflush(file_) == 0;
  std::fclose(file_);
  file_ = nullptr;
  if (!ok) {
    std::remove(tmp_.c_str());
    return absl::DataLossError(absl::StrCat(tmp_, ": write failed"));
  }
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    return absl::InternalError(
        absl::StrCat("rename ", tmp_, " -> ", path_, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
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
