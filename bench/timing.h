// Timing shared by the benchmark programs.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <utility>
#include <vector>

namespace lowrank::bench {

// The median wall time of `repeats` calls of fn, after one warm-up call.
inline double median_seconds(const std::function<void()>& fn, int repeats) {
  fn();
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// The medians of `a` and `b` timed alternately (a, b, a, b, ...) after one warm-up call each, so
// that a drift of the machine (other load, clock, allocator state) affects both alike: what a
// ratio of the two needs.
inline std::pair<double, double> paired_median_seconds(const std::function<void()>& a,
                                                       const std::function<void()>& b, int repeats) {
  a();
  b();
  std::vector<double> ta, tb;
  auto time = [](const std::function<void()>& fn) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  for (int i = 0; i < repeats; ++i) {
    ta.push_back(time(a));
    tb.push_back(time(b));
  }
  std::sort(ta.begin(), ta.end());
  std::sort(tb.begin(), tb.end());
  return {ta[ta.size() / 2], tb[tb.size() / 2]};
}

// The p-quantile of `v` (nearest rank: the ⌈p·n⌉-th smallest); NaN when empty.
inline double percentile(std::vector<double> v, double p) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const auto k = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size())));
  return v[std::clamp<size_t>(k, 1, v.size()) - 1];
}

}  // namespace lowrank::bench
