// Random feature maps shared by the kernel methods (kernel_methods/) and the SNNK adapter
// (adapt/snnk.cpp). Each map turns inputs x [n, d] into features Φ [n, m] whose inner products
// estimate a kernel, E_G[Φ(x)·Φ(y)] = k(x, y), with an error that falls like m^{-1/2}.
//
//   relu_features:    Φ(x) = ReLU(G x) / √m,  G [m, d] with N(0, 1) entries. Its kernel is half
//                     the degree-1 arc-cosine kernel of Cho & Saul (2009):
//                     E[ReLU(gᵀx) ReLU(gᵀy)] = ‖x‖‖y‖(sin θ + (π − θ) cos θ)/(2π), θ = ∠(x, y)
//                     (kernel_methods/gram.h's arccos1 is twice this).
//   fourier_features: Φ(x) = √(2/m) cos(W x + b), W [m, d] ~ N(0, 1/σ²), b ~ U[0, 2π)
//                     (Rahimi & Recht, 2007, "Random Features for Large-Scale Kernel Machines",
//                     NeurIPS): E = exp(−‖x − y‖²/(2σ²)), the RBF kernel of bandwidth σ.
//   universal_features: the complex "universal random features" of Sehanobish, Choromanski et
//                     al. (2024, "Scalable Neural Network Kernels", ICLR, arXiv:2310.13225), for
//                     f(wᵀx) with f(z) = ∫τ(ξ)e^{iξz}dξ, through the identity
//                     e^{c wᵀx} = E_g[e^{a gᵀw − c‖w‖²/2} e^{a gᵀx − c‖x‖²/2}], a² = c = iξ:
//                       φ_j(x) = exp(a_j g_jᵀx − a_j²‖x‖²/2)/√m,   a_j = √(iξ_j),
//                     and Re Σ_j φ_j(x) ψ_j(w, b) ≈ f(wᵀx + b) with ψ_j(w, b) = (τ/p)(ξ_j) e^{iξ_j b} φ_j(w)
//                     for ξ_j ~ p. Returned complex; the caller multiplies in the (τ/p)(ξ_j) e^{iξ_j b}.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace lowrank::linalg {

// Φ = ReLU(x Gᵀ)/√m for x [..., d] and G [m, d]: [..., m].
at::Tensor relu_features(const at::Tensor& x, const at::Tensor& g);

// Φ = √(2/m) cos(x Wᵀ + b) for x [..., d], W [m, d], b [m]: [..., m]. Draw W with entries
// N(0, 1/σ²) and b uniform on [0, 2π) for the RBF kernel of bandwidth σ.
at::Tensor fourier_features(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b);

// φ_j(x) = exp(a_j g_jᵀx − a_j² ‖x‖²/2)/√m with a_j = √(i ξ_j) (principal root) for x [n, d] real,
// G [m, d] real and ξ [m] real: complex [n, m]. The expectation over g ~ N(0, I) of
// φ_j(x)·φ_j(w)·m is e^{iξ_j xᵀw}.
at::Tensor universal_features(const at::Tensor& x, const at::Tensor& g, const at::Tensor& xi);

}  // namespace lowrank::linalg
