// Advantage estimators and per-token rewards of the RL stage (design.md §2). Pure
// functions over tensors, no autograd state: every input is treated as a constant
// (callers pass detached tensors; outputs carry no graph).
//
// Shape conventions used throughout core/rl:
//   B = sequences in the batch, T = padded response length (right padding),
//   per-token tensors are [B, T] float32, `mask` is [B, T] (1 = real response token,
//   0 = padding; any dtype, converted to float), per-sequence tensors are [B].
//   The real tokens of a row form one contiguous block that may start anywhere: the
//   response frame (right padding) or the full prompt+response frame of
//   MakeSequenceBatch (prompt positions before, padding after) both work.
//   Group estimators (RLOO, GRPO) take rewards as [P, G]: P prompts x G samples each.
// Padding never influences a real position and padded outputs are exactly 0.
#pragma once

#include <cstdint>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "core/rl/kl.h"

namespace rlhf {

// Per-token rewards with the KL penalty in the reward (InstructGPT):
//   r_t = -beta * kl_t on every response token, plus score[b] at the last real token.
// kl: [B, T] per-token KL estimates (e.g. PerTokenKl(blogp, rlogp, k1)); score: [B].
// Sequences with no real token get no score (their row stays 0).
torch::Tensor KlPenalizedTokenRewards(const torch::Tensor& score, const torch::Tensor& kl,
                                      const torch::Tensor& mask, double beta);

// Per-sequence discounted return of per-token rewards: Σ_t gamma^t r_t over real
// tokens. [B, T] -> [B]. With gamma = 1 this is the plain sum the seed's REINFORCE uses.
torch::Tensor SequenceReturns(const torch::Tensor& token_rewards, const torch::Tensor& mask,
                              double gamma = 1.0);

// Reward-to-go G_t = Σ_{l>=0} gamma^l r_{t+l} within each sequence (padding excluded).
// [B, T] -> [B, T].
torch::Tensor RewardToGo(const torch::Tensor& token_rewards, const torch::Tensor& mask,
                         double gamma = 1.0);

// Moving-mean baseline for REINFORCE: b <- decay * b + (1 - decay) * mean(returns).
// The first Update sets b to the batch mean (no bias towards the initial 0).
// Value type; not thread-safe.
class MovingMeanBaseline {
 public:
  explicit MovingMeanBaseline(double decay = 0.9) : decay_(decay) {}
  double value() const { return value_; }
  bool initialized() const { return initialized_; }
  double decay() const { return decay_; }
  // Folds the batch mean of `returns` ([N], any N >= 1) into the baseline.
  void Update(const torch::Tensor& returns);
  // Restores checkpointed state.
  void Restore(double value, bool initialized) {
    value_ = value;
    initialized_ = initialized;
  }

 private:
  double decay_;
  double value_ = 0.0;
  bool initialized_ = false;
};

// REINFORCE advantage: returns - baseline. [B] -> [B].
torch::Tensor ReinforceAdvantages(const torch::Tensor& returns, double baseline);

// RLOO: A_i = r_i - mean_{j != i} r_j over the G samples of a prompt.
// rewards [P, G] with G >= 2 (InvalidArgument otherwise) -> [P, G].
absl::StatusOr<torch::Tensor> RlooAdvantages(const torch::Tensor& rewards);

// GRPO: A_i = (r_i - mean_group) / (std_group + eps), std with Bessel's correction
// (divides by G - 1, as torch.std). rewards [P, G], G >= 2 -> [P, G].
absl::StatusOr<torch::Tensor> GrpoAdvantages(const torch::Tensor& rewards, double eps);

struct GaeResult {
  torch::Tensor advantages;  // [B, T], 0 at padding
  torch::Tensor returns;     // [B, T] = advantages + values (value-function targets)
};

// Generalised advantage estimation over right-padded responses:
//   δ_t = r_t + gamma * V_{t+1} - V_t, with V_{T_b} = 0 after the last real token
//   (the response ends the episode), A_t = Σ_l (gamma*lambda)^l δ_{t+l}.
// token_rewards, values, mask: [B, T].
GaeResult Gae(const torch::Tensor& token_rewards, const torch::Tensor& values,
              const torch::Tensor& mask, double gamma, double lambda);

// Masked whitening over the real positions (padding stays 0), TRL/veRL's masked_whiten
// exactly: (x - mean) * rsqrt(var + 1e-8) with the UNBIASED variance
// Σ (x - mean)² / (n - 1), n = number of real positions (n <= 1: all zeros). The
// conventions here: GRPO's group std and this whitening are both unbiased (Bessel).
torch::Tensor MaskedWhiten(const torch::Tensor& x, const torch::Tensor& mask);

}  // namespace rlhf
