// GL⁺(2) and SL(2) through the global chart of Mironenco & Forré (2024, "Lie Group Decompositions
// for Equivariant Neural Networks", ICLR, arXiv:2310.11366), as the authors' code writes it
// (github.com/mirceamironenco/rgenn, rgenn/groups.py: GLn.left_polar_cartan, left_xi_inv,
// left_polar_canonical_decomposition):
//   left polar decomposition   g = P·R,  P = (g gᵀ)^{1/2} symmetric positive definite, R = P⁻¹g ∈ SO(2)
//   chart ξ⁻¹: GL⁺(2) → gl(2)  g ↦ log P + log R   (a symmetric plus a skew-symmetric matrix)
//   ξ: gl(2) → GL⁺(2)          X ↦ exp(S)·exp(A),  S = (X + Xᵀ)/2,  A = (X − Xᵀ)/2
// ξ is a diffeomorphism from {X : the skew part's angle θ ∈ (−π, π]} onto GL⁺(2), unlike the matrix
// exponential, which does not reach all of it. On SL(2), S is traceless (det P = 1).
// (The summary writes g = R(θ)·exp(S), the right polar form; we follow the authors' code, which
// puts the symmetric factor on the left.)
//
// Haar measure. SL(2) = K A K with K = SO(2), A = {diag(eᵗ, e⁻ᵗ)}: g = R(φ)·diag(eᵗ, e⁻ᵗ)·R(ψ),
// t ≥ 0, and the Haar measure is ∝ sinh(2t) dφ dt dψ (the KAK integration formula of SL(2, ℝ):
// one positive root, α = 2t, of multiplicity one; the paper's §B and its Table 1). sample_sl2_haar draws φ, ψ
// ~ U[0, 2π) and t from the density ∝ sinh(2t) on [0, T] by inverting its CDF, t = ½ acosh(1 + u(cosh 2T −
// 1)): the Haar measure restricted to the compact set ‖g‖ ≤ e^T. GL⁺(2) = ℝ₊·SL(2) adds a scale eˢ, s ~ U[−L,
// L] (the Haar measure of ℝ₊ is ds). The truncation breaks invariance only near its edge.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace lowrank::nn {

// Both factors of g = P·R, for g [..., 2, 2] with det g > 0 (float64). InvalidArgument otherwise.
struct PolarFactors {
  at::Tensor p;  // symmetric positive definite
  at::Tensor r;  // rotation
};
PolarFactors left_polar(const at::Tensor& g);

// ξ⁻¹: [..., 2, 2] in GL⁺(2) → [..., 2, 2] in gl(2) (log P + log R).
at::Tensor lie_chart(const at::Tensor& g);
// ξ: [..., 2, 2] in gl(2) → GL⁺(2) (exp of the symmetric part times exp of the skew part).
at::Tensor lie_chart_inverse(const at::Tensor& x);

// t of g ∈ SL(2) in its KAK form: the singular values are eᵗ and e⁻ᵗ, ‖g‖²_F = 2 cosh 2t.
at::Tensor sl2_kak_t(const at::Tensor& g);

// n Haar-distributed elements of SL(2) with t ≤ t_max, [n, 2, 2] float64, seeded.
at::Tensor sample_sl2_haar(int64_t n, double t_max, uint64_t seed);
// As above times a scale eˢ, s ~ U[−log_scale_max, log_scale_max]: GL⁺(2).
at::Tensor sample_gl2_haar(int64_t n, double t_max, double log_scale_max, uint64_t seed);

// The continuous kernels of the group convolutions, evaluated at transformed coordinates: the
// authors' INR with a one-layer SIREN (rgenn/inr.py: SIREN with num_hidden 0, then final_linear),
//   k(x) = W₂ sin(ω₀ (W₁ x + b₁)) + b₂,   ω₀ = 10,
// so that a kernel can vary within a 5×5 window (a smooth activation gives nearly linear kernels,
// a three-dimensional family of blur and gradient filters). Initialisation as theirs: W₁ ~
// U(±1/in) (SineLayer, is_first), b₁ ~ U(±1/√in) (nn.Linear's), W₂ ~ U(±√(6/hidden)/√fan_in) with
// fan_in = in_channels·k² of the convolution (final_gain 6), b₂ = 0.
struct KernelMlp {
  at::Tensor w1, b1, w2, b2;  // [hidden, in], [hidden], [out, hidden], [out]
  double w0 = 10.0;
  static KernelMlp random(int64_t in, int64_t hidden, int64_t out, int64_t fan_in, uint64_t seed,
                          at::ScalarType dtype = at::kFloat);
  at::Tensor forward(const at::Tensor& coords) const;  // [..., in] → [..., out]
};

// The lifting convolution from images on ℝ² to functions on ℝ² ⋊ G, for group elements g_n
// sampled from G ⊂ GL⁺(2) (the paper's lifting layer; its Monte-Carlo form when the g_n are Haar
// samples):
//   (L f)(p, g_n) = Σ_c Σ_δ k(g_n⁻¹ δ)[o, c] · f_c(p + δ) / |det g_n|
// over the k×k offsets δ = (column, row) − centre in pixel units divided by the radius (so δ ∈
// [−1, 1]²), zero padding. With u a symmetry of the offset grid (a rotation by 90°), L(u·f)(p, g) =
// (L f)(u⁻¹p, u⁻¹g) exactly; the test checks it.
struct LiftingConv2d {
  int64_t in_channels = 0, out_channels = 0, kernel_size = 0;
  KernelMlp kernel;  // ℝ² → ℝ^{out·in}

  // InvalidArgument for an even or non-positive kernel size or non-positive channels.
  static LiftingConv2d random(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t hidden,
                              uint64_t seed, at::ScalarType dtype = at::kFloat);
  // x [B, C_in, H, W], g [N, 2, 2] → [B, C_out, N, H, W].
  at::Tensor forward(const at::Tensor& x, const at::Tensor& g) const;
  // The kernels [N, C_out, C_in, k, k] that forward applies.
  at::Tensor kernels(const at::Tensor& g) const;
};

// The group convolution on ℝ² ⋊ G by Monte Carlo over group samples (the paper's group-convolution
// layer; kernels are MLPs on the spatial offset and the chart coordinates of h⁻¹g, Eq. for the
// convolution on the product of ℝ² and the group):
//   (K f)(p, h_n) = (1/M) Σ_m Σ_c Σ_δ k(h_n⁻¹δ, ξ⁻¹(h_n⁻¹ g_m))[o, c] · f_c(p + δ, g_m) / |det h_n|
// with f given on the input elements g_m (Haar samples: the average estimates ∫_G … dμ(g)) and
// the output on the elements h_n. Equivariance holds for the integral; the Monte-Carlo estimate
// carries an error that falls as M^-½ (tested).
struct GroupConv2d {
  int64_t in_channels = 0, out_channels = 0, kernel_size = 0;
  KernelMlp kernel;  // ℝ^{2 + 4} (offset, chart of h⁻¹g flattened) → ℝ^{out·in}

  static GroupConv2d random(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t hidden,
                            uint64_t seed, at::ScalarType dtype = at::kFloat);
  // x [B, C_in, M, H, W] on the input elements g [M, 2, 2] → [B, C_out, N, H, W] on h [N, 2, 2].
  at::Tensor forward(const at::Tensor& x, const at::Tensor& g, const at::Tensor& h) const;
};

}  // namespace lowrank::nn
