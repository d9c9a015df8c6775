#include "core/util/device_name.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"

namespace rlhf {

namespace {

constexpr absl::string_view kCudaPrefix = "cuda:";

// A plain decimal index (no sign, no spaces: SimpleAtoi alone would take " 1" and "+1").
bool ParseIndex(absl::string_view digits, int* index) {
  if (digits.empty() || digits.size() > 3) return false;
  for (char c : digits) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return absl::SimpleAtoi(digits, index);
}

}  // namespace

bool IsDeviceName(absl::string_view name) {
  int index = 0;
  return name == "cpu" || name == "cuda" ||
         (absl::StartsWith(name, kCudaPrefix) &&
          ParseIndex(name.substr(kCudaPrefix.size()), &index));
}

int CudaIndexOf(absl::string_view name) {
  int index = -1;
  if (!absl::StartsWith(name, kCudaPrefix) ||
      !ParseIndex(name.substr(kCudaPrefix.size()), &index)) {
    return -1;
  }
  return index;
}

}  // namespace rlhf
