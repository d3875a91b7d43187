// Scalable neural network kernels (SNNK) — Sehanobish, Choromanski, Zhao, Dubey & Likhosherstov,
// 2024, "Scalable Neural Network Kernels", ICLR, arXiv:2310.13225 (OpenReview 4iPw1klFWa).
//
// A feed-forward layer f(Wx + b) is replaced by Re Ψ(W, b)·Φ(x): random features of the inputs and
// of the parameters, joined only by a dot product, so an outer linear layer A can be folded in,
// A f(Wx + b) ≈ Re (AΨ)Φ(x) ("bundling"), and under a squared loss AΨ is a ridge regression.
//
// Universal random features (URF, the paper's §3; reference code: arijitthegame/
// neural-network-kernels, src/nnk/nnk.py, create_asym_feats — "equation 10 in the paper" — and
// NNK_Asym_Kernel). For f(z) = ∫ τ(ξ) e^{iξz} dξ and ξ_j ~ p,
//   f(wᵀx + b) = E_ξ[(τ/p)(ξ) e^{iξb} e^{iξ wᵀx}],
// and e^{iξ wᵀx} = e^{a² wᵀx} with a = √(iξ) comes from the Gaussian identity below with g ~ N(0, I_d)
// and the reference code's variance parameter M > −¼ (s = √(1 + 4M)):
//   (1 + 4M)^{d/2} E_g[e^{s a gᵀw − a²‖w‖²/2 − M‖g‖²} e^{s a gᵀx − a²‖x‖²/2 − M‖g‖²}] = e^{a² wᵀx}
// (complete the square: E_g e^{s a gᵀv − 2M‖g‖²} = (1 + 4M)^{−d/2} e^{a²‖v‖²/2}). So with
//   φ_j(x)    = (1 + 4M)^{d/4} exp(s a_j g_jᵀx − a_j²‖x‖²/2 − M‖g_j‖²)/√m,
//   ψ_j(w, b) = (τ/p)(ξ_j) e^{iξ_j b} φ_j(w),
// Re Σ_j φ_j(x) ψ_j(w, b) is an unbiased estimate of f(wᵀx + b) with error ∝ m^{−½}. M = 0 is the
// plain identity (linalg/random_features.h's universal_features); M > 0 shrinks the variance (the
// reference code's √(1 + 4M) on G and −M‖g‖² in the exponent). The activations with a spectral
// measure here:
//   "cos":      p = ½δ₋₁ + ½δ₁ (ξ = ±1, the reference code's xis_creator up to its 2π), τ/p = 1;
//   "sin":      the same ξ, τ/p = −iξ   (½(−i e^{iz} + i e^{−iz}) = sin z);
//   "gaussian": f(z) = e^{−z²/2}, ξ ~ N(0, 1), τ/p = 1 (a continuous measure).
//
// SNNK-ReLU layer (reference code NNK_Relu and phi_relu_mapping_torch): Φ(x) = ReLU(Gx)/√m with G
// [m, d] fixed Gaussian, Ψ initialised to ReLU(GWᵀ)ᵀ/√m, so (ΨΦ(x))_k estimates
// E_g[ReLU(gᵀw_k) ReLU(gᵀx)] = ½ κ₁(w_k, x), half the degree-1 arc-cosine kernel (Cho & Saul, 2009).
// The layer's bias enters as an input coordinate: ReLU(wᵀx + b) = ReLU([w; b]ᵀ[x; 1]).
//
// Registered as `snnk`: the bundled network y ≈ β·Φ(x) + c with the readout solved in closed form,
//   β = argmin ‖(Φ − 1μᵀ)β − (y − ȳ)‖² + λ‖β‖²,  c = ȳ − μᵀβ   (μ the mean feature row; the
// intercept is not penalised), via kernel_methods/krr.h's ridge path — no backpropagation. Features:
//   activation "relu": Φ = ReLU(G[x; 1])/√m, G [m, d + 1];
//   "cos" | "sin" | "gaussian": x scaled by d^{−1/4} (the reference code's input scaling, so the layer
//   sees wᵀx/√d) and the URF φ(x) split into [Re φ, Im φ] [n, 2m] — Re (AΨ)φ is linear in them.
//
// Deviations from the reference code, by name: (1) ξ are drawn i.i.d. from p; NNK_Asym_Kernel instead
// concatenates the features of ξ and −ξ with a 1/√2 (antithetic pairs). (2) Its forward pass divides x
// by d but the weights by d^{1/4}; here x is divided by d^{1/4}, as the weights are. (3) Its G has
// N(0, 0.02²) entries (a "BERT initialisation" hack) although the identity needs N(0, 1); here N(0, 1).
// (4) GELU/tanh: the reference code reaches them through truncated power series (taylor_series.py,
// power_series_kernel.py: random Maclaurin features), not URF; erf's spectral weight τ/p ∝ 1/ξ has
// infinite variance under the URF estimator, so only the three activations above are offered.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/ATen.h>

namespace lowrank::kernel_methods {

// "cos", "sin", "gaussian".
const std::vector<std::string>& urf_activations();
// f(z) exactly, elementwise. InvalidArgument for an activation not in urf_activations().
at::Tensor urf_activation(std::string_view activation, const at::Tensor& z);

// One draw of the URF randomness: G [m, d] ~ N(0, 1), ξ [m] ~ p.
struct UrfDraw {
  std::string activation;
  at::Tensor projection;   // G [m, d] fp64
  at::Tensor frequencies;  // ξ [m] fp64
  double variance_m = 0;   // M > −¼
};
UrfDraw draw_urf(std::string_view activation, int64_t features, int64_t dim, double variance_m,
                 at::Generator& gen);

// φ(x): complex128 [n, m] for x [n, d].
at::Tensor urf_input_features(const UrfDraw& draw, const at::Tensor& x);
// ψ(w, b): complex128 [k, m] for w [k, d] and b [k].
at::Tensor urf_weight_features(const UrfDraw& draw, const at::Tensor& w, const at::Tensor& b);
// Re φ(x) ψ(w, b)ᵀ [n, k] ≈ f(x wᵀ + b).
at::Tensor urf_estimate(const UrfDraw& draw, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b);

// SNNK-ReLU: Φ(x) = ReLU(G[x; 1])/√m [n, m] for x [n, d], G [m, d + 1].
at::Tensor snnk_relu_features(const at::Tensor& x, const at::Tensor& g);
// Ψ = ReLU(G[W, b]ᵀ)ᵀ/√m [k, m] for the layer W [k, d], b [k]: ΨΦ(x) ≈ ½ κ₁([w_k; b_k], [x; 1]).
at::Tensor snnk_relu_weights(const at::Tensor& w, const at::Tensor& b, const at::Tensor& g);

}  // namespace lowrank::kernel_methods
