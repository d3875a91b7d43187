// Kernel ridge regression and the Gaussian-process evidence, and ridge regression over a whole grid
// of ridges from one thin SVD.
//
// KRR / GP regression (Rasmussen & Williams, 2006, "Gaussian Processes for Machine Learning",
// Algorithm 2.1): with L = chol(K + λI),
//   α = Lᵀ \ (L \ y),   f̂(x*) = k(x*, X) α,
//   log p(y | X) = −½ yᵀα − Σᵢ log Lᵢᵢ − (n/2) log 2π     (per output column, summed).
// When K + λI is not numerically positive definite the factorisation is retried with a jitter
// τ·I added, τ = 1e-10·mean(diag K) growing ×10 up to 1e-2·mean(diag K); the jitter used is
// returned (and reported by the callers), and a matrix still not PD after the last one is an error
// that names it.
//
// Ridge path: for features Φ [n, k] = U S Vᵀ (thin SVD), β(λ) = V diag(sᵢ/(sᵢ² + λ)) Uᵀ y for every
// λ of a grid, so one O(n k min(n,k)) factorisation serves the whole grid (each λ then costs
// O(k·min(n,k)·outputs)).
#pragma once

#include <vector>

#include <ATen/ATen.h>

namespace lowrank::kernel_methods {

struct CholeskyFactor {
  at::Tensor lower;     // L with L Lᵀ = K + jitter·I
  double jitter = 0.0;  // 0 when K itself factorised
};

// `what` names the matrix in the error. Throws InvalidArgument for a non-square K and when even the
// largest jitter leaves it not PD.
CholeskyFactor cholesky_with_jitter(const at::Tensor& k, std::string_view what);

struct KrrSolution {
  at::Tensor alpha;         // [n] or [n, outputs]
  double jitter = 0.0;      // added on top of λ
  double log_evidence = 0;  // log N(y; 0, K + (λ + jitter) I), summed over output columns
};

// Solves (K + λI) α = y by Cholesky. y [n] or [n, outputs]. λ ≥ 0 (0 is interpolation).
KrrSolution krr_solve(const at::Tensor& k, const at::Tensor& y, double ridge);

struct RidgePath {
  at::Tensor u, s, v;  // thin SVD of the features: Φ = U diag(s) Vᵀ
  at::Tensor uty;      // Uᵀ y [r] or [r, outputs]
};

// Factorises Φ [n, k] once for targets y [n] or [n, outputs].
RidgePath ridge_path(const at::Tensor& features, const at::Tensor& y);
// β(λ) [k] or [k, outputs]; λ > 0, or λ = 0 for the minimum-norm least-squares solution.
at::Tensor ridge_coefficients(const RidgePath& path, double ridge);
// Fitted values Φβ(λ) on the training set, without forming β: U diag(s²/(s² + λ)) Uᵀ y.
at::Tensor ridge_fitted(const RidgePath& path, double ridge);

}  // namespace lowrank::kernel_methods
