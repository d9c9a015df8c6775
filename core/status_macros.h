// Local Status helpers: Abseil 20220623 ships no RETURN_IF_ERROR / ASSIGN_OR_RETURN.
//
//   RLHF_RETURN_IF_ERROR(DoThing());
//   RLHF_ASSIGN_OR_RETURN(auto value, ComputeValue());
//
// Plus the one c10::Error -> absl::Status boundary for LibTorch calls:
//
//   RLHF_ASSIGN_OR_RETURN(auto t, TorchCall([&] { return torch::matmul(a, b); }));
#pragma once

#include <exception>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define RLHF_STATUS_CONCAT_INNER_(x, y) x##y
#define RLHF_STATUS_CONCAT_(x, y) RLHF_STATUS_CONCAT_INNER_(x, y)

#define RLHF_RETURN_IF_ERROR(expr)                   \
  do {                                               \
    ::absl::Status rlhf_status_ = (expr);            \
    if (!rlhf_status_.ok()) return rlhf_status_;     \
  } while (0)

#define RLHF_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                \
  if (!statusor.ok()) return statusor.status();           \
  lhs = std::move(statusor).value()

#define RLHF_ASSIGN_OR_RETURN(lhs, rexpr) \
  RLHF_ASSIGN_OR_RETURN_IMPL_(            \
      RLHF_STATUS_CONCAT_(rlhf_statusor_, __LINE__), lhs, rexpr)

namespace rlhf {

namespace status_internal {
template <typename T>
struct TorchCallResult {
  using type = absl::StatusOr<T>;
};
template <>
struct TorchCallResult<void> {
  using type = absl::Status;
};
// A function that already returns a Status/StatusOr keeps its type: its own errors
// pass through and an exception becomes one more error of the same type.
template <>
struct TorchCallResult<absl::Status> {
  using type = absl::Status;
};
template <typename T>
struct TorchCallResult<absl::StatusOr<T>> {
  using type = absl::StatusOr<T>;
};
}  // namespace status_internal

// Runs `fn` and converts any exception (c10::Error from LibTorch, std::exception from
// the standard library) into an absl::Status carrying its message. `context` prefixes
// the message ("loading weights: ..."). Returns Status for void fn, StatusOr<R> for a
// fn returning R; a fn that itself returns Status or StatusOr<T> gives the same type
// back (no nesting), so Status-returning helpers can be called inside `fn` without
// converting their errors to exceptions and back.
template <typename Fn>
auto TorchCall(Fn&& fn, const char* context = "torch") ->
    typename status_internal::TorchCallResult<std::invoke_result_t<Fn>>::type {
  try {
    if constexpr (std::is_void_v<std::invoke_result_t<Fn>>) {
      fn();
      return absl::OkStatus();
    } else {
      return fn();
    }
  } catch (const std::exception& e) {
    // c10::Error::what() includes a C++ backtrace; keep the first line only.
    std::string what = e.what();
    if (auto nl = what.find('\n'); nl != std::string::npos) what.resize(nl);
    return absl::InternalError(absl::StrCat(context, ": ", what));
  }
}

}  // namespace rlhf
