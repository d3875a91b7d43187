// Statistical helpers shared by the tests of samplers.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include <ATen/ATen.h>

namespace lowrank::testing {

// The two-sample Kolmogorov–Smirnov statistic sup_t |F_a(t) − F_b(t)| of two float64 samples (any
// shape, flattened). At level α it rejects "same law" above c(α)·√((n + m)/(n·m)), c(0.001) = 1.95.
inline double ks_statistic(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor sa = std::get<0>(a.reshape({-1}).sort()), sb = std::get<0>(b.reshape({-1}).sort());
  const auto* pa = sa.data_ptr<double>();
  const auto* pb = sb.data_ptr<double>();
  const int64_t na = sa.numel(), nb = sb.numel();
  int64_t i = 0, j = 0;
  double sup = 0;
  while (i < na && j < nb) {
    const double t = std::min(pa[i], pb[j]);
    while (i < na && pa[i] <= t) ++i;
    while (j < nb && pb[j] <= t) ++j;
    sup = std::max(sup, std::abs(static_cast<double>(i) / na - static_cast<double>(j) / nb));
  }
  return sup;
}

}  // namespace lowrank::testing
