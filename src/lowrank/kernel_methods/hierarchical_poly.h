// Hierarchical polynomials h = g∘p learned by a layerwise-trained three-layer network — Wang,
// Nichani & Lee, "Learning Hierarchical Polynomials with Three-Layer Neural Networks", ICLR 2024,
// arXiv:2311.13774.
//
// Target: x ~ N(0, I_d), p(x) = xᵀAx/√2 with A symmetric, tr A = 0, ‖A‖_F = 1, so that
//   E p = 0 and Var p = 2 tr(A²)/2 = ‖A‖²_F = 1,
// and h(x) = g(p(x)) for a degree-q polynomial g (g(z) = z³ in the paper's experiment).
// Network: f(x) = Σ_j a_j σ(w_jᵀφ(x) + b_j) + c, σ = ReLU, with the degree-2 first layer
//   φ(x) = vec(xxᵀ − I) ∈ R^{d²} (fixed; the paper's first layer of degree-k features, k = 2).
// Layerwise training (the paper's Algorithm 1):
//   - stage 1: a_j = ±ε (random signs, ε = init_scale small), W = 0, biases b⁰_j = 1 (every unit
//     active, σ'(b⁰) = 1); one gradient step of L = ½Ê[(f − y)²] on W:
//       w_j = −η ∂L/∂w_j = η a_j Ê[(y − f⁰(x)) φ(x)],
//     so every w_j ∝ ±Ê[yφ(x)] ∝ vec A up to terms of order 1/d and sampling error: the network
//     has learnt the feature p. η is taken so that ‖w_j‖ = 1 (then w_jᵀφ(x) ≈ ±√2 p(x));
//   - stage 2: fresh biases b_j ~ U[−bias_range, bias_range], then ridge regression with an
//     unpenalised intercept for (a, c) on the features σ(w_jᵀφ(x) + b_j) — a 1-D random-feature
//     fit of g.
// Deviation (named): the paper leaves η as a constant of its theorem; here it is the one that
// makes ‖w_j‖ = 1, which only rescales what stage 2 sees. No authors' code was found to follow.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace lowrank::kernel_methods {

// A random symmetric A [d, d] with tr A = 0 and ‖A‖_F = 1 (d ≥ 2).
at::Tensor random_traceless_quadratic(int64_t d, at::Generator& generator);
// p(x) = xᵀAx/√2 for x [n, d] → [n].
at::Tensor quadratic_feature(const at::Tensor& a, const at::Tensor& x);
// φ(x) = vec(xxᵀ − I) for x [n, d] → [n, d²].
at::Tensor degree2_features(const at::Tensor& x);

struct HierarchicalPolyOptions {
  int64_t width = 256;       // hidden units m
  double init_scale = 1e-3;  // ε: |a_j| at stage 1
  double bias_range = 3.0;   // stage-2 biases b_j ~ U[−range, range]
  double ridge = 1e-4;       // stage-2 ridge λ (times n)
};

struct HierarchicalPolyNetwork {
  at::Tensor w;  // [m, d²] middle weights after stage 1
  at::Tensor b;  // [m] stage-2 biases
  at::Tensor a;  // [m] outer weights after stage 2
  double c = 0;  // intercept
};

// Stage 1 alone: W after the single step, rows normalised (see the header comment).
at::Tensor hierarchical_poly_stage1(const at::Tensor& x, const at::Tensor& y, const at::Tensor& signs,
                                    double init_scale);
HierarchicalPolyNetwork hierarchical_poly_fit(const at::Tensor& x, const at::Tensor& y,
                                              const HierarchicalPolyOptions& options,
                                              at::Generator& generator);
at::Tensor hierarchical_poly_predict(const HierarchicalPolyNetwork& network, const at::Tensor& x);

}  // namespace lowrank::kernel_methods
