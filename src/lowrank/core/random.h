// splitmix64 (Steele, Lea & Flood, 2014, "Fast splittable pseudorandom number generators"): the
// one hash behind every seeded, counter-based draw of lowrank (dataset splits, training windows,
// DyLoRA ranks, projector seeds), so that a draw depends only on (seed, counter) and a resumed
// run repeats it.
#pragma once

#include <cstdint>

namespace lowrank {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The top 53 bits of a 64-bit draw as a double in [0, 1).
inline double unit_interval(uint64_t bits) {
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

}  // namespace lowrank
