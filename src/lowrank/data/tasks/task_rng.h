// The random stream of the task generators: splitmix64 (core/random.h) run as a counter-based
// generator, with integer and unit-interval draws defined here bit by bit. The standard library's
// distributions (std::uniform_int_distribution, ...) are implementation-defined, so a task drawn
// through them would differ between standard libraries; these draws give the same bytes everywhere.
#pragma once

#include <cstdint>
#include <span>
#include <utility>

#include "lowrank/core/random.h"

namespace lowrank::data::tasks {

class TaskRng {
 public:
  // `stream` separates independent streams of one seed (one per split, per purpose).
  explicit TaskRng(uint64_t seed, uint64_t stream = 0)
      : key_(splitmix64(seed ^ splitmix64(stream + 0x5EED))) {}

  uint64_t next_u64() { return splitmix64(key_ + (counter_++) * 0x9E3779B97F4A7C15ull); }

  // Uniform on [0, n), n >= 1, unbiased: rejection of the top partial block of 2^64.
  uint64_t below(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;  // a multiple of n
    uint64_t x = next_u64();
    while (x >= limit) x = next_u64();
    return x % n;
  }

  // Uniform integer on [lo, hi] (inclusive, like Python's random.randint).
  int64_t uniform_int(int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(below(static_cast<uint64_t>(hi - lo) + 1));
  }

  // Uniform on [0, 1) with 53 random bits (like Python's random.random).
  double uniform01() { return unit_interval(next_u64()); }

  // Fisher-Yates shuffle.
  template <typename T>
  void shuffle(std::span<T> items) {
    for (std::size_t i = items.size(); i > 1; --i) std::swap(items[i - 1], items[below(i)]);
  }

 private:
  uint64_t key_;
  uint64_t counter_ = 0;
};

}  // namespace lowrank::data::tasks
