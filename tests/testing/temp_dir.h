// Temporary directories and files for tests: directories unique per process and call
// (mkdtemp), so parallel ctest runs and repeated tests never share one.
#pragma once

#include <string>

namespace rlhf::testing {

// A fresh empty directory "$TMPDIR/<prefix>XXXXXX" (or under /tmp); "" when mkdtemp
// fails. The caller removes it (or leaves it for post-mortems).
std::string MakeTempDir(const std::string& prefix);

// Writes `contents` to `path` (binary, replacing it); false when it cannot be written.
bool WriteFile(const std::string& path, const std::string& contents);

}  // namespace rlhf::testing
