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

// The medians of the functions timed in turn (f0, f1, ..., f0, f1, ...) after one warm-up call
// each, so that a drift of the machine (other load, clock, allocator state) affects all alike: what
// their ratios need.
inline std::vector<double> interleaved_median_seconds(const std::vector<std::function<void()>>& fns,
                                                      int repeats) {
  for (const auto& fn : fns) fn();
  std::vector<std::vector<double>> t(fns.size());
  for (int i = 0; i < repeats; ++i)
    for (size_t k = 0; k < fns.size(); ++k) {
      const auto t0 = std::chrono::steady_clock::now();
      fns[k]();
      t[k].push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  std::vector<double> medians;
  for (auto& v : t) {
    std::sort(v.begin(), v.end());
    medians.push_back(v[v.size() / 2]);
  }
  return medians;
}

// interleaved_median_seconds of two functions.
inline std::pair<double, double> paired_median_seconds(const std::function<void()>& a,
                                                       const std::function<void()>& b, int repeats) {
  const std::vector<double> m = interleaved_median_seconds({a, b}, repeats);
  return {m[0], m[1]};
}

// The p-quantile of `v` (nearest rank: the ⌈p·n⌉-th smallest); NaN when empty.
inline double percentile(std::vector<double> v, double p) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const auto k = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size())));
  return v[std::clamp<size_t>(k, 1, v.size()) - 1];
}

}  // namespace lowrank::bench
