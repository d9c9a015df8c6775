// The tiny transformer the unit tests share: byte vocabulary (259 ids), 2 layers of
// width 32, 32 positions. Big enough to exercise every code path, small enough that a
// forward pass costs well under a millisecond. Link rlhf_model to use it.
#pragma once

#include <cstdint>

#include <torch/types.h>

#include "core/model/model.h"

namespace rlhf::testing {

inline ModelConfig TinyModelConfig(bool scalar_head = false) {
  ModelConfig c;
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 2;
  c.n_kv_heads = 2;
  c.d_ff = 64;
  c.max_seq_len = 32;
  c.vocab_size = 259;
  c.scalar_head = scalar_head;
  c.lm_head = !scalar_head;
  return c;
}

// A freshly initialised tiny model; equal seeds give bitwise-equal weights.
inline TransformerLM TinyModel(uint64_t seed, bool scalar_head = false) {
  torch::manual_seed(seed);
  return TransformerLM(TinyModelConfig(scalar_head));
}

}  // namespace rlhf::testing
