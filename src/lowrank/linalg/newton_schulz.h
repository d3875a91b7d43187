// Newton–Schulz iterations: the orthogonal polar factor and the Moore–Penrose pseudo-inverse,
// with matrix products only (no SVD or QR), so they run well in low precision and on GPUs.
//
// Polar factor (Björck & Bowie, 1971, "An iterative algorithm for computing the best estimate of
// an orthogonal matrix", SIAM J. Numer. Anal. 8(2); Higham, 2008, "Functions of Matrices", ch. 8):
//   X_0 = G / (||G||_F + eps),  X_{k+1} = 1.5 X_k - 0.5 X_k X_k^T X_k,
// converging quadratically to U V^T for G = U Sigma V^T whenever ||X_0||_2 < sqrt(3) (the
// Frobenius scaling gives <= 1). Zero singular values stay zero: a rank-r G gives U_r V_r^T.
// Muon variant (Jordan et al., 2024, "Muon: An optimizer for hidden layers in neural networks",
// kellerjordan.github.io/posts/muon; code zeropower_via_newtonschulz5): the quintic
//   X_{k+1} = a X_k + b (X_k X_k^T) X_k + c (X_k X_k^T)^2 X_k,  (a, b, c) = (3.4445, -4.7750, 2.0315),
// 5 steps. It maximises the slope at 0 and does NOT converge to U V^T: singular values end up
// scattered in roughly [0.7, 1.2] while U and V are exact. Like Muon we transpose a tall matrix
// so the Gram X X^T is the smaller one. Deviation: we iterate in fp32 (Muon uses bf16).
//
// Pseudo-inverse (Ben-Israel & Cohen, 1966, "On iterative computation of generalized inverses and
// associated projections", SIAM J. Numer. Anal. 3(3); starting value from Pan & Schreiber, 1991,
// SIAM J. Sci. Stat. Comput. 12(5)):
//   X_0 = A^T / (||A||_1 ||A||_inf),  X_{k+1} = X_k (2I - A X_k),
// converging quadratically to A^+ (I - A X_{k+1} = (I - A X_k)^2 on range(A)).
//
// Stopping rule (both convergent iterations): once the relative change ||X_{k+1} - X_k||_F /
// ||X_{k+1}||_F drops below tol (default sqrt(eps) of the dtype), one more step is taken — the
// residual is then ~tol^2 ~ eps by quadratic convergence — and the result is marked converged.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace lowrank::linalg {

struct IterativeResult {
  at::Tensor X;
  int64_t iterations = 0;
  bool converged = false;  // the stopping rule fired (always true for the fixed-step quintic)
};

enum class PolarIteration {
  kCubic,        // Björck–Bowie / Newton–Schulz, converges to U V^T
  kMuonQuintic,  // Muon's (3.4445, -4.7750, 2.0315), fixed steps, approximate
};

struct NewtonSchulzOptions {
  PolarIteration iteration = PolarIteration::kCubic;
  int64_t max_steps = -1;  // -1: 100 for kCubic (stops early), 5 for kMuonQuintic (runs all)
  double tol = -1;         // kCubic only; -1: sqrt(eps) of the dtype
  double eps = 1e-7;       // guards the Frobenius scaling of an all-zero G
};

// The (approximate, for the quintic) orthogonal polar factor of G (m, n), same shape. float64
// stays float64, other dtypes compute and return float32. Throws InvalidArgument when G is not 2-D.
IterativeResult newton_schulz_orthogonalize(const at::Tensor& G, const NewtonSchulzOptions& options = {});

struct NewtonSchulzPinvOptions {
  int64_t max_iters = 100;
  double tol = -1;  // -1: sqrt(eps) of the dtype
};

// A^+ (n, m) of A (m, n). Iterations needed grow like 2 log2(cond(A)); not converged within
// max_iters (an ill-conditioned A) is reported, not thrown. For numerically rank-deficient A the
// iteration slowly amplifies the round-off directions — prefer at::linalg_pinv with an rcond there.
// Throws InvalidArgument when A is not 2-D or is all zeros.
IterativeResult newton_schulz_pinv(const at::Tensor& A, const NewtonSchulzPinvOptions& options = {});

}  // namespace lowrank::linalg
