// core/util and core/status_macros.h: splitmix64 against the reference sequence,
// atomic file replacement, and TorchCall's exception boundary (including Status-returning
// functions, which keep their own errors).
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/status_macros.h"
#include "core/util/crc32c.h"
#include "core/util/file_util.h"
#include "core/util/splitmix.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace rlhf {
namespace {

using ::rlhf::testing::IsOk;
using ::rlhf::testing::StatusIs;
using ::testing::HasSubstr;

// The standard check values of CRC-32C (RFC 3720 B.4 and the "123456789" check).
TEST(Crc32c, MatchesTheStandardCheckValues) {
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(std::string(32, '\xff')), 0x62A8AB43u);
  EXPECT_EQ(Crc32c(""), 0u);
  // Incremental: the crc of a whole equals the crc continued over its parts.
  EXPECT_EQ(Crc32c("6789", Crc32c("12345")), Crc32c("123456789"));
}

TEST(SplitMix64, MatchesTheReferenceSequence) {
  // Vigna's splitmix64.c seeded with 0: the first three outputs.
  SplitMix64Rng rng(0);
  EXPECT_EQ(rng.Next(), 0xE220A8397B1DCDAFULL);
  EXPECT_EQ(rng.Next(), 0x6E789E6AA1B965F4ULL);
  EXPECT_EQ(rng.Next(), 0x06C45D188009454FULL);
  EXPECT_EQ(SplitMix64(0), 0xE220A8397B1DCDAFULL);
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(WriteFileAtomically, ReplacesTheFileAndLeavesNoTemporary) {
  const std::string dir = testing::MakeTempDir("rlhf_util_");
  ASSERT_FALSE(dir.empty());
  const std::string path = dir + "/f.txt";
  ASSERT_THAT(WriteFileAtomically(path, "first\n"), IsOk());
  EXPECT_EQ(Slurp(path), "first\n");
  ASSERT_THAT(WriteFileAtomically(path, "second", kNotDurable), IsOk());
  EXPECT_EQ(Slurp(path), "second");
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1);
  std::filesystem::remove_all(dir);
}

TEST(WriteFileAtomically, ErrorNamesThePath) {
  EXPECT_THAT(WriteFileAtomically("/nonexistent_dir_rlhf/x.txt", "x"),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("/nonexistent_dir_rlhf/x.txt")));
}

TEST(TemporaryDirectories, AreUniquePerCall) {
  const std::string a = testing::MakeTempDir("rlhf_util_");
  const std::string b = testing::MakeTempDir("rlhf_util_");
  ASSERT_FALSE(a.empty());
  EXPECT_NE(a, b);
  EXPECT_TRUE(std::filesystem::is_directory(a));
  std::filesystem::remove_all(a);
  std::filesystem::remove_all(b);
}

TEST(TorchCall, ConvertsExceptionsAndKeepsStatusErrors) {
  absl::StatusOr<int> v = TorchCall([] { return 3; });
  ASSERT_THAT(v, IsOk());
  EXPECT_EQ(*v, 3);
  EXPECT_THAT(TorchCall([]() -> int { throw std::runtime_error("boom\nbacktrace"); }, "ctx"),
              StatusIs(absl::StatusCode::kInternal, "ctx: boom"));
  // A Status-returning function: its own error comes back unchanged (not wrapped, not
  // nested in a StatusOr<Status>).
  absl::Status s = TorchCall([] { return absl::InvalidArgumentError("bad field"); });
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument, "bad field"));
  absl::StatusOr<int> so =
      TorchCall([]() -> absl::StatusOr<int> { return absl::NotFoundError("missing"); });
  EXPECT_THAT(so, StatusIs(absl::StatusCode::kNotFound, "missing"));
  absl::StatusOr<int> thrown =
      TorchCall([]() -> absl::StatusOr<int> { throw std::runtime_error("inner"); }, "step");
  EXPECT_THAT(thrown, StatusIs(absl::StatusCode::kInternal, "step: inner"));
}

}  // namespace
}  // namespace rlhf
