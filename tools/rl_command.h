// `rlhf rl --config JOB.yaml [--set path=value,...] [--resume]`: stage 3 in ONE process,
// no network: the job's RL settings (rl:, sampling:, seed) run by the in-process loop
// (core/rl_training/inprocess_loop.h) with the SFT checkpoint as the initial policy and the frozen
// reference, and the reward model called directly (normalised by the reward_mean /
// reward_std stored with it). PPO's value model starts from the reward model.
//
// For debugging and small experiments without actors or servers. Reads the same job
// file and writes checkpoints where the distributed learner does (<run_dir>/learner,
// same format), so `rlhf run --config JOB.yaml --stages eval` then compares the result
// with SFT exactly as after a distributed run, and --resume continues an interrupted
// run. Progress (step, reward, KL, beta, rate, ETA) goes to stderr; --json_out writes
// every step's statistics.
#pragma once

#include <string>
#include <vector>

namespace rlhf::tools {
int RunRlCommand(const std::vector<std::string>& args);
}  // namespace rlhf::tools
