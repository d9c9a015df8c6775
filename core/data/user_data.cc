#include "core/data/user_data.h"

#include <algorithm>
#include <filesystem>
#include <memory>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/data/jsonl.h"
#include "core/status_macros.h"

namespace rlhf {
namespace {

namespace fs = std::filesystem;

// FNV-1a over the text, then a splitmix64 finaliser mixed with the seed: stable across
// platforms and runs (std::hash is neither).
uint64_t PromptHash(absl::string_view text, uint64_t seed) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  uint64_t z = h ^ (seed * 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

struct Outputs {
  std::unique_ptr<JsonlWriter> train, heldout;
};

absl::StatusOr<Outputs> OpenPair(const std::string& dir, const std::string& train,
                                 const std::string& heldout) {
  Outputs o;
  RLHF_ASSIGN_OR_RETURN(o.train, JsonlWriter::Open(dir + "/" + train));
  if (!heldout.empty()) {
    RLHF_ASSIGN_OR_RETURN(o.heldout, JsonlWriter::Open(dir + "/" + heldout));
  }
  return o;
}

// Reads one source into its train/held-out writers. ForEach is one of jsonl.h's
// ForEach*Record functions; Key gives a record's prompt text for the split.
template <typename Record, typename ForEach, typename Key>
absl::Status ReadSource(const char* name, const DataSource& source,
                        const UserDataOptions& options, ForEach for_each, Key key, Outputs& out,
                        UserDataReport* report) {
  JsonlReadOptions read;
  read.skip_malformed = options.skip_malformed;
  read.prompt_template = options.prompt_template;
  RLHF_ASSIGN_OR_RETURN(std::vector<std::string> train_files, ExpandDataPaths(source.files));
  RLHF_ASSIGN_OR_RETURN(std::vector<std::string> heldout_files,
                        ExpandDataPaths(source.heldout_files));
  const bool carve = out.heldout != nullptr && heldout_files.empty();
  for (const std::string& file : train_files) {
    JsonlStats stats;
    RLHF_RETURN_IF_ERROR(for_each(
        file, read,
        [&](Record r) -> absl::Status {
          if (carve && InHeldoutSplit(key(r), options.seed, options.heldout_fraction)) {
            return out.heldout->Write(r);
          }
          return out.train->Write(r);
        },
        &stats));
    report->summaries.push_back(absl::StrCat(name, " ", FormatJsonlSummary(file, stats)));
  }
  for (const std::string& file : heldout_files) {
    if (out.heldout == nullptr) break;
    JsonlStats stats;
    RLHF_RETURN_IF_ERROR(for_each(
        file, read, [&](Record r) { return out.heldout->Write(r); }, &stats));
    report->summaries.push_back(
        absl::StrCat(name, " (held-out) ", FormatJsonlSummary(file, stats)));
  }
  if (out.train->written() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("data.", name, ": no ", name, " records in the training files"));
  }
  if (out.heldout != nullptr && out.heldout->written() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data.", name, ": the held-out set is empty (",
        carve ? absl::StrCat("heldout_fraction ", options.heldout_fraction, " of ",
                             out.train->written(), " records left none; give heldout files "
                             "or raise data.heldout_fraction")
              : "the heldout files have no records",
        ")"));
  }
  return absl::OkStatus();
}

}  // namespace

bool InHeldoutSplit(absl::string_view prompt, uint64_t seed, double fraction) {
  // Top 53 bits as a uniform double in [0, 1).
  const double u = static_cast<double>(PromptHash(prompt, seed) >> 11) * 0x1.0p-53;
  return u < fraction;
}

absl::StatusOr<std::vector<std::string>> ExpandDataPaths(const std::vector<std::string>& paths) {
  std::vector<std::string> out;
  for (const std::string& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<std::string> files;
      for (const auto& e : fs::directory_iterator(p, ec)) {
        if (e.is_regular_file() && absl::EndsWith(e.path().filename().string(), ".jsonl")) {
          files.push_back(e.path().string());
        }
      }
      if (ec) return absl::InternalError(absl::StrCat(p, ": ", ec.message()));
      if (files.empty()) return absl::InvalidArgumentError(absl::StrCat(p, ": no *.jsonl files"));
      std::sort(files.begin(), files.end());
      out.insert(out.end(), files.begin(), files.end());
    } else if (fs::exists(p, ec)) {
      out.push_back(p);
    } else {
      return absl::NotFoundError(absl::StrCat(p, ": no such file or directory"));
    }
  }
  return out;
}

absl::StatusOr<UserDataReport> MaterializeUserData(const UserDataOptions& options) {
  if (options.out_dir.empty()) return absl::InvalidArgumentError("data.dir: empty");
  if (!(options.heldout_fraction > 0 && options.heldout_fraction < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data.heldout_fraction: must be in (0, 1), got ", options.heldout_fraction));
  }
  if (options.prompts.files.empty()) {
    return absl::InvalidArgumentError(
        "data.prompts: no files (RL and evaluation need prompts)");
  }
  RLHF_RETURN_IF_ERROR(MakeDirs(options.out_dir));
  UserDataReport report;
  // Every writer stays open (temporary names) until all sources are read, so a failure
  // leaves the directory as it was.
  std::vector<std::unique_ptr<JsonlWriter>> done;
  if (!options.sft.files.empty()) {
    RLHF_ASSIGN_OR_RETURN(Outputs o, OpenPair(options.out_dir, "sft.jsonl", "sft_heldout.jsonl"));
    RLHF_RETURN_IF_ERROR(ReadSource<SftRecord>(
        "sft", options.sft, options, ForEachSftRecord,
        [](const SftRecord& r) -> const std::string& { return r.prompt; }, o, &report));
    report.sft = o.train->written();
    report.sft_heldout = o.heldout->written();
    done.push_back(std::move(o.train));
    done.push_back(std::move(o.heldout));
  }
  if (!options.preferences.files.empty()) {
    RLHF_ASSIGN_OR_RETURN(Outputs o,
                          OpenPair(options.out_dir, "rank.jsonl", "rank_heldout.jsonl"));
    RLHF_RETURN_IF_ERROR(ReadSource<RankedRecord>(
        "preferences", options.preferences, options, ForEachPreferenceRecord,
        [](const RankedRecord& r) -> const std::string& { return r.prompt; }, o, &report));
    report.rank = o.train->written();
    report.rank_heldout = o.heldout->written();
    done.push_back(std::move(o.train));
    done.push_back(std::move(o.heldout));
  }
  {
    RLHF_ASSIGN_OR_RETURN(Outputs o,
                          OpenPair(options.out_dir, "rl_train.jsonl", "rl_heldout.jsonl"));
    RLHF_RETURN_IF_ERROR(ReadSource<PromptRecord>(
        "prompts", options.prompts, options, ForEachPromptRecord,
        [](const PromptRecord& r) -> const std::string& { return r.prompt; }, o, &report));
    report.rl_train = o.train->written();
    report.rl_heldout = o.heldout->written();
    done.push_back(std::move(o.train));
    done.push_back(std::move(o.heldout));
  }
  if (!options.pretrain.files.empty()) {
    RLHF_ASSIGN_OR_RETURN(Outputs o, OpenPair(options.out_dir, "pretrain.jsonl", ""));
    RLHF_RETURN_IF_ERROR(ReadSource<TextRecord>(
        "pretrain", options.pretrain, options, ForEachTextRecord,
        [](const TextRecord& r) -> const std::string& { return r.text; }, o, &report));
    report.pretrain = o.train->written();
    done.push_back(std::move(o.train));
  }
  for (auto& w : done) RLHF_RETURN_IF_ERROR(w->Close());
  return report;
}

}  // namespace rlhf
