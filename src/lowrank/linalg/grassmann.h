// Grassmann / Stiefel manifold steps for orthonormal bases U ∈ St(n, k) (UᵀU = I_k), standing for
// the subspace span(U) on the Grassmannian Gr(n, k) — Edelman, Arias & Smith, 1998, "The Geometry
// of Algorithms with Orthogonality Constraints", SIAM J. Matrix Anal. Appl. 20(2), §2.5 (Thm 2.3):
//   tangent projection   Π_U(G) = (I − UUᵀ) G                 (the horizontal part of G at U)
//   geodesic             U(t) = U V cos(Σt) Vᵀ + W sin(Σt) Vᵀ  for the thin SVD H = W Σ Vᵀ of a
//                        tangent direction H (UᵀH = 0); U(0) = U, U'(0) = H, U(t)ᵀU(t) = I.
//   QR retraction        R(A) = Q of A = QR with diag(R) ≥ 0 (the sign fix makes Q unique).
// Equivalently U(t) = [U, U⊥] expm(t [[0, −Bᵀ], [B, 0]]) [I_k; 0] with B = U⊥ᵀH (the test's oracle).
// Used by GCR (kernel_methods/gcr) and MoLRG.
#pragma once

#include <ATen/ATen.h>

namespace lowrank::linalg {

// (I − UUᵀ) G for u [n, k], g [n, k] (or batched [..., n, k]).
at::Tensor grassmann_tangent_projection(const at::Tensor& u, const at::Tensor& g);

// U(t) along the geodesic from u [n, k] with initial velocity `tangent` [n, k] (must satisfy
// Uᵀ·tangent = 0; not re-projected here). Batched over leading dims.
at::Tensor grassmann_geodesic_step(const at::Tensor& u, const at::Tensor& tangent, double t);

// Q of the thin QR of a [n, k] (n ≥ k), columns' signs chosen so that diag(R) ≥ 0. Batched.
at::Tensor qr_retraction(const at::Tensor& a);

}  // namespace lowrank::linalg
