// Random-feature ridge regression — Simon, Karkada, Ghosh & Belkin, 2023, "More is Better in Modern
// Machine Learning: when Infinite Overparameterization is Optimal and Overfitting is Obligatory",
// arXiv:2311.14646 (ICLR 2024).
//
// Features (the paper's RF model, §3): k random features of x ∈ R^d,
//   φ_j(x) = σ(w_jᵀx/√d)/√k,  w_j ~ N(0, I_d),  σ = ReLU      (activation "relu"), or
//   φ_j(x) = √(2/k) cos(w_jᵀx + b_j), w_j ~ N(0, I/h²), b_j ~ U[0, 2π)   ("fourier", RBF of bandwidth h);
// ridge: β = argmin ‖Φβ − y‖² + λ‖β‖² = (ΦᵀΦ + λI)⁻¹Φᵀy, predictions f̂(x) = φ(x)ᵀβ.
// One thin SVD Φ = U S Vᵀ per (n, k) serves a whole grid of λ (kernel_methods/krr.h's ridge path):
// β(λ) = V diag(s/(s² + λ)) Uᵀy. As k → ∞ the ReLU model tends to KRR with ½·arccos1(x/√d, y/√d)
// (kernel_methods/gram.h), the paper's "infinite overparameterisation".
//
// Omniscient risk estimate (eigenlearning; Simon, Dickens, Karkada & DeWeese, 2021, "The
// Eigenlearning Framework", arXiv:2110.03922; the paper's eqs. for KRR, used for the power-law
// claims): for kernel eigenvalues λ_i, target coefficients v_i, n samples, ridge δ and noise ε²,
//   κ solves Σ_i λ_i/(λ_i + κ) + δ/κ = n,   L_i = λ_i/(λ_i + κ),   E₀ = n/(n − Σ_i L_i²),
//   test MSE = E₀ (Σ_i (1 − L_i)² v_i² + ε²),   train MSE = (δ/(nκ))² · test MSE.
// The test MSE is against noisy labels (it includes ε²). Reference code: james-simon/eigenlearning,
// theory.py (κ by bisection on the same conservation law; e0, test_mse, train_mse as above).
#pragma once

#include <vector>

#include <ATen/ATen.h>

namespace lowrank::kernel_methods {

struct EigenlearningRisk {
  double kappa = 0;           // the effective regularisation κ
  at::Tensor learnabilities;  // L_i
  double e0 = 0;              // the overfitting coefficient E₀
  double test_mse = 0;
  double train_mse = 0;
};

// eigenvalues λ_i > 0 [M], coefficients v_i [M], n ≥ 1, ridge δ ≥ 0, noise ε² ≥ 0. With δ = 0 the
// conservation law needs n < M (interpolation), InvalidArgument otherwise.
EigenlearningRisk eigenlearning_risk(const at::Tensor& eigenvalues, const at::Tensor& coefficients, int64_t n,
                                     double ridge, double noise_variance);

// The mean squared errors along a λ grid from one SVD of the training features:
// train_mse[i] = ‖Φβ(λ_i) − y‖²/n, test_mse[i] = ‖Φ_test β(λ_i) − y_test‖²/n_test (averaged over
// output columns).
struct RidgePathErrors {
  std::vector<double> lambdas, train_mse, test_mse;
};
RidgePathErrors ridge_path_errors(const at::Tensor& train_features, const at::Tensor& y_train,
                                  const at::Tensor& test_features, const at::Tensor& y_test,
                                  const std::vector<double>& lambdas);

}  // namespace lowrank::kernel_methods
