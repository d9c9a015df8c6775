// rlhf.v1 job configuration -> the trainer's and the in-process loop's option structs.
// Kept apart from trainer.h so that the trainer itself needs no protobuf. The job
// config loader (services/config) has already filled in the documented defaults, so
// fields map one to one; UNSPECIFIED enums take the proto's documented meaning.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/generation.h"
#include "core/rl_training/inprocess_loop.h"
#include "core/rl_training/trainer.h"
#include "core/tokenizer/tokenizer.h"
#include "rlhf/v1/config.pb.h"
#include "services/config/sampling_config.h"

namespace rlhf {

// RlConfig (+ the sampling temperature, which fixes the log-prob convention, and the
// job seed) -> TrainerOptions, validated (InvalidArgument naming the "rl." field).
// rl.train_dtype maps to train_dtype; the device (model.device) is the caller's to set
// (TrainerOptions::device, parsed where the process starts: core/model/device.h).
absl::StatusOr<TrainerOptions> TrainerOptionsFromConfig(const rlhf::v1::RlConfig& rl,
                                                        const rlhf::v1::SamplingConfig& sampling,
                                                        uint64_t seed);

// JobConfig -> in-process loop options: rl.steps / prompts_per_step / samples_per_prompt /
// ptx_batch_size / checkpoint_every / keep_checkpoints, sampling, seed, and checkpoints
// under <run_dir>/learner.
absl::StatusOr<InProcessLoopOptions> LoopOptionsFromConfig(const rlhf::v1::JobConfig& job);

// The RL prompts of a job, encoded [BOS] + Encode(prompt) with the policy's `tokenizer`:
// `path` when non-empty, else <data.dir>/rl_train.jsonl when it exists, else the
// generated built-in task's rl_train (data.seed, data.num_rl_train).
absl::StatusOr<std::vector<std::vector<int32_t>>> RlPromptsFromConfig(
    const rlhf::v1::JobConfig& job, const Tokenizer& tokenizer, const std::string& path = "");

// The ptx term's pretraining texts, [BOS] text [EOS] with the policy's `tokenizer`:
// <data.dir>/pretrain.jsonl when it exists, else the generated built-in task's. Texts
// longer than max_seq_len tokens are dropped; InvalidArgument when none is left.
absl::StatusOr<std::vector<std::vector<int32_t>>> PretrainFromConfig(
    const rlhf::v1::JobConfig& job, const Tokenizer& tokenizer, int64_t max_seq_len);

}  // namespace rlhf
