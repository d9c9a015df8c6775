// splitmix64 (Steele, Lea & Flood 2014; the constants of Vigna's reference code): a
// stateless 64-bit mixer, identical on every platform (std distributions are not).
// Used for per-row sampling seeds, counter-based uniforms and the built-in task's RNG.
#pragma once

#include <cstdint>

namespace rlhf {

// One splitmix64 output for state `x` (the state is advanced by the golden gamma first).
constexpr uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// The sequence generator: Next() returns SplitMix64(s), SplitMix64(s + γ), ...
class SplitMix64Rng {
 public:
  explicit constexpr SplitMix64Rng(uint64_t seed) : state_(seed) {}
  constexpr uint64_t Next() {
    const uint64_t r = SplitMix64(state_);
    state_ += 0x9E3779B97F4A7C15ULL;
    return r;
  }

 private:
  uint64_t state_;
};

}  // namespace rlhf
