// Gaussian processes on a line with a Matérn prior, written as linear time-invariant SDEs and
// solved exactly by a Kalman filter plus a Rauch–Tung–Striebel smoother in O(T) — Hartikainen &
// Särkkä, 2010, "Kalman filtering and smoothing solutions to temporal Gaussian process regression
// models" (MLSP), and Särkkä & Solin, 2019, "Applied Stochastic Differential Equations", §12.3.
//
// A Matérn-ν GP u(t) (ν = p + ½) is the first entry of the state x(t) = (u, u', …) of
//   dx/dt = F x + L w(t),   w white noise of spectral density q_c,
// stationary covariance P∞ (F P∞ + P∞ Fᵀ + L q_c Lᵀ = 0), with λ = √(2ν)/ℓ:
//   ν = 1/2:  F = [−λ],                  P∞ = [σ²],               q_c = 2λσ²
//   ν = 3/2:  F = [[0, 1], [−λ², −2λ]],  P∞ = diag(σ², λ²σ²),     q_c = 4λ³σ²
// Between coordinates Δ apart the discrete transition is x_{j+1} = A x_j + q_j with
//   A = expm(FΔ),   q_j ~ N(0, Q),   Q = P∞ − A P∞ Aᵀ,
// and A in closed form: e^{−λΔ} for ν = 1/2, e^{−λΔ}[[1 + λΔ, Δ], [−λ²Δ, 1 − λΔ]] for ν = 3/2.
//
// Here R independent GPs u_1..u_R with the same prior share one chain (state [R·s], the R blocks
// of size s uncoupled in the prior), and the data at each sorted unique coordinate t_j enter as a
// Gaussian term in information form exp(−½ uᵀΛ_j u + η_jᵀu) on u(t_j) ∈ R^R — the form in which the
// multilinear likelihood's moment-matched messages arrive (kernel_methods/funbat.h). The filter
// update in that form, with C = H P Hᵀ and S = Λ C + I,
//   m ← m + P Hᵀ S⁻¹ (η − Λ H m),   P ← P − P Hᵀ S⁻¹ Λ H P,
// needs no inverse of Λ, so a coordinate whose messages are rank-deficient (or zero) is fine.
// The chain starts from the stationary prior N(0, P∞) at the first coordinate, so the smoothed
// marginals are exactly the dense GP posterior with kernel σ² k_ν(|t − t'|/ℓ).
//
// Marginals at a coordinate between t_j and t_{j+1} insert that coordinate into the chain: predict
// from the filtered state at t_j, then one RTS step back from the smoothed state at t_{j+1}; before
// t_0 one RTS step from the stationary prior; after t_{T−1} a prediction from the last smoothed
// state. All three are exact, not approximations.
#pragma once

#include <cstdint>
#include <string_view>
#include <utility>

#include <ATen/ATen.h>

namespace lowrank::kernel_methods {

struct MaternPrior {
  double nu = 1.5;           // 0.5 or 1.5
  double lengthscale = 1.0;  // ℓ > 0
  double variance = 1.0;     // σ² > 0
};

// InvalidArgument naming `what` and the offending field.
void validate(const MaternPrior& prior, std::string_view what);
// The state size s per GP: 1 for ν = 1/2, 2 for ν = 3/2.
int64_t state_order(const MaternPrior& prior);

at::Tensor matern_feedback(const MaternPrior& prior);                     // F [s, s]
at::Tensor matern_stationary_covariance(const MaternPrior& prior);        // P∞ [s, s]
at::Tensor matern_transition(const MaternPrior& prior, double delta);     // A = expm(FΔ), Δ ≥ 0
at::Tensor matern_process_noise(const MaternPrior& prior, double delta);  // Q = P∞ − A P∞ Aᵀ

// The smoothed chain of R GPs over sorted unique coordinates, and what prediction needs.
struct MarkovGpPosterior {
  MaternPrior prior;
  int64_t outputs = 1;             // R
  at::Tensor coords;               // [T] strictly increasing
  at::Tensor filtered_mean;        // [T, R·s]  (state index r·s + i: derivative i of u_r)
  at::Tensor filtered_covariance;  // [T, R·s, R·s]
  at::Tensor smoothed_mean;        // [T, R·s]
  at::Tensor smoothed_covariance;  // [T, R·s, R·s]
};

// Kalman filter + RTS smoother for coords [T] (strictly increasing), precision [T, R, R]
// (symmetric PSD) and shift [T, R]. Throws InvalidArgument on shapes or unsorted coordinates.
MarkovGpPosterior smooth_markov_gp(const MaternPrior& prior, const at::Tensor& coords,
                                   const at::Tensor& precision, const at::Tensor& shift);

// Posterior means [m, R] and covariances [m, R, R] of u(t) at arbitrary finite queries [m].
std::pair<at::Tensor, at::Tensor> markov_gp_marginals(const MarkovGpPosterior& posterior,
                                                      const at::Tensor& queries);
// The same at the chain's own coordinates, read off the smoothed states: [T, R] and [T, R, R].
std::pair<at::Tensor, at::Tensor> smoothed_marginals(const MarkovGpPosterior& posterior);

}  // namespace lowrank::kernel_methods
