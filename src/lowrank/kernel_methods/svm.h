// Binary C-support-vector classification on a precomputed kernel, solved by SMO with the
// second-order working-set selection of LIBSVM (Fan, Chen & Lin, 2005, "Working Set Selection
// Using Second Order Information for Training Support Vector Machines", JMLR 6, Algorithm 1 / WSS2;
// Chang & Lin, LIBSVM, svm.cpp: Solver::select_working_set, Solver::Solve, Solver::calculate_rho).
//
// Dual, with Q_ij = y_i y_j K_ij and labels y ∈ {−1, +1}:
//   min_α ½ αᵀQα − 1ᵀα   s.t.  0 ≤ α_i ≤ C,  yᵀα = 0;   gradient G = Qα − 1 (α = 0, G = −1 at start).
// WSS2: i = argmax_{t ∈ I_up} −y_t G_t; j = argmin over t ∈ I_low with −y_t G_t < −y_i G_i of
// −b_it²/a_it, a_it = K_ii + K_tt − 2K_it (τ = 1e-12 when ≤ 0), b_it = −y_i G_i + y_t G_t; stop when
// max_{I_up} −yG − min_{I_low} −yG < tolerance (LIBSVM's ε, default 1e-3).
// The pair is updated analytically and clipped to the box as LIBSVM does; ρ is the mean of y_iG_i
// over free α_i (else the midpoint of the bounds), and the decision is f(x) = Σ_i α_i y_i K(x_i, x) − ρ.
// Deviation: no shrinking (LIBSVM's heuristic only speeds the solve; the optimum is the same).
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace lowrank::kernel_methods {

struct SvmOptions {
  double c = 1.0;           // box constraint C > 0
  double tolerance = 1e-3;  // LIBSVM's stopping ε
  int64_t max_iterations = 10000000;
};

struct SvmSolution {
  at::Tensor dual_coef;  // α_i y_i [n]
  double rho = 0;        // decision = K(x, X)·dual_coef − ρ
  int64_t iterations = 0;
  bool converged = false;
};

// k [n, n] the training Gram matrix, labels [n] with values −1 and +1 (InvalidArgument otherwise).
SvmSolution svm_fit(const at::Tensor& k, const at::Tensor& labels, const SvmOptions& options = {});

// The decision values for cross [m, n] = K(x_test, X_train).
at::Tensor svm_decision(const SvmSolution& solution, const at::Tensor& cross);

}  // namespace lowrank::kernel_methods
