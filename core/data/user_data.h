// A user's own task: their JSONL files (any format jsonl.h reads) turned into the
// pipeline's canonical data directory, so every stage reads the same records:
//
//   sft.jsonl, sft_heldout.jsonl     from `sft`          ({"prompt","response"})
//   rank.jsonl, rank_heldout.jsonl   from `preferences`  ({"prompt","responses","ranking"})
//   rl_train.jsonl, rl_heldout.jsonl from `prompts`      ({"prompt"[, "reference"]})
//   pretrain.jsonl                   from `pretrain`     ({"text"})
//
// Prompts are rendered through the prompt template here, once (prompt_template.h); the
// canonical files hold model-ready prompt text, so later stages read them as they are.
// Each source is a list of files or directories (a directory means its *.jsonl files in
// name order). Held-out records come from the source's `heldout` files when given,
// otherwise a seeded `heldout_fraction` of the training files is carved off BY PROMPT
// TEXT (a hash of seed and prompt; the same prompt always lands on the same side, and
// the split of a record does not depend on the others, so reading streams).
//
// Reading and writing stream record by record. Every file read gets a summary line
// (FormatJsonlSummary). Thread-compatible.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/data/prompt_template.h"

namespace rlhf {

struct DataSource {
  std::vector<std::string> files;          // files or directories; empty = no such data
  std::vector<std::string> heldout_files;  // empty = carve off heldout_fraction
};

struct UserDataOptions {
  DataSource sft, preferences, prompts, pretrain;  // prompts is required
  double heldout_fraction = 0.1;  // (0, 1): of the prompts, when no heldout files
  uint64_t seed = 1;
  PromptTemplate prompt_template;
  bool skip_malformed = false;    // skip and count malformed records instead of failing
  std::string out_dir;            // created if missing
};

struct UserDataReport {
  std::vector<std::string> summaries;  // one line per file read
  int64_t sft = 0, sft_heldout = 0, rank = 0, rank_heldout = 0, rl_train = 0,
          rl_heldout = 0, pretrain = 0;  // records written
};

// InvalidArgument naming the option for bad options, no prompts, or an empty held-out
// set of a given source; the file errors of jsonl.h otherwise. Nothing is renamed into
// out_dir unless every output was written.
absl::StatusOr<UserDataReport> MaterializeUserData(const UserDataOptions& options);

// Expands files and directories (their *.jsonl, sorted) into file paths; NotFound for a
// missing path, InvalidArgument for a directory without *.jsonl files.
absl::StatusOr<std::vector<std::string>> ExpandDataPaths(const std::vector<std::string>& paths);

// Whether a record with this prompt text goes to the held-out side.
bool InHeldoutSplit(absl::string_view prompt, uint64_t seed, double fraction);

}  // namespace rlhf
