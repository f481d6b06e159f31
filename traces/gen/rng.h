// Counter-based seeding and a fast per-stream generator for the trace generators.
//
// Every random choice of a generator is derived from (seed, ids...) by hashing, so any
// (request, layer, head) can be produced independently, in any order, on any thread, with the
// same result. mix() combines words with splitmix64's finaliser (a bijection with full
// avalanche); Rng is wyrand (one 64×64→128 multiply per draw, period 2^64, passes BigCrush),
// seeded from such a hash. uniform_below() maps a 32-bit draw onto [0, n) by a multiply-shift
// (Lemire), bias < n / 2^32. All functions O(1).
#pragma once

#include <cstdint>

namespace spin::gen {

constexpr uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// A hash of several words: mix(a, b, c) != mix(a, c, b).
constexpr uint64_t mix(uint64_t a) { return splitmix64(a); }
template <class... Rest>
constexpr uint64_t mix(uint64_t a, uint64_t b, Rest... rest) {
  return mix(splitmix64(a) ^ (b + 0x632be59bd9b4e019ull), static_cast<uint64_t>(rest)...);
}

// A hash as a double in [0, 1).
constexpr double unit_interval(uint64_t h) { return static_cast<double>(h >> 11) * 0x1.0p-53; }

// x · n / 2^32 for a 32-bit x: a value in [0, n).
inline uint32_t uniform_below(uint32_t x, uint32_t n) {
  return static_cast<uint32_t>((uint64_t{x} * n) >> 32);
}

class Rng {
 public:
  static constexpr uint64_t kIncrement = 0xa0761d6478bd642full;
  static constexpr uint64_t kXor = 0xe7037ed1a0b428dbull;

  explicit Rng(uint64_t seed = 0) : state_(splitmix64(seed)) {}
  uint64_t next() {
    state_ += kIncrement;
    return output(state_);
  }
  // The i-th draw from now (i >= 1) is output(state() + i · kIncrement): independent of the draws
  // before it, so vectorised code may compute several at once and then skip(n) them.
  static uint64_t output(uint64_t state) {
    const __uint128_t t = static_cast<__uint128_t>(state) * (state ^ kXor);
    return static_cast<uint64_t>(t >> 64) ^ static_cast<uint64_t>(t);
  }
  uint64_t state() const { return state_; }
  void skip(uint64_t n) { state_ += n * kIncrement; }
  double unit() { return unit_interval(next()); }

 private:
  uint64_t state_;
};

}  // namespace spin::gen
