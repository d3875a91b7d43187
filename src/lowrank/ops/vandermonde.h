// The Vandermonde product of diagonal state space models (S4D; Gu, Gupta, Goel and Ré, 2022, "On
// the Parameterization and Initialization of Diagonal State Space Models", arXiv:2206.11893, §3.2):
//   K[h, l] = 2 · Re Σ_n c[h, n] · exp(x[h, n] · l),   l = 0 … L−1
// where x = log of the discretised diagonal state matrix (ΔA for ZOH) and c folds C, B and the
// discretisation of B. The factor 2 · Re is conjugate symmetry: each of the N/2 modes stands for itself
// and its complex conjugate. The naive product materialises the (H, N/2, L) matrix exp(x·l)
// (state-spaces/s4, src/models/functional/vandermonde.py, `log_vandermonde_naive`); the CUDA and
// KeOps kernels of that repository never store it. Here the positions are taken in chunks, so at most
// H · N/2 · chunk complex entries exist at a time, forward and backward (the backward recomputes each
// chunk instead of saving it). Within a chunk starting at l₀, exp(x·(l₀ + j)) = exp(x·l₀) ·
// exp(x·j), with exp(x·j) for j < chunk computed once: a complex product per entry instead of a
// complex exponential, each factor correctly rounded, so no error builds up along l:
//   ∂ℓ/∂c̄[h, n] = 2 Σ_l g[h, l] · conj(exp(x l)),   ∂ℓ/∂x̄[h, n] = 2 c̄ Σ_l g[h, l] · l · conj(exp(x l))
// (PyTorch's convention for complex gradients: the conjugate Wirtinger derivative of the real loss,
// times 2).
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace lowrank::ops {

// c, x: [H, M] complex (cfloat or cdouble, same dtype) -> K [H, L] real (float or double).
// `chunk_elements` bounds H · M · chunk (0: 2^20). Differentiable in c and x.
at::Tensor log_vandermonde(const at::Tensor& c, const at::Tensor& x, int64_t L, int64_t chunk_elements = 0);

}  // namespace lowrank::ops
