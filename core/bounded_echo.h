// Echoing client-supplied strings in error messages without letting them size the
// message: a 16 MiB id must give a short NOT_FOUND, not a reply gRPC cannot send.
//
//   return absl::NotFoundError(absl::StrCat("actor_id: unknown actor ", BoundedEcho(id)));
//
// Header-only, no dependencies beyond Abseil strings. Thread-safe (pure).
#pragma once

#include <cstddef>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace rlhf {

// 's' quoted; longer than max_bytes: its first max_bytes bytes, then "...(N bytes)".
inline std::string BoundedEcho(absl::string_view s, size_t max_bytes = 64) {
  if (s.size() <= max_bytes) return absl::StrCat("'", s, "'");
  return absl::StrCat("'", s.substr(0, max_bytes), "'...(", s.size(), " bytes)");
}

}  // namespace rlhf
