// Temporary directories for tests: unique per process and call (mkdtemp), so parallel
// ctest runs and repeated tests never share one.
#pragma once

#include <string>

namespace rlhf::testing {

// A fresh empty directory "$TMPDIR/<prefix>XXXXXX" (or under /tmp); "" when mkdtemp
// fails. The caller removes it (or leaves it for post-mortems).
std::string MakeTempDir(const std::string& prefix);

}  // namespace rlhf::testing
