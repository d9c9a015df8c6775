// Request validation shared by the scoring servers: every problem is INVALID_ARGUMENT
// naming the field and index, e.g. "sequences[3].response[7]: token id 300 >= vocab size
// 259". Pure functions; nothing is modified.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/repeated_field.h"
#include "rlhf/v1/common.pb.h"

namespace rlhf::services {

struct SequenceLimits {
  int64_t vocab_size = 0;   // token ids must be in [0, vocab_size)
  int64_t max_length = 0;   // prompt + response tokens; 0 = unlimited
  bool allow_empty_response = false;
};

// `field` is the path of the sequence ("sequences[3]" or "sequences[3].tokens").
absl::Status ValidateTokenSequence(const rlhf::v1::TokenSequence& sequence,
                                   absl::string_view field, const SequenceLimits& limits);

// 1 <= count <= max (max 0 = unlimited).
absl::Status ValidateCount(int64_t count, absl::string_view field, int64_t max);

// Every value finite (allow_neg_inf: -inf accepted, for log-probs of impossible events)
// and <= max_value (log-probs: 0 plus rounding slack).
absl::Status ValidateFloats(const google::protobuf::RepeatedField<float>& values,
                            absl::string_view field, bool allow_neg_inf, float max_value);

}  // namespace rlhf::services
