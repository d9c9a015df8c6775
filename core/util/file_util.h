// Small file helpers shared by every component (torch-free, gRPC-free).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace rlhf {

struct AtomicWriteOptions {
  // fsync the file before the rename and the directory after it, so the new contents
  // survive a crash (checkpoints, learner state, configs). Turn off only for files that
  // live processes read and rewrite every few seconds (status snapshots, port files).
  bool durable = true;
};

// The durable default, or the fast one for frequently rewritten status files.
inline constexpr AtomicWriteOptions kDurable{true};
inline constexpr AtomicWriteOptions kNotDurable{false};

// Replaces `path` with `contents` atomically: written to "<path>.tmp.<pid>.<n>" in the same
// directory, then renamed over `path`, so readers see the old or the new file, never a
// partial one; concurrent writers of one path (threads or processes) never share a
// temporary file. The temporary file is removed on error. Errors name the path and errno
// and are retriable: RESOURCE_EXHAUSTED for a full disk or quota, UNAVAILABLE otherwise.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents,
                                 const AtomicWriteOptions& options = {});

}  // namespace rlhf
