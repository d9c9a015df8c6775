// Streaming JSONL readers and writers for the record types of records.h.
//
// Reading streams line by line (memory is one line plus what the caller keeps). Blank
// lines are ignored. A malformed record is an error naming file, 1-based line and field:
//   "data/rank.jsonl:17: field 'ranking': expected array of integers"
// unless JsonlReadOptions::skip_malformed is set, in which case the record is skipped
// and counted in JsonlStats (the first few messages are kept there too).
//
// Deliberate policies (counted in JsonlStats, never silent):
//   - SFT records with an empty response are dropped (`empty_responses`): there is
//     nothing to imitate but EOS, and in practice it is a labelling bug.
//   - Ranked records: K >= 2 responses; ranking must be a permutation of 0..K-1 (see
//     records.h); empty responses are legal (a response can be "nothing" and be ranked);
//     duplicate response texts are legal and their mutual pairs are dropped by
//     ExpandPairs (`duplicate_pairs` counts them).
//   - {"prompt","chosen","rejected"} records are read by ReadPreferenceJsonl as K = 2
//     ranked records (ranking [0, 1]); chosen == rejected is an error.
//   - Over-length sequences are not handled here (no tokenizer): see core/train.
//
// User formats (docs/data.md), each read into the same records as its plain equivalent;
// every prompt string goes through JsonlReadOptions::prompt_template (prompt_template.h),
// Anthropic HH transcripts excepted (they are rendered text already):
//   SFT          {"prompt","response"} | {"messages": [{"role","content"}, ...]} (the final
//                assistant turn is the response)
//   preferences  {"prompt","chosen","rejected"} with strings, or TRL's conversational
//                form: "prompt" a message list, "chosen"/"rejected" one-assistant-message
//                lists, or no "prompt" and two full conversations differing only in the
//                final assistant turn | Anthropic HH {"chosen","rejected"} transcripts
//                (prompt = shared prefix through its last "\n\nAssistant:") |
//                K-ranked {"prompt","responses","ranking"}
//   prompts      {"prompt": str | messages} | {"messages": [...]} (ends with a user turn);
//                optional "reference": str
//   text         {"text"}
//
// Thread-compatible: no shared state.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/data/prompt_template.h"
#include "core/data/records.h"

namespace rlhf {

struct JsonlReadOptions {
  bool skip_malformed = false;  // true: skip and count malformed records instead of failing
  int64_t max_records = -1;     // stop after this many good records; -1 = all
  PromptTemplate prompt_template;  // applied to every prompt read; default = as is
};

struct JsonlStats {
  int64_t lines = 0;            // non-blank lines seen
  int64_t records = 0;          // records delivered
  int64_t malformed = 0;        // skipped under skip_malformed
  int64_t empty_responses = 0;  // SFT records dropped for an empty response
  int64_t duplicate_pairs = 0;  // ranked: pairs of identical responses (dropped by ExpandPairs)
  std::vector<std::string> first_errors;  // up to 5 messages of skipped records
  // Skipped records by reason (the message without its "file:line: " location; at most
  // 16 distinct reasons, the rest counted under "other").
  std::map<std::string, int64_t> skip_reasons;
};

// One line for a file's read: "data/sft.jsonl: 120 records, 3 skipped (2x field
// 'prompt': expected string; 1x invalid JSON), 1 empty response dropped".
std::string FormatJsonlSummary(const std::string& path, const JsonlStats& stats);

// Callbacks receive each record in file order; a non-OK status from the callback stops
// reading and is returned.
absl::Status ForEachSftRecord(const std::string& path, const JsonlReadOptions& options,
                              const std::function<absl::Status(SftRecord)>& fn,
                              JsonlStats* stats = nullptr);
// Ranked records and {"prompt","chosen","rejected"} records (as K = 2), mixed freely.
absl::Status ForEachPreferenceRecord(const std::string& path, const JsonlReadOptions& options,
                                     const std::function<absl::Status(RankedRecord)>& fn,
                                     JsonlStats* stats = nullptr);
absl::Status ForEachPromptRecord(const std::string& path, const JsonlReadOptions& options,
                                 const std::function<absl::Status(PromptRecord)>& fn,
                                 JsonlStats* stats = nullptr);
absl::Status ForEachTextRecord(const std::string& path, const JsonlReadOptions& options,
                               const std::function<absl::Status(TextRecord)>& fn,
                               JsonlStats* stats = nullptr);

// Convenience: collect everything into a vector.
absl::StatusOr<std::vector<SftRecord>> ReadSftJsonl(const std::string& path,
                                                    const JsonlReadOptions& options = {},
                                                    JsonlStats* stats = nullptr);
absl::StatusOr<std::vector<RankedRecord>> ReadPreferenceJsonl(const std::string& path,
                                                              const JsonlReadOptions& options = {},
                                                              JsonlStats* stats = nullptr);
absl::StatusOr<std::vector<PromptRecord>> ReadPromptJsonl(const std::string& path,
                                                          const JsonlReadOptions& options = {},
                                                          JsonlStats* stats = nullptr);
absl::StatusOr<std::vector<TextRecord>> ReadTextJsonl(const std::string& path,
                                                      const JsonlReadOptions& options = {},
                                                      JsonlStats* stats = nullptr);

// Checks that `ranking` is a permutation of 0..k-1; the message says what is wrong
// ("rank 2 appears twice", "rank 7 out of range [0, 4)").
absl::Status ValidateRanking(const std::vector<int>& ranking, int k);

// Streaming writer: one compact JSON object per Write*, to "<path>.tmp", renamed to
// `path` by Close() (a writer destroyed unclosed removes its temporary file).
class JsonlWriter {
 public:
  static absl::StatusOr<std::unique_ptr<JsonlWriter>> Open(const std::string& path);
  ~JsonlWriter();
  absl::Status Write(const SftRecord& r);
  absl::Status Write(const RankedRecord& r);
  absl::Status Write(const PromptRecord& r);
  absl::Status Write(const TextRecord& r);
  absl::Status Close();
  int64_t written() const { return written_; }

 private:
  explicit JsonlWriter(std::string path);
  absl::Status WriteLine(const std::string& line);
  std::string path_, tmp_;
  std::FILE* file_ = nullptr;
  int64_t written_ = 0;
};

// Writers: one compact JSON object per line, replacing the file atomically
// (core/util/file_util.h).
absl::Status WriteSftJsonl(const std::string& path, const std::vector<SftRecord>& records);
absl::Status WriteRankedJsonl(const std::string& path, const std::vector<RankedRecord>& records);
absl::Status WritePairJsonl(const std::string& path, const std::vector<PairRecord>& records);
absl::Status WritePromptJsonl(const std::string& path, const std::vector<PromptRecord>& records);
absl::Status WriteTextJsonl(const std::string& path, const std::vector<TextRecord>& records);

// mkdir -p.
absl::Status MakeDirs(const std::string& dir);

}  // namespace rlhf
