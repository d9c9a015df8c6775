// rlhf.v1.SamplingConfig -> SamplingOptions. Apart from trainer_config.h so that the
// actor (which only samples) links the model library and the protos, not the trainer.
#pragma once

#include "absl/status/statusor.h"
#include "core/model/generation.h"
#include "rlhf/v1/config.pb.h"

namespace rlhf {

// SamplingConfig -> SamplingOptions, validated (InvalidArgument naming the "sampling."
// field).
absl::StatusOr<SamplingOptions> SamplingOptionsFromConfig(const rlhf::v1::SamplingConfig& sampling);

}  // namespace rlhf
