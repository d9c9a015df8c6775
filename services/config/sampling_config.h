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

// `sampling` with the model's EOS (its tokenizer's eos_id()) added to stop_tokens unless
// already there: the job's sampling.stop_tokens lists only extra stop ids, and every
// process that samples stops at the EOS of the model it samples from. eos_id < 0 (a
// tokenizer without EOS) adds nothing.
rlhf::v1::SamplingConfig WithModelEos(rlhf::v1::SamplingConfig sampling, int32_t eos_id);

}  // namespace rlhf
