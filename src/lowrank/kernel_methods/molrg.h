// MoLRG: the posterior-mean denoiser of a mixture of low-rank Gaussians, trained as a diffusion
// model's denoiser — Wang, Zhang, Zhang, Chen, Ma & Qu, 2024, "Diffusion Models Learn Low-Dimensional
// Distributions via Subspace Clustering", arXiv:2409.02426.
//
// Data: x₀ = U*_k a with k uniform over K components, a ~ N(0, I_r) and U*_k ∈ St(n, r) (the
// authors' generator, github.com/huijieZH/Diffusion-Model-Generalizability, edm/training/dataset.py
// class MoLRG, draws the K bases as disjoint column blocks of one random orthogonal matrix). Noising
// x_t = s_t x₀ + γ_t ε. Given the component, x_t ~ N(0, s²UUᵀ + γ²I) and
//   E[x₀ | x_t, k] = s/(s² + γ²) · U_kU_kᵀ x_t,
// and Bayes over equal-weight, equal-rank components gives the weights (the log-determinants cancel)
//   w_k(x_t) = softmax_k( s² ‖U_kᵀx_t‖² / (2γ²(s² + γ²)) ),
// so the paper's MoLRG-parameterised denoiser is
//   x_θ(x_t) = Σ_k w_k(x_t) · s/(s² + γ²) · U_kU_kᵀ x_t,   θ = {U_k ∈ St(n, r)}.
// Training minimises the denoising loss (1/N) Σ_i E_{σ, ε} ‖x_θ(s x₀ⁱ + γ ε) − x₀ⁱ‖² over θ; the paper
// shows this is subspace clustering, and for K = 1 the optimum is the top-r (uncentred) principal
// subspace of the data.
//
// Here s = 1 and γ = σ runs over `noise_levels` geometrically spaced values in [sigma_min, sigma_max]
// (equal weights), with `noise_samples` fresh ε draws per level and step; U_k is trained by
// gradient descent on that Monte-Carlo loss (autograd), each step followed by the QR retraction
// (linalg/grassmann). Deviation (named): the paper states the loss as an expectation over a noise
// schedule; the grid, the equal weights and the plain GD are this port's choices (the authors' code
// trains UNets on MoLRG data and has no trainer for this parameterisation).
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

namespace lowrank::kernel_methods {

// The posterior mean x_θ(x_t) for x_t [m, n], bases [K, n, r], scale s and noise γ: [m, n].
// Differentiable in the bases.
at::Tensor molrg_denoise(const at::Tensor& x_t, const at::Tensor& bases, double scale, double noise);
// The component weights w_k(x_t): [m, K].
at::Tensor molrg_weights(const at::Tensor& x_t, const at::Tensor& bases, double scale, double noise);

struct MolrgOptions {
  int64_t components = 2;    // K
  int64_t rank = 2;          // r
  double sigma_min = 0.1;    // smallest γ
  double sigma_max = 2.0;    // largest γ
  int64_t noise_levels = 8;  // grid size
  int64_t noise_samples = 4;
  int64_t steps = 200;
  double learning_rate = 0.05;
  double predict_sigma = 0.5;  // the noise level predict() denoises at
};

struct MolrgFit {
  at::Tensor bases;          // [K, n, r] orthonormal
  std::vector<double> loss;  // the Monte-Carlo denoising loss at each step
};

// Trains the K bases on clean data x₀ [N, n].
MolrgFit molrg_fit(const at::Tensor& x0, const MolrgOptions& options, at::Generator& generator);

// ‖U Uᵀ − V Vᵀ‖_F for bases u, v [n, r].
double subspace_distance(const at::Tensor& u, const at::Tensor& v);

}  // namespace lowrank::kernel_methods
