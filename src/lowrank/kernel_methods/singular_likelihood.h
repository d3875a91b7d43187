// Likelihood estimation of a singular distribution with a deep generative model and instance
// noise — Chae, Kim, Kim & Lin, "A likelihood approach to nonparametric estimation of a singular
// distribution using deep generative models", JMLR 24 (2023), arXiv:2105.04046.
//
// Model: X = G_θ(Z) + σε with Z ~ N(0, I_r), ε ~ N(0, I_D), r ≪ D, so that
//   p_θ,σ(x) = E_Z N(x; G_θ(Z), σ²I) ≈ logmeanexp_m log N(x; G_θ(z_m), σ²I)   (z_1..z_M ~ N(0, I_r)),
// or bounded below by the ELBO with a Gaussian q(z) = N(μ, diag s²):
//   ELBO(x) = E_q log N(x; G_θ(z), σ²I) − KL(q ‖ N(0, I)),   KL = ½Σ(s² + μ² − 1 − log s²) ≤ log p(x).
// Without perturbation the MLE over (θ, σ) is not consistent for data on an r-dimensional manifold:
// σ → 0 makes the likelihood blow up at the data. The estimator therefore perturbs the data once
// with instance noise, X̃ = X + τε, and fits the sieve MLE over σ ≥ σ_floor (σ_floor = τ by default,
// the paper's σ ≳ τ), maximising the logmeanexp log-likelihood of X̃ by Adam with fresh z_m each
// step. The fit is judged by the sliced Wasserstein-1 distance between G(Z) and the truth:
//   SW₁(P, Q) = E_u W₁(uᵀP, uᵀQ) over unit u, with the 1-D W₁ of two equal-size samples
//   = (1/n)Σ|u_(i) − v_(i)| (sorted samples).
// The generator is an MLP z → W₂ tanh(W₁z + b₁) + b₂ (or the linear z → W₂z + b₂, whose model is
// exactly N(b₂, W₂W₂ᵀ + σ²I), the tests' oracle). No authors' code was found to follow; the
// network sizes and optimiser are this implementation's choices.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace lowrank::kernel_methods {

struct Generator {
  at::Tensor w1, b1;                                 // [h, r], [h]; undefined for a linear generator
  at::Tensor w2, b2;                                 // [D, h] (or [D, r]), [D]
  at::Tensor operator()(const at::Tensor& z) const;  // z [M, r] → [M, D]
};

// log p(x_i) ≈ log (1/M)Σ_m N(x_i; means_m, σ²I) for x [n, D], means [M, D] → [n].
at::Tensor logmeanexp_log_likelihood(const at::Tensor& x, const at::Tensor& means, double sigma);
// The ELBO above per x_i [n] with q_i = N(mu_i, diag(exp(log_std_i))²) ([n, r] each), estimated with
// `samples` draws of z per point.
at::Tensor gaussian_elbo(const at::Tensor& x, const Generator& generator, double sigma, const at::Tensor& mu,
                         const at::Tensor& log_std, int64_t samples, at::Generator& rng);
// 1-D W₁ of two equal-size samples [n]; SW₁ of a [n, D] and b [n, D] over `directions` random
// unit vectors.
double wasserstein1_1d(const at::Tensor& u, const at::Tensor& v);
double sliced_wasserstein1(const at::Tensor& a, const at::Tensor& b, int64_t directions, at::Generator& rng);

struct SingularLikelihoodOptions {
  int64_t latent_dim = 1;   // r
  int64_t hidden = 32;      // MLP width
  int64_t samples = 256;    // M
  double tau = 0.05;        // instance noise on the data
  double sigma_floor = -1;  // sieve bound σ ≥ floor; < 0 means τ
  int64_t steps = 500;
  double learning_rate = 1e-2;
};

struct SingularLikelihoodFit {
  Generator generator;
  double sigma = 1;
};

SingularLikelihoodFit singular_likelihood_fit(const at::Tensor& x, const SingularLikelihoodOptions& options,
                                              at::Generator& rng);

}  // namespace lowrank::kernel_methods
