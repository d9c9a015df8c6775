// Issue 23 item 9: `--help` of every server binary lists its own flags (absl's default
// filter matched none of them: "No modules matched").
#include <cstdio>
#include <cstdlib>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace {

using ::testing::HasSubstr;

std::string RunHelp(const std::string& binary) {
  const char* bin_dir = std::getenv("RLHF_BIN_DIR");
  const std::string cmd = std::string(bin_dir != nullptr ? bin_dir : "bin") + "/" + binary +
                          " --help 2>&1";
  std::string out;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  pclose(pipe);
  return out;
}

TEST(ServerHelpTest, EveryServerListsItsFlags) {
  struct Case {
    const char* binary;
    const char* usage;
    const char* flag;
  };
  for (const Case& c : {Case{"rlhf-learner", "the LearnerService", "-checkpoint_dir"},
                        Case{"rlhf-actor", "leases prompts", "-learner_address"},
                        Case{"rlhf-reward-server", "RewardService.Score", "-scorers"},
                        Case{"rlhf-reference-server", "ReferenceService.Score", "-checkpoint"}}) {
    SCOPED_TRACE(c.binary);
    const std::string out = RunHelp(c.binary);
    EXPECT_THAT(out, HasSubstr(c.usage));
    EXPECT_THAT(out, HasSubstr(c.flag));
    EXPECT_THAT(out, HasSubstr("-metrics_port"));
    EXPECT_THAT(out, ::testing::Not(HasSubstr("No modules matched")));
  }
}

}  // namespace
