// GoogleTest matchers for absl::Status / absl::StatusOr<T>:
//
//   EXPECT_THAT(handler.Submit(bad), StatusIs(absl::StatusCode::kInvalidArgument,
//                                             HasSubstr("reward")));
//   EXPECT_THAT(trainer->Step(batch), IsOk());
#pragma once

#include <ostream>
#include <utility>

#include <gmock/gmock.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace rlhf::testing {
namespace internal {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

}  // namespace internal

// Matches a Status (or StatusOr) with `code` whose message matches `message_matcher`.
MATCHER_P2(StatusIs, code, message_matcher,
           ::testing::PrintToString(code) + " with a message that " +
               ::testing::DescribeMatcher<std::string>(message_matcher, negation)) {
  const absl::Status& s = internal::GetStatus(arg);
  *result_listener << "status is " << s;
  return s.code() == code &&
         ::testing::ExplainMatchResult(message_matcher, std::string(s.message()), result_listener);
}

// Matches an OK Status (or StatusOr); prints the error otherwise.
MATCHER(IsOk, "is OK") {
  const absl::Status& s = internal::GetStatus(arg);
  *result_listener << "status is " << s;
  return s.ok();
}

}  // namespace rlhf::testing
