// Each default lives in one place: the reward and reference servers' batching defaults
// (services/batching_defaults.h) are the job config's defaults, BatcherOptions', and the
// defaults the server binaries' flags print in --helpfull.
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <regex>
#include <string>

#include <gtest/gtest.h>

#include "services/batcher.h"
#include "services/batching_defaults.h"
#include "services/config/config.h"

namespace rlhf {
namespace {

// flag name -> default value as printed by `<binary> --helpfull`.
std::map<std::string, std::string> FlagDefaults(const std::string& binary) {
  const char* bin_dir = std::getenv("RLHF_BIN_DIR");
  const std::string cmd =
      std::string(bin_dir != nullptr ? bin_dir : "build/bin") + "/" + binary + " --helpfull 2>&1";
  std::string out;
  if (FILE* pipe = popen(cmd.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
    pclose(pipe);
  }
  // Abseil prints "    --name (help text); default: value;" (help may wrap lines).
  std::map<std::string, std::string> defaults;
  const std::regex re(R"(--(\w+) \([^;]*\);\s+default: ([^;]*);)");
  for (auto it = std::sregex_iterator(out.begin(), out.end(), re); it != std::sregex_iterator();
       ++it) {
    defaults[(*it)[1]] = (*it)[2];
  }
  return defaults;
}

double Num(const std::map<std::string, std::string>& m, const std::string& key) {
  auto it = m.find(key);
  if (it == m.end()) {
    ADD_FAILURE() << "flag --" << key << " not in --helpfull output";
    return -1;
  }
  return std::strtod(it->second.c_str(), nullptr);
}

TEST(Defaults, JobConfigBatchingIsTheSharedDefault) {
  const rlhf::v1::JobConfig c = config::DefaultJobConfig();
  for (const auto* b : {&c.reward_server().batching(), &c.reference_server().batching()}) {
    EXPECT_EQ(b->max_batch_tokens(), services::kDefaultMaxBatchTokens);
    EXPECT_EQ(b->max_wait_ms(), services::kDefaultMaxWaitMs);
    EXPECT_EQ(b->max_queue(), services::kDefaultMaxQueueSequences);
    EXPECT_EQ(b->max_sequences_per_request(), services::kDefaultMaxSequencesPerRequest);
  }
  const services::BatcherOptions o;
  EXPECT_EQ(o.max_batch_tokens, c.reward_server().batching().max_batch_tokens());
  EXPECT_EQ(o.max_wait, absl::Milliseconds(c.reward_server().batching().max_wait_ms()));
  EXPECT_EQ(o.max_queue_sequences, c.reward_server().batching().max_queue());
}

TEST(Defaults, ServerFlagsDefaultToTheJobConfig) {
  const rlhf::v1::JobConfig c = config::DefaultJobConfig();
  for (const auto& [binary, batching] :
       {std::pair{std::string("rlhf-reward-server"), c.reward_server().batching()},
        std::pair{std::string("rlhf-reference-server"), c.reference_server().batching()}}) {
    SCOPED_TRACE(binary);
    const auto flags = FlagDefaults(binary);
    ASSERT_FALSE(flags.empty()) << binary << " --helpfull printed no flags";
    EXPECT_EQ(Num(flags, "max_batch_tokens"), batching.max_batch_tokens());
    EXPECT_EQ(Num(flags, "max_wait_ms"), batching.max_wait_ms());
    EXPECT_EQ(Num(flags, "max_queue_sequences"), batching.max_queue());
    EXPECT_EQ(Num(flags, "max_sequences_per_request"), batching.max_sequences_per_request());
    EXPECT_EQ(Num(flags, "max_batch_sequences"), services::kDefaultMaxBatchSequences);
  }
}

}  // namespace
}  // namespace rlhf
