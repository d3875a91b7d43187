// The Cauchy kernel of S4 (Gu, Goel and Ré, 2022, "Efficiently Modeling Long Sequences with
// Structured State Spaces", arXiv:2111.00396, §3.3, Lemma C.3): the resolvent of a diagonal matrix
// evaluated at L nodes,
//   y[r, k] = Σ_n v[r, n] / (z[k] − w[r, n])                         (conj = false)
//   y[r, k] = Σ_n v[r, n] / (z[k] − w[r, n]) + v̄[r, n] / (z[k] − w̄[r, n])   (conj = true)
// the second being the conjugate-symmetric form S4 keeps N/2 modes for (state-spaces/s4,
// src/models/functional/cauchy.py, `cauchy_naive`; extensions/kernels/cauchy.cpp for the CUDA one).
// A CPU kernel: rows in parallel, the (rows, N, L) Cauchy matrix never stored; the backward is a
// second pass of the same loops,
//   ∂ℓ/∂v̄[r, n] = Σ_k g[r, k] · conj(1 / (z[k] − w[r, n])),
//   ∂ℓ/∂w̄[r, n] = Σ_k g[r, k] · conj(v[r, n] / (z[k] − w[r, n])²)
// (PyTorch's convention; y is holomorphic in v and w, and the conjugate half goes through autograd's
// conj). z is a constant (the nodes); no gradient flows to it.
#pragma once

#include <ATen/ATen.h>

namespace lowrank::ops {

// v, w: [R, N] complex (cfloat or cdouble); z: [L] of the same dtype -> [R, L]. Differentiable in v
// and w.
at::Tensor cauchy(const at::Tensor& v, const at::Tensor& z, const at::Tensor& w, bool conj = true);

}  // namespace lowrank::ops
