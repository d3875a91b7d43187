// Gaussian kernel density estimation in large dimensions — Biroli & Mézard, 2024, "Kernel Density
// Estimators in Large Dimensions", arXiv:2408.05807.
//
// Estimator (the paper's eq. 1 with a Gaussian kernel): for data y_1..y_n ∈ R^d and bandwidth h,
//   ρ̂_h(x) = (1/(n h^d)) Σ_i K((x − y_i)/h),   K(u) = (2π)^{−d/2} e^{−‖u‖²/2},
//   log ρ̂_h(x) = LSE_i(−‖x − y_i‖²/(2h²)) − log n − d log h − (d/2) log 2π,
// computed with log-sum-exp: in large d every e^{−‖x−y_i‖²/2h²} can underflow (‖x − y‖² ≈ 2d for
// N(0, I) data), while the log-sum-exp stays exact.
//
// Diagnostics per query, from the normalised weights w_i = e^{−‖x−y_i‖²/2h²}/Σ_j e^{−‖x−y_j‖²/2h²}:
// the inverse participation ratio IPR = Σ_i w_i² (1/n when every point counts equally, → 1 when one
// point dominates: the paper's "condensed" extreme-value regime) and the largest weight; across
// queries, the spread (standard deviation) of log ρ̂(x) − log ρ(x) when ρ is known.
// The paper's three regimes, for α = log n / d: the CLT holds above h_CLT(α), ρ̂ is heavy-tailed
// (α-stable) below it, and governed by a few points (extreme values) below h_G(α). For N(0, I_d)
// data and a typical query, mapping Σ_i e^{−‖x−y_i‖²/2h²} onto a random energy model gives
//   α = ½ log(1 + h_G⁻²) − h_G²/(2(1 + h_G²)²),   h_CLT = √2 · h_G      [derived]
// (the first is the per-dimension KL divergence between N(x/(1+h²), h²/(1+h²)), the law of y_i
// tilted by the kernel, and N(0, 1), equated to the entropy α; the second doubles the inverse
// temperature 1/(2h²), where the second moment of the sum condenses). This derivation was checked
// by hand here, not against the paper's text: gaussian_thresholds() is labelled as derived.
// The held-out bandwidth h* maximises the mean held-out log-likelihood over a grid; the paper finds
// it below h_CLT. No reference code was released.
#pragma once

#include <vector>

#include <ATen/ATen.h>

namespace lowrank::kernel_methods {

// log ρ̂_h at each query: data [n, d], queries [m, d] → [m]. h > 0 (InvalidArgument otherwise).
at::Tensor kde_log_density(const at::Tensor& data, const at::Tensor& queries, double bandwidth);

struct KdeDiagnostics {
  at::Tensor ipr;         // [m] Σ w_i²
  at::Tensor max_weight;  // [m] max_i w_i
};
KdeDiagnostics kde_diagnostics(const at::Tensor& data, const at::Tensor& queries, double bandwidth);

// Standard deviation over queries of log ρ̂ − log ρ.
double log_ratio_spread(const at::Tensor& log_estimate, const at::Tensor& log_true);

// log N(x; 0, I_d) at each row of x [m, d].
at::Tensor standard_normal_log_density(const at::Tensor& x);

struct BandwidthSelection {
  double best = 0;  // h* (the grid value with the largest mean log-likelihood)
  std::vector<double> grid, mean_log_likelihood;
};
BandwidthSelection select_bandwidth(const at::Tensor& data, const at::Tensor& heldout,
                                    const std::vector<double>& grid);

struct GaussianThresholds {
  double alpha = 0, h_g = 0, h_clt = 0;
};
// The derived thresholds above for α > 0.
GaussianThresholds gaussian_thresholds(double alpha);

}  // namespace lowrank::kernel_methods
