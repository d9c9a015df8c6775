#include "tests/testing/temp_dir.h"

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"

namespace rlhf::testing {

std::string MakeTempDir(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string templ =
      absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/", prefix, "XXXXXX");
  char* dir = ::mkdtemp(templ.data());
  return dir == nullptr ? std::string() : std::string(dir);
}

}  // namespace rlhf::testing
