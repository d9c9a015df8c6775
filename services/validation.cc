#include "services/validation.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace rlhf::services {
namespace {

absl::Status CheckIds(const google::protobuf::RepeatedField<int32_t>& ids, absl::string_view field,
                      int64_t vocab_size) {
  for (int i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, "[", i, "]: token id ", ids[i], " < 0"));
    }
    if (ids[i] >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(field, "[", i, "]: token id ", ids[i],
                                                     " >= vocab size ", vocab_size));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateTokenSequence(const rlhf::v1::TokenSequence& sequence,
                                   absl::string_view field, const SequenceLimits& limits) {
  if (sequence.prompt().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".prompt: empty"));
  }
  if (sequence.response().empty() && !limits.allow_empty_response) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".response: empty"));
  }
  const int64_t length = sequence.prompt_size() + sequence.response_size();
  if (limits.max_length > 0 && length > limits.max_length) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": prompt+response length ", length,
                                                   " > max length ", limits.max_length));
  }
  if (auto s = CheckIds(sequence.prompt(), absl::StrCat(field, ".prompt"), limits.vocab_size);
      !s.ok()) {
    return s;
  }
  return CheckIds(sequence.response(), absl::StrCat(field, ".response"), limits.vocab_size);
}

absl::Status ValidateCount(int64_t count, absl::string_view field, int64_t max) {
  if (count < 1) return absl::InvalidArgumentError(absl::StrCat(field, ": empty"));
  if (max > 0 && count > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", count, " entries > limit ", max));
  }
  return absl::OkStatus();
}

absl::Status ValidateFloats(const google::protobuf::RepeatedField<float>& values,
                            absl::string_view field, bool allow_neg_inf, float max_value) {
  for (int i = 0; i < values.size(); ++i) {
    const float v = values[i];
    if (std::isnan(v) || (std::isinf(v) && (v > 0 || !allow_neg_inf))) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, "[", i, "]: not finite (", v, ")"));
    }
    if (v > max_value) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, "[", i, "]: ", v, " > ", max_value, " (log-probs are <= 0)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace rlhf::services
